//! The host half of the guest↔host test: runs on the development machine while the test VM
//! runs `vsock_guest.rs`, and talks to the guest only through the VMM's hybrid-vsock Unix
//! socket (`HVRPC_VM_UDS`, set by `.ci/vm/run --vhost-vsock`). Without it, it skips.
#![cfg(unix)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{STEP, echo_roundtrip, echo_server, pattern, require_env};
use hvrpc_transport::{
    ConnectOptions, Endpoint, HybridVsockAddr, Listener, PeerAddr, RetryPolicy, connect_with,
};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn host_guest_exchange() {
    let Some(uds) = require_env("HVRPC_VM_UDS", "no test VM with a vhost-user-vsock device") else {
        return;
    };
    let uds = PathBuf::from(uds);
    // Guest-initiated connections to host port 5002 arrive on <uds>_5002.
    let guest_dials_in = HybridVsockAddr::new(&uds, 5002);
    let listener = Listener::bind(&Endpoint::HybridVsock(guest_dials_in.clone()))
        .await
        .unwrap();
    let accept = async {
        let (stream, peer) = listener.accept().await.unwrap();
        println!("host: guest connected, peer {peer}");
        assert_eq!(peer, PeerAddr::HybridVsock(guest_dials_in.clone()));
        echo_server(stream, MIB).await
    };
    // The guest listens on vsock port 5001; it may still be booting, so retry.
    let dial = async {
        let opts = ConnectOptions::new().retry(
            RetryPolicy::attempts(600)
                .backoff(Duration::from_millis(50), Duration::from_millis(500)),
        );
        let target = Endpoint::HybridVsock(HybridVsockAddr::new(&uds, 5001));
        let stream = connect_with(&target, &opts).await.unwrap();
        println!("host: connected to {target}");
        echo_roundtrip(stream, &pattern(MIB, 33)).await;
    };
    let (echoed, ()) = tokio::time::timeout(STEP * 2, async { tokio::join!(accept, dial) })
        .await
        .expect("host↔guest exchange timed out");
    assert_eq!(echoed, MIB);
}
