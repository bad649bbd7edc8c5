//! One hvrpc connection: the handshake, then three tasks around the engine's core — the reader
//! (frames in, the timer), the writer (frames out when senders leave them), and the dispatcher
//! (the peer's calls: user code, never on the reader) — and the public [`Connection`] handle.
//! Either side may call the other.

mod dispatch;
mod driver;
mod timer;
mod watchdog;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hvrpc_transport::PeerAddr;
use hvrpc_transport::framing::{FrameCodec, FrameError};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::config::Config;
use crate::engine::handshake::{self, MAX_HELLO, Offerer};
use crate::engine::{Core, CoreConfig, Limits};
use crate::error::Error;
use crate::link::{CallHandle, Handle, Shared};
use crate::protocol::{self, FrameBuf, Header, Hello, PREAMBLE, ServiceInfo};
use crate::service::{Body, Service};

/// The services a side offers, in the order announced (requests address them by index).
#[derive(Clone, Default)]
pub(crate) struct Services {
    list: Vec<Arc<dyn Service>>,
    infos: Vec<ServiceInfo>,
}

impl Services {
    pub(crate) fn push(&mut self, service: Arc<dyn Service>) {
        self.infos.push(service.info());
        self.list.push(service);
    }

    pub(crate) fn infos(&self) -> &[ServiceInfo] {
        &self.infos
    }

    pub(crate) fn get(&self, index: u32) -> Option<&Arc<dyn Service>> {
        self.list.get(index as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// What each side has to say before calls can flow.
pub(crate) struct HandshakeParams {
    pub(crate) config: Arc<Config>,
    pub(crate) services: Arc<Services>,
    pub(crate) wants: Vec<ServiceInfo>,
}

/// A live hvrpc connection. Cheap to clone; the connection closes (after sending what is
/// queued) when the last clone, and every call and stream using it, is gone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Arc<Handle>,
    peer_hello: Hello,
    config: Arc<Config>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", self.peer())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Reads the peer's preamble and Hello; returns the Hello and whatever came after it.
async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Hello, BytesMut), Error> {
    let mut preamble = [0u8; PREAMBLE.len()];
    r.read_exact(&mut preamble).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Handshake("the peer closed the connection during the handshake".into())
        } else {
            Error::ConnectionLost(format!("reading the handshake: {e}").into())
        }
    })?;
    handshake::check_preamble(&preamble)?;
    let mut frames = FramedRead::new(&mut *r, FrameCodec::new(MAX_HELLO));
    let payload = match frames.next().await {
        Some(Ok(p)) => p,
        Some(Err(FrameError::TooLarge { len, max })) => {
            return Err(Error::Handshake(
                format!("the peer's handshake is {len} bytes, more than {max}").into(),
            ));
        }
        Some(Err(e)) => {
            return Err(Error::Handshake(
                format!("reading the handshake: {e}").into(),
            ));
        }
        None => {
            return Err(Error::Handshake(
                "the peer closed the connection during the handshake".into(),
            ));
        }
    };
    // Anything the peer sent after its Hello stays buffered for the reader task.
    let leftover: BytesMut = frames.read_buffer().clone();
    match protocol::split_frame(&payload) {
        // Trailing bytes in a Hello are fields from a newer minor version: ignored.
        Ok((Header::Hello(h), _)) => Ok((h, leftover)),
        Ok((other, _)) => Err(Error::Handshake(
            format!("the peer's first frame is not a handshake: {other:?}").into(),
        )),
        Err(e) => Err(Error::Handshake(
            format!("the peer's handshake: {e}").into(),
        )),
    }
}

/// Checks the peer's Hello against this side's.
fn check_hello(peer: &Hello, params: &HandshakeParams) -> Result<(), Error> {
    handshake::check_limits(peer.max_frame)?;
    handshake::check_services(&params.wants, &peer.services, Offerer::ThePeer)?;
    handshake::check_services(&peer.wants, params.services.infos(), Offerer::ThisSide)
}

