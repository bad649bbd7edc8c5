//! Client-streaming and bidirectional methods end to end: the caller's input stream is
//! flow-controlled (a slow handler never makes either side buffer more than the credit),
//! the two directions of a bidirectional call are independent, typed errors, early answers,
//! cancellation from either side, deadlines, and a failing input stream.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hvrpc::{Bytes, Context, Error, ErrorCode, Server, Streaming};
use serde::{Deserialize, Serialize};

/// The service's own error.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum UpError {
    /// A number it will not add.
    Unlucky(u64),
}

#[hvrpc::service(port = 0x4872)]
pub trait Up {
    /// Sums `start` and the items; 13 is refused with a typed error.
    async fn sum(start: u64, items: Streaming<u64>) -> Result<u64, UpError>;
    /// Counts the bytes uploaded under `name`.
    async fn upload(name: String, data: Streaming<Bytes>) -> (String, u64);
    /// Answers each line with `prefix` and the line, as it comes.
    async fn shell(prefix: String, input: Streaming<String>) -> Streaming<String>;
    /// Reads `n` items and answers with them, leaving the rest unread.
    async fn first(n: u32, items: Streaming<u32>) -> Vec<u32>;
    /// Reads nothing until told to (`Impl::release`), then everything.
    async fn slow(items: Streaming<Bytes>) -> u64;
    /// Echoes lines until the line `stop`, then ends its stream.
    async fn until(stop: String, input: Streaming<String>) -> Streaming<String>;
}

#[derive(Default)]
struct Impl {
    release: tokio::sync::Notify,
    slow_cancelled: AtomicBool,
    /// `until`'s stream was dropped (ended or stopped).
    until_dropped: Arc<AtomicBool>,
}

struct OnDrop(Arc<AtomicBool>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        // A slow drop widens the window in which a caller could see its call's outcome before
        // its stream was dropped: the engine must drop the stream before telling the peer.
        std::thread::sleep(Duration::from_millis(50));
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Up for Arc<Impl> {
    async fn sum(
        &self,
        _ctx: Context,
        start: u64,
        mut items: Streaming<u64>,
    ) -> Result<u64, UpError> {
        let mut total = start;
        while let Some(item) = items.next().await {
            let v = item.expect("an input item");
            if v == 13 {
                return Err(UpError::Unlucky(v));
            }
            total += v;
        }
        Ok(total)
    }

    async fn upload(
        &self,
        _ctx: Context,
        name: String,
        mut data: Streaming<Bytes>,
    ) -> (String, u64) {
        let mut n = 0;
        while let Some(chunk) = data.next().await {
            n += chunk.expect("a chunk").len() as u64;
        }
        (name, n)
    }

    async fn shell(
        &self,
        _ctx: Context,
        prefix: String,
        input: Streaming<String>,
    ) -> Streaming<String> {
        Streaming::new(input.map(move |line| format!("{prefix}{}", line.expect("a line"))))
    }

    async fn until(
        &self,
        _ctx: Context,
        stop: String,
        input: Streaming<String>,
    ) -> Streaming<String> {
        let guard = OnDrop(Arc::clone(&self.until_dropped));
        let lines = input
            .map(|line| line.expect("a line"))
            .take_while(move |line| std::future::ready(*line != stop))
            .map(move |line| {
                let _ = &guard;
                line
            });
        Streaming::new(lines)
    }

    async fn first(&self, _ctx: Context, n: u32, items: Streaming<u32>) -> Vec<u32> {
        items.take(n as usize).map(|i| i.unwrap()).collect().await
    }

    async fn slow(&self, _ctx: Context, mut items: Streaming<Bytes>) -> u64 {
        // Flags the handler being dropped before it finished (the call was stopped).
        struct Stopped(Arc<Impl>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                self.0.slow_cancelled.store(true, Ordering::SeqCst);
            }
        }
        let stopped = Stopped(Arc::clone(self));
        self.release.notified().await;
        let mut n = 0;
        while let Some(chunk) = items.next().await {
            n += chunk.unwrap().len() as u64;
        }
        std::mem::forget(stopped);
        n
    }
}

