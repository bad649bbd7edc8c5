//! End to end: generated clients and servers over Unix sockets and in-memory pipes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hvrpc::{Config, Connector, Context, Endpoint, Error, ErrorCode, PeerAddr, Server, Streaming};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

/// The calculator's own error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// b was 0.
    DivideByZero,
}

impl std::fmt::Display for MathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("divide by zero")
    }
}

/// A calculator.
#[hvrpc::service(port = 0x4856)]
pub trait Calc {
    /// Adds.
    async fn add(a: u64, b: u64) -> u64;
    /// Echoes.
    async fn echo(data: Vec<u8>) -> Vec<u8>;
    /// Echoes, zero-copy.
    async fn echo_bytes(data: hvrpc::Bytes) -> hvrpc::Bytes;
    /// `a`, `sep`, `b`: byte strings before the last argument, and a `Vec<u8>` last.
    async fn splice(a: Vec<u8>, b: hvrpc::Bytes, sep: u8, tail: Vec<u8>) -> hvrpc::Bytes;
    /// `n` bytes of `fill`.
    async fn blob(n: u32, fill: u8) -> hvrpc::Bytes;
    /// Divides, or fails typed.
    async fn divide(a: i64, b: i64) -> Result<i64, MathError>;
    /// Sleeps, tracking whether it was stopped.
    async fn sleep(ms: u64);
    /// Panics.
    async fn boom() -> String;
    /// Panics after waiting once (so the handler runs in a task of its own, not inline).
    async fn boom_later() -> String;
    /// Counts from 0 to n-1.
    async fn count(n: u32) -> hvrpc::Streaming<u32>;
    /// Counts up to `n`, failing with the method's own error at `fail_at`.
    async fn count_checked(n: u32, fail_at: u32) -> hvrpc::Streaming<Result<u32, MathError>>;
    /// Who is calling.
    async fn whoami() -> String;
}

#[derive(Default)]
struct Stats {
    started: AtomicUsize,
    dropped_early: AtomicUsize,
    produced: AtomicUsize,
}

#[derive(Clone, Default)]
struct CalcImpl {
    stats: Arc<Stats>,
}

/// Counts handlers that were dropped before finishing.
struct DropProbe<'a> {
    stats: &'a Stats,
    finished: bool,
}

impl Drop for DropProbe<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.dropped_early.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Calc for CalcImpl {
    async fn add(&self, _ctx: Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, _ctx: Context, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn echo_bytes(&self, _ctx: Context, data: hvrpc::Bytes) -> hvrpc::Bytes {
        data
    }

    async fn splice(
        &self,
        _ctx: Context,
        a: Vec<u8>,
        b: hvrpc::Bytes,
        sep: u8,
        tail: Vec<u8>,
    ) -> hvrpc::Bytes {
        [&a[..], &[sep], &b[..], &[sep], &tail[..]].concat().into()
    }

    async fn blob(&self, _ctx: Context, n: u32, fill: u8) -> hvrpc::Bytes {
        vec![fill; n as usize].into()
    }

    async fn divide(&self, _ctx: Context, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivideByZero)
    }

