//! One hvrpc connection: the handshake, then three tasks around the engine's core — the reader
//! (frames in, the timer), the writer (frames out when senders leave them), and the dispatcher
//! (the peer's calls: user code, never on the reader) — and the public [`Connection`] handle.
//! Either side may call the other.

mod dispatch;
mod driver;
mod handshake;
mod timer;
mod watchdog;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hvrpc_transport::PeerAddr;
use hvrpc_transport::framing::FrameCodec;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::body::Body;
use crate::config::Config;
use crate::engine::handshake::MIN_MAX_FRAME;
use crate::engine::{Core, CoreConfig, Limits};
use crate::error::Error;
use crate::intercept::Interceptor;
use crate::link::{CallHandle, Handle, Shared};
use crate::protocol::{Header, Hello, PeerLimits, ServiceDesc};
use crate::schema::{MethodKind, Reading, ServiceSpec};
use crate::service::{Service, ServiceDef};
use crate::skew::{self, Route, Routes};
use crate::streaming::RawStreaming;

/// The services a side offers, in the order announced (requests address them by index).
#[derive(Clone, Default)]
pub(crate) struct Services {
    list: Vec<Arc<dyn Service>>,
    specs: Vec<Result<Arc<ServiceSpec>, Arc<str>>>,
    interceptor: Option<Arc<dyn Interceptor>>,
}

impl Services {
    /// Every call of these services goes past `i` (replacing any earlier one).
    pub(crate) fn intercept(&mut self, i: Arc<dyn Interceptor>) {
        self.interceptor = Some(i);
    }

    pub(crate) fn interceptor(&self) -> Option<&Arc<dyn Interceptor>> {
        self.interceptor.as_ref()
    }

    pub(crate) fn push(&mut self, service: Arc<dyn Service>) {
        self.specs.push(service.spec());
        self.list.push(service);
    }

    /// The services' specs (an error for one that cannot be described).
    pub(crate) fn specs(&self) -> &[Result<Arc<ServiceSpec>, Arc<str>>] {
        &self.specs
    }

