//! HTTP over every hvrpc transport with [`hyper`] 1 and `hyper-util` 0.1 (feature `hyper`).
//!
//! * [`Connector`]: a `tower_service::Service<Uri>` that dials one [`Endpoint`] — hyper-util's
//!   pooled client (`hyper_util::client::legacy::Client`) and tonic's
//!   `Endpoint::connect_with_connector` take it.
//! * [`Io`]: the connection it returns: hyper's `rt::Read + rt::Write`, and hyper-util's
//!   `Connection` whose `extra` is the [`PeerAddr`], so a response's extensions say which VM
//!   answered.
//!
//! Servers need nothing from here: `hyper_util::rt::TokioIo::new(stream)` serves a
//! [`Stream`] accepted from a [`Listener`](crate::Listener).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::Empty;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use hvrpc_transport::hyper::Connector;
//!
//! // The guest's HTTP health endpoint, over Hyper-V sockets from the Windows host.
//! let connector = Connector::new("hvsock://my-vm/0x5000".parse()?);
//! let client: Client<_, Empty<bytes::Bytes>> =
//!     Client::builder(TokioExecutor::new()).build(connector);
//! // The authority is only the Host header: every request goes to the connector's endpoint.
//! let response = client.get("http://guest/health".parse()?).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::hyper::Uri;
use ::hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use crate::addr::{Endpoint, PeerAddr};
use crate::options::ConnectOptions;
use crate::stream::Stream;

/// Dials one [`Endpoint`] for every connection an HTTP client asks for, whatever the URI's
/// authority (which then only names the `Host` header): `hvsock://`, `vsock://`,
/// `parent://`, `hybrid-vsock://`, `unix://` and `tcp://` alike, with the timeouts and retries
/// of its [`ConnectOptions`]. Plain HTTP only: an `https://` URI is an error (wrap the
/// connector in a TLS connector for that).
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: Endpoint,
    options: ConnectOptions,
}

impl Connector {
    /// Dials `endpoint` with default [`ConnectOptions`].
    pub fn new(endpoint: Endpoint) -> Self {
        Connector {
            endpoint,
            options: ConnectOptions::default(),
        }
    }

    /// Dials with these options (connect timeout, retries, socket options).
    pub fn with_options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self
    }

    /// The endpoint every connection goes to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Io;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Nothing here speaks TLS: an https:// request must fail, not go out in clear text.
        if uri
            .scheme()
            .is_some_and(|s| *s != ::hyper::http::uri::Scheme::HTTP)
        {
            let scheme = uri.scheme_str().unwrap_or_default().to_owned();
            return Box::pin(async move {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{scheme}:// is not supported by hvrpc_transport::hyper::Connector (no \
                         TLS): use http://, or wrap the connector in a TLS one"
                    ),
                ))
            });
        }
        let (endpoint, options) = (self.endpoint.clone(), self.options.clone());
        Box::pin(async move { Ok(Io::new(crate::connect_with(&endpoint, &options).await?)) })
    }
}

/// A [`Stream`] as hyper's I/O: what [`Connector`] returns.
#[derive(Debug)]
pub struct Io {
    inner: TokioIo<Stream>,
}

impl Io {
    /// Wraps a connected stream (from [`connect_with`](crate::connect_with) or a
    /// [`Listener`](crate::Listener)) for hyper.
    pub fn new(stream: Stream) -> Self {
        Io {
            inner: TokioIo::new(stream),
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> &PeerAddr {
        self.inner.inner().peer_addr()
    }

    /// The stream inside.
    pub fn into_inner(self) -> Stream {
        self.inner.into_inner()
    }
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.peer_addr().clone())
    }
}

impl Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    #[tokio::test]
    async fn https_is_refused_and_http_dials_the_endpoint() {
        let listener = crate::Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut connector = Connector::new(listener.local_endpoint().clone());
        let refused = connector
            .call("https://guest/".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
        assert!(refused.to_string().contains("https://"), "{refused}");
        let io = connector
            .call("http://guest/".parse().unwrap())
            .await
            .unwrap();
        let (_accepted, peer) = listener.accept().await.unwrap();
        // The connection's extra is the peer it reached: the listener's address.
        assert_eq!(
            io.peer_addr(),
            &PeerAddr::Tcp(match listener.local_endpoint() {
                Endpoint::Tcp(a) => *a,
                other => panic!("{other}"),
            })
        );
        assert!(matches!(peer, PeerAddr::Tcp(_)));
    }
}
