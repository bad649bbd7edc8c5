//! Connection-level behaviour: handshake checks, bidirectional calls, several services per
//! listener, reconnects, keepalive, graceful shutdown, idle timeout and server limits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hvrpc::{Config, Connector, Context, Endpoint, Error, PeerAddr, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

mod v1 {
    /// Version 1 of a service.
    #[hvrpc::service(port = 5000)]
    pub trait Kv {
        /// Gets a value.
        async fn get(key: String) -> Option<String>;
    }
}

mod v2 {
    /// The same service, changed incompatibly.
    #[hvrpc::service(port = 5000)]
    pub trait Kv {
        /// Gets a value, now as bytes.
        async fn get(key: String) -> Option<Vec<u8>>;
    }
}

/// Greets.
#[hvrpc::service(port = 5001)]
pub trait Greeter {
    /// Greets.
    async fn greet(name: String) -> String;
    /// Sleeps.
    async fn nap(ms: u64) -> u64;
}

/// Served by the *client* side of a connection, called by the server.
#[hvrpc::service(port = 5002)]
pub trait Callback {
    /// Who are you?
    async fn name() -> String;
}

struct KvV1;
impl v1::Kv for KvV1 {
    async fn get(&self, _: Context, key: String) -> Option<String> {
        (key == "k").then(|| "v".to_owned())
    }
}

