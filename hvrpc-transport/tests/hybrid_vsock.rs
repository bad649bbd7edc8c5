//! Hybrid vsock against a fake VMM socket that speaks the protocol (Firecracker /
//! vhost-device-vsock style): `CONNECT <port>\n` → `OK <n>\n`, and guest-initiated
//! connections arriving on `<path>_<port>`.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{STEP, echo_roundtrip, echo_server, pattern};
use hvrpc_transport::{
    ConnectOptions, Endpoint, HybridVsockAddr, Listener, PeerAddr, RetryPolicy, connect,
    connect_with,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// How the fake VMM answers a `CONNECT`.
#[derive(Clone, Copy)]
enum Reply {
    /// `OK 1073741824\n` then echo (the guest listens).
    Ok,
    /// Close the socket (nothing listens on the guest port).
    Close,
    /// Close the socket before even reading the request: the client's write may fail with a
    /// broken pipe.
    CloseAtOnce,
    /// Answer garbage.
    Garbage,
    /// Never answer.
    Silent,
}

/// A fake VMM on `path`: the first `closed_first` connections are closed (guest not listening
/// yet), later ones get `reply`. Counts connections.
fn fake_vmm(path: &Path, closed_first: usize, reply: Reply) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(path).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let n = seen.fetch_add(1, Ordering::SeqCst);
            // Refusals alternate between closing after and before reading the request.
            let reply = match (n < closed_first, n % 2) {
                (true, 0) => Reply::Close,
                (true, _) => Reply::CloseAtOnce,
                (false, _) => reply,
            };
            tokio::spawn(serve(s, reply));
        }
    });
    count
}

async fn serve(s: UnixStream, reply: Reply) {
    if let Reply::CloseAtOnce = reply {
        return;
    }
    let mut s = BufReader::new(s);
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    let port: u32 = line
        .strip_prefix("CONNECT ")
        .and_then(|l| l.strip_suffix('\n'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad CONNECT line {line:?}"));
    assert_eq!(port, 52);
    match reply {
        Reply::Ok => {
            // The reply and the first guest bytes in one write: the client must not read past
            // the newline.
            s.get_mut()
                .write_all(b"OK 1073741824\nGUEST")
                .await
                .unwrap();
            echo_server(s, usize::MAX).await;
        }
        Reply::Close | Reply::CloseAtOnce => drop(s),
        Reply::Garbage => s.get_mut().write_all(b"NO WAY\n").await.unwrap(),
        Reply::Silent => tokio::time::sleep(STEP).await,
    }
}

fn vmm_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("vm.vsock")
}

fn ep(path: &Path) -> Endpoint {
    Endpoint::HybridVsock(HybridVsockAddr::new(path, 52))
}

#[tokio::test]
async fn connect_handshake_then_echo() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    fake_vmm(&path, 0, Reply::Ok);
    let mut s = connect(&ep(&path)).await.unwrap();
    assert_eq!(
        s.peer_addr(),
        &PeerAddr::HybridVsock(HybridVsockAddr::new(&path, 52))
    );
    // Bytes right after the OK line belong to the guest and must not be swallowed.
    let mut first = [0u8; 5];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"GUEST");
    echo_roundtrip(s, &pattern(1 << 20, 3)).await;
}

#[tokio::test]
async fn guest_not_listening_is_refused_then_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    let count = fake_vmm(&path, 3, Reply::Ok);

    let err = connect(&ep(&path)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        err.to_string()
            .contains("nothing listens on guest vsock port 52"),
        "{err}"
    );

    let opts = ConnectOptions::new().retry(
        RetryPolicy::attempts(10).backoff(Duration::from_millis(5), Duration::from_millis(20)),
    );
    let mut s = connect_with(&ep(&path), &opts).await.unwrap();
    // One refused before, two more refused, then success.
    assert_eq!(count.load(Ordering::SeqCst), 4);
    let mut first = [0u8; 5];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"GUEST");
}

#[tokio::test]
async fn retries_give_up_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    let count = fake_vmm(&path, usize::MAX, Reply::Ok);
    let opts = ConnectOptions::new().retry(
        RetryPolicy::attempts(4).backoff(Duration::from_millis(1), Duration::from_millis(2)),
    );
    let err = connect_with(&ep(&path), &opts).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 4);
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
}

#[tokio::test]
async fn garbage_reply_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    fake_vmm(&path, 0, Reply::Garbage);
    let err = connect(&ep(&path)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains(r#"unexpected reply to CONNECT 52: "NO WAY""#),
        "{err}"
    );
}

#[tokio::test]
async fn silent_vmm_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    fake_vmm(&path, 0, Reply::Silent);
    let opts = ConnectOptions::new().timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = connect_with(&ep(&path), &opts).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("timed out after 200ms"), "{err}");
    assert!(started.elapsed() < STEP);
}

#[tokio::test]
async fn endless_reply_line_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = s.write_all(&[b'O'; 4096]).await;
        tokio::time::sleep(STEP).await;
    });
    let err = connect(&ep(&path)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("longer than 64 bytes"), "{err}");
}

#[tokio::test]
async fn vmm_socket_missing() {
    let dir = tempfile::tempdir().unwrap();
    let err = connect(&ep(&vmm_path(&dir))).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .starts_with("cannot connect to hybrid-vsock://"),
        "{err}"
    );
}

#[tokio::test]
async fn listener_receives_guest_initiated_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    let addr = HybridVsockAddr::new(&path, 52);
    let listener = Listener::bind(&Endpoint::HybridVsock(addr.clone()))
        .await
        .unwrap();
    assert!(dir.path().join("vm.vsock_52").exists());
    let server = tokio::spawn(async move {
        let (s, peer) = listener.accept().await.unwrap();
        (echo_server(s, 1 << 20).await, peer)
    });
    // What the VMM does when the guest connects to CID 2 port 52.
    let vmm_side = UnixStream::connect(dir.path().join("vm.vsock_52"))
        .await
        .unwrap();
    let data = pattern(1 << 20, 9);
    let (mut r, mut w) = vmm_side.into_split();
    let writer = async {
        w.write_all(&data).await.unwrap();
    };
    let reader = async {
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(writer, reader);
    assert!(back == data);
    let (n, peer) = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
    assert_eq!(n, 1 << 20);
    assert_eq!(peer, PeerAddr::HybridVsock(addr));
}

#[tokio::test]
async fn vmm_closing_before_reading_counts_as_not_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = vmm_path(&dir);
    let count = fake_vmm(&path, 40, Reply::Ok);
    let opts = ConnectOptions::new().retry(
        RetryPolicy::attempts(100).backoff(Duration::from_millis(1), Duration::from_millis(2)),
    );
    // Half of the 40 refusals close before reading: whether the client's write then fails
    // (broken pipe, reset) or its read sees the close, it is "not listening yet" and retried.
    let mut s = connect_with(&ep(&path), &opts).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 41);
    let mut first = [0u8; 5];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"GUEST");
}