    /// The services' names, for logs.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|s| s.name()).collect()
    }

    pub(crate) fn get(&self, index: u32) -> Option<&Arc<dyn Service>> {
        self.list.get(index as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// A service this side intends to call.
#[derive(Clone, Debug)]
pub(crate) struct Want {
    pub(crate) spec: Result<Arc<ServiceSpec>, Arc<str>>,
    /// Required to be identical on the peer (`Connector::require`).
    pub(crate) strict: bool,
}

impl Want {
    /// The service's name (or the error that stands for it).
    pub(crate) fn name(&self) -> &str {
        match &self.spec {
            Ok(s) => &s.desc().name,
            Err(e) => e,
        }
    }
}

/// What each side has to say before calls can flow.
pub(crate) struct HandshakeParams {
    pub(crate) config: Arc<Config>,
    pub(crate) services: Arc<Services>,
    pub(crate) wants: Vec<Want>,
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
    /// What the peer takes.
    peer_limits: PeerLimits,
    /// How this side's wanted methods are called.
    routes: Routes,
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
        let agreed = tokio::time::timeout(
            config.handshake_timeout,
            handshake::run(&mut r, &mut w, &params),
        )
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
        let handshake::Agreed {
            peer_hello,
            routes,
            readings,
            peer_max_message,
            leftover,
        } = agreed;
        // Messages go in parts only if both sides take them.
        let peer_limits = PeerLimits {
            max_frame: peer_hello.max_frame as usize,
            max_message: peer_max_message.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        };

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
                max_message: peer_max_message.map(|_| config.max_message),
            },
        );
        let link = Shared::new(core, Box::pin(w), peer, config.keepalive_timeout);
        // What came with the peer's Hello is read first. (Copied into the FramedRead's buffer,
        // it would wait undecoded until more bytes arrived.)
        let max_frame = config.max_frame.max(MIN_MAX_FRAME as usize);
        let read: Pin<Box<dyn AsyncRead + Send>> =
            Box::pin(std::io::Cursor::new(leftover).chain(r));
        let frames = FramedRead::new(read, FrameCodec::new(max_frame));
        let calls = dispatch::Calls {
            link: Arc::clone(&link),
            services: Arc::clone(&params.services),
            readings: Arc::new(readings),
            peer: peer_limits,
            input_window: config.stream_window.max(1),
        };
        // No span on these tasks: entering one on every poll is a cost per frame. Their
        // events name the peer themselves, and handlers run in an `hvrpc.serve` span.
        driver::Driver::start(calls, frames, max_frame);
        tokio::spawn(timer::run(Arc::clone(&link)));
        tokio::spawn(Arc::clone(&link).writer());
        tracing::debug!(
            peer = %link.peer,
            serves = ?params.services.names(),
            peer_serves = ?peer_hello.services.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "connected"
        );
        Ok(Connection {
            inner: Arc::new(Inner {
                handle: Arc::new(Handle { link }),
                peer_hello,
                peer_limits,
                routes,
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

    /// The services the peer offers, with their methods.
    pub fn peer_services(&self) -> &[ServiceDesc] {
        &self.inner.peer_hello.services
    }

    /// Whether this side's `method` of service `S` can be called on this connection: the peer
    /// has it, and the two releases' schemas of it are compatible (a host adapting to older
    /// guests asks this before using a newer method).
    pub fn peer_supports<S: ServiceDef>(&self, method: &str) -> bool {
        let Some(index) = S::METHODS.iter().position(|m| *m == method) else {
            return false;
        };
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        self.route(S::NAME, index, S::spec).is_ok()
    }

    /// The peer's numbers of `service.method`, which must be of `kind`.
    fn peer_method(
        &self,
        service: &str,
        method: &str,
        kind: MethodKind,
    ) -> Result<(u32, u32), Error> {
        let services = self.peer_services();
        let Some((si, desc)) = services.iter().enumerate().find(|(_, s)| s.name == service) else {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Unimplemented(
                format!(
                    "the peer does not serve {service} (it serves: {})",
                    names.join(", ")
                )
                .into(),
            ));
        };
        let Some((mi, m)) = desc.method(method) else {
            let names: Vec<&str> = desc.methods.iter().map(|m| m.name.as_str()).collect();
            return Err(Error::Unimplemented(
                format!(
                    "{service} has no method {method} (it has: {})",
                    names.join(", ")
                )
                .into(),
            ));
        };
        if m.kind != kind.code() {
            let theirs =
                MethodKind::from_code(m.kind).map_or("a method of another kind", |k| k.describe());
            return Err(Error::Incompatible(
                format!("{service}.{method} is {theirs}, not {}", kind.describe()).into(),
            ));
        }
        Ok((u32::try_from(si).unwrap_or(u32::MAX), mi))
    }

    /// Calls the peer's unary method `service.method` by name with `args`, the postcard
    /// encoding of the tuple of its arguments, and returns the postcard encoding of its result.
    /// For tools without the Rust types (`hvrpc call`): with the schemas from
    /// [`crate::reflection`] and the `json` feature's [`crate::json`] they read and write any
    /// method. Nothing is checked or translated: the bytes must be in the peer's shape.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        args: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Error> {
        let (si, mi) = self.peer_method(service, method, MethodKind::Unary)?;
        let timeout = timeout.or(self.default_deadline());
        let mut call = self.start_body(si, mi, Body::raw(args), timeout, (None, false))?;
        std::future::poll_fn(|cx| call.poll_unary(cx)).await
    }

    /// Starts the peer's server-streaming method `service.method` by name, like
    /// [`call_raw`](Self::call_raw); the items arrive as their postcard bytes, with the same
    /// flow control as typed streams. Dropping the stream cancels the call.
    pub fn stream_raw(
        &self,
        service: &str,
        method: &str,
        args: Bytes,
        timeout: Option<Duration>,
    ) -> Result<RawStreaming, Error> {
        let (si, mi) = self.peer_method(service, method, MethodKind::ServerStream)?;
        let window = self.stream_window();
        let call = self.start_body(si, mi, Body::raw(args), timeout, (Some(window), false))?;
        Ok(RawStreaming::new(call, window))
    }

    /// Calls the peer's client-streaming method `service.method` by name, like
    /// [`call_raw`](Self::call_raw): `args` are the arguments before the stream, and each item
    /// of `input` is the postcard bytes of one stream item, sent as the peer grants credit. An
    /// error item fails the call with that error (the peer is told to stop).
    pub async fn client_stream_raw<St>(
        &self,
        service: &str,
        method: &str,
        args: Bytes,
        input: St,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Error>
    where
        St: futures_util::Stream<Item = Result<Bytes, Error>> + Send + 'static,
    {
        let (si, mi) = self.peer_method(service, method, MethodKind::ClientStream)?;
        let mut call = self.start_body(si, mi, Body::raw(args), timeout, (None, true))?;
        let sink = call.input_sink(self.peer_limits());
        tokio::spawn(crate::link::pump(sink, Box::pin(input), raw_item));
        std::future::poll_fn(|cx| call.poll_unary(cx)).await
    }

    /// Starts the peer's bidirectional-streaming method `service.method` by name: `input` as
    /// for [`client_stream_raw`](Self::client_stream_raw), the peer's items as for
    /// [`stream_raw`](Self::stream_raw); the two directions are independent. Dropping the
    /// returned stream cancels the call (and stops reading `input`).
    pub fn bidi_raw<St>(
        &self,
        service: &str,
        method: &str,
        args: Bytes,
        input: St,
        timeout: Option<Duration>,
    ) -> Result<RawStreaming, Error>
    where
        St: futures_util::Stream<Item = Result<Bytes, Error>> + Send + 'static,
    {
        let (si, mi) = self.peer_method(service, method, MethodKind::BidiStream)?;
        let window = self.stream_window();
        let call = self.start_body(si, mi, Body::raw(args), timeout, (Some(window), true))?;
        let sink = call.input_sink(self.peer_limits());
        tokio::spawn(crate::link::pump(sink, Box::pin(input), raw_item));
        Ok(RawStreaming::new(call, window))
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

    /// How this side's `method` of service `name` is called here: the peer's service and
    /// method numbers, and how its result is read if the peer writes it in another shape.
    /// `spec` describes the service if it was not declared with `Connector::want`.
    pub(crate) fn route(
        &self,
        name: &str,
        method: u32,
        spec: impl FnOnce() -> Result<Arc<ServiceSpec>, Arc<str>>,
    ) -> Result<(u32, u32, Option<Arc<Reading>>), Error> {
        let undeclared;
        let route = match self.inner.routes.get(name, method) {
            Some(r) => r,
            None => {
                // Not declared: callable only where the two releases agree exactly (there
                // were no schemas exchanged to bridge a difference).
                let spec = spec().map_err(Error::Handshake)?;
                undeclared = skew::route(
                    &spec,
                    method as usize,
                    &self.inner.peer_hello,
                    &skew::PeerSchemas::new(),
                );
                &undeclared
            }
        };
        match route {
            Route::Call {
                service,
                method,
                result,
            } => Ok((*service, *method, result.clone())),
            Route::Unimplemented(why) => Err(Error::Unimplemented(Arc::clone(why))),
            Route::Incompatible(why) => Err(Error::Incompatible(Arc::clone(why))),
        }
    }

    /// Starts a call of `method` of the peer's `service`; `window` is a result stream's;
    /// `input`: the call sends an input stream.
    pub(crate) fn start_call<A: Serialize + ?Sized>(
        &self,
        service: u32,
        method: u32,
        (args, tail): (&A, Option<Bytes>),
        timeout: Option<Duration>,
        (window, input): (Option<u32>, bool),
    ) -> Result<CallHandle, Error> {
        let body = Body::encode_args(args, tail)?;
        self.start_body(service, method, body, timeout, (window, input))
    }

    /// What the peer takes.
    pub(crate) fn peer_limits(&self) -> PeerLimits {
        self.inner.peer_limits
    }

    /// Starts a call whose arguments are encoded already.
    fn start_body(
        &self,
        service: u32,
        method: u32,
        body: Body,
        timeout: Option<Duration>,
        (window, input): (Option<u32>, bool),
    ) -> Result<CallHandle, Error> {
        // Far-future deadlines (beyond what `Instant` holds) are no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let peer = self.inner.peer_limits;
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
                body.into_message(&header, &peer)
            },
            deadline,
            window,
            input,
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
        let mut call = self.start_call(service, method, (args, tail), timeout, (None, false))?;
        std::future::poll_fn(|cx| call.poll_unary(cx)).await
    }
}

#[cfg(test)]
mod tests;

/// An input item that is its encoding already.
#[allow(clippy::unnecessary_wraps)] // the pump's encoder may fail
fn raw_item(bytes: Bytes) -> Result<Body, Error> {
    Ok(Body::raw(bytes))
}
