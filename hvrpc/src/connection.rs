//! One hvrpc connection: the handshake, then a reader task and a writer task that never wait
//! for each other, a table of this side's calls in flight, and a table of the peer's calls
//! being handled here. Either side may call the other.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use hvrpc_transport::PeerAddr;
use hvrpc_transport::framing::{self, FrameCodec, FrameError};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{Error, ErrorCode};
use crate::protocol::{
    self, Frame, FrameBuf, Header, Hello, MAGIC, PREAMBLE, PROTOCOL_VERSION, ServiceInfo, Status,
};
use crate::service::{Body, Context, Handler, Service};

/// The largest handshake frame accepted.
const MAX_HELLO: usize = 64 * 1024;
/// Control frames (pongs, cancels, credits, error responses) that may wait for the socket;
/// a peer that makes more pile up is not reading and is disconnected.
const MAX_CONTROL_QUEUED: usize = 4096;
/// Small frames are copied together into one write of up to this size.
const COALESCE: usize = 64 * 1024;

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
}

/// A live hvrpc connection. Cheap to clone; the connection closes (after sending what is
/// queued) when the last clone, and every call and stream using it, is gone.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.finish("closed by this side");
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.handle.shared.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

enum Out {
    Frame {
        frame: Frame,
        control: bool,
        _permit: Option<OwnedSemaphorePermit>,
    },
    /// Write everything queued before this, then close.
    Finish,
}

/// Fibonacci hashing of a `u64` call id (for `CallTable`, whose ids this side assigns).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

struct CallTable {
    open: bool,
    /// Keyed by ids this side chose (sequential), so a plain multiplicative hash spreads them
    /// and a peer cannot pick colliding ones: it only looks ids up.
    calls: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
}

pub(crate) enum Pending {
    /// A unary call and its deadline (enforced by the reader task, see `expire_calls`).
    Unary(oneshot::Sender<Result<Bytes, Error>>, Option<Instant>),
    Stream {
        tx: mpsc::UnboundedSender<StreamEvent>,
        /// Items the peer may still send before this side grants more.
        credit: u64,
    },
}

/// What a client-side stream receives.
pub(crate) enum StreamEvent {
    Item(Bytes),
    End(Result<(), Error>),
}

struct Incoming {
    cancel: CancellationToken,
    abort: AbortHandle,
    credit: Option<Arc<Credit>>,
}

/// Stream credit granted by a caller.
pub(crate) struct Credit {
    avail: AtomicU64,
    notify: Notify,
}

impl Credit {
    fn new(initial: u32) -> Self {
        Self {
            avail: AtomicU64::new(u64::from(initial)),
            notify: Notify::new(),
        }
    }

    fn add(&self, n: u32) {
        let _ = self
            .avail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_add(u64::from(n)))
            });
        self.notify.notify_one();
    }

    async fn take(&self) {
        loop {
            let notified = self.notify.notified();
            let took = self
                .avail
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(1))
                .is_ok();
            if took {
                return;
            }
            notified.await;
        }
    }
}

pub(crate) struct Shared {
    peer: Arc<PeerAddr>,
    peer_hello: Hello,
    services: Arc<Services>,
    config: Arc<Config>,
    out: mpsc::UnboundedSender<Out>,
    /// The write half. The writer task holds it while it writes a batch; a sender that finds
    /// nothing queued and the lock free writes its frame itself, without waking the writer.
    wr: tokio::sync::Mutex<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Frames queued for the writer and not yet written: senders may write directly only
    /// while this is 0, which keeps frames in order.
    pending: AtomicUsize,
    /// What a direct write left unwritten (only ever set with `wr` held); the writer task
    /// writes it before anything it takes from the queue.
    partial: Mutex<Option<Frame>>,
    /// Responses of handlers that finished inline, sent together when the reader has no
    /// further frame buffered (one write for a batch of requests).
    replies: Mutex<Vec<(Frame, OwnedSemaphorePermit)>>,
    budget: Arc<Semaphore>,
    control_queued: AtomicUsize,
    calls: Mutex<CallTable>,
    incoming: Mutex<HashMap<u64, Incoming>>,
    incoming_changed: Notify,
    /// When the reader task next looks for unary calls past their deadline, in whole
    /// milliseconds after `epoch` (rounded up). A call due before then wakes it through
    /// `deadline_wake`; calls due later (the usual case: the same default deadline for every
    /// call) cost no timer of their own.
    deadline_check: AtomicU64,
    /// Set when `closed` is cancelled: the same fact, but checking it takes no lock
    /// (`CancellationToken::is_cancelled` does), and it is checked on every call and frame.
    is_closed: AtomicBool,
    /// `finish` was called: the reader queues the end (after the responses it holds).
    finish_requested: AtomicBool,
    /// Set with `finish_requested`, never cleared: no more handlers run.
    finishing: AtomicBool,
    /// Set (with `reader_wake` woken) when a call is due before `deadline_check`.
    deadline_due: AtomicBool,
    /// The reader task's waker, for `deadline_due` and for closing.
    reader_wake: futures_util::task::AtomicWaker,
    epoch: Instant,
    next_id: AtomicU64,
    call_slots: Arc<Semaphore>,
    closed: CancellationToken,
    reason: OnceLock<Arc<str>>,
    peer_going_away: AtomicBool,
    going_away: AtomicBool,
    /// Calls started either way, so that the idle timer sees short calls between its ticks.
    calls_started: AtomicU64,
}

