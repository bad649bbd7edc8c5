//! The gRPC service over hvrpc-transport endpoints, client and server in one process (TCP
//! loopback and a Unix socket), and the two binaries as a user runs them. Over AF_VSOCK and
//! hybrid vsock it runs in the test VM (`.ci/vm/suite`).

use std::time::Duration;

use grpc_over_hvsock::{CountRequest, MAX_COUNT, PingRequest};
use hvrpc_transport::{Endpoint, Listener};
use tokio::sync::oneshot;

/// Serves the agent on `endpoint`; the server stops when the returned sender is dropped.
async fn serve(endpoint: &str) -> (Endpoint, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = Listener::bind(&endpoint.parse().unwrap()).await.unwrap();
    let bound = listener.local_endpoint().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        grpc_over_hvsock::serve(listener, grpc_over_hvsock::Agent::default(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (bound, stop, task)
}

#[tokio::test]
async fn ping_echoes_and_the_handler_sees_the_callers_address() {
    let (endpoint, stop, server) = serve("tcp://127.0.0.1:0").await;
    let mut client = grpc_over_hvsock::connect(endpoint);
    let reply = client
        .ping(PingRequest {
            message: "hello".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "hello");
    // The peer is the client's own socket, as the server's transport saw it.
    assert!(reply.peer.starts_with("tcp://127.0.0.1:"), "{}", reply.peer);
    drop(stop);
    server.await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn works_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, _stop, _server) = serve(&format!(
        "unix://{}",
        dir.path().join("agent.sock").display()
    ))
    .await;
    let mut client = grpc_over_hvsock::connect(endpoint);
    let reply = client
        .ping(PingRequest {
            message: "over unix".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "over unix");
    assert_eq!(reply.peer, "unix://(unnamed)");
}

#[tokio::test]
async fn a_server_stream_delivers_every_item_and_bad_arguments_get_a_status() {
    let (endpoint, _stop, _server) = serve("tcp://127.0.0.1:0").await;
    let mut client = grpc_over_hvsock::connect(endpoint);
    let mut items = client
        .count(CountRequest { n: 1000 })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = items.message().await.unwrap() {
        seen.push(item.value);
    }
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());

    let refused = client
        .count(CountRequest { n: MAX_COUNT + 1 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("more than"), "{refused}");
}

#[tokio::test]
async fn a_client_of_a_server_that_is_not_there_gets_an_error_not_a_hang() {
    // Bind and drop: nobody listens on that port any more.
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let endpoint = listener.local_endpoint().clone();
    drop(listener);
    let mut client = grpc_over_hvsock::connect(endpoint);
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        client.ping(PingRequest {
            message: "anyone?".into(),
        }),
    )
    .await
    .expect("the call must end, not hang");
    assert_eq!(outcome.unwrap_err().code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn an_agent_with_a_call_budget_stops_after_answering_its_last_call() {
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let endpoint = listener.local_endpoint().clone();
    let (agent, spent) = grpc_over_hvsock::Agent::stopping_after(2);
    let server = tokio::spawn(grpc_over_hvsock::serve(listener, agent, spent));
    let mut client = grpc_over_hvsock::connect(endpoint);
    let ping = client
        .ping(PingRequest {
            message: "1".into(),
        })
        .await
        .unwrap();
    assert_eq!(ping.into_inner().message, "1");
    // The last call is a stream: it must still arrive whole while the server shuts down.
    let mut items = client
        .count(CountRequest { n: 500 })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(item) = items.message().await.unwrap() {
        assert_eq!(item.value, n);
        n += 1;
    }
    assert_eq!(n, 500);
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops after its budget")
        .unwrap()
        .unwrap();
}

#[cfg(target_os = "linux")]
mod binaries {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const GUEST: &str = env!("CARGO_BIN_EXE_grpc-guest");
    const HOST: &str = env!("CARGO_BIN_EXE_grpc-host");

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn guest_and_host_binaries_talk_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let ep = format!("unix://{}", sock.display());
        let _guest = Kill(
            Command::new(GUEST)
                .args(["--listen", &ep])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let started = Instant::now();
        while !sock.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "grpc-guest never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ping = Command::new(HOST)
            .args(["--connect", &ep, "ping", "hello"])
            .output()
            .unwrap();
        assert!(ping.status.success(), "{ping:?}");
        assert_eq!(
            String::from_utf8_lossy(&ping.stdout),
            "hello (the guest saw us as unix://(unnamed))\n"
        );
        let count = Command::new(HOST)
            .args(["--connect", &ep, "count", "3"])
            .output()
            .unwrap();
        assert!(count.status.success(), "{count:?}");
        assert_eq!(String::from_utf8_lossy(&count.stdout), "0\n1\n2\n");

        let nobody = format!("unix://{}", dir.path().join("nobody.sock").display());
        let failed = Command::new(HOST)
            .args(["--connect", &nobody, "--timeout", "5", "ping", "x"])
            .output()
            .unwrap();
        assert!(!failed.status.success());
        let err = String::from_utf8_lossy(&failed.stderr);
        assert!(err.contains(&nobody), "the error names the endpoint: {err}");
    }

    /// The guide's shell lines for these binaries are the ones the test above runs, endpoints
    /// aside: each parses (`--help` after its flags would not say, so it runs against an
    /// endpoint nobody serves and must fail at connecting, not at its arguments).
    #[test]
    fn the_guides_commands_are_the_ones_tested() {
        let guide = include_str!("../../../docs/GUIDE.md");
        let dir = tempfile::tempdir().unwrap();
        let nobody = format!("unix://{}", dir.path().join("nobody.sock").display());
        let mut seen = 0;
        for line in guide.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["grpc-guest", "--listen", endpoint] => {
                    assert!(endpoint.parse::<super::Endpoint>().is_ok(), "{line}");
                    seen += 1;
                }
                ["grpc-host", "--connect", endpoint, rest @ ..] => {
                    assert!(endpoint.parse::<super::Endpoint>().is_ok(), "{line}");
                    let o = Command::new(HOST)
                        .args(["--connect", &nobody, "--timeout", "5"])
                        .args(rest)
                        .output()
                        .unwrap();
                    let err = String::from_utf8_lossy(&o.stderr);
                    assert!(
                        !o.status.success() && err.contains(&nobody),
                        "{line}: {err}"
                    );
                    seen += 1;
                }
                [first, ..] if first.starts_with("grpc-") => panic!("untested: {line}"),
                _ => {}
            }
        }
        assert_eq!(seen, 2, "the guide's grpc lines");
    }
}
