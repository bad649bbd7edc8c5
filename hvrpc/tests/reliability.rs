//! The defects of the reliability review (issue 12), one test each, named after the defect.
//! Each of these failed against the engine as of e519643; the hostile-peer, fault and load
//! suites keep guarding the same ground from other angles.

mod common;

use common::wire::*;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::task::AtomicWaker;
use hvrpc::{CallOptions, Config, Connector, Context, Error, ErrorCode, PeerAddr, Server};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::{sleep, timeout};

/// A `u32` whose `Deserialize` panics on 666: a peer-chosen value that breaks user code.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct Fragile(pub u32);

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        assert!(v != 666, "Fragile cannot hold 666");
        Ok(Fragile(v))
    }
}

/// The service these tests call.
#[hvrpc::service(port = 6200)]
pub trait Rel {
    /// Returns the value.
    async fn take(v: Fragile) -> u32;
    /// Sleeps `ms`, then returns `n` bytes.
    async fn slow(ms: u64, n: u32) -> Vec<u8>;
    /// Blocks its thread for `ms` (what a careless `exec` does).
    async fn block(ms: u64) -> u64;
    /// Blocks its thread for `ms`, marked as blocking.
    #[hvrpc(blocking)]
    async fn block_marked(ms: u64) -> u64;
    /// Answers at once.
    async fn quick() -> u32;
    /// Never ends.
    async fn forever() -> u32;
    /// Streams `n` numbers.
    async fn count(n: u32) -> hvrpc::Streaming<u32>;
    /// Takes a payload, returns its length.
    async fn upload(data: Vec<u8>) -> u32;
    /// Sleeps `ms` holding a payload, then returns its length.
    async fn hold(ms: u64, data: Vec<u8>) -> u32;
    /// Panics with `msg`.
    async fn boom(msg: String) -> u32;
}

#[derive(Clone, Default)]
struct Imp {
    started: Arc<AtomicUsize>,
}