/// Locks a mutex, recovering from poisoning: the tables stay consistent because no code
/// panics while holding them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// What each side has to say before calls can flow.
pub(crate) struct HandshakeParams {
    pub(crate) config: Arc<Config>,
    pub(crate) services: Arc<Services>,
    pub(crate) wants: Vec<ServiceInfo>,
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
        let HandshakeParams {
            config,
            services,
            wants,
        } = params;
        let hello = Hello {
            features: 0,
            max_frame: u32::try_from(config.max_frame).unwrap_or(u32::MAX),
            max_concurrent_calls: config.max_concurrent_calls,
            services: services.infos().to_vec(),
            wants: wants.clone(),
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
        let recv = async {
            let mut preamble = [0u8; PREAMBLE.len()];
            r.read_exact(&mut preamble).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Error::Handshake("the peer closed the connection during the handshake".into())
                } else {
                    Error::ConnectionLost(format!("reading the handshake: {e}").into())
                }
            })?;
            check_preamble(&preamble)?;
            let mut frames = FramedRead::new(&mut r, FrameCodec::new(MAX_HELLO));
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
        };
        let handshake = async {
            let (sent, received) = tokio::join!(send, recv);
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

        check_services(&wants, &peer_hello.services, "the peer")?;
        check_services(&peer_hello.wants, services.infos(), "this side")?;

        let peer_max_frame = usize::try_from(peer_hello.max_frame).unwrap_or(usize::MAX);
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = peer_hello.max_concurrent_calls.max(1) as usize;
        let shared = Arc::new(Shared {
            peer: Arc::new(peer),
            peer_hello,
            services,
            budget: Arc::new(Semaphore::new(
                config.send_buffer.max(peer_max_frame.min(1 << 20)),
            )),
            config,
            out: tx,
            wr: tokio::sync::Mutex::new(Box::pin(w)),
            pending: AtomicUsize::new(0),
            partial: Mutex::new(None),
            replies: Mutex::new(Vec::new()),
            control_queued: AtomicUsize::new(0),
            calls: Mutex::new(CallTable {
                open: true,
                calls: HashMap::default(),
            }),
            incoming: Mutex::new(HashMap::new()),
            incoming_changed: Notify::new(),
            deadline_check: AtomicU64::new(u64::MAX),
            is_closed: AtomicBool::new(false),
            finish_requested: AtomicBool::new(false),
            finishing: AtomicBool::new(false),
            deadline_due: AtomicBool::new(false),
            reader_wake: futures_util::task::AtomicWaker::new(),
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            call_slots: Arc::new(Semaphore::new(slots)),
            closed: CancellationToken::new(),
            reason: OnceLock::new(),
            peer_going_away: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            calls_started: AtomicU64::new(0),
        });
        // What came with the peer's Hello is read first. (Copied into the FramedRead's buffer,
        // it would wait undecoded until more bytes arrived.)
        let framed = FramedRead::new(
            std::io::Cursor::new(leftover).chain(r),
            FrameCodec::new(shared.config.max_frame),
        );
        // No span on these two tasks: entering one on every poll is a cost per frame. Their
        // events name the peer themselves, and handlers run in an `hvrpc.serve` span.
        tokio::spawn(reader(framed, Arc::clone(&shared)));
        tokio::spawn(writer(rx, Arc::clone(&shared)));
        tracing::debug!(peer = %shared.peer, services = ?shared.peer_hello.services, "connected");
        Ok(Connection {
            handle: Arc::new(Handle { shared }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The peer's address: its VM id or CID as the transport reported it.
    pub fn peer(&self) -> &PeerAddr {
        &self.handle.shared.peer
    }

    /// The services the peer offers, with their fingerprints.
    pub fn peer_services(&self) -> &[ServiceInfo] {
        &self.handle.shared.peer_hello.services
    }

    /// The implementation the peer announced, e.g. `hvrpc/0.1.0`.
    pub fn peer_agent(&self) -> &str {
        &self.handle.shared.peer_hello.agent
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.is_closed.load(Ordering::SeqCst)
    }

    /// Whether new calls may be started: open, and the peer has not announced a shutdown.
    pub fn is_usable(&self) -> bool {
        !self.is_closed() && !self.handle.shared.peer_going_away.load(Ordering::Acquire)
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<Arc<str>> {
        self.handle.shared.reason.get().cloned()
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn closed(&self) -> Arc<str> {
        self.handle.shared.closed.cancelled().await;
        self.handle.shared.reason_or_default()
    }

    /// Number of the peer's calls being handled here right now.
    pub fn incoming_calls(&self) -> usize {
        lock(&self.handle.shared.incoming).len()
    }

    /// Graceful shutdown: tell the peer (go-away), refuse new calls, let the ones in flight
    /// finish for up to `grace`, cancel the rest, then close.
    pub async fn shutdown(&self, grace: Duration) {
        self.handle.shared.shutdown(grace).await
    }

    /// Closes the connection at once; pending calls on both sides fail.
    pub fn close(&self) {
        self.handle.shared.close("closed by this side");
    }

    /// Finds the service `name` with `fingerprint` among the peer's services.
    pub(crate) fn service_index(&self, name: &str, fingerprint: u64) -> Result<u32, Error> {
        let offered = &self.handle.shared.peer_hello.services;
        match offered.iter().position(|s| s.name == name) {
            Some(i) if offered.get(i).map(|s| s.fingerprint) == Some(fingerprint) => {
                u32::try_from(i).map_err(|_| Error::Protocol("too many services".into()))
            }
            Some(i) => Err(Error::Handshake(
                mismatch(
                    name,
                    offered.get(i).map_or(0, |s| s.fingerprint),
                    fingerprint,
                )
                .into(),
            )),
            None => Err(Error::Handshake(not_served(name, offered).into())),
        }
    }

    /// Sends a request and registers it; returns the guard that cancels it on drop.
    pub(crate) async fn start_call<A: Serialize + ?Sized>(
        &self,
        service: u32,
        method: u32,
        (args, tail): (&A, Option<Bytes>),
        timeout: Option<Duration>,
        pending: impl FnOnce() -> Pending,
        window: u32,
    ) -> Result<CallGuard, Error> {
        let shared = &self.handle.shared;
        // Without waiting when a slot is free (the usual case): no future, no waiter list.
        let permit = match Arc::clone(&shared.call_slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Waiting for a slot counts against the call's deadline.
                let slot = Arc::clone(&shared.call_slots).acquire_owned();
                match timeout {
                    Some(t) => tokio::time::timeout(t, slot)
                        .await
                        .map_err(|_| Error::DeadlineExceeded)?,
                    None => slot.await,
                }
                .map_err(|_| shared.lost())?
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header = Header::Request {
            id,
            service,
            method,
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            window,
        };
        let mut frame = FrameBuf::new(&header, 64);
        frame
            .body(args)
            .map_err(|e| Error::Encode(e.to_string().into()))?;
        let max = shared.peer_max_frame();
        let frame = match tail {
            None => frame.finish(max).map(Frame::from),
            Some(tail) => frame.finish_with_tail(tail, max),
        }
        .map_err(|len| Error::FrameTooLarge { len, max })?;
        let alone;
        {
            let mut table = lock(&shared.calls);
            if !table.open {
                return Err(shared.lost());
            }
            let pending = pending();
            if let Pending::Unary(_, Some(deadline)) = &pending {
                // Under the table's lock, so that a scan in progress sees the call or the
                // reader sees the wake-up.
                if shared.millis(*deadline) < shared.deadline_check.load(Ordering::SeqCst) {
                    shared.deadline_due.store(true, Ordering::SeqCst);
                    shared.reader_wake.wake();
                }
            }
            table.calls.insert(id, pending);
            alone = table.calls.len() == 1;
        }
        shared.calls_started.fetch_add(1, Ordering::Relaxed);
        let guard = CallGuard {
            conn: self.clone(),
            id,
            armed: true,
            _permit: permit,
        };
        // Alone, the request is written from here (no writer wake-up); with other calls in
        // flight it is queued so that the writer coalesces them into one write.
        shared.send_with(frame, alone).await?;
        Ok(guard)
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
        let (tx, rx) = oneshot::channel();
        // Far-future deadlines (beyond what `Instant` holds) are no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut guard = self
            .start_call(
                service,
                method,
                (args, tail),
                timeout,
                || Pending::Unary(tx, deadline),
                0,
            )
            .await?;
        // The reader answers with `DeadlineExceeded` when the deadline passes.
        let result = rx.await;
        // The response, the deadline or the loss of the connection: the call is out of the
        // table. Past its deadline the peer is told to stop, now that the request is out.
        guard.armed = false;
        let shared = &self.handle.shared;
        if matches!(result, Ok(Err(Error::DeadlineExceeded)))
            && !shared.is_closed.load(Ordering::SeqCst)
        {
            shared.send_control(&Header::Cancel { id: guard.id });
        }
        result.unwrap_or_else(|_| Err(shared.lost()))
    }
}

fn mismatch(name: &str, theirs: u64, ours: u64) -> String {
    format!(
        "service {name} is defined differently on the two sides (fingerprint {theirs:016x} \
         there, {ours:016x} here): build both from the same service definition"
    )
}

fn not_served(name: &str, offered: &[ServiceInfo]) -> String {
    let names: Vec<&str> = offered.iter().map(|s| s.name.as_str()).collect();
    format!(
        "the peer does not serve {name} (it serves: {})",
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    )
}

/// Checks that everything in `wanted` is in `offered` with the same fingerprint.
fn check_services(
    wanted: &[ServiceInfo],
    offered: &[ServiceInfo],
    offerer: &str,
) -> Result<(), Error> {
    for want in wanted {
        match offered.iter().find(|s| s.name == want.name) {
            Some(s) if s.fingerprint == want.fingerprint => {}
            Some(s) => {
                return Err(Error::Handshake(
                    mismatch(&want.name, s.fingerprint, want.fingerprint).into(),
                ));
            }
            None if offerer == "the peer" => {
                return Err(Error::Handshake(not_served(&want.name, offered).into()));
            }
            None => {
                return Err(Error::Handshake(
                    format!(
                        "the peer wants service {}, which this side does not serve",
                        want.name
                    )
                    .into(),
                ));
            }
        }
    }
    Ok(())
}

fn check_preamble(p: &[u8; PREAMBLE.len()]) -> Result<(), Error> {
    if p.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(Error::Handshake(
            format!(
                "the peer is not an hvrpc endpoint (it sent {:?})",
                String::from_utf8_lossy(p)
            )
            .into(),
        ));
    }
    let version = p.get(MAGIC.len()).copied().unwrap_or(0);
    if version != PROTOCOL_VERSION {
        return Err(Error::Handshake(
            format!(
                "protocol version mismatch: the peer speaks version {version}, this side \
                 version {PROTOCOL_VERSION}"
            )
            .into(),
        ));
    }
    Ok(())
}

/// An outgoing call in flight. Dropping it while armed cancels the call: it is removed from the
/// table and the peer is told to stop the handler.
pub(crate) struct CallGuard {
    pub(crate) conn: Connection,
    pub(crate) id: u64,
    pub(crate) armed: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.armed {
            let shared = &self.conn.handle.shared;
            let removed = lock(&shared.calls).calls.remove(&self.id).is_some();
            if removed && !shared.is_closed.load(Ordering::SeqCst) {
                shared.send_control(&Header::Cancel { id: self.id });
            }
        }
    }
}

impl Shared {
    fn peer_max_frame(&self) -> usize {
        usize::try_from(self.peer_hello.max_frame).unwrap_or(usize::MAX)
    }

    pub(crate) fn default_deadline(&self) -> Option<Duration> {
        self.config.default_deadline
    }

    pub(crate) fn stream_window(&self) -> u32 {
        self.config.stream_window.max(1)
    }

    fn reason_or_default(&self) -> Arc<str> {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from("the connection is closed"))
    }

    pub(crate) fn lost(&self) -> Error {
        Error::ConnectionLost(self.reason_or_default())
    }

    /// Whole milliseconds from `epoch` to `at`, rounded down.
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Fails the unary calls whose deadline has passed (and tells the peer to stop them);
    /// returns when to look again: the next deadline, or `recheck` from now if none. Run by
    /// the reader task.
    fn expire_calls(&self, now: Instant, recheck: Duration) -> Instant {
        let mut expired = Vec::new();
        let mut next = now + recheck;
        {
            let mut table = lock(&self.calls);
            let mut due = Vec::new();
            for (&id, pending) in &table.calls {
                match pending {
                    Pending::Unary(_, Some(d)) if *d <= now => due.push(id),
                    Pending::Unary(_, Some(d)) => next = next.min(*d),
                    _ => {}
                }
            }
            for id in due {
                if let Some(pending) = table.calls.remove(&id) {
                    expired.push((id, pending));
                }
            }
            // Rounded up: a call due at or after this is seen by the scan at `next`.
            let ms = next.saturating_duration_since(self.epoch);
            let ms = u64::try_from(
                ms.as_millis() + u128::from(!ms.subsec_nanos().is_multiple_of(1_000_000)),
            )
            .unwrap_or(u64::MAX);
            self.deadline_check.store(ms, Ordering::SeqCst);
        }
        // The callers tell the peer (`call_unary`): only they know that their request has gone
        // out, and a Cancel must never overtake its Request.
        for (_, pending) in expired {
            if let Pending::Unary(tx, _) = pending {
                let _ = tx.send(Err(Error::DeadlineExceeded));
            }
        }
        next
    }

    /// Queues a frame for the writer task.
    fn enqueue(&self, out: Out) -> Result<(), ()> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.out.send(out).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Writes `frame` straight to the socket if nothing is queued before it and the writer is
    /// not writing; what the socket does not take now is queued for the writer, in order.
    /// `Err(frame)` when it could not even start (the caller queues the frame).
    fn try_write_direct(&self, mut frame: Frame) -> Result<(), Frame> {
        if self.pending.load(Ordering::SeqCst) != 0 {
            return Err(frame);
        }
        let Ok(mut w) = self.wr.try_lock() else {
            return Err(frame);
        };
        if self.pending.load(Ordering::SeqCst) != 0 {
            return Err(frame);
        }
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        while !frame.is_empty() {
            let polled = match frame.chunks() {
                [head, tail] if !head.is_empty() && !tail.is_empty() => {
                    w.as_mut().poll_write_vectored(
                        &mut cx,
                        &[std::io::IoSlice::new(head), std::io::IoSlice::new(tail)],
                    )
                }
                [head, tail] => w
                    .as_mut()
                    .poll_write(&mut cx, if head.is_empty() { tail } else { head }),
            };
            match polled {
                std::task::Poll::Ready(Ok(0)) => {
                    self.close("writing to the peer failed: write returned 0");
                    return Ok(());
                }
                std::task::Poll::Ready(Ok(n)) => frame.advance(n),
                std::task::Poll::Ready(Err(e)) => {
                    self.close(format!("writing to the peer failed: {e}"));
                    return Ok(());
                }
                std::task::Poll::Pending => break,
            }
        }
        let flushed = frame.is_empty()
            && matches!(
                w.as_mut().poll_flush(&mut cx),
                std::task::Poll::Ready(Ok(()))
            );
        if !flushed {
            // The rest goes to the writer, which writes it before anything else. Not through
            // the queue: frames queued since the check above are ahead of it there, and
            // would land in the middle of this one. The empty frame queued here wakes the
            // writer (and makes it flush) and keeps other senders from writing directly
            // until it has run.
            *lock(&self.partial) = Some(frame);
            let _ = self.enqueue(Out::Frame {
                frame: Frame::default(),
                control: false,
                _permit: None,
            });
        }
        Ok(())
    }

    /// Queues a frame, waiting while the send buffer is full.
    async fn send(&self, frame: Frame) -> Result<(), Error> {
        self.send_with(frame, false).await
    }

    /// What a frame costs in the send buffer.
    fn cost(&self, frame: &Frame) -> u32 {
        u32::try_from(frame.len().clamp(1, self.config.send_buffer.max(1))).unwrap_or(u32::MAX)
    }

    /// Sends a frame: directly if `direct` and possible, else queued (waiting while the send
    /// buffer is full).
    async fn send_with(&self, frame: Frame, direct: bool) -> Result<(), Error> {
        let frame = if direct {
            match self.try_write_direct(frame) {
                Ok(()) => return Ok(()),
                Err(frame) => frame,
            }
        } else {
            frame
        };
        let cost = self.cost(&frame);
        let permit = match Arc::clone(&self.budget).try_acquire_many_owned(cost) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(self.lost()),
            Err(tokio::sync::TryAcquireError::NoPermits) => tokio::select! {
                p = Arc::clone(&self.budget).acquire_many_owned(cost) => p.map_err(|_| self.lost())?,
                () = self.closed.cancelled() => return Err(self.lost()),
            },
        };
        self.enqueue(Out::Frame {
            frame,
            control: false,
            _permit: Some(permit),
        })
        .map_err(|_| self.lost())
    }

    /// Keeps the response of an inline handler for the batch the reader sends when it has
    /// read all it had. Without room in the send buffer (a peer that does not read), the
    /// response waits in a task of its own, registered as a call in flight like any other:
    /// it counts against the concurrency limit, so a flood is refused and then cut.
    fn reply(self: &Arc<Self>, id: u64, frame: Frame) {
        match Arc::clone(&self.budget).try_acquire_many_owned(self.cost(&frame)) {
            Ok(permit) => lock(&self.replies).push((frame, permit)),
            Err(_) => {
                let shared = Arc::clone(self);
                let mut incoming = lock(&self.incoming);
                let task = tokio::spawn(async move {
                    let _ = shared.send(frame).await;
                    lock(&shared.incoming).remove(&id);
                    shared.incoming_removed();
                });
                incoming.insert(
                    id,
                    Incoming {
                        cancel: CancellationToken::new(),
                        abort: task.abort_handle(),
                        credit: None,
                    },
                );
            }
        }
    }

    /// Sends the responses of inline handlers gathered so far: small ones copied together
    /// into one write, large ones as they are.
    fn flush_replies(&self) {
        let replies = std::mem::take(&mut *lock(&self.replies));
        let emit = |frame: Frame, permit: OwnedSemaphorePermit| {
            if let Err(frame) = self.try_write_direct(frame) {
                let _ = self.enqueue(Out::Frame {
                    frame,
                    control: false,
                    _permit: Some(permit),
                });
            }
        };
        if replies.len() == 1 {
            for (frame, permit) in replies {
                emit(frame, permit);
            }
            return;
        }
        let mut batch = BytesMut::new();
        let mut batch_permit: Option<OwnedSemaphorePermit> = None;
        for (frame, permit) in replies {
            if frame.len() >= COALESCE / 4 {
                if let Some(p) = batch_permit.take() {
                    emit(batch.split().freeze().into(), p);
                }
                emit(frame, permit);
                continue;
            }
            for chunk in frame.chunks() {
                batch.extend_from_slice(chunk);
            }
            match &mut batch_permit {
                Some(p) => p.merge(permit),
                None => batch_permit = Some(permit),
            }
        }
        if let Some(p) = batch_permit {
            emit(batch.freeze().into(), p);
        }
    }

    /// Wakes `shutdown` when it waits for the calls in flight; nobody else waits.
    fn incoming_removed(&self) {
        if self.going_away.load(Ordering::SeqCst) {
            self.incoming_changed.notify_waiters();
        }
    }

    /// Queues a small control frame without waiting. A peer that lets thousands of them pile
    /// up is not reading its socket: it is disconnected.
    pub(crate) fn send_control(&self, header: &Header) {
        let queued = self.control_queued.fetch_add(1, Ordering::AcqRel);
        if queued >= MAX_CONTROL_QUEUED {
            self.control_queued.fetch_sub(1, Ordering::AcqRel);
            self.close("the peer is not reading (too many frames waiting to be sent)");
            return;
        }
        match FrameBuf::new(header, 0).finish(usize::MAX) {
            Ok(bytes) => {
                let _ = self.enqueue(Out::Frame {
                    frame: bytes.into(),
                    control: true,
                    _permit: None,
                });
            }
            Err(_) => {
                self.control_queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Lets the peer send `items` more items of stream `id`: recorded first (the window this
    /// side enforces), then sent.
    pub(crate) fn grant_credit(&self, id: u64, items: u32) {
        let granted = match lock(&self.calls).calls.get_mut(&id) {
            Some(Pending::Stream { credit, .. }) => {
                *credit = credit.saturating_add(u64::from(items));
                true
            }
            _ => false,
        };
        if granted {
            self.send_control(&Header::Credit { id, items });
        }
    }

    fn send_error(&self, id: u64, code: ErrorCode, message: String) {
        self.send_control(&Header::Response {
            id,
            status: Status::Error { code, message },
        });
    }

    /// Ends the connection: every pending call fails, every handler is stopped.
    pub(crate) fn close(&self, reason: impl Into<Arc<str>>) {
        let reason = reason.into();
        if self.reason.set(Arc::clone(&reason)).is_ok() {
            tracing::debug!(peer = %self.peer, %reason, "connection closed");
        }
        self.is_closed.store(true, Ordering::SeqCst);
        self.closed.cancel();
        self.reader_wake.wake();
        self.call_slots.close();
        self.budget.close();
        let calls = {
            let mut t = lock(&self.calls);
            t.open = false;
            std::mem::take(&mut t.calls)
        };
        let err = self.lost();
        for (_, pending) in calls {
            match pending {
                Pending::Unary(tx, _) => {
                    let _ = tx.send(Err(err.clone()));
                }
                Pending::Stream { tx, .. } => {
                    let _ = tx.send(StreamEvent::End(Err(err.clone())));
                }
            }
        }
        let incoming = std::mem::take(&mut *lock(&self.incoming));
        for (_, call) in incoming {
            call.cancel.cancel();
            call.abort.abort();
        }
        self.incoming_changed.notify_waiters();
    }

    /// Closes after writing everything already queued.
    fn finish(&self, reason: &str) {
        if !self.is_closed.load(Ordering::SeqCst) {
            // Logged here: `close` logs only the reason it sets itself.
            if self.reason.set(Arc::from(reason)).is_ok() {
                tracing::debug!(peer = %self.peer, %reason, "connection closed");
            }
            // The reader queues the end itself, between two frames: responses of handlers it
            // ran inline go out first, and it runs no handler after that (`finishing`).
            self.finishing.store(true, Ordering::SeqCst);
            self.finish_requested.store(true, Ordering::SeqCst);
            self.reader_wake.wake();
        }
    }

    async fn shutdown(&self, grace: Duration) {
        if self.is_closed.load(Ordering::SeqCst) {
            return;
        }
        self.going_away.store(true, Ordering::SeqCst);
        self.send_control(&Header::GoAway {
            reason: "shutting down".into(),
        });
        let deadline = Instant::now() + grace;
        loop {
            let changed = self.incoming_changed.notified();
            if lock(&self.incoming).is_empty() || self.is_closed.load(Ordering::SeqCst) {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        let left = std::mem::take(&mut *lock(&self.incoming));
        for (id, call) in left {
            call.cancel.cancel();
            call.abort.abort();
            self.send_error(
                id,
                ErrorCode::Cancelled,
                format!("the server shut down and its {grace:?} grace period is over"),
            );
        }
        self.finish("shut down");
        // Give the writer a moment to flush the go-away and final responses.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.closed.cancelled()).await;
        self.close("shut down");
    }

    /// Handles one frame from the peer. An `Err` is a protocol violation that ends the
    /// connection with that reason.
    fn handle_frame(self: &Arc<Self>, payload: BytesMut) -> Result<(), String> {
        let payload = payload.freeze();
        let (header, body_len) = {
            let (header, body) = protocol::split_frame(&payload)?;
            (header, body.len())
        };
        let body = payload.slice(payload.len() - body_len..);
        match header {
            Header::Hello(_) => return Err("a second handshake on an open connection".into()),
            Header::Request {
                id,
                service,
                method,
                timeout_ms,
                window,
            } => self.handle_request(id, service, method, timeout_ms, window, body)?,
            Header::Response { id, status } => {
                let pending = lock(&self.calls).calls.remove(&id);
                let result = match status {
                    Status::Ok => Ok(body),
                    Status::Error { code, message } => Err(Error::remote(code, message)),
                };
                match pending {
                    Some(Pending::Unary(tx, _)) => {
                        let _ = tx.send(result);
                    }
                    Some(Pending::Stream { tx, .. }) => {
                        let _ = tx.send(StreamEvent::End(result.map(|_| ())));
                    }
                    // A call this side already gave up on.
                    None => {}
                }
            }
            Header::StreamItem { id } => {
                let mut table = lock(&self.calls);
                match table.calls.get_mut(&id) {
                    Some(Pending::Stream { tx, credit }) => {
                        if *credit == 0 {
                            return Err(format!(
                                "stream item for call {id} beyond the granted window"
                            ));
                        }
                        *credit -= 1;
                        let _ = tx.send(StreamEvent::Item(body));
                    }
                    Some(Pending::Unary(..)) => {
                        return Err(format!("stream item for unary call {id}"));
                    }
                    None => {}
                }
            }
            Header::Credit { id, items } => {
                if let Some(credit) = lock(&self.incoming).get(&id).and_then(|c| c.credit.clone()) {
                    credit.add(items);
                }
            }
            Header::Cancel { id } => {
                let call = lock(&self.incoming).remove(&id);
                if let Some(call) = call {
                    call.cancel.cancel();
                    call.abort.abort();
                    self.incoming_removed();
                }
            }
            Header::Ping(n) => self.send_control(&Header::Pong(n)),
            Header::Pong(_) => {}
            Header::GoAway { reason } => {
                tracing::debug!(peer = %self.peer, %reason, "peer is going away");
                self.peer_going_away.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    fn handle_request(
        self: &Arc<Self>,
        id: u64,
        service: u32,
        method: u32,
        timeout_ms: Option<u64>,
        window: u32,
        body: Bytes,
    ) -> Result<(), String> {
        if self.finishing.load(Ordering::SeqCst) {
            // The connection is ending: a response could no longer be sent, so the handler
            // does not run; the caller's call fails with the connection.
            return Ok(());
        }
        if self.going_away.load(Ordering::Acquire) {
            self.send_error(
                id,
                ErrorCode::ShuttingDown,
                "the server is shutting down".into(),
            );
            return Ok(());
        }
        let Some(svc) = usize::try_from(service)
            .ok()
            .and_then(|i| self.services.list.get(i))
        else {
            self.send_error(
                id,
                ErrorCode::UnknownService,
                format!("no service with index {service}"),
            );
            return Ok(());
        };
        let svc = Arc::clone(svc);
        let method_name = svc.method_name(method).unwrap_or("?");
        let cancel = CancellationToken::new();
        let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        let ctx = Context {
            peer: Arc::clone(&self.peer),
            deadline,
            cancel: cancel.clone(),
            service: svc.name(),
            method: method_name,
        };
        {
            let incoming = lock(&self.incoming);
            if incoming.contains_key(&id) {
                return Err(format!("duplicate request id {id}"));
            }
            if incoming.len() >= self.config.max_concurrent_calls as usize {
                drop(incoming);
                self.send_error(
                    id,
                    ErrorCode::ResourceExhausted,
                    format!(
                        "too many concurrent calls on this connection (limit {})",
                        self.config.max_concurrent_calls
                    ),
                );
                return Ok(());
            }
        }
        let handler = match svc.call(method, ctx, body) {
            Ok(h) => h,
            Err((code, message)) => {
                self.send_error(id, code, message);
                return Ok(());
            }
        };
        self.calls_started.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!(
            "hvrpc.serve",
            service = svc.name(),
            method = method_name,
            peer = %self.peer,
            id
        );
        // Fast path: a unary handler that finishes without waiting is answered from this task,
        // with no task, timer, cancellation entry or table entry of its own. (A handler that
        // does wait is moved to its own task below, which polls it again with a real waker.)
        let handler = match handler {
            Handler::Unary(mut fut) => {
                let _entered = span.enter();
                let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
                match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
                    Ok(std::task::Poll::Ready(body)) => {
                        let header = Header::Response {
                            id,
                            status: Status::Ok,
                        };
                        let frame = self.body_frame(id, header, body).unwrap_or_else(|e| e);
                        self.reply(id, frame);
                        return Ok(());
                    }
                    Ok(std::task::Poll::Pending) => Handler::Unary(fut),
                    Err(p) => {
                        let msg = panic_message(p.as_ref());
                        tracing::warn!(id, panic = %msg, "handler panicked");
                        let frame = self.error_frame(
                            id,
                            ErrorCode::Internal,
                            format!("the handler panicked: {msg}"),
                        );
                        self.reply(id, frame);
                        return Ok(());
                    }
                }
            }
            other => other,
        };
        let mut incoming = lock(&self.incoming);
        let credit = match handler {
            Handler::Streaming(_) => Some(Arc::new(Credit::new(window))),
            Handler::Unary(_) => None,
        };
        let task = tokio::spawn(
            Arc::clone(self)
                .run_handler(
                    id,
                    handler,
                    deadline,
                    timeout_ms,
                    cancel.clone(),
                    credit.clone(),
                )
                .instrument(span),
        );
        incoming.insert(
            id,
            Incoming {
                cancel,
                abort: task.abort_handle(),
                credit,
            },
        );
        Ok(())
    }

    async fn run_handler(
        self: Arc<Self>,
        id: u64,
        handler: Handler,
        deadline: Option<Instant>,
        timeout_ms: Option<u64>,
        cancel: CancellationToken,
        credit: Option<Arc<Credit>>,
    ) {
        let work = self.drive(id, handler, credit);
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            frame = work => frame,
            () = expired => {
                cancel.cancel();
                Some(self.error_frame(
                    id,
                    ErrorCode::DeadlineExceeded,
                    format!("the call's deadline of {} ms passed", timeout_ms.unwrap_or(0)),
                ))
            }
            () = cancel.cancelled() => None,
        };
        let removed = lock(&self.incoming).remove(&id).is_some();
        self.incoming_removed();
        if let (true, Some(frame)) = (removed, outcome) {
            let _ = self.send(frame).await;
        }
    }

    fn error_frame(&self, id: u64, code: ErrorCode, message: String) -> Frame {
        FrameBuf::new(
            &Header::Response {
                id,
                status: Status::Error { code, message },
            },
            0,
        )
        .finish(usize::MAX)
        .unwrap_or_default()
        .into()
    }

    fn body_frame(
        &self,
        id: u64,
        header: Header,
        body: Result<Body, Error>,
    ) -> Result<Frame, Frame> {
        let max = self.peer_max_frame();
        match body {
            Ok(body) => body.into_frame(&header, max).map_err(|len| {
                self.error_frame(
                    id,
                    ErrorCode::Internal,
                    format!("the response of {len} bytes exceeds the caller's frame limit of {max} bytes"),
                )
            }),
            Err(Error::Remote { code, message }) => Err(self.error_frame(id, code, message.to_string())),
            Err(e) => Err(self.error_frame(id, ErrorCode::Internal, e.to_string())),
        }
    }

    /// Runs a handler to its final frame. Stream items are sent from here as credit allows.
    async fn drive(&self, id: u64, handler: Handler, credit: Option<Arc<Credit>>) -> Option<Frame> {
        let panicked = |p: Box<dyn std::any::Any + Send>| {
            let msg = panic_message(p.as_ref());
            tracing::warn!(id, panic = %msg, "handler panicked");
            self.error_frame(
                id,
                ErrorCode::Internal,
                format!("the handler panicked: {msg}"),
            )
        };
        match handler {
            Handler::Unary(fut) => Some(match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(body) => {
                    let header = Header::Response {
                        id,
                        status: Status::Ok,
                    };
                    self.body_frame(id, header, body).unwrap_or_else(|e| e)
                }
                Err(p) => panicked(p),
            }),
            Handler::Streaming(fut) => {
                let mut stream = match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(s) => s,
                    Err(p) => return Some(panicked(p)),
                };
                let credit = credit.unwrap_or_else(|| Arc::new(Credit::new(0)));
                loop {
                    credit.take().await;
                    match AssertUnwindSafe(stream.next()).catch_unwind().await {
                        Ok(Some(item)) => {
                            match self.body_frame(id, Header::StreamItem { id }, item) {
                                Ok(frame) => {
                                    if self.send(frame).await.is_err() {
                                        return None;
                                    }
                                }
                                Err(end) => return Some(end),
                            }
                        }
                        Ok(None) => {
                            return Some(
                                FrameBuf::new(
                                    &Header::Response {
                                        id,
                                        status: Status::Ok,
                                    },
                                    0,
                                )
                                .finish(usize::MAX)
                                .unwrap_or_default()
                                .into(),
                            );
                        }
                        Err(p) => return Some(panicked(p)),
                    }
                }
            }
        }
    }

    /// Whether neither side has a call in flight.
    fn is_idle(&self) -> bool {
        lock(&self.incoming).is_empty() && lock(&self.calls).calls.is_empty()
    }
}

async fn reader<R>(mut frames: FramedRead<R, FrameCodec>, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
{
    let interval = shared.config.keepalive_interval;
    let timeout = shared.config.keepalive_timeout;
    let idle_timeout = shared.config.idle_timeout;
    let mut last_rx = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut idle_since: Option<Instant> = None;
    let mut calls_seen = 0;
    let mut pings: u64 = 0;
    // Clamped to a day: `Instant` arithmetic must not overflow for huge configured values.
    const DAY: Duration = Duration::from_secs(86_400);
    let tick = idle_timeout
        .map_or(interval, |i| interval.min(i / 2))
        .clamp(Duration::from_millis(10), DAY);
    // Deadlines of this side's unary calls: one timer for all of them (`expire_calls`),
    // shared with the keepalive and idle ticks.
    let recheck = shared
        .config
        .default_deadline
        .unwrap_or(interval)
        .clamp(Duration::from_millis(10), DAY);
    let mut next_tick = Instant::now() + tick;
    let mut next_deadline = shared.expire_calls(Instant::now(), recheck);
    let timer = tokio::time::sleep_until(next_tick.min(next_deadline));
    tokio::pin!(timer);
    // Closing and new early deadlines wake the reader through one `AtomicWaker` (cheaper per
    // poll than a `Notified` future, which takes a lock each time it is polled).
    let signal = || {
        std::future::poll_fn(|cx| {
            shared.reader_wake.register(cx.waker());
            if shared.is_closed.load(Ordering::SeqCst)
                || shared.deadline_due.load(Ordering::SeqCst)
                || shared.finish_requested.load(Ordering::SeqCst)
            {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    };
    // When the loop last woke (read once per wake-up: the clock is not free).
    let mut now = Instant::now();
    let reason: String = loop {
        // Checked before every frame, not only when the socket has nothing: a peer that keeps
        // sending must not keep a closed connection's reader going, hold back a finish, or
        // postpone this side's deadlines.
        if shared.is_closed.load(Ordering::SeqCst) {
            return;
        }
        if shared.finish_requested.load(Ordering::SeqCst)
            && shared.finish_requested.swap(false, Ordering::SeqCst)
        {
            // Every response of a handler already run goes out before the end.
            shared.flush_replies();
            let _ = shared.enqueue(Out::Finish);
        }
        if now >= next_deadline
            || (shared.deadline_due.load(Ordering::SeqCst)
                && shared.deadline_due.swap(false, Ordering::SeqCst))
        {
            next_deadline = shared.expire_calls(now, recheck);
            timer.as_mut().reset(next_tick.min(next_deadline));
        }
        tokio::select! {
            biased;
            frame = frames.next() => match frame {
                Some(Ok(payload)) => {
                    now = Instant::now();
                    last_rx = now;
                    ping_sent = None;
                    if let Err(violation) = shared.handle_frame(payload) {
                        tracing::warn!(peer = %shared.peer, %violation, "protocol violation; closing");
                        break format!("protocol violation by the peer: {violation}");
                    }
                    if !framing::frame_complete(frames.read_buffer()) {
                        shared.flush_replies();
                    }
                }
                Some(Err(FrameError::TooLarge { len, max })) => {
                    tracing::warn!(peer = %shared.peer, len, max, "oversized frame; closing");
                    break format!("the peer sent a frame of {len} bytes, over the limit of {max}");
                }
                Some(Err(e)) => break format!("reading from the peer failed: {e}"),
                None => break "the peer closed the connection".to_owned(),
            },
            // Handled at the top of the loop.
            () = signal() => now = Instant::now(),
            () = &mut timer => {
                now = Instant::now();
                if now < next_tick {
                    timer.as_mut().reset(next_tick.min(next_deadline));
                    continue;
                }
                next_tick = now + tick;
                timer.as_mut().reset(next_tick.min(next_deadline));
                match ping_sent {
                    Some(at) if now.duration_since(at) >= timeout => {
                        break format!("keepalive: the peer did not answer for {timeout:?}");
                    }
                    None if now.duration_since(last_rx) >= interval => {
                        ping_sent = Some(now);
                        pings += 1;
                        shared.send_control(&Header::Ping(pings));
                    }
                    _ => {}
                }
                if let Some(limit) = idle_timeout {
                    // Idle: no call in flight now, and none started since the last tick.
                    let started = shared.calls_started.load(Ordering::Relaxed);
                    let quiet = std::mem::replace(&mut calls_seen, started) == started;
                    if quiet && shared.is_idle() {
                        let since = *idle_since.get_or_insert(now);
                        if now.duration_since(since) >= limit {
                            shared.send_control(&Header::GoAway { reason: "idle timeout".into() });
                            shared.finish("idle timeout");
                            idle_since = None;
                        }
                    } else {
                        idle_since = None;
                    }
                }
            }
        }
    };
    shared.close(reason);
}

/// Runs one write operation, failing if it makes no progress for `stall`: the peer is not
/// reading. (Keepalive does not see such a peer if it keeps sending.)
async fn progress<T>(
    stall: Duration,
    op: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(stall, op).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the peer has not read anything for {stall:?}"),
        ))
    })
}

/// `write_all`, failing if the peer takes nothing for `stall`.
async fn write_all_or_stall<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = progress(stall, w.write(buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = buf.get(n..).unwrap_or_default();
    }
    Ok(())
}

/// Writes `a` then `b`, vectored, failing if the peer takes nothing for `stall`.
async fn write_both_or_stall<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    while !a.is_empty() {
        let bufs = [std::io::IoSlice::new(a), std::io::IoSlice::new(b)];
        let n = progress(stall, w.write_vectored(&bufs)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = a.get(from_a..).unwrap_or_default();
        b = b.get(n - from_a..).unwrap_or_default();
    }
    write_all_or_stall(w, b, stall).await
}

async fn writer(mut rx: mpsc::UnboundedReceiver<Out>, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(COALESCE);
    let stall = shared.config.keepalive_timeout;
    let work = async {
        loop {
            let Some(mut next) = rx.recv().await else {
                return Ok::<bool, std::io::Error>(false);
            };
            let mut guard = shared.wr.lock().await;
            let w = &mut *guard;
            // The rest of a frame a sender began writing itself comes first.
            let partial = lock(&shared.partial).take();
            if let Some(rest) = partial {
                write_both_or_stall(w, &rest.head, &rest.tail, stall).await?;
            }
            let mut taken = 0usize;
            loop {
                taken += 1;
                match next {
                    Out::Finish => {
                        if !buf.is_empty() {
                            write_all_or_stall(w, &buf, stall).await?;
                        }
                        progress(stall, w.flush()).await?;
                        return Ok(true);
                    }
                    Out::Frame {
                        frame,
                        control,
                        _permit,
                    } => {
                        // Large chunks are written as they are (with what is gathered before
                        // them, in one vectored write); small ones are gathered.
                        for chunk in [frame.head, frame.tail] {
                            if chunk.len() >= COALESCE / 4 {
                                write_both_or_stall(w, &buf, &chunk, stall).await?;
                                buf.clear();
                            } else if !chunk.is_empty() {
                                buf.extend_from_slice(&chunk);
                                if buf.len() >= COALESCE {
                                    write_all_or_stall(w, &buf, stall).await?;
                                    buf.clear();
                                }
                            }
                        }
                        if control {
                            shared.control_queued.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                }
                match rx.try_recv() {
                    Ok(o) => next = o,
                    Err(_) => break,
                }
            }
            if !buf.is_empty() {
                write_all_or_stall(w, &buf, stall).await?;
                buf.clear();
            }
            progress(stall, w.flush()).await?;
            // Written: senders may write directly again once nothing else is queued.
            shared.pending.fetch_sub(taken, Ordering::SeqCst);
            drop(guard);
        }
    };
    tokio::select! {
        result = work => match result {
            Ok(_) => shared.close(shared.reason_or_default()),
            Err(e) => shared.close(format!("writing to the peer failed: {e}")),
        },
        () = shared.closed.cancelled() => {}
    }
    // Release the socket's write half now (the peer sees the close once the reader is gone
    // too), not when the last handle to the connection goes.
    *shared.wr.lock().await = Box::pin(tokio::io::sink());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A write half whose next large write, once armed, takes a while (blocking its thread,
    /// as a busy kernel might), accepts half of what it was given, and is then full for one
    /// poll.
    struct SlowHalfWrite<T> {
        io: T,
        armed: Arc<AtomicBool>,
        full_once: bool,
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for SlowHalfWrite<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if std::mem::take(&mut self.full_once) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if buf.len() > 1000 && self.armed.swap(false, Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                self.full_once = true;
                let half = buf.len() / 2;
                return Pin::new(&mut self.io).poll_write(cx, &buf[..half]);
            }
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await.unwrap();
        let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut p).await.unwrap();
        p
    }

    /// A frame of just a header.
    fn framed(header: &Header) -> Vec<u8> {
        FrameBuf::new(header, 0)
            .finish(usize::MAX)
            .unwrap()
            .to_vec()
    }

    /// A connection whose peer is played by hand: separate pipes for the two directions (so
    /// that a slow write blocks nothing but its own thread), the peer's opening sent (it
    /// serves one service, "S"), this side's read. `armed` makes this side's write half a
    /// `SlowHalfWrite`.
    async fn with_fake_peer(
        services: Services,
        armed: Arc<AtomicBool>,
    ) -> (Connection, tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (conn_w, mut peer_r) = tokio::io::duplex(1 << 20);
        let (mut peer_w, conn_r) = tokio::io::duplex(1 << 20);
        let w = SlowHalfWrite {
            io: conn_w,
            armed,
            full_once: false,
        };
        let hello = Hello {
            features: 0,
            max_frame: 1 << 20,
            max_concurrent_calls: 16,
            services: vec![ServiceInfo {
                name: "S".into(),
                fingerprint: 1,
            }],
            wants: Vec::new(),
            agent: "test".into(),
        };
        let mut opening = PREAMBLE.to_vec();
        opening.extend_from_slice(
            &FrameBuf::new(&Header::Hello(hello), 0)
                .finish(usize::MAX)
                .unwrap(),
        );
        peer_w.write_all(&opening).await.unwrap();
        let params = HandshakeParams {
            config: Arc::new(Config::default()),
            services: Arc::new(services),
            wants: Vec::new(),
        };
        let conn = Connection::establish(conn_r, w, PeerAddr::Unix(None), params)
            .await
            .unwrap();
        let mut preamble = [0u8; PREAMBLE.len()];
        peer_r.read_exact(&mut preamble).await.unwrap();
        let _hello = read_frame(&mut peer_r).await;
        (conn, peer_r, peer_w)
    }

    /// A caller that writes its request itself and is cut short while another call queues
    /// its request: the rest of the first frame must go out before the queued one, or the two
    /// frames are spliced together on the wire (found by `faults.rs`: "call 424 received the
    /// answer of call 40").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_cut_short_is_finished_before_frames_queued_meanwhile() {
        let armed = Arc::new(AtomicBool::new(false));
        let (conn, mut peer_r, peer_w) =
            with_fake_peer(Services::default(), Arc::clone(&armed)).await;
        let data: Bytes = (0..20_000u32)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>()
            .into();
        armed.store(true, Ordering::SeqCst);
        // Alone on the connection, this request is written by its caller: slowly, then half.
        let big = tokio::spawn({
            let (conn, data) = (conn.clone(), data.clone());
            async move { conn.call_unary(0, 0, &(), Some(data), None).await }
        });
        // Meanwhile another call queues its request for the writer task.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let small = tokio::spawn({
            let conn = conn.clone();
            async move { conn.call_unary(0, 1, &(7u8,), None, None).await }
        });
        let first = read_frame(&mut peer_r).await;
        let second = read_frame(&mut peer_r).await;
        assert!(
            !armed.load(Ordering::SeqCst),
            "the slow write never happened"
        );
        let (h1, body1) = protocol::split_frame(&first).unwrap();
        assert!(matches!(h1, Header::Request { method: 0, .. }), "{h1:?}");
        let want = postcard::to_allocvec(&crate::wire_bytes::AsBytes(&data)).unwrap();
        assert!(
            body1 == &want[..],
            "the first frame holds other bytes than its own"
        );
        let (h2, body2) = protocol::split_frame(&second).unwrap();
        assert!(matches!(h2, Header::Request { method: 1, .. }), "{h2:?}");
        assert_eq!(body2, &[7u8][..]);
        drop(peer_w);
        drop(peer_r);
        let _ = (big.await, small.await);
    }

    /// A peer that never answers a call but keeps the socket busy (a stream of pongs, which
    /// need no answer) does not postpone the call's deadline; the Cancel for it follows its
    /// Request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadlines_fire_while_the_peer_keeps_sending() {
        let (conn, mut peer_r, mut peer_w) =
            with_fake_peer(Services::default(), Arc::default()).await;
        let flooding = Arc::new(AtomicBool::new(true));
        let flood = tokio::spawn({
            let flooding = Arc::clone(&flooding);
            async move {
                let mut batch = Vec::new();
                for n in 0..256u64 {
                    batch.extend(framed(&Header::Pong(n)));
                }
                while flooding.load(Ordering::SeqCst) {
                    if peer_w.write_all(&batch).await.is_err() {
                        break;
                    }
                }
                peer_w
            }
        });
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            conn.call_unary(0, 0, &(), None, Some(Duration::from_millis(200))),
        )
        .await
        .expect("the deadline was postponed by the peer's traffic");
        let took = started.elapsed();
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        assert!(took < Duration::from_secs(2), "ended after {took:?}");
        // What the peer received: the Request, then the Cancel for it.
        let mut kinds = Vec::new();
        while kinds.len() < 2 {
            let f = read_frame(&mut peer_r).await;
            match protocol::split_frame(&f).unwrap().0 {
                Header::Pong(_) => {}
                Header::Request { id, .. } => kinds.push(("request", id)),
                Header::Cancel { id } => kinds.push(("cancel", id)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(kinds[0].0, "request");
        assert_eq!(kinds[1], ("cancel", kinds[0].1));
        flooding.store(false, Ordering::SeqCst);
        drop(peer_r);
        let _ = flood.await;
    }

    /// A service whose method 1 starts a graceful shutdown of its own connection from
    /// another task (and waits until that has got going); every method answers 42 at once.
    struct ShutsDown {
        conn: Arc<OnceLock<Connection>>,
        ran: Arc<AtomicUsize>,
    }

    impl Service for ShutsDown {
        fn name(&self) -> &'static str {
            "S"
        }
        fn fingerprint(&self) -> u64 {
            1
        }
        fn method_name(&self, _: u32) -> Option<&'static str> {
            Some("m")
        }
        fn call(
            &self,
            method: u32,
            _ctx: Context,
            _args: Bytes,
        ) -> Result<Handler, (ErrorCode, String)> {
            if method == 1 {
                // On a thread of its own: a task spawned from here would wait in this
                // worker's LIFO slot until the reader yields.
                let conn = self.conn.get().cloned();
                let rt = tokio::runtime::Handle::current();
                std::thread::spawn(move || {
                    if let Some(c) = conn {
                        rt.block_on(c.shutdown(Duration::from_secs(5)));
                    }
                });
                std::thread::sleep(Duration::from_millis(200));
            }
            let ran = Arc::clone(&self.ran);
            Ok(Handler::unary(async move {
                ran.fetch_add(1, Ordering::SeqCst);
                42u8
            }))
        }
    }

    /// A graceful shutdown that starts while the reader holds the responses of handlers it
    /// ran inline (more requests were buffered) sends those responses before it ends: every
    /// handler that ran is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_graceful_end_sends_the_responses_of_handlers_already_run() {
        let ran = Arc::new(AtomicUsize::new(0));
        let cell = Arc::new(OnceLock::new());
        let mut services = Services::default();
        services.push(Arc::new(ShutsDown {
            conn: Arc::clone(&cell),
            ran: Arc::clone(&ran),
        }));
        let (conn, mut peer_r, mut peer_w) = with_fake_peer(services, Arc::default()).await;
        let _ = cell.set(conn.clone());
        // Three requests in one write: the first starts the shutdown.
        let mut bytes = Vec::new();
        for (id, method) in [(1u64, 1u32), (2, 0), (3, 0)] {
            bytes.extend(framed(&Header::Request {
                id,
                service: 0,
                method,
                timeout_ms: None,
                window: 0,
            }));
        }
        peer_w.write_all(&bytes).await.unwrap();
        let mut answered = Vec::new();
        let mut go_away = false;
        loop {
            let mut len = [0u8; 4];
            if peer_r.read_exact(&mut len).await.is_err() {
                break;
            }
            let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
            peer_r.read_exact(&mut p).await.unwrap();
            match protocol::split_frame(&p).unwrap() {
                (
                    Header::Response {
                        id,
                        status: Status::Ok,
                    },
                    body,
                ) => {
                    assert_eq!(body, &[42u8][..]);
                    answered.push(id);
                }
                (Header::Response { .. }, _) => {}
                (Header::GoAway { .. }, _) => go_away = true,
                (other, _) => panic!("unexpected {other:?}"),
            }
        }
        assert!(go_away, "no go-away before the end");
        assert!(
            answered.contains(&1),
            "the first call ran but was not answered"
        );
        assert_eq!(
            answered.len(),
            ran.load(Ordering::SeqCst),
            "handlers ran: {}, answered: {answered:?}",
            ran.load(Ordering::SeqCst)
        );
        drop(peer_w);
    }
}