impl Connection {
    /// Runs the handshake over an already connected byte stream, given as its two halves, and
    /// starts the connection's tasks. Must be called within a tokio runtime.
    pub(crate) async fn establish<R, W>(
        mut r: R,
        mut w: W,
        peer: PeerAddr,
        params: HandshakeParams,
    ) -> Result<Connection, Error>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let config = Arc::clone(&params.config);
        // What this side announces: never below the minimum a peer must accept.
        let max_frame = u32::try_from(config.max_frame)
            .unwrap_or(u32::MAX)
            .max(handshake::MIN_MAX_FRAME);
        let hello = Hello {
            features: 0,
            max_frame,
            max_concurrent_calls: config.max_concurrent_calls,
            services: params.services.infos().to_vec(),
            wants: params.wants.clone(),
            agent: concat!("hvrpc/", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        let mut first = BytesMut::from(&PREAMBLE[..]);
        let hello_frame = FrameBuf::new(&Header::Hello(hello), 0)
            .finish(MAX_HELLO)
            .map_err(|len| {
                Error::Handshake(format!("our handshake is too large ({len} bytes)").into())
            })?;
        first.extend_from_slice(&hello_frame);
        let send = async {
            w.write_all(&first).await?;
            w.flush().await
        };
        let handshake = async {
            let (sent, received) = tokio::join!(send, read_hello(&mut r));
            let received = received?;
            sent.map_err(|e| Error::ConnectionLost(format!("sending the handshake: {e}").into()))?;
            Ok::<_, Error>(received)
        };
        let (peer_hello, leftover) = tokio::time::timeout(config.handshake_timeout, handshake)
            .await
            .map_err(|_| {
                Error::Handshake(
                    format!(
                        "no handshake from the peer within {:?}",
                        config.handshake_timeout
                    )
                    .into(),
                )
            })??;
        if let Err(e) = check_hello(&peer_hello, &params) {
            // The peer learns why before the connection closes.
            let reason = match &e {
                Error::Handshake(r) => r.to_string(),
                other => other.to_string(),
            };
            let reason = format!("handshake refused: {reason}");
            let goaway = FrameBuf::new(&Header::GoAway { reason }, 0).finish(usize::MAX);
            if let Ok(frame) = goaway {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    w.write_all(&frame).await?;
                    w.flush().await
                })
                .await;
            }
            return Err(e);
        }