impl Rel for Imp {
    async fn take(&self, _: Context, v: Fragile) -> u32 {
        v.0
    }
    async fn slow(&self, _: Context, ms: u64, n: u32) -> Vec<u8> {
        self.started.fetch_add(1, Ordering::SeqCst);
        sleep(Duration::from_millis(ms)).await;
        vec![5; n as usize]
    }
    async fn block(&self, _: Context, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    async fn block_marked(&self, _: Context, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    async fn quick(&self, _: Context) -> u32 {
        7
    }
    async fn forever(&self, _: Context) -> u32 {
        self.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
    async fn count(&self, _: Context, n: u32) -> hvrpc::Streaming<u32> {
        hvrpc::Streaming::iter(0..n)
    }
    async fn upload(&self, _: Context, data: Vec<u8>) -> u32 {
        data.len() as u32
    }
    async fn hold(&self, _: Context, ms: u64, data: Vec<u8>) -> u32 {
        sleep(Duration::from_millis(ms)).await;
        data.len() as u32
    }
    async fn boom(&self, _: Context, msg: String) -> u32 {
        panic!("{msg}")
    }
}

/// A server on one end of an in-memory pipe and a client on the other.
async fn pair(server: Config, client: Config) -> (RelClient, hvrpc::Connection, Imp) {
    let (a, b) = tokio::io::duplex(1 << 20);
    pair_over(a, b, server, client).await
}

async fn pair_over<A, B>(
    a: A,
    b: B,
    server: Config,
    client: Config,
) -> (RelClient, hvrpc::Connection, Imp)
where
    A: AsyncRead + AsyncWrite + Send + 'static,
    B: AsyncRead + AsyncWrite + Send + 'static,
{
    let imp = Imp::default();
    let srv = Server::new()
        .config(server)
        .add_service(RelServer::new(imp.clone()));
    let (sconn, cconn) = tokio::join!(
        srv.serve_io(a, PeerAddr::Unix(None)),
        Connector::new()
            .config(client)
            .want::<RelClient>()
            .connect_io(b, PeerAddr::Unix(None)),
    );
    (RelClient::new(cconn.unwrap()), sconn.unwrap(), imp)
}

fn quick_keepalive(mut c: Config) -> Config {
    c.keepalive_interval = Duration::from_millis(200);
    c.keepalive_timeout = Duration::from_millis(800);
    c
}

// ---------------------------------------------------------------------------------------------
// 1. A panic on the reader leaves a zombie connection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_decoding_the_arguments_does_not_leave_a_zombie_connection() {
    let (client, server, _) = pair(Config::server(), Config::default()).await;
    let r = timeout(Duration::from_secs(5), client.take(Fragile(666)))
        .await
        .expect("the call that panicked the decoder was never answered");
    match r {
        Err(Error::Remote { code, message }) => {
            assert!(
                matches!(code, ErrorCode::Internal | ErrorCode::BadRequest),
                "{code}: {message}"
            );
            assert!(message.contains("666"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The connection still serves, keeps its keepalive and its tables.
    let r = timeout(Duration::from_secs(5), client.take(Fragile(1))).await;
    assert_eq!(r.expect("zombie connection").unwrap(), 1);
    assert_eq!(server.incoming_calls(), 0);
    assert!(!server.is_closed());
}

// ---------------------------------------------------------------------------------------------
// 2. Graceful shutdown loses responses that finished in time.

/// A stream whose reading can be paused: the peer sees a consumer that stops reading.
struct Gated<T> {
    io: T,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waker: AtomicWaker,
}

impl Gate {
    fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        self.waker.wake();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gated<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.gate.waker.register(cx.waker());
        if !self.gate.open.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gated<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn gated(io: DuplexStream) -> (Gated<DuplexStream>, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    gate.set(true);
    (
        Gated {
            io,
            gate: Arc::clone(&gate),
        },
        gate,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_finishes_within_the_grace_period_is_not_lost() {
    let mut server = Config::server();
    server.send_buffer = 4 << 20;
    let (a, b) = tokio::io::duplex(16 * 1024);
    let (b, gate) = gated(b);
    let (client, sconn, imp) = pair_over(a, b, server, Config::default()).await;
    // A call whose handler finishes 300 ms from now...
    let slow = tokio::spawn({
        let c = client.clone();
        async move { c.slow(300, 10).await }
    });
    while imp.started.load(Ordering::SeqCst) == 0 {
        sleep(Duration::from_millis(5)).await;
    }
    // ...while the client reads nothing and two large responses fill the server's send
    // buffer (4 MiB).
    gate.set(false);
    let big: Vec<_> = (0..2)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.slow(0, 3 << 20).await.map(|v| v.len()) })
        })
        .collect();
    sleep(Duration::from_millis(100)).await;
    let shutdown = tokio::spawn(async move { sconn.shutdown(Duration::from_secs(5)).await });
    sleep(Duration::from_millis(500)).await;
    gate.set(true);
    let r = timeout(Duration::from_secs(10), slow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.expect("a response that finished 4.7 s inside the grace period was lost"),
        vec![5; 10]
    );
    for b in big {
        assert_eq!(b.await.unwrap().unwrap(), 3 << 20);
    }
    timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. Re-dialling is serial, and call deadlines do not cover it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_share_one_dial_and_their_deadlines_cover_it() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, ep) = common::test_listener(&dir, "mute.sock").await;
    // A peer that accepts and never says anything: every handshake times out.
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let mut config = Config::default();
    config.handshake_timeout = Duration::from_millis(300);
    let channel = Connector::new()
        .config(config)
        .want::<RelClient>()
        .lazy(&ep);
    let client = RelClient::new(channel).with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                let r = c.quick().await;
                (r, started.elapsed())
            })
        })
        .collect();
    for call in calls {
        let (r, took) = call.await.unwrap();
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        assert!(
            took < Duration::from_millis(290),
            "a call with a 100 ms deadline ended after {took:?}"
        );
    }
    sleep(Duration::from_millis(400)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "six concurrent callers dialled more than once"
    );
    // After a failed dial, callers wait for a pause (200 ms, then 400 ms, …) instead of
    // dialling on every call.
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..10 {
        let r = client.quick().await;
        assert!(r.is_err());
        sleep(Duration::from_millis(20)).await;
    }
    let dials = accepted.load(Ordering::SeqCst) - before;
    assert!(
        dials <= 3,
        "{dials} dials in 10 calls over ~1.2 s: no backoff"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A streaming call's deadline is enforced only by the server.

/// `Rel` as the handshake announces it (postcard of its `ServiceDesc`).
fn rel_desc() -> Vec<u8> {
    let spec = <RelClient as hvrpc::ServiceDef>::spec().unwrap();
    postcard::to_allocvec(spec.desc()).unwrap()
}

/// A peer that completes the handshake (serving `Rel` as this build defines it) and
/// then reads everything and answers nothing.
async fn silent_peer() -> DuplexStream {
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let mut hello = vec![0u8, 0];
        varint(16 << 20, &mut hello);
        varint(256, &mut hello);
        hello.push(1);
        hello.extend(rel_desc());
        hello.extend_from_slice(&[0, 0]);
        let mut out = b"HVRPC\x02\0\0".to_vec();
        out.extend(framed(&hello));
        theirs.write_all(&out).await.unwrap();
        let mut sink = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = theirs.read(&mut sink).await {
            let _ = n;
        }
    });
    ours
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_a_silent_peer_times_out_locally() {
    let io = silent_peer().await;
    let conn = Connector::new()
        .want::<RelClient>()
        .connect_io(io, PeerAddr::Unix(None))
        .await
        .unwrap();
    let client = RelClient::new(conn).with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let r = timeout(Duration::from_secs(5), async {
        let mut s = client.count(3).await?;
        s.next().await.unwrap_or(Ok(0)).map(|_| ())
    })
    .await
    .expect("a stream with a 200 ms deadline to a silent peer never ended");
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// 5. Waiting for send-buffer space ignores the call's deadline.

/// The peer's side of a raw connection: its opening sent (serving `Rel` with the client's
/// definition, 16 MiB frames), the other side's opening read.
async fn raw_server_opening<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let mut hello = vec![0u8, 0];
    varint(16 << 20, &mut hello);
    varint(256, &mut hello);
    hello.push(1);
    hello.extend(rel_desc());
    hello.extend_from_slice(&[0, 0]);
    let mut out = b"HVRPC\x02\0\0".to_vec();
    out.extend(framed(&hello));
    io.write_all(&out).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_send_buffer_space_honours_the_deadline() {
    // A peer that completes the handshake and then never reads: the client's writes fill the
    // pipe, then its send buffer.
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    raw_server_opening(&mut theirs).await;
    let mut config = Config::default();
    config.send_buffer = 64 * 1024;
    let conn = Connector::new()
        .config(config)
        .want::<RelClient>()
        .connect_io(ours, PeerAddr::Unix(None))
        .await
        .unwrap();
    let client = RelClient::new(conn);
    let patient = client.with_options(CallOptions::default().no_timeout());
    // Each queued request costs up to `send_buffer` of the budget, which is at least 1 MiB.
    for _ in 0..20 {
        let c = patient.clone();
        tokio::spawn(async move { c.upload(vec![1u8; 1 << 20]).await });
    }
    sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = timeout(
        Duration::from_secs(5),
        client
            .with_timeout(Duration::from_millis(200))
            .upload(vec![1u8; 512 * 1024]),
    )
    .await
    .expect("a call waiting for send-buffer space overshot its deadline without bound");
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(theirs);
}

// ---------------------------------------------------------------------------------------------
// 7. Requests racing the idle timeout vanish.

/// Reads frames until one of `kind` arrives; returns its payload.
async fn frame_of_kind<S: AsyncRead + Unpin>(io: &mut S, kind: u8) -> Vec<u8> {
    loop {
        let p = timeout(Duration::from_secs(10), read_frame(io))
            .await
            .unwrap_or_else(|_| panic!("no frame of kind {kind} within 10 s"))
            .unwrap_or_else(|| panic!("the connection ended before a frame of kind {kind}"));
        if p[0] == kind {
            return p;
        }
    }
}

/// A raw client connected to a server serving `Rel` through `config`.
async fn raw_client(config: Config) -> DuplexStream {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let srv = Server::new()
        .config(config)
        .add_service(RelServer::new(Imp::default()));
    tokio::spawn(async move {
        if let Ok(conn) = srv.serve_io(a, PeerAddr::Unix(None)).await {
            conn.closed().await;
        }
    });
    b.write_all(&opening()).await.unwrap();
    let mut preamble = [0u8; 8];
    b.read_exact(&mut preamble).await.unwrap();
    assert_eq!(read_frame(&mut b).await.unwrap()[0], 0, "no Hello");
    b
}

/// The status of a Response payload: `None` for Ok, else the error code and message.
fn response_status(p: &[u8]) -> (u64, Option<(u64, String)>) {
    assert_eq!(p[0], 2, "not a Response: {p:?}");
    let mut at = 1;
    let id = read_varint(p, &mut at);
    match p[at] {
        0 => (id, None),
        1 => {
            at += 1;
            let code = read_varint(p, &mut at);
            let len = read_varint(p, &mut at) as usize;
            let msg = String::from_utf8_lossy(&p[at..at + len]).into_owned();
            (id, Some((code, msg)))
        }
        other => panic!("bad status {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_the_idle_timeout_are_answered() {
    let mut config = Config::server();
    config.idle_timeout = Some(Duration::from_millis(300));
    let mut io = raw_client(config).await;
    // The server goes idle and says so; a request of ours is already on its way.
    frame_of_kind(&mut io, 8).await;
    io.write_all(&request(1, 0, 4, &[])).await.unwrap();
    // Answer any ping the server sends to learn that we have read its GoAway.
    let answered = timeout(Duration::from_secs(10), async {
        loop {
            let p = read_frame(&mut io).await?;
            match p[0] {
                2 => return Some(response_status(&p)),
                6 => {
                    let mut pong = p.clone();
                    pong[0] = 7;
                    io.write_all(&framed(&pong)).await.unwrap();
                }
                _ => {}
            }
        }
    })
    .await
    .expect("neither an answer nor the end");
    let (id, status) = answered.expect("a request on the wire when the server went idle vanished");
    assert_eq!(id, 1);
    // Either it ran (7) or it is refused as shutting down: never silence.
    if let Some((code, msg)) = status {
        assert_eq!(code, 8, "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. A blocking handler stalls the whole connection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_does_not_stall_other_calls() {
    let (client, _server, _) = pair(Config::server(), Config::default()).await;
    let blocking = tokio::spawn({
        let c = client.clone();
        async move { c.block(2000).await }
    });
    sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert_eq!(client.quick().await.unwrap(), 7);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(800),
        "a quick call waited {took:?} behind a blocking handler"
    );
    assert_eq!(blocking.await.unwrap().unwrap(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_does_not_get_the_connection_killed_by_keepalive() {
    let (client, server, _) = pair(
        quick_keepalive(Config::server()),
        quick_keepalive(Config::default()),
    )
    .await;
    // Blocks its thread for longer than the client's keepalive timeout.
    let r = client.block(2500).await;
    assert_eq!(r.unwrap(), 2500, "the healthy peer was declared dead");
    assert!(!server.is_closed());
}

/// A blocking method marked `#[hvrpc(blocking)]` runs off the runtime's threads: even a
/// single-threaded server keeps answering other calls meanwhile.
#[test]
fn a_marked_blocking_method_leaves_a_single_threaded_server_responsive() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let srv = Server::new().add_service(RelServer::new(Imp::default()));
            let conn = srv.serve_io(a, PeerAddr::Unix(None)).await.unwrap();
            conn.closed().await;
        })
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connector::new()
            .want::<RelClient>()
            .connect_io(b, PeerAddr::Unix(None))
            .await
            .unwrap();
        let client = RelClient::new(conn);
        let blocking = tokio::spawn({
            let c = client.clone();
            async move { c.block_marked(1500).await }
        });
        sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        assert_eq!(client.quick().await.unwrap(), 7);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(700),
            "quick call took {took:?}"
        );
        assert_eq!(blocking.await.unwrap().unwrap(), 1500);
        client.channel().connection().await.unwrap().close();
    });
    server.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 9. A hostile peer can pin handlers forever.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_request_with_no_window_is_refused() {
    let mut io = raw_client(Config::server()).await;
    // count(3), a streaming method, with window 0.
    io.write_all(&request(1, 0, 6, &varint_arg(3)))
        .await
        .unwrap();
    let p = frame_of_kind(&mut io, 2).await;
    let (id, status) = response_status(&p);
    assert_eq!(id, 1);
    let (code, msg) = status.expect("a stream without credit was accepted");
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("window"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_deadline_end_at_the_servers_maximum() {
    let mut config = Config::server();
    config.max_deadline = Some(Duration::from_millis(300));
    let (client, server, _) = pair(config, Config::default()).await;
    let started = Instant::now();
    let r = timeout(
        Duration::from_secs(5),
        client
            .with_options(CallOptions::default().no_timeout())
            .forever(),
    )
    .await
    .expect("a call without a deadline outlived the server's maximum");
    assert!(
        matches!(
            r,
            Err(Error::Remote {
                code: ErrorCode::DeadlineExceeded,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(server.incoming_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_requests_waiting_for_handlers_are_bounded_in_bytes() {
    let mut config = Config::server();
    config.max_request_bytes = 1 << 20;
    let mut io = raw_client(config).await;
    // Ten requests of 256 KiB each to a handler that holds them for a minute.
    let mut args = varint_arg(60_000);
    varint(256 * 1024, &mut args);
    args.extend(vec![9u8; 256 * 1024]);
    for id in 1..=10u64 {
        io.write_all(&request(id, 0, 8, &args)).await.unwrap();
    }
    // Three fit in 1 MiB (each body is a little over 256 KiB); the other seven are refused.
    let mut refused = Vec::new();
    while refused.len() < 7 {
        let p = frame_of_kind(&mut io, 2).await;
        let (id, status) = response_status(&p);
        let (code, msg) = status.expect("a held call answered");
        assert_eq!(code, 7, "{msg}");
        assert!(msg.contains("too many bytes"), "{msg}");
        refused.push(id);
    }
    assert_eq!(refused, (4..=10).collect::<Vec<_>>());
    // Room comes back as held calls end: a 256 KiB upload is refused, then, once one held call
    // is cancelled, admitted.
    let mut upload = Vec::new();
    varint(256 * 1024, &mut upload);
    upload.extend(vec![1u8; 256 * 1024]);
    io.write_all(&request(11, 0, 7, &upload)).await.unwrap();
    let (id, status) = response_status(&frame_of_kind(&mut io, 2).await);
    assert_eq!((id, status.map(|s| s.0)), (11, Some(7)));
    io.write_all(&id_frame(5, 1, None)).await.unwrap();
    io.write_all(&request(12, 0, 7, &upload)).await.unwrap();
    let (id, status) = response_status(&frame_of_kind(&mut io, 2).await);
    assert_eq!((id, status), (12, None));
}

// ---------------------------------------------------------------------------------------------
// 11. Error frames ignore the peer's `max_frame`; 12. violations close silently.

/// An opening like `opening()` but announcing `max_frame`.
fn opening_with_max_frame(max_frame: u64) -> Vec<u8> {
    let mut hello = vec![0u8, 0];
    varint(max_frame, &mut hello);
    varint(16, &mut hello);
    hello.extend_from_slice(&[0, 0, 0]);
    let mut out = b"HVRPC\x02\0\0".to_vec();
    out.extend(framed(&hello));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_fit_the_peers_frame_limit() {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let srv = Server::new().add_service(RelServer::new(Imp::default()));
    tokio::spawn(async move {
        if let Ok(conn) = srv.serve_io(a, PeerAddr::Unix(None)).await {
            conn.closed().await;
        }
    });
    // The smallest frame limit a peer may announce.
    b.write_all(&opening_with_max_frame(1024)).await.unwrap();
    let mut preamble = [0u8; 8];
    b.read_exact(&mut preamble).await.unwrap();
    assert_eq!(read_frame(&mut b).await.unwrap()[0], 0);
    // A handler that panics with a long message: a long `Internal` error.
    let long = "x".repeat(5000);
    b.write_all(&request(1, 0, 9, &string_arg(&long)))
        .await
        .unwrap();
    let p = frame_of_kind(&mut b, 2).await;
    assert!(
        p.len() <= 1024,
        "an error response of {} bytes to a peer that takes 1024",
        p.len()
    );
    let (_, status) = response_status(&p);
    assert!(status.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_below_the_minimum_frame_limit_is_refused_with_a_reason() {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let srv = Server::new().add_service(RelServer::new(Imp::default()));
    let server =
        tokio::spawn(async move { srv.serve_io(a, PeerAddr::Unix(None)).await.map(|_| ()) });
    b.write_all(&opening_with_max_frame(40)).await.unwrap();
    let mut preamble = [0u8; 8];
    b.read_exact(&mut preamble).await.unwrap();
    assert_eq!(read_frame(&mut b).await.unwrap()[0], 0);
    let p = frame_of_kind(&mut b, 8).await;
    let reason = String::from_utf8_lossy(&p[2..]).into_owned();
    assert!(reason.contains("max_frame"), "{reason}");
    let err = server.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("max_frame"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_violation_is_explained_to_the_peer_before_closing() {
    let mut io = raw_client(Config::server()).await;
    // A frame of an unknown kind.
    io.write_all(&framed(&[99, 1, 2, 3])).await.unwrap();
    let p = frame_of_kind(&mut io, 8).await;
    let reason = String::from_utf8_lossy(&p[2..]).into_owned();
    assert!(reason.contains("protocol violation"), "{reason}");
    assert!(
        timeout(Duration::from_secs(5), read_frame(&mut io))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_tells_the_peer_why() {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let srv = Server::new().add_service(RelServer::new(Imp::default()));
    tokio::spawn(async move { srv.serve_io(a, PeerAddr::Unix(None)).await.map(|_| ()) });
    // A Hello that requires (strictly) a service the server does not serve.
    let mut hello = vec![0u8, 0];
    varint(1 << 20, &mut hello);
    varint(16, &mut hello);
    hello.push(0); // services: none
    hello.push(1); // wants: one
    hello.extend(string_arg("Nope"));
    hello.push(1); // strict
    hello.push(0); // no methods
    hello.push(0); // agent ""
    let mut out = b"HVRPC\x02\0\0".to_vec();
    out.extend(framed(&hello));
    b.write_all(&out).await.unwrap();
    let mut preamble = [0u8; 8];
    b.read_exact(&mut preamble).await.unwrap();
    assert_eq!(read_frame(&mut b).await.unwrap()[0], 0);
    let p = frame_of_kind(&mut b, 8).await;
    let reason = String::from_utf8_lossy(&p[2..]).into_owned();
    assert!(reason.contains("Nope"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// 13. Spec gaps: a zero deadline.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_deadline_has_passed_for_unary_and_streaming_calls_alike() {
    let mut io = raw_client(Config::server()).await;
    let with_zero_deadline = |id: u64, method: u64, window: u64, args: &[u8]| {
        let mut p = vec![1u8];
        varint(id, &mut p);
        varint(0, &mut p);
        varint(method, &mut p);
        p.push(1);
        p.push(0); // timeout_ms Some(0)
        varint(window, &mut p);
        p.extend_from_slice(args);
        framed(&p)
    };
    io.write_all(&with_zero_deadline(1, 4, 0, &[]))
        .await
        .unwrap(); // quick()
    io.write_all(&with_zero_deadline(2, 6, 4, &varint_arg(3)))
        .await
        .unwrap(); // count(3)
    for want in [1u64, 2] {
        let p = frame_of_kind(&mut io, 2).await;
        let (id, status) = response_status(&p);
        assert_eq!(id, want);
        let (code, msg) = status.expect("a call with a zero deadline ran");
        assert_eq!(code, 4, "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// 15. The peer's concurrency limit taken as it is.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_concurrency_limit_from_the_peer_is_clamped() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    let mut hello = vec![0u8, 0];
    varint(1 << 20, &mut hello);
    varint(u64::from(u32::MAX), &mut hello);
    hello.push(1);
    hello.extend(rel_desc());
    hello.extend_from_slice(&[0, 0]);
    let mut out = b"HVRPC\x02\0\0".to_vec();
    out.extend(framed(&hello));
    theirs.write_all(&out).await.unwrap();
    let conn = Connector::new()
        .want::<RelClient>()
        .connect_io(ours, PeerAddr::Unix(None))
        .await
        .unwrap();
    assert!(!conn.is_closed());
}

/// Spec: a caller ignores a Response for a call it has given up on (it may cross the Cancel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_frames_for_cancelled_calls_are_ignored() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    raw_server_opening(&mut theirs).await;
    let conn = Connector::new()
        .want::<RelClient>()
        .connect_io(ours, PeerAddr::Unix(None))
        .await
        .unwrap();
    let client = RelClient::new(conn.clone());
    let mut preamble = [0u8; 8];
    theirs.read_exact(&mut preamble).await.unwrap();
    assert_eq!(read_frame(&mut theirs).await.unwrap()[0], 0);
    // A call that times out; its request reaches the peer, then its Cancel.
    let r = client.with_timeout(Duration::from_millis(50)).quick().await;
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
    let req = frame_of_kind(&mut theirs, 1).await;
    let mut at = 1;
    let id = read_varint(&req, &mut at);
    let cancel = frame_of_kind(&mut theirs, 5).await;
    assert_eq!(cancel, id_frame(5, id, None)[4..]);
    // The peer answers anyway, late; and an item for it.
    let mut late = vec![2u8];
    varint(id, &mut late);
    late.extend([0, 7]);
    theirs.write_all(&framed(&late)).await.unwrap();
    theirs.write_all(&id_frame(3, id, None)).await.unwrap();
    // The connection is fine: the next call goes out and is answered.
    let next = tokio::spawn(async move { client.quick().await });
    let req = frame_of_kind(&mut theirs, 1).await;
    let mut at = 1;
    let id2 = read_varint(&req, &mut at);
    assert!(id2 > id, "ids are not reused");
    let mut answer = vec![2u8];
    varint(id2, &mut answer);
    answer.extend([0, 9]);
    theirs.write_all(&framed(&answer)).await.unwrap();
    assert_eq!(next.await.unwrap().unwrap(), 9);
    assert!(!conn.is_closed());
}

/// Spec: the Hello limit counts the payload, not the 4-byte length: 65 536 is accepted,
/// 65 537 refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hello_limit_counts_the_payload_only() {
    for (payload, accepted) in [(65_536usize, true), (65_537, false)] {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let srv = Server::new().add_service(RelServer::new(Imp::default()));
        let server =
            tokio::spawn(async move { srv.serve_io(a, PeerAddr::Unix(None)).await.map(|_| ()) });
        let mut hello = vec![0u8, 0];
        varint(1 << 20, &mut hello);
        varint(16, &mut hello);
        hello.extend_from_slice(&[0, 0]);
        // The agent string fills the rest: its varint length takes 3 bytes here.
        let agent = payload - hello.len() - 3;
        varint(agent as u64, &mut hello);
        hello.extend(vec![b'a'; agent]);
        assert_eq!(hello.len(), payload);
        let mut out = b"HVRPC\x02\0\0".to_vec();
        out.extend(framed(&hello));
        b.write_all(&out).await.unwrap();
        let r = timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.is_ok(), accepted, "{payload}: {r:?}");
        if let Err(e) = r {
            assert!(
                e.to_string().contains("65537 bytes, more than 65536"),
                "{e}"
            );
        }
    }
}

/// Spec: a frame kind is a varint; one of 128 or more is unknown, a violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_kind_beyond_the_known_ones_is_a_violation() {
    let mut io = raw_client(Config::server()).await;
    io.write_all(&framed(&[0x80, 0x01, 0])).await.unwrap();
    let p = frame_of_kind(&mut io, 8).await;
    let reason = String::from_utf8_lossy(&p[2..]).into_owned();
    assert!(reason.contains("bad frame header"), "{reason}");
}
