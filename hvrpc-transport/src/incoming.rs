//! [`Incoming`]: a [`Listener`] as a stream of connections, for servers that take one
//! (tonic's `serve_with_incoming`, hyper accept loops, `futures` combinators).
//!
//! Invariant: an accept error never ends the stream and never spins. A connection that died in
//! the backlog is skipped at once; any other error (out of descriptors, out of memory) is
//! logged and the next accept waits [`RESOURCE_PAUSE`] so the program can free some.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream as FuturesStream;

use crate::addr::PeerAddr;
use crate::stream::{Listener, Stream};

/// How long accepting pauses after an error that is not one connection's (EMFILE and the like).
pub(crate) const RESOURCE_PAUSE: Duration = Duration::from_millis(100);

/// Whether an accept error concerns only the connection being accepted (or the call), so that
/// a peer that keeps causing it cannot slow accepting down.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
            | io::ErrorKind::Interrupted
    )
}

/// Accepts the next connection, riding out accept errors as the module's invariant says.
pub(crate) async fn accept_next(listener: &Listener) -> (Stream, PeerAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "a connection died before it was accepted");
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    endpoint = %listener.local_endpoint(),
                    "accept failed; pausing before the next one"
                );
                tokio::time::sleep(RESOURCE_PAUSE).await;
            }
        }
    }
}

type Accepting = Pin<Box<dyn Future<Output = (Stream, PeerAddr)> + Send>>;

/// A [`Listener`]'s connections as a [`futures_core::Stream`] that never ends and never yields
/// an error (see the module's invariant): `Listener::incoming` makes one.
///
/// Its items are `io::Result<Stream>` because that is the shape servers take (tonic's
/// `serve_with_incoming`); they are always `Ok`. Each [`Stream`] knows its peer
/// ([`Stream::peer_addr`]).
pub struct Incoming {
    listener: Arc<Listener>,
    accepting: Option<Accepting>,
}

impl Incoming {
    pub(crate) fn new(listener: Listener) -> Self {
        Incoming {
            listener: Arc::new(listener),
            accepting: None,
        }
    }

    /// The listener the connections come from.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl FuturesStream for Incoming {
    type Item = io::Result<Stream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let accepting = this.accepting.get_or_insert_with(|| {
            let listener = Arc::clone(&this.listener);
            Box::pin(async move { accept_next(&listener).await })
        });
        let (stream, _peer) = std::task::ready!(accepting.as_mut().poll(cx));
        this.accepting = None;
        Poll::Ready(Some(Ok(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn next(incoming: &mut Incoming) -> impl Future<Output = Option<io::Result<Stream>>> + '_ {
        std::future::poll_fn(move |cx| Pin::new(&mut *incoming).poll_next(cx))
    }

    #[tokio::test]
    async fn yields_every_connection_with_its_peer() {
        let any: crate::Endpoint = "tcp://127.0.0.1:0".parse().unwrap();
        let mut incoming = Listener::bind(&any).await.unwrap().incoming();
        let endpoint = incoming.listener().local_endpoint().clone();
        for i in 0..3u8 {
            let mut client = crate::connect(&endpoint).await.unwrap();
            client.write_all(&[i]).await.unwrap();
            let mut server = next(&mut incoming).await.unwrap().unwrap();
            assert!(matches!(server.peer_addr(), PeerAddr::Tcp(a) if a.ip().is_loopback()));
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
            assert_eq!(b, [i]);
        }
    }

    #[test]
    fn only_a_dead_connection_is_skipped_without_a_pause() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::NotConnected,
            io::ErrorKind::Interrupted,
        ] {
            assert!(is_connection_error(&kind.into()));
        }
        // EMFILE: out of descriptors, not one connection's problem.
        assert!(!is_connection_error(&io::Error::from_raw_os_error(24)));
        assert!(!is_connection_error(&io::ErrorKind::OutOfMemory.into()));
    }
}
