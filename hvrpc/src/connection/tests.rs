//! Connection tests with the peer played by hand.
use super::*;
use crate::error::ErrorCode;
use crate::protocol::{self, FrameBuf, PREAMBLE, Status};
use crate::schema::{MethodDef, MethodKind, SpecCell, trace_method};
use crate::service::{Context, Handler};
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
        services: vec![ServiceDesc {
            name: "S".into(),
            strict: false,
            methods: Vec::new(),
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
    let (conn, mut peer_r, peer_w) = with_fake_peer(Services::default(), Arc::clone(&armed)).await;
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
    let (conn, mut peer_r, mut peer_w) = with_fake_peer(Services::default(), Arc::default()).await;
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
    fn spec(&self) -> Result<Arc<ServiceSpec>, Arc<str>> {
        static SPEC: SpecCell = SpecCell::new();
        let m = |name| MethodDef {
            name,
            doc: "",
            kind: MethodKind::Unary,
            args: &[],
            trace: trace_method::<(), u64>,
        };
        SPEC.get("S", "", || vec![m("m0"), m("m1")])
    }
    fn method_name(&self, _: u32) -> Option<&'static str> {
        Some("m")
    }
    fn translate_args(&self, _: u32, _: &[u8], _: &Reading) -> Result<Bytes, String> {
        Err("not translated".into())
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
            // The Ping right behind a GoAway: its Pong shows the GoAway was read.
            (Header::Ping(n), _) => {
                peer_w.write_all(&framed(&Header::Pong(n))).await.unwrap();
            }
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

/// A connection that has closed lets go of its socket's read half at once, even while the
/// watchdog is looking at it (and so holds its task's state for a moment): the peer sees the
/// end then, not whenever the last reference goes. Found by the `server_session` fuzz target,
/// whose paused clock ran an hour ahead while the end waited on the watchdog's thread.
#[tokio::test(start_paused = true)]
async fn a_closed_connection_lets_go_of_its_read_half_while_the_watchdog_looks() {
    let (conn, _peer_r, mut peer_w) = with_fake_peer(Services::default(), Arc::default()).await;
    let looking = watchdog::look();
    conn.close();
    conn.closed().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written = peer_w.write_all(b"after the end").await;
    assert!(
        written.is_err(),
        "the closed connection still holds its read half"
    );
    drop(looking);
}
