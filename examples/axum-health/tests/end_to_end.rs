//! The axum health endpoint and the hyper check over hvrpc-transport endpoints, in one process
//! (TCP loopback, a Unix socket) and as the two binaries. Over AF_VSOCK and hybrid vsock it
//! runs in the test VM (`.ci/vm/suite`).

use std::time::Duration;

use axum_health::CheckError;
use hvrpc_transport::{Endpoint, Listener};
use tokio::sync::oneshot;

async fn serve(endpoint: &str) -> (Endpoint, oneshot::Sender<()>) {
    let listener = Listener::bind(&endpoint.parse().unwrap()).await.unwrap();
    let bound = listener.local_endpoint().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(axum_health::serve(listener, async {
        let _ = stopped.await;
    }));
    (bound, stop)
}

#[tokio::test]
async fn the_check_gets_a_health_report_naming_the_caller() {
    let (endpoint, _stop) = serve("tcp://127.0.0.1:0").await;
    let health = axum_health::check(endpoint, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    assert!(
        health.peer.starts_with("tcp://127.0.0.1:"),
        "{}",
        health.peer
    );
}

#[cfg(unix)]
#[tokio::test]
async fn works_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, _stop) = serve(&format!(
        "unix://{}",
        dir.path().join("health.sock").display()
    ))
    .await;
    let health = axum_health::check(endpoint, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(health.peer, "unix://(unnamed)");
}

#[tokio::test]
async fn nobody_listening_is_an_http_error_not_a_hang() {
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let endpoint = listener.local_endpoint().clone();
    drop(listener);
    let err = axum_health::check(endpoint, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, CheckError::Http(_)), "{err}");
    // The cause is spelled out, not just hyper's "client error (Connect)".
    assert!(
        err.to_string()
            .contains("cannot connect to tcp://127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    // Accepts and then says nothing.
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let endpoint = listener.local_endpoint().clone();
    let _mute = tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let err = axum_health::check(endpoint, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, CheckError::Timeout(_)), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn server_and_check_binaries_over_a_unix_socket() {
    use std::process::{Command, Stdio};
    use std::time::Instant;

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("health.sock");
    let ep = format!("unix://{}", sock.display());
    let _server = Kill(
        Command::new(env!("CARGO_BIN_EXE_health-server"))
            .args(["--listen", &ep])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !sock.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "health-server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_health-check"))
        .args(["--connect", &ep])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let health: axum_health::Health = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health.status, "ok");
    assert_eq!(health.peer, "unix://(unnamed)");
}