#[derive(Default, Clone)]
struct Greet {
    started: Arc<AtomicUsize>,
}
impl Greeter for Greet {
    async fn greet(&self, _: Context, name: String) -> String {
        self.started.fetch_add(1, Ordering::SeqCst);
        format!("hello {name}")
    }
    async fn nap(&self, _: Context, ms: u64) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

struct Cb(&'static str);
impl Callback for Cb {
    async fn name(&self, _: Context) -> String {
        self.0.to_owned()
    }
}

/// Binds the test transport and serves `server` in the background; returns the endpoint to
/// dial, a shutdown trigger and the serve task.
async fn spawn(
    server: Server,
    dir: &tempfile::TempDir,
    name: &str,
) -> (
    Endpoint,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (listener, bound) = common::test_listener(dir, name).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_with_shutdown(listener, async {
        let _ = rx.await;
    }));
    (bound, tx, task)
}

/// A method whose result type changed incompatibly: the connection stands (every other
/// method keeps working), the changed method fails with `Incompatible` naming the path, and it
/// fails *before* it runs on the peer.
#[tokio::test]
async fn changed_result_type_fails_that_method_only() {
    let server = Server::new().add_service(v1::KvServer::new(KvV1));
    let (a, b) = tokio::io::duplex(4096);
    let (s, c) = tokio::join!(
        server.serve_io(a, PeerAddr::Unix(None)),
        Connector::new()
            .want::<v2::KvClient>()
            .connect_io(b, PeerAddr::Unix(None)),
    );
    let (_s, c) = (s.unwrap(), c.unwrap());
    assert!(!c.peer_supports::<v2::KvClient>("get"));
    match v2::KvClient::new(c).get("k".into()).await {
        Err(Error::Incompatible(msg)) => assert!(
            msg.contains("Kv.get: result") && msg.contains("bytes here, string on the peer"),
            "{msg}"
        ),
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

/// The same change, but the client `require`s the service exactly: both sides refuse the
/// handshake and say why.
#[tokio::test]
async fn required_service_that_differs_is_refused_on_both_sides() {
    let server = Server::new().add_service(v1::KvServer::new(KvV1));
    let (a, b) = tokio::io::duplex(4096);
    let (s, c) = tokio::join!(
        server.serve_io(a, PeerAddr::Unix(None)),
        Connector::new()
            .require::<v2::KvClient>()
            .connect_io(b, PeerAddr::Unix(None)),
    );
    for (side, r) in [("server", s.map(|_| ())), ("client", c.map(|_| ()))] {
        match r {
            Err(Error::Handshake(msg)) => assert!(
                msg.contains("Kv.get") && msg.contains("required exactly"),
                "{side}: {msg}"
            ),
            other => panic!("{side}: expected a handshake error, got {other:?}"),
        }
    }
}

/// A service the peer does not serve: the connection stands, calls fail `Unimplemented`.
#[tokio::test]
async fn missing_service_is_unimplemented() {
    let server = Server::new().add_service(v1::KvServer::new(KvV1));
    let (a, b) = tokio::io::duplex(4096);
    let (s, c) = tokio::join!(
        server.serve_io(a, PeerAddr::Unix(None)),
        Connector::new()
            .want::<GreeterClient>()
            .connect_io(b, PeerAddr::Unix(None)),
    );
    let (_s, c) = (s.unwrap(), c.unwrap());
    match GreeterClient::new(c).greet("x".into()).await {
        Err(Error::Unimplemented(msg)) => assert!(
            msg.contains("does not serve Greeter (it serves: Kv)"),
            "{msg}"
        ),
        other => panic!("{other:?}"),
    }
}

/// ... and with `require`, the handshake is refused.
#[tokio::test]
async fn missing_required_service_is_refused() {
    let server = Server::new().add_service(v1::KvServer::new(KvV1));
    let (a, b) = tokio::io::duplex(4096);
    let (_, c) = tokio::join!(
        server.serve_io(a, PeerAddr::Unix(None)),
        Connector::new()
            .require::<GreeterClient>()
            .connect_io(b, PeerAddr::Unix(None)),
    );
    match c {
        Err(Error::Handshake(msg)) => assert!(
            msg.contains("does not serve Greeter (it serves: Kv)"),
            "{msg}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn not_an_hvrpc_peer() {
    let (a, mut b) = tokio::io::duplex(4096);
    let peer = tokio::spawn(async move {
        b.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut sink = vec![0u8; 1024];
        let _ = b.read(&mut sink).await;
    });
    match Connector::new().connect_io(a, PeerAddr::Unix(None)).await {
        Err(Error::Handshake(msg)) => assert!(msg.contains("not an hvrpc endpoint"), "{msg}"),
        other => panic!("{other:?}"),
    }
    peer.await.unwrap();
}

#[tokio::test]
async fn other_protocol_version() {
    let (a, mut b) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        b.write_all(b"HVRPC\x01\0\0").await.unwrap();
        let mut sink = vec![0u8; 1024];
        let _ = b.read(&mut sink).await;
    });
    match Connector::new().connect_io(a, PeerAddr::Unix(None)).await {
        Err(Error::Handshake(msg)) => assert!(
            msg.contains("the peer speaks version 1 (hvrpc 0.1")
                && msg.contains("this side version 2"),
            "{msg}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn silent_peer_hits_the_handshake_timeout() {
    let (a, _b) = tokio::io::duplex(4096);
    let mut config = Config::default();
    config.handshake_timeout = Duration::from_millis(100);
    match Connector::new()
        .config(config)
        .connect_io(a, PeerAddr::Unix(None))
        .await
    {
        Err(Error::Handshake(msg)) => {
            assert!(msg.contains("no handshake from the peer within"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn two_services_on_one_listener() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new()
        .add_service(v1::KvServer::new(KvV1))
        .add_service(GreeterServer::new(Greet::default()));
    let (ep, _stop, _task) = spawn(server, &dir, "two.sock").await;
    let kv = v1::KvClient::connect(&ep).await.unwrap();
    let greeter = GreeterClient::connect(&ep).await.unwrap();
    assert_eq!(kv.get("k".into()).await.unwrap().as_deref(), Some("v"));
    assert_eq!(greeter.greet("vm".into()).await.unwrap(), "hello vm");
    // One connection can carry both clients.
    let conn = kv.channel().connection().await.unwrap();
    let names: Vec<&str> = conn
        .peer_services()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["Kv", "Greeter", "hvrpc.Reflection"]);
    let greeter_same_conn = GreeterClient::new(conn);
    assert_eq!(
        greeter_same_conn.greet("x".into()).await.unwrap(),
        "hello x"
    );
}

#[tokio::test]
async fn bidirectional_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
    // The host serves Greeter and, on each connection, calls the guest's Callback back.
    let server = Server::new()
        .add_service(GreeterServer::new(Greet::default()))
        .on_connection(move |conn| {
            let names_tx = names_tx.clone();
            tokio::spawn(async move {
                let guest = CallbackClient::new(conn);
                let _ = names_tx.send(guest.name().await);
            });
        });
    let (ep, _stop, _task) = spawn(server, &dir, "bidi.sock").await;
    // The guest dials, serving Callback over the same connection.
    let guest = GreeterClient::connect_with(
        &ep,
        Connector::new().serve(CallbackServer::new(Cb("guest-7"))),
    )
    .await
    .unwrap();
    assert_eq!(guest.greet("host".into()).await.unwrap(), "hello host");
    let name = timeout(Duration::from_secs(10), names_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(name.unwrap(), "guest-7");
}

#[cfg(unix)]
#[tokio::test]
async fn reconnect_after_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A fixed endpoint, so that the second server is where the first one was.
    let ep = Endpoint::unix(dir.path().join("restart.sock"));
    let mut config = Config::server();
    config.shutdown_grace = Duration::from_millis(50);
    let first = Server::new()
        .config(config)
        .add_service(GreeterServer::new(Greet::default()));
    let (ep1, stop1, task1) = spawn_at(first, &ep).await;
    let client = GreeterClient::connect(&ep1).await.unwrap();
    assert_eq!(client.greet("a".into()).await.unwrap(), "hello a");
    // A call in flight when the server goes away fails; it is not re-sent.
    let inflight = tokio::spawn({
        let c = client.clone();
        async move { c.with_timeout(Duration::from_secs(30)).nap(10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop1.send(()).unwrap();
    let r = timeout(Duration::from_secs(20), inflight)
        .await
        .unwrap()
        .unwrap();
    match r {
        Err(Error::Remote {
            code: hvrpc::ErrorCode::Cancelled,
            message,
        }) => {
            assert!(message.contains("grace period is over"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    task1.await.unwrap();
    // While nothing listens, calls fail to connect.
    assert!(matches!(
        client.greet("b".into()).await,
        Err(Error::Connect(_))
    ));
    // A new server on the same endpoint: the next call reconnects.
    let (_ep2, _stop2, _task2) = spawn_at(
        Server::new().add_service(GreeterServer::new(Greet::default())),
        &ep,
    )
    .await;
    assert_eq!(client.greet("c".into()).await.unwrap(), "hello c");
}

/// Serves `server` on a given endpoint.
#[cfg(unix)]
async fn spawn_at(
    server: Server,
    ep: &Endpoint,
) -> (
    Endpoint,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = hvrpc::transport::Listener::bind(ep).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_with_shutdown(listener, async {
        let _ = rx.await;
    }));
    (ep.clone(), tx, task)
}

/// Forwards bytes between two pipes until told to stall (a paused VM): then nothing moves.
async fn stallable_link() -> (
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
    Arc<AtomicBool>,
) {
    let (client_end, mut a) = tokio::io::duplex(64 * 1024);
    let (server_end, mut b) = tokio::io::duplex(64 * 1024);
    let stalled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stalled);
    tokio::spawn(async move {
        let mut x = [0u8; 4096];
        let mut y = [0u8; 4096];
        loop {
            if flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            tokio::select! {
                n = a.read(&mut x) => match n { Ok(0) | Err(_) => break, Ok(n) => { let _ = b.write_all(&x[..n]).await; } },
                n = b.read(&mut y) => match n { Ok(0) | Err(_) => break, Ok(n) => { let _ = a.write_all(&y[..n]).await; } },
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    });
    (client_end, server_end, stalled)
}

#[tokio::test]
async fn keepalive_detects_a_paused_peer() {
    let mut config = Config::default();
    config.keepalive_interval = Duration::from_millis(100);
    config.keepalive_timeout = Duration::from_millis(300);
    config.default_deadline = None;
    let (c_end, s_end, stalled) = stallable_link().await;
    let server = Server::new().add_service(GreeterServer::new(Greet::default()));
    let (s, c) = tokio::join!(
        server.serve_io(s_end, PeerAddr::Unix(None)),
        Connector::new()
            .config(config)
            .want::<GreeterClient>()
            .connect_io(c_end, PeerAddr::Unix(None)),
    );
    let _server_conn = s.unwrap();
    let client = GreeterClient::new(c.unwrap());
    assert_eq!(client.greet("a".into()).await.unwrap(), "hello a");
    stalled.store(true, Ordering::SeqCst);
    // No deadline on this call: only keepalive can end it.
    let r = timeout(Duration::from_secs(10), client.nap(60_000))
        .await
        .expect("the call hung");
    match r {
        Err(Error::ConnectionLost(reason)) => {
            assert!(
                reason.contains("keepalive: the peer did not answer"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let imp = Greet::default();
    let started = Arc::clone(&imp.started);
    let (ep, stop, task) = spawn(
        Server::new().add_service(GreeterServer::new(imp)),
        &dir,
        "grace.sock",
    )
    .await;
    let client = GreeterClient::connect(&ep).await.unwrap();
    let inflight = tokio::spawn({
        let c = client.clone();
        async move { c.nap(300).await }
    });
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    // The call that was running completes normally within the grace period.
    assert_eq!(
        timeout(Duration::from_secs(10), inflight)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        300
    );
    timeout(Duration::from_secs(20), task)
        .await
        .expect("serve did not return")
        .unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_and_clients_redial() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::server();
    config.idle_timeout = Some(Duration::from_millis(150));
    let (ep, _stop, _task) = spawn(
        Server::new()
            .config(config)
            .add_service(GreeterServer::new(Greet::default())),
        &dir,
        "idle.sock",
    )
    .await;
    let client = GreeterClient::connect(&ep).await.unwrap();
    let first = client.channel().connection().await.unwrap();
    assert_eq!(client.greet("a".into()).await.unwrap(), "hello a");
    let reason = timeout(Duration::from_secs(10), first.closed())
        .await
        .expect("not closed");
    assert!(!reason.is_empty());
    assert_eq!(client.greet("b".into()).await.unwrap(), "hello b");
}

#[tokio::test]
async fn connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::server();
    config.max_connections = 2;
    let (ep, _stop, _task) = spawn(
        Server::new()
            .config(config)
            .add_service(GreeterServer::new(Greet::default())),
        &dir,
        "limit.sock",
    )
    .await;
    let a = GreeterClient::connect(&ep).await.unwrap();
    let b = GreeterClient::connect(&ep).await.unwrap();
    let third = GreeterClient::connect(&ep).await;
    assert!(third.is_err(), "a third connection was admitted");
    assert_eq!(a.greet("a".into()).await.unwrap(), "hello a");
    assert_eq!(b.greet("b".into()).await.unwrap(), "hello b");
}

#[tokio::test]
async fn unauthorized_peers_never_reach_a_handler() {
    let dir = tempfile::tempdir().unwrap();
    let imp = Greet::default();
    let started = Arc::clone(&imp.started);
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    let server = Server::new()
        .add_service(GreeterServer::new(imp))
        .authorize(move |_peer| {
            seen2.fetch_add(1, Ordering::SeqCst);
            false
        });
    let (ep, _stop, _task) = spawn(server, &dir, "auth.sock").await;
    assert!(GreeterClient::connect(&ep).await.is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn find_among_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let (greeter_ep, _s1, _t1) = spawn(
        Server::new().add_service(GreeterServer::new(Greet::default())),
        &dir,
        "g.sock",
    )
    .await;
    let (kv_ep, _s2, _t2) = spawn(
        Server::new().add_service(v1::KvServer::new(KvV1)),
        &dir,
        "kv.sock",
    )
    .await;
    let nobody = Endpoint::unix(dir.path().join("nobody.sock"));
    let candidates = vec![kv_ep.clone(), greeter_ep.clone(), nobody.clone()];
    let (found, failed) =
        hvrpc::discover::find::<GreeterClient>(candidates, Duration::from_secs(5)).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].endpoint, greeter_ep);
    assert_eq!(found[0].client.greet("x".into()).await.unwrap(), "hello x");
    assert_eq!(failed.len(), 2);
    assert!(
        matches!(&failed[0], (ep, Error::Unimplemented(_)) if *ep == kv_ep),
        "{failed:?}"
    );
    assert!(
        matches!(&failed[1], (ep, Error::Connect(_)) if *ep == nobody),
        "{failed:?}"
    );

    // Among live connections: only those whose peer serves the service.
    let kv_conn = v1::KvClient::connect(&kv_ep)
        .await
        .unwrap()
        .channel()
        .connection()
        .await
        .unwrap();
    let g_conn = GreeterClient::connect(&greeter_ep)
        .await
        .unwrap()
        .channel()
        .connection()
        .await
        .unwrap();
    let greeters = hvrpc::discover::among::<GreeterClient>([kv_conn, g_conn]);
    assert_eq!(greeters.len(), 1);
    assert_eq!(greeters[0].greet("y".into()).await.unwrap(), "hello y");
}
