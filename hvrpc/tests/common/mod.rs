//! What the RPC integration tests share: the transport they run over.
//!
//! By default a Unix socket (TCP loopback on Windows). Inside the test VM, with
//! `HVRPC_TEST_TRANSPORT=vsock`, real `AF_VSOCK` loopback: the same tests then exercise the
//! Linux vsock stack. vsock is refused anywhere but inside the VM (`HVRPC_IN_GUEST=1`): the
//! development machine's own vsock device is not ours to use.
#![allow(dead_code, reason = "each test binary uses part of this")]

pub(crate) mod wire;

use hvrpc::transport::Listener;
use hvrpc::{Endpoint, VsockAddr};

/// Binds a listener for a test and returns it with the endpoint clients should dial.
pub(crate) async fn test_listener(dir: &tempfile::TempDir, name: &str) -> (Listener, Endpoint) {
    let vsock = std::env::var("HVRPC_TEST_TRANSPORT").as_deref() == Ok("vsock");
    let ep: Endpoint = if vsock {
        assert_eq!(
            std::env::var("HVRPC_IN_GUEST").as_deref(),
            Ok("1"),
            "refusing AF_VSOCK outside the test VM (HVRPC_TEST_TRANSPORT=vsock needs HVRPC_IN_GUEST=1)"
        );
        "vsock://any:any".parse().unwrap()
    } else if cfg!(unix) {
        Endpoint::unix(dir.path().join(name))
    } else {
        "tcp://127.0.0.1:0".parse().unwrap()
    };
    let listener = Listener::bind(&ep).await.unwrap();
    let dial = match listener.local_endpoint() {
        // A listener on any CID is reached over loopback.
        Endpoint::Vsock(a) => Endpoint::Vsock(VsockAddr::new(VsockAddr::LOCAL_CID, a.port)),
        other => other.clone(),
    };
    (listener, dial)
}
