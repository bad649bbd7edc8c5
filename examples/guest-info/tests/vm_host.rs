//! The host half of the guest-info end-to-end test in the VM harness: `guest-info-agent` runs in
//! the guest (listening on vsock port 18518, as in a real Hyper-V guest) and this test reaches it
//! through the VMM's hybrid-vsock socket. Skips unless `.ci/vm/run --vhost-vsock` set
//! `HVRPC_VM_UDS`.
#![cfg(unix)]

use std::time::Duration;

use futures_util::StreamExt;
use guest_info::report::Report;
use guest_info::{GuestInfoClient, PORT};
use hvrpc::transport::{ConnectOptions, HybridVsockAddr, RetryPolicy};
use hvrpc::{Config, Connector, Endpoint};

#[tokio::test]
async fn query_the_guest_over_hybrid_vsock() {
    let Ok(uds) = std::env::var("HVRPC_VM_UDS") else {
        println!("skipped: HVRPC_VM_UDS is not set (no test VM with a vhost-user-vsock device)");
        return;
    };
    let endpoint = Endpoint::HybridVsock(HybridVsockAddr::new(uds, PORT));
    let mut config = Config::default();
    // The guest may still be booting: retry for up to a minute or two.
    config.connect = ConnectOptions::new().retry(
        RetryPolicy::attempts(400).backoff(Duration::from_millis(50), Duration::from_millis(300)),
    );
    let guest = GuestInfoClient::connect_with(&endpoint, Connector::new().config(config))
        .await
        .expect("the agent in the guest answered");
    let report = Report::gather(&guest).await;
    println!("{report}");
    assert_eq!(report.errors, Default::default(), "every part answered");
    assert_eq!(report.hostname.as_deref(), Some("hvrpc-vm-guest"));
    let os = report.os.unwrap();
    assert_eq!(os.kernel_name, "Linux");
    assert!(os.kernel_release.starts_with("6."), "{}", os.kernel_release);
    assert!(report.memory.unwrap().total_bytes > 100 * 1024 * 1024);
    assert!(report.load.unwrap().uptime_seconds > 0.0);
    let nics = report.network_interfaces.unwrap();
    let lo = nics
        .iter()
        .find(|n| n.name == "lo")
        .expect("lo in the guest");
    assert!(lo.up);
    assert!(
        lo.addresses
            .iter()
            .any(|a| a.addr.to_string() == "127.0.0.1" && a.prefix == 8)
    );
    let fs = report.filesystems.unwrap();
    assert!(
        fs.iter()
            .any(|f| f.mount_point == "/tmp" && f.fs_type == "tmpfs"),
        "{fs:?}"
    );
    let samples: Vec<_> = guest.watch(100).await.unwrap().take(3).collect().await;
    assert_eq!(samples.len(), 3);
    for s in samples {
        let s = s.unwrap();
        assert!(s.memory_total_bytes > 0 && s.uptime_seconds > 0.0);
    }
}
