//! The two releases of `Agent` (two binaries: `agent-a`, `agent-b`) in all four pairings over
//! Unix sockets: every call's outcome, line by line. What works across releases and what fails
//! — and how it fails — is exactly docs/PROTOCOL.md §6.5.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(bin: &str, endpoint: &str) -> Served {
    let mut child = Command::new(bin)
        .args(["serve", endpoint])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening", "{bin} did not start");
    Served(child)
}

fn call(bin: &str, endpoint: &str) -> String {
    let out = Command::new(bin)
        .args(["call", endpoint])
        .output()
        .expect("run the caller");
    assert!(
        out.status.success(),
        "{bin} call failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const A: &str = env!("CARGO_BIN_EXE_agent-a");
const B: &str = env!("CARGO_BIN_EXE_agent-b");

const A_TO_A: &str = r#"version ok "A"
stat(/f) ok Stat { size: 300, mode: 420 }
stat(/nope) app-error NotFound("/nope")
stat(/denied) app-error NotFound("/denied")
list ok [Entry { name: "f", size: 300, legacy: "old" }]
kind(/f) ok File
kind(/l) ok File
remove ok true
size_of ok 300
echo_count ok "A counted 7"
watch ok "Tick(0), Tick(1), Tick(2)"
"#;

const A_TO_B: &str = r#"version ok "B"
stat(/f) ok Stat { size: 300, mode: 420 }
stat(/nope) app-error NotFound("/nope")
stat(/denied) incompatible Agent.stat: cannot read the peer's result (another release's shape): unknown variant `Denied`, expected `NotFound`
list ok [Entry { name: "f", size: 300, legacy: "" }]
kind(/f) ok File
kind(/l) incompatible Agent.kind: cannot read the peer's result (another release's shape): unknown variant `Link`, expected `File` or `Dir`
remove unimplemented Agent.remove is not implemented by the peer (its Agent is another release)
size_of incompatible Agent.size_of: result: u64 here, string on the peer
echo_count ok "B counted 7"
watch ok "Tick(0), Tick(1), Tick(2), then incompatible: cannot read a stream item (another release's shape): unknown variant `Note`, expected `Tick`"
"#;

/// Shared with `vm_host.rs`, which expects the same over hybrid vsock.
const B_TO_A: &str = include_str!("b_to_a.txt");

const B_TO_B: &str = r#"version ok "B"
hostname ok "guest"
uptime ok 42
stat(/f) ok Stat { size: 300, mtime: 5, mode: 420 }
stat(/nope) app-error NotFound("/nope")
list ok [Entry { size: 300, name: "f", owner: Some("root") }]
kind(/f) ok File
size_of ok "300 B"
echo_count ok "B counted 7"
watch ok "Tick(0), Tick(1), Tick(2), Note(\"done\")"
peer_supports hostname=Ok(true) stat=Ok(true)
"#;

/// Compares line by line, so that a failure names the call.
fn assert_lines(pairing: &str, got: &str, want: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{pairing}, line {}", i + 1);
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "{pairing}:\n{got}"
    );
}

#[test]
fn every_pairing_of_two_releases() {
    let dir = tempfile::tempdir().unwrap();
    let ep = |name: &str| format!("unix://{}", dir.path().join(name).display());
    let (a_ep, b_ep) = (ep("a.sock"), ep("b.sock"));
    let _a = serve(A, &a_ep);
    let _b = serve(B, &b_ep);
    assert_lines("A calls A", &call(A, &a_ep), A_TO_A);
    assert_lines("A calls B", &call(A, &b_ep), A_TO_B);
    assert_lines("B calls A", &call(B, &a_ep), B_TO_A);
    assert_lines("B calls B", &call(B, &b_ep), B_TO_B);
}