async fn start() -> (UpClient, Arc<Impl>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (listener, ep) = common::test_listener(&dir, "up.sock").await;
    let imp = Arc::new(Impl::default());
    let server = Server::new().add_service(UpServer::from_arc(Arc::new(Arc::clone(&imp))));
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    let client = UpClient::connect(&ep).await.unwrap();
    (client, imp, dir)
}

/// A stream of `n` items (`n = None`: endless) counting how many were pulled, and flagging
/// when it is dropped.
fn counted<T: Send + 'static>(
    n: Option<u64>,
    item: impl Fn(u64) -> T + Send + 'static,
    pulled: Arc<AtomicU64>,
    dropped: Arc<AtomicBool>,
) -> impl Stream<Item = T> + Send + 'static {
    let guard = OnDrop(dropped);
    futures_util::stream::iter(0..n.unwrap_or(u64::MAX)).map(move |i| {
        let _ = &guard;
        pulled.fetch_add(1, Ordering::SeqCst);
        item(i)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_is_summed_and_a_typed_error_comes_back_typed() {
    let (client, _imp, _dir) = start().await;
    assert_eq!(
        client
            .sum(5, Streaming::iter((0..1000u64).filter(|&v| v != 13)))
            .await
            .unwrap(),
        5 + 999 * 1000 / 2 - 13
    );
    // Empty input.
    assert_eq!(
        client
            .sum(7, Streaming::iter(Vec::<u64>::new()))
            .await
            .unwrap(),
        7
    );
    match client.sum(0, Streaming::iter([1u64, 13, 2])).await {
        Err(Error::Application(UpError::Unlucky(13))) => {}
        other => panic!("{other:?}"),
    }
    // The connection goes on.
    assert_eq!(client.sum(1, Streaming::iter([1u64])).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_arrives_whole() {
    let (client, _imp, _dir) = start().await;
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = 256; // 64 MiB
    let data = Streaming::iter(std::iter::repeat_n(chunk, chunks));
    let (name, n) = client.upload("big".into(), data).await.unwrap();
    assert_eq!(name, "big");
    assert_eq!(n, 256 * 1024 * chunks as u64);
    // Items larger than a frame (4 MiB by default) go in parts.
    let huge = Bytes::from(vec![1u8; 9 << 20]);
    let (_, n) = client
        .upload("huge".into(), Streaming::iter([huge.clone(), huge]))
        .await
        .unwrap();
    assert_eq!(n, 18 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_call_answers_each_line_before_the_next_is_sent() {
    let (client, _imp, _dir) = start().await;
    let (tx, input) = Streaming::channel(1);
    let mut out = client.shell("> ".into(), input).await.unwrap();
    for i in 0..50 {
        tx.send(format!("line {i}")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), out.next())
            .await
            .expect("the answer came while the input was still open")
            .unwrap()
            .unwrap();
        assert_eq!(got, format!("> line {i}"));
    }
    drop(tx);
    // The input ended: so does the output.
    assert!(out.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_stops_the_callers_stream() {
    let (client, _imp, _dir) = start().await;
    let pulled = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let endless = counted(
        None,
        |i| i as u32,
        Arc::clone(&pulled),
        Arc::clone(&dropped),
    );
    let got = client.first(3, Streaming::new(endless)).await.unwrap();
    assert_eq!(got, [0, 1, 2]);
    for _ in 0..500 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the endless input was never dropped"
    );
    // No more than the credit was ever pulled ahead of the handler.
    let n = pulled.load(Ordering::SeqCst);
    assert!(
        n <= 3 + 16 + 1,
        "{n} items pulled for a handler that read 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_holds_the_caller_to_its_credit_then_takes_everything() {
    let (client, imp, _dir) = start().await;
    let pulled = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let chunk = Bytes::from(vec![3u8; 64 * 1024]);
    let data = counted(
        Some(1000),
        move |_| chunk.clone(),
        Arc::clone(&pulled),
        Arc::clone(&dropped),
    );
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.slow(Streaming::new(data)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Memory bounded on both sides: the caller pulled the window (16) and at most one more.
    let n = pulled.load(Ordering::SeqCst);
    assert!(
        (1..=17).contains(&n),
        "{n} items pulled while the handler read none"
    );
    imp.release.notify_one();
    let total = call.await.unwrap().unwrap();
    assert_eq!(total, 1000 * 64 * 1024);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_call_cancels_the_handler_and_stops_the_input() {
    let (client, imp, _dir) = start().await;
    let pulled = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let data = counted(
        None,
        |_| Bytes::from_static(b"x"),
        Arc::clone(&pulled),
        Arc::clone(&dropped),
    );
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        client.slow(Streaming::new(data)),
    )
    .await;
    assert!(gave_up.is_err());
    for _ in 0..500 {
        if dropped.load(Ordering::SeqCst) && imp.slow_cancelled.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the caller's input was not dropped"
    );
    assert!(
        imp.slow_cancelled.load(Ordering::SeqCst),
        "the handler was not stopped"
    );
    // A deadline ends the call the same way.
    imp.slow_cancelled.store(false, Ordering::SeqCst);
    let e = client
        .with_timeout(Duration::from_millis(100))
        .slow(Streaming::iter([Bytes::from_static(b"y")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::DeadlineExceeded), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_input_stream_fails_the_call_and_stops_the_handler() {
    let (client, imp, _dir) = start().await;
    let failing = Streaming::try_new(futures_util::stream::iter([
        Ok(Bytes::from_static(b"a")),
        Err(Error::Encode("the local file could not be read".into())),
    ]));
    let e = client.slow(failing).await.unwrap_err();
    assert!(e.to_string().contains("could not be read"), "{e}");
    for _ in 0..500 {
        if imp.slow_cancelled.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        imp.slow_cancelled.load(Ordering::SeqCst),
        "the handler was not stopped"
    );
    // And a panicking one.
    let panicking = Streaming::new(futures_util::stream::iter(0..3u64).map(|i| {
        assert!(i < 1, "the caller's stream broke");
        i
    }));
    let e = client.sum(0, panicking).await.unwrap_err();
    assert!(format!("{e:?}").contains("panicked"), "{e:?}");
}

/// Waits (up to 5 s) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_call_ends_from_either_side() {
    let (client, imp, _dir) = start().await;
    // The handler ends its stream: the caller's stream ends, and its endless input is
    // dropped after at most about a window of items.
    let pulled = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let input = counted(
        None,
        |i| {
            if i == 3 {
                "stop".into()
            } else {
                format!("l{i}")
            }
        },
        Arc::clone(&pulled),
        Arc::clone(&dropped),
    );
    let got: Vec<String> = client
        .until("stop".into(), Streaming::new(input))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got, ["l0", "l1", "l2"]);
    eventually("the handler's stream was not dropped", || {
        imp.until_dropped.load(Ordering::SeqCst)
    })
    .await;
    eventually("the caller's input was not dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    let n = pulled.load(Ordering::SeqCst);
    assert!(n <= 4 + 2 * 16, "{n} items pulled from the endless input");

    // The caller drops its stream: the handler is stopped, and the input dropped.
    imp.until_dropped.store(false, Ordering::SeqCst);
    let dropped = Arc::new(AtomicBool::new(false));
    let input = counted(
        None,
        |i| format!("l{i}"),
        Arc::new(AtomicU64::new(0)),
        Arc::clone(&dropped),
    );
    let mut lines = client
        .until("never".into(), Streaming::new(input))
        .await
        .unwrap();
    assert_eq!(lines.next().await.unwrap().unwrap(), "l0");
    drop(lines);
    eventually("the handler was not stopped", || {
        imp.until_dropped.load(Ordering::SeqCst)
    })
    .await;
    eventually("the caller's input was not dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    // The connection goes on.
    let got: Vec<String> = client
        .until(
            "b".into(),
            Streaming::iter(["a".to_owned(), "b".to_owned()]),
        )
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(got, ["a"]);
}
