//! Real `AF_VSOCK`, run only inside the throw-away QEMU guest that `.ci/vm/suite` boots
//! (`HVRPC_IN_GUEST=1`). On any other machine every test here skips with a message and opens
//! no vsock socket at all: the development machine's own vsock device is not ours to use.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use common::{STEP, echo_roundtrip, echo_roundtrip_halves, echo_server, pattern, require_env};
use hvrpc_transport::{
    ConnectOptions, Endpoint, Listener, PeerAddr, RetryPolicy, SocketOptions, VsockAddr,
    connect_with, vsock_local_cid,
};

const MIB: usize = 1024 * 1024;

fn in_guest() -> bool {
    require_env(
        "HVRPC_IN_GUEST",
        "AF_VSOCK tests run only inside the test VM",
    )
    .is_some()
}

async fn loopback_echo(opts: SocketOptions, len: usize) {
    let listener = Listener::bind_with(&"vsock://any:any".parse().unwrap(), &opts)
        .await
        .unwrap();
    let Endpoint::Vsock(bound) = listener.local_endpoint().clone() else {
        panic!("not a vsock endpoint: {}", listener.local_endpoint());
    };
    assert_ne!(bound.port, VsockAddr::ANY_PORT, "the kernel picked no port");
    println!("listening on {bound}");
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        (echo_server(stream, len).await, peer)
    });
    let target = Endpoint::Vsock(VsockAddr::new(VsockAddr::LOCAL_CID, bound.port));
    let stream = connect_with(&target, &ConnectOptions::new().socket(opts))
        .await
        .unwrap();
    assert_eq!(
        stream.peer_addr(),
        &PeerAddr::Vsock(VsockAddr::new(1, bound.port))
    );
    echo_roundtrip(stream, &pattern(len, 1)).await;
    let (n, peer) = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
    assert_eq!(n, len);
    println!("accepted peer {peer}");
    let PeerAddr::Vsock(peer) = peer else {
        panic!("peer is not vsock: {peer}")
    };
    assert_eq!(peer.cid, VsockAddr::LOCAL_CID, "loopback peer CID");
    assert_ne!(peer.port, bound.port, "peer port is the client's own port");
}

#[tokio::test]
async fn loopback_echo_1mib() {
    if !in_guest() {
        return;
    }
    loopback_echo(SocketOptions::default(), MIB).await;
}

#[tokio::test]
async fn loopback_echo_with_large_buffers() {
    if !in_guest() {
        return;
    }
    loopback_echo(SocketOptions::new().buffer_size(256 * 1024), MIB).await;
}

/// Reliability #10: an unbounded connect timeout (`Duration::MAX`) is clamped to what the
/// kernel takes instead of failing every connect with `ERANGE`.
#[tokio::test]
async fn an_unbounded_connect_timeout_still_connects() {
    if !in_guest() {
        return;
    }
    let listener = Listener::bind(&"vsock://any:any".parse().unwrap())
        .await
        .unwrap();
    let Endpoint::Vsock(bound) = listener.local_endpoint().clone() else {
        panic!("not a vsock endpoint: {}", listener.local_endpoint());
    };
    let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    let target = Endpoint::Vsock(VsockAddr::new(VsockAddr::LOCAL_CID, bound.port));
    let opts = ConnectOptions::new().timeout(Duration::MAX);
    connect_with(&target, &opts)
        .await
        .expect("connect with a Duration::MAX timeout");
    accept.await.unwrap().unwrap();
}