        let now = Instant::now();
        let core = Core::new(
            now,
            CoreConfig {
                keepalive_interval: config.keepalive_interval,
                keepalive_timeout: config.keepalive_timeout,
                idle_timeout: config.idle_timeout,
                send_buffer: config
                    .send_buffer
                    .max((peer_hello.max_frame as usize).min(1 << 20)),
                limits: Limits {
                    max_calls: config.max_concurrent_calls,
                    max_bytes: config.max_request_bytes,
                    max_deadline: config.max_deadline,
                    services: params.services.len(),
                },
                peer_max_frame: peer_hello.max_frame as usize,
                peer_max_calls: peer_hello.max_concurrent_calls,
            },
        );
        let link = Shared::new(core, Box::pin(w), peer, config.keepalive_timeout);
        // What came with the peer's Hello is read first. (Copied into the FramedRead's buffer,
        // it would wait undecoded until more bytes arrived.)
        let max_frame = config.max_frame.max(handshake::MIN_MAX_FRAME as usize);
        let read: Pin<Box<dyn AsyncRead + Send>> =
            Box::pin(std::io::Cursor::new(leftover).chain(r));
        let frames = FramedRead::new(read, FrameCodec::new(max_frame));
        let calls = dispatch::Calls {
            link: Arc::clone(&link),
            services: Arc::clone(&params.services),
            max_frame: peer_hello.max_frame as usize,
        };
        // No span on these tasks: entering one on every poll is a cost per frame. Their
        // events name the peer themselves, and handlers run in an `hvrpc.serve` span.
        driver::Driver::start(calls, frames, max_frame);
        tokio::spawn(timer::run(Arc::clone(&link)));
        tokio::spawn(Arc::clone(&link).writer());
        tracing::debug!(peer = %link.peer, services = ?peer_hello.services, "connected");
        Ok(Connection {
            inner: Arc::new(Inner {
                handle: Arc::new(Handle { link }),
                peer_hello,
                config,
            }),
        })
    }

    fn link(&self) -> &Arc<Shared> {
        &self.inner.handle.link
    }

    /// The peer's address: its VM id or CID as the transport reported it.
    pub fn peer(&self) -> &PeerAddr {
        &self.link().peer
    }

    /// The services the peer offers, with their fingerprints.
    pub fn peer_services(&self) -> &[ServiceInfo] {
        &self.inner.peer_hello.services
    }

    /// The implementation the peer announced, e.g. `hvrpc/0.1.0`.
    pub fn peer_agent(&self) -> &str {
        &self.inner.peer_hello.agent
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.link().is_closed()
    }

    /// Whether new calls may be started: open, and neither side has announced a shutdown.
    pub fn is_usable(&self) -> bool {
        self.link().is_usable()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<Arc<str>> {
        if self.is_closed() {
            self.link().lock().reason()
        } else {
            None
        }
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn closed(&self) -> Arc<str> {
        self.link().closed().await;
        self.link()
            .lock()
            .reason()
            .unwrap_or_else(|| Arc::from("the connection is closed"))
    }

    /// Number of the peer's calls being handled here right now.
    pub fn incoming_calls(&self) -> usize {
        self.link().lock().incoming_calls()
    }

    /// Graceful shutdown: tell the peer (go-away), refuse new calls, let the ones in flight
    /// finish for up to `grace`, cancel the rest, then close.
    pub async fn shutdown(&self, grace: Duration) {
        let link = self.link();
        {
            let mut core = link.lock();
            core.shutdown(Instant::now(), grace);
            link.release(core, crate::link::Write::Now);
        }
        // The core ends it when the calls are done, or at the end of the grace period; the
        // queue then has a moment to be written.
        let limit = grace.saturating_add(Duration::from_secs(2));
        if tokio::time::timeout(limit, link.closed()).await.is_err() {
            link.close("shut down");
        }
    }

    /// Closes the connection at once; pending calls on both sides fail.
    pub fn close(&self) {
        self.link().close("closed by this side");
    }

    /// The configured default deadline of unary calls.
    pub(crate) fn default_deadline(&self) -> Option<Duration> {
        self.inner.config.default_deadline
    }

    /// The window of this side's stream calls.
    pub(crate) fn stream_window(&self) -> u32 {
        self.inner.config.stream_window.max(1)
    }

    /// The error of calls on this connection once it has ended.
    pub(crate) fn lost(&self) -> Error {
        self.link().lost()
    }

    /// Finds the service `name` with `fingerprint` among the peer's services.
    pub(crate) fn service_index(&self, name: &str, fingerprint: u64) -> Result<u32, Error> {
        let offered = &self.inner.peer_hello.services;
        match offered.iter().position(|s| s.name == name) {
            Some(i) if offered.get(i).map(|s| s.fingerprint) == Some(fingerprint) => {
                u32::try_from(i).map_err(|_| Error::Protocol("too many services".into()))
            }
            Some(i) => Err(Error::Handshake(
                handshake::mismatch(
                    name,
                    offered.get(i).map_or(0, |s| s.fingerprint),
                    fingerprint,
                )
                .into(),
            )),
            None => Err(Error::Handshake(
                handshake::not_served(name, offered).into(),
            )),
        }
    }

    /// Starts a call of `method` of the peer's `service`; `window` is a stream's.
    pub(crate) fn start_call<A: Serialize + ?Sized>(
        &self,
        service: u32,
        method: u32,
        (args, tail): (&A, Option<Bytes>),
        timeout: Option<Duration>,
        window: Option<u32>,
    ) -> Result<CallHandle, Error> {
        let body = Body::encode_args(args, tail)?;
        // Far-future deadlines (beyond what `Instant` holds) are no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let max = self.inner.peer_hello.max_frame as usize;
        CallHandle::start(
            &self.inner.handle,
            |id| {
                let header = Header::Request {
                    id,
                    service,
                    method,
                    timeout_ms,
                    window: window.unwrap_or(0),
                };
                body.into_frame(&header, max)
                    .map_err(|len| Error::FrameTooLarge { len, max })
            },
            deadline,
            window,
        )
    }

    /// A unary call: sends the request and waits for the response body.
    pub(crate) async fn call_unary<A: Serialize + ?Sized>(
        &self,
        service: u32,
        method: u32,
        args: &A,
        tail: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Error> {
        let mut call = self.start_call(service, method, (args, tail), timeout, None)?;
        std::future::poll_fn(|cx| call.poll_unary(cx)).await
    }
}

#[cfg(test)]
mod tests;