    async fn sleep(&self, _ctx: Context, ms: u64) {
        self.stats.started.fetch_add(1, Ordering::SeqCst);
        let mut probe = DropProbe {
            stats: &self.stats,
            finished: false,
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        probe.finished = true;
    }

    async fn boom(&self, _ctx: Context) -> String {
        panic!("kaboom")
    }

    async fn boom_later(&self, _ctx: Context) -> String {
        tokio::task::yield_now().await;
        panic!("kaboom later")
    }

    async fn count(&self, _ctx: Context, n: u32) -> Streaming<u32> {
        let stats = Arc::clone(&self.stats);
        Streaming::new(futures_util::stream::iter(0..n).map(move |i| {
            stats.produced.fetch_add(1, Ordering::SeqCst);
            i
        }))
    }

    async fn count_checked(
        &self,
        _ctx: Context,
        n: u32,
        fail_at: u32,
    ) -> Streaming<Result<u32, MathError>> {
        let stats = Arc::clone(&self.stats);
        Streaming::new(futures_util::stream::iter(0..n).map(move |i| {
            stats.produced.fetch_add(1, Ordering::SeqCst);
            if i == fail_at {
                Err(MathError::DivideByZero)
            } else {
                Ok(i)
            }
        }))
    }

    async fn whoami(&self, ctx: Context) -> String {
        ctx.peer().to_string()
    }
}

/// A server on the test transport; returns the endpoint and the shared stats.
async fn unix_server(config: Config) -> (Endpoint, Arc<Stats>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (listener, ep) = common::test_listener(&dir, "calc.sock").await;
    let imp = CalcImpl::default();
    let stats = Arc::clone(&imp.stats);
    let server = Server::new()
        .config(config)
        .add_service(CalcServer::new(imp));
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    (ep, stats, dir)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn unary_calls_and_typed_errors() {
    let (ep, _, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    assert_eq!(c.add(2, 3).await.unwrap(), 5);
    assert_eq!(c.echo(b"hi".to_vec()).await.unwrap(), b"hi");
    assert_eq!(c.divide(10, 3).await.unwrap(), 3);
    match c.divide(1, 0).await {
        Err(Error::Application(MathError::DivideByZero)) => {}
        other => panic!("expected the typed application error, got {other:?}"),
    }
    c.sleep(1).await.unwrap();
    let me = c.whoami().await.unwrap();
    assert!(
        me == "unix://(unnamed)"
            || me.starts_with("tcp://127.0.0.1:")
            || me.starts_with("vsock://1:"),
        "{me}"
    );
}

#[tokio::test]
async fn thousand_concurrent_calls_on_one_connection() {
    let (ep, _, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    let calls = (0..1000u64).map(|i| {
        let c = c.clone();
        async move { (i, c.add(i, 1000).await) }
    });
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(results.len(), 1000);
    for (i, r) in results {
        assert_eq!(r.unwrap(), i + 1000, "call {i}");
    }
}

#[tokio::test]
async fn handler_panic_is_an_internal_error_and_server_survives() {
    let (ep, _, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    let internal = |r: Result<String, Error>, what: &str| match r {
        Err(Error::Remote {
            code: ErrorCode::Internal,
            message,
        }) => assert!(message.contains(what), "{message}"),
        other => panic!("{other:?}"),
    };
    internal(c.boom().await, "the handler panicked: kaboom");
    assert_eq!(c.add(1, 1).await.unwrap(), 2);
    // The same for a handler that is not ready on its first poll (run in its own task).
    internal(c.boom_later().await, "the handler panicked: kaboom later");
    assert_eq!(c.add(2, 2).await.unwrap(), 4);
}

#[tokio::test]
async fn deadline_exceeded_stops_the_handler() {
    let (ep, stats, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    let err = c
        .with_timeout(Duration::from_millis(100))
        .sleep(60_000)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded), "{err:?}");
    wait_until("the handler was dropped", || {
        stats.dropped_early.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler() {
    let (ep, stats, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.sleep(60_000).await }
    });
    wait_until("the handler started", || {
        stats.started.load(Ordering::SeqCst) == 1
    })
    .await;
    call.abort();
    wait_until("the handler was dropped", || {
        stats.dropped_early.load(Ordering::SeqCst) == 1
    })
    .await;
    // The connection is still fine.
    assert_eq!(c.add(1, 2).await.unwrap(), 3);
}

#[tokio::test]
async fn server_streaming() {
    let (ep, _, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    let items: Vec<u32> = c
        .count(100)
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(items, (0..100).collect::<Vec<_>>());
}

/// A stream of `Result` items ends at the method's own error, which arrives typed; the server
/// pulls nothing after it.
#[tokio::test]
async fn server_stream_ends_with_a_typed_error() {
    let (ep, stats, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    let items: Vec<Result<u32, Error<MathError>>> =
        c.count_checked(100, 3).await.unwrap().collect().await;
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(
        items[..3]
            .iter()
            .map(|r| *r.as_ref().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(
        matches!(&items[3], Err(Error::Application(MathError::DivideByZero))),
        "{:?}",
        items[3]
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        stats.produced.load(Ordering::SeqCst),
        4,
        "nothing pulled after the error"
    );
    // Without an error, every item and then the end.
    let items: Vec<_> = c.count_checked(5, 99).await.unwrap().collect().await;
    assert_eq!(
        items.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

#[tokio::test]
async fn slow_consumer_bounds_what_the_server_produces() {
    let mut config = Config::server();
    config.stream_window = 8;
    let (ep, stats, _dir) = unix_server(config.clone()).await;
    let c = CalcClient::connect_with(&ep, Connector::new().config(config))
        .await
        .unwrap();
    let mut s = c.count(1_000_000).await.unwrap();
    for consumed in 1..=50usize {
        assert!(s.next().await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_millis(2)).await;
        let produced = stats.produced.load(Ordering::SeqCst);
        assert!(
            produced <= consumed + 8 + 1,
            "server produced {produced} items while the consumer took {consumed}"
        );
    }
    drop(s);
    let at_drop = stats.produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        stats.produced.load(Ordering::SeqCst) <= at_drop + 1,
        "the producer kept going"
    );
}

#[tokio::test]
async fn byte_strings_in_every_position_round_trip() {
    let (ep, _, _dir) = unix_server(Config::server()).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    for len in [0usize, 1, 127, 128, 16_384, 70_000, 1 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let got = c.echo_bytes(data.clone().into()).await.unwrap();
        assert_eq!(got, data, "echo_bytes of {len}");
        assert_eq!(c.echo(data.clone()).await.unwrap(), data, "echo of {len}");
        let spliced = c
            .splice(
                data.clone(),
                hvrpc::Bytes::from_static(b"mid"),
                b'|',
                vec![7; 3],
            )
            .await
            .unwrap();
        let want = [&data[..], b"|mid|", &[7, 7, 7]].concat();
        assert_eq!(spliced, want, "splice of {len}");
    }
    // Many at once on one connection (interleaved tails and small frames).
    let calls = (0..64u32).map(|i| {
        let c = c.clone();
        async move {
            let data = vec![i as u8; 1000 * i as usize];
            let (b, s) = tokio::join!(c.echo_bytes(data.clone().into()), c.add(i.into(), 1));
            assert_eq!(b.unwrap(), data);
            assert_eq!(s.unwrap(), u64::from(i) + 1);
        }
    });
    futures_util::future::join_all(calls).await;
}

#[tokio::test]
async fn a_result_over_the_callers_frame_limit_comes_in_parts_one_over_its_message_limit_fails() {
    const MAX: usize = 64 * 1024;
    let (ep, _, _dir) = unix_server(Config::server()).await;
    let mut config = Config::default();
    config.max_frame = MAX;
    config.max_message = 4 * MAX;
    let channel = Connector::new()
        .config(config)
        .want::<CalcClient>()
        .connect(&ep)
        .await
        .unwrap();
    let c = CalcClient::new(channel);
    assert_eq!(c.blob(1000, 3).await.unwrap(), vec![3u8; 1000]);
    // Over the frame limit: in parts.
    assert_eq!(c.blob(MAX as u32, 3).await.unwrap(), vec![3u8; MAX]);
    assert_eq!(c.blob(3 * MAX as u32, 4).await.unwrap(), vec![4u8; 3 * MAX]);
    // Over the message limit (the length's varint makes it one too many bytes).
    match c.blob(4 * MAX as u32, 3).await {
        Err(Error::Remote {
            code: ErrorCode::Internal,
            message,
        }) => assert!(
            message.contains("exceeds the caller's maximum message size of 262144 bytes"),
            "{message}"
        ),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    // Refused by the server before sending: the connection is still usable.
    assert_eq!(c.add(1, 1).await.unwrap(), 2);
}

#[tokio::test]
async fn message_limit_minus_one_limit_plus_one_and_every_size_around_the_frame_limit() {
    const FRAME: usize = 16 * 1024;
    const MAX: usize = 64 * 1024;
    let mut config = Config::server();
    config.max_frame = FRAME;
    config.max_message = MAX;
    let (ep, _, _dir) = unix_server(config).await;
    let c = CalcClient::connect(&ep).await.unwrap();
    // Whole frames, parts, and the sizes between.
    for len in (FRAME - 80)..(FRAME + 8) {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert_eq!(c.echo(data.clone()).await.unwrap(), data, "{len}");
    }
    // The arguments' body is the data's varint length (3 bytes here) and the data.
    let at_limit = MAX - 3;
    assert_eq!(
        c.echo(vec![1; at_limit - 1]).await.unwrap().len(),
        at_limit - 1
    );
    assert_eq!(c.echo(vec![1; at_limit]).await.unwrap().len(), at_limit);
    match c.echo(vec![1; at_limit + 1]).await {
        Err(Error::MessageTooLarge { len, max }) => assert_eq!((len, max), (MAX + 1, MAX)),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    // Refused locally: the connection is still usable.
    assert_eq!(c.add(1, 1).await.unwrap(), 2);
}

/// A Calc server on `server_io` and a client of it on `client_io` (the two ends of a pipe).
async fn over(
    server_io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    client_io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
) -> (hvrpc::Connection, CalcClient) {
    let server = Server::new().add_service(CalcServer::new(CalcImpl::default()));
    let (server_conn, client_conn) = tokio::join!(
        server.serve_io(server_io, PeerAddr::Unix(None)),
        Connector::new()
            .want::<CalcClient>()
            .connect_io(client_io, PeerAddr::Unix(None)),
    );
    (server_conn.unwrap(), CalcClient::new(client_conn.unwrap()))
}

#[tokio::test]
async fn peer_dies_mid_call_every_pending_call_errors() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (server_conn, c) = over(a, b).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.sleep(60_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server_conn.close();
    for call in calls {
        let r = timeout(Duration::from_secs(10), call)
            .await
            .expect("a call hung")
            .unwrap();
        assert!(matches!(r, Err(Error::ConnectionLost(_))), "{r:?}");
    }
    // A fixed connection does not come back: later calls fail fast.
    assert!(matches!(c.add(1, 1).await, Err(Error::ConnectionLost(_))));
}

/// Large payloads in flight both ways at once over a pipe far smaller than any of them: the
/// writer of each side blocks on the socket while its reader keeps draining the other side's
/// writes, so nothing deadlocks (containerd/ttrpc issue 72).
#[tokio::test]
async fn large_payloads_both_ways_over_a_tiny_pipe_do_not_deadlock() {
    let (a, b) = tokio::io::duplex(512);
    let server = Server::new().add_service(CalcServer::new(CalcImpl::default()));
    let (s, c) = tokio::join!(
        server.serve_io(a, PeerAddr::Unix(None)),
        Connector::new()
            .serve(CalcServer::new(CalcImpl::default()))
            .want::<CalcClient>()
            .connect_io(b, PeerAddr::Unix(None)),
    );
    let (s, c) = (s.unwrap(), c.unwrap());
    let to_server = CalcClient::new(c);
    let to_client = CalcClient::new(s);
    let payload = vec![7u8; 256 * 1024];
    let calls = (0..16).map(|i| {
        let (x, y, p) = (to_server.clone(), to_client.clone(), payload.clone());
        async move {
            let r = if i % 2 == 0 {
                x.echo(p).await
            } else {
                y.echo(p).await
            };
            r.unwrap().len()
        }
    });
    let lens = timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("deadlocked");
    assert!(lens.iter().all(|&n| n == payload.len()));
}

/// An I/O stream that stops moving bytes either way once `frozen` is set: a peer that is
/// still connected but hung (it answers nothing, not even keepalive pings, and never closes).
struct Freezable<T> {
    io: T,
    frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Freezable<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Freezable<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.frozen.load(Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The client enforces deadlines itself: against a server that has hung, every call ends with
/// `DeadlineExceeded` at its own deadline — a short one while a long one is pending too, and
/// the first call after a quiet spell.
#[tokio::test]
async fn deadlines_hold_against_a_hung_server() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = Freezable {
        io: a,
        frozen: Arc::clone(&frozen),
    };
    let (_server_conn, c) = over(a, b).await;
    assert_eq!(c.add(1, 2).await.unwrap(), 3);
    frozen.store(true, Ordering::SeqCst);

    // A call with the default deadline (30 s) stays pending ...
    let long = tokio::spawn({
        let c = c.clone();
        async move { c.add(3, 4).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // ... while shorter ones fail at theirs, not at the pending call's.
    for ms in [300u64, 100, 200] {
        let started = std::time::Instant::now();
        let r = timeout(
            Duration::from_secs(10),
            c.with_timeout(Duration::from_millis(ms)).add(5, 6),
        )
        .await
        .expect("the call outlived its deadline by seconds");
        let took = started.elapsed();
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        assert!(
            took >= Duration::from_millis(ms) && took < Duration::from_millis(ms + 2_000),
            "a {ms} ms deadline ended the call after {took:?}"
        );
    }
    // Several at once, in the opposite order of their deadlines.
    let started = std::time::Instant::now();
    let many = futures_util::future::join_all((1..=5u64).rev().map(|i| {
        let c = c.with_timeout(Duration::from_millis(100 * i));
        async move { (i, c.add(i, i).await, started.elapsed()) }
    }))
    .await;
    for (i, r, took) in many {
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        assert!(
            took >= Duration::from_millis(100 * i) && took < Duration::from_millis(100 * i + 2_000),
            "call {i}: {took:?}"
        );
    }
    assert!(!long.is_finished(), "the 30 s call ended early");
    long.abort();
}