#[tokio::test]
async fn local_cid_query() {
    if !in_guest() {
        return;
    }
    let want: u32 = std::env::var("HVRPC_EXPECT_CID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(VsockAddr::LOCAL_CID);
    assert_eq!(vsock_local_cid().unwrap(), want);
}

#[tokio::test]
async fn nobody_listening_fails_fast_and_retries_as_configured() {
    if !in_guest() {
        return;
    }
    let target: Endpoint = "vsock://local:40000".parse().unwrap();
    let opts = ConnectOptions::new().timeout(Duration::from_secs(5)).retry(
        RetryPolicy::attempts(3).backoff(Duration::from_millis(50), Duration::from_millis(100)),
    );
    let started = Instant::now();
    let err = connect_with(&target, &opts).await.unwrap_err();
    let took = started.elapsed();
    println!("error after {took:?}: {err}");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot connect to vsock://1:40000 after 3 attempts"),
        "{err}"
    );
    // Three refusals and two short pauses, far below three timeouts.
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[tokio::test]
async fn unreachable_cid_times_out_within_the_configured_timeout() {
    if !in_guest() || require_env("HVRPC_EXPECT_CID", "needs a virtio vsock device").is_none() {
        return;
    }
    // No VM has CID 99: the request goes out and nobody ever answers.
    let target: Endpoint = "vsock://99:5000".parse().unwrap();
    let opts = ConnectOptions::new().timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = connect_with(&target, &opts).await.unwrap_err();
    let took = started.elapsed();
    println!("error after {took:?}: {err}");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionRefused
        ),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(2) + Duration::from_secs(3),
        "{took:?}"
    );
}

/// The guest half of the guest↔host test; `tests/vm_host.rs` is the host half.
#[tokio::test]
async fn guest_host_exchange() {
    if !in_guest() || require_env("HVRPC_VM_HOST_PEER", "no host side is running").is_none() {
        return;
    }
    // The host reaches our listener through the VMM's hybrid-vsock socket...
    let listener = Listener::bind(&"vsock://any:5001".parse().unwrap())
        .await
        .unwrap();
    let serve = async {
        let (stream, peer) = listener.accept().await.unwrap();
        println!("guest: host connected from {peer}");
        assert_eq!(peer.cid(), Some(VsockAddr::HOST_CID));
        echo_server(stream, MIB).await
    };
    // ...and we reach the host's listener on CID 2, port 5002.
    let dial = async {
        let opts = ConnectOptions::new().retry(
            RetryPolicy::attempts(200)
                .backoff(Duration::from_millis(50), Duration::from_millis(500)),
        );
        let stream = connect_with(&Endpoint::Vsock(VsockAddr::host(5002)), &opts)
            .await
            .unwrap();
        echo_roundtrip(stream, &pattern(MIB, 22)).await;
    };
    let (served, ()) = tokio::time::timeout(STEP, async { tokio::join!(serve, dial) })
        .await
        .expect("guest↔host exchange timed out");
    assert_eq!(served, MIB);
}

/// Interop with a vsock stack no one here wrote: a `tokio-vsock` client talks to an
/// hvrpc-transport listener (loopback, CID 1) and the peer addresses agree on both sides.
#[tokio::test]
async fn a_tokio_vsock_client_talks_to_an_hvrpc_transport_listener() {
    if !in_guest() {
        return;
    }
    let listener = Listener::bind(&"vsock://any:any".parse().unwrap())
        .await
        .unwrap();
    let Endpoint::Vsock(bound) = listener.local_endpoint().clone() else {
        panic!("not a vsock endpoint: {}", listener.local_endpoint());
    };
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        (echo_server(stream, MIB).await, peer)
    });
    let client = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(1, bound.port))
        .await
        .unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (r, w) = client.into_split();
    echo_roundtrip_halves(r, w, &pattern(MIB, 31)).await;
    let (n, peer) = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
    assert_eq!(n, MIB);
    println!("tokio-vsock client seen as {peer}");
    assert_eq!(peer, PeerAddr::Vsock(VsockAddr::new(1, client_port)));
}

/// The other way: an hvrpc-transport client talks to a `tokio-vsock` listener.
#[tokio::test]
async fn an_hvrpc_transport_client_talks_to_a_tokio_vsock_listener() {
    if !in_guest() {
        return;
    }
    let listener = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
        tokio_vsock::VMADDR_CID_ANY,
        0x7a7a,
    ))
    .unwrap();
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        (echo_server(stream, MIB).await, peer)
    });
    let stream = connect_with(
        &Endpoint::Vsock(VsockAddr::new(1, 0x7a7a)),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        stream.peer_addr(),
        &PeerAddr::Vsock(VsockAddr::new(1, 0x7a7a))
    );
    echo_roundtrip(stream, &pattern(MIB, 32)).await;
    let (n, peer) = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
    assert_eq!(n, MIB);
    println!("hvrpc-transport client seen by tokio-vsock as {peer:?}");
    assert_eq!(peer.cid(), 1);
}
