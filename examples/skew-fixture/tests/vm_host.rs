//! The host half of the version-skew test in the VM harness (`.ci/vm/suite`, boot 4): release
//! A (`agent-a`, the older) serves in the guest on vsock port 0x5a5a, and release B
//! (`agent-b`, the newer) calls it from the host through the VMM's hybrid-vsock socket. Every
//! call's outcome must be what it is over Unix sockets (`pairings.rs`). Skips unless
//! `.ci/vm/run --vhost-vsock` set `HVRPC_VM_UDS`.
#![cfg(unix)]

use std::process::Command;
use std::time::{Duration, Instant};

const B_TO_A: &str = include_str!("b_to_a.txt");

#[test]
fn newer_host_calls_older_guest_over_hybrid_vsock() {
    let Ok(uds) = std::env::var("HVRPC_VM_UDS") else {
        println!("skipped: HVRPC_VM_UDS is not set (no test VM with a vhost-user-vsock device)");
        return;
    };
    let endpoint = format!("hybrid-vsock://{uds}:{}", 0x5a5a);
    // The guest may still be booting: its agent answers once it is up.
    let started = Instant::now();
    let out = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_agent-b"))
            .args(["call", &endpoint])
            .output()
            .expect("run agent-b");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            stderr.contains("connecting to") && started.elapsed() < Duration::from_secs(150),
            "agent-b call failed: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    println!("{out}");
    assert_eq!(out, B_TO_A);
}
