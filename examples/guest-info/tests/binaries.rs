//! The agent and the host tool as a user runs them, over a Unix socket (AF_VSOCK and hybrid
//! vsock are exercised in the test VM).
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_guest-info-agent");
const HOST: &str = env!("CARGO_BIN_EXE_guest-info");

/// Kills the process when the test ends, whatever happens.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, args: &[&str]) -> Guard {
    Guard(
        Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Runs to completion, killed after 60 s.
fn run(bin: &str, args: &[&str]) -> Output {
    let mut child = spawn(bin, args);
    let started = Instant::now();
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{bin} {args:?} hung"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = std::mem::replace(&mut child.0, Command::new("true").spawn().unwrap());
    out.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn query_json_reports_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}", dir.path().join("agent.sock").display());
    let _agent = spawn(AGENT, &["--listen", &ep]);
    let out = run(HOST, &["query", &ep, "--json", "--wait", "10"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(report["hostname"], hostname.trim());
    assert_eq!(report["os"]["kernel_name"], "Linux");
    assert!(report["memory"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(
        report["filesystems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["mount_point"] == "/")
    );
    assert!(
        report["network_interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "lo")
    );
    assert_eq!(report["errors"], serde_json::json!({}));
}

#[test]
fn query_text_then_agent_exits_with_once() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}", dir.path().join("once.sock").display());
    let mut agent = spawn(AGENT, &["--listen", &ep, "--once"]);
    let out = run(HOST, &["query", &ep, "--wait", "10"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for heading in [
        "Host name",
        "OS ",
        "Kernel",
        "Time",
        "Uptime",
        "Memory",
        "Network",
        "Filesystems",
        "Agent",
    ] {
        assert!(report.contains(heading), "missing {heading}:\n{report}");
    }
    let started = Instant::now();
    while agent.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "agent did not exit after --once"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.0.try_wait().unwrap().unwrap().success());
}

#[test]
fn watch_streams_samples() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}", dir.path().join("watch.sock").display());
    let _agent = spawn(AGENT, &["--listen", &ep]);
    let out = run(
        HOST,
        &[
            "watch",
            &ep,
            "--interval-ms",
            "100",
            "--count",
            "3",
            "--json",
            "--wait",
            "10",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|s| s["memory_total_bytes"].as_u64().unwrap() > 0)
    );
}

/// `guest-info watch … | head -1`: when the reader goes away the tool ends quietly with
/// success, instead of panicking on the broken pipe as `println!` does.
#[test]
fn watch_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}", dir.path().join("pipe.sock").display());
    let _agent = spawn(AGENT, &["--listen", &ep]);
    let mut watch = spawn(
        HOST,
        &[
            "watch",
            &ep,
            "--interval-ms",
            "20",
            "--json",
            "--wait",
            "10",
        ],
    );
    let mut first = String::new();
    let mut stdout = BufReader::new(watch.0.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("memory_total_bytes"), "{first}");
    drop(stdout);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = watch.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "watch went on writing into nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(watch.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn listen_lists_agents_that_dial_in() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}", dir.path().join("host.sock").display());
    let mut host = spawn(HOST, &["listen", &ep, "--json"]);
    let stdout = host.0.stdout.take().unwrap();
    // Agents dial before and after the host listens: the agent retries with backoff.
    let _agent = spawn(AGENT, &["--no-listen", "--dial", &ep]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no agent was listed")
        .unwrap();
    let guest: serde_json::Value = serde_json::from_str(&line).unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(guest["hostname"], hostname.trim());
    assert!(guest["peer"].as_str().unwrap().starts_with("unix://"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = run(HOST, &["query", "vsock:/3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected <scheme>://"),
        "{}",
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix://{}", dir.path().join("nobody.sock").display());
    let out = run(HOST, &["query", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("guest-info: cannot connect to unix://"),
        "{}",
        text(&out.stderr)
    );
    let out = run(AGENT, &["--listen", "unix:///nonexistent-dir/x.sock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot listen on unix:///nonexistent-dir/x.sock"),
        "{}",
        text(&out.stderr)
    );
    let out = run(AGENT, &["--no-listen"]);
    assert_eq!(out.status.code(), Some(2), "--no-listen requires --dial");
}

/// Text without ANSI colour sequences.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn audit_logs_every_call_and_counts_them_per_method() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}", dir.path().join("audit.sock").display());
    let agent = spawn(AGENT, &["--listen", &ep, "--once", "--audit"]);
    let out = run(HOST, &["query", &ep, "--json", "--wait", "10"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut agent = agent;
    let started = Instant::now();
    while agent.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "agent did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut log = String::new();
    std::io::Read::read_to_string(agent.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    let log = plain(&log);
    let calls: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" call ") && l.contains("method=GuestInfo."))
        .collect();
    assert!(!calls.is_empty(), "no audit lines:\n{log}");
    for l in &calls {
        assert!(l.contains("outcome=Ok"), "{l}");
        assert!(l.contains("peer="), "{l}");
    }
    // The summary counts the same calls.
    let summary = log
        .lines()
        .find(|l| l.contains("calls served, by method"))
        .unwrap_or_else(|| panic!("no summary:\n{log}"));
    let counted: u64 = summary
        .split("\": ")
        .skip(1)
        .map(|v| {
            v.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, calls.len() as u64, "{summary}\n{log}");
}

/// `guest-info cp` both ways through an agent run with `--files`: a 6 MiB file (more than one
/// frame) arrives intact, the guest's copy replaces the old one atomically, and paths out of
/// the shared directory are refused with a message that says so.
#[test]
fn cp_copies_files_both_ways_inside_the_shared_directory_only() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    std::fs::write(shared.join("sub/data.bin"), b"old contents").unwrap();
    std::fs::write(dir.path().join("secret"), b"not for the host").unwrap();
    let ep = format!("unix://{}", dir.path().join("files.sock").display());
    let _agent = spawn(
        AGENT,
        &["--listen", &ep, "--files", shared.to_str().unwrap()],
    );

    let data: Vec<u8> = (0..6 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let local = dir.path().join("local.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = format!("{ep}:sub/data.bin");
    let up = run(
        HOST,
        &["cp", local.to_str().unwrap(), &remote, "--wait", "10"],
    );
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert!(
        text(&up.stderr).contains("copied 6291456 bytes"),
        "{}",
        text(&up.stderr)
    );
    assert!(std::fs::read(shared.join("sub/data.bin")).unwrap() == data);
    let names: Vec<_> = std::fs::read_dir(shared.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["data.bin"], "no temporary file left in the guest");

    let back = dir.path().join("back.bin");
    let down = run(HOST, &["cp", &remote, back.to_str().unwrap()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(std::fs::read(&back).unwrap() == data);
    assert!(!dir.path().join("back.bin.part").exists());

    // Into a directory: under the guest file's name.
    let into = dir.path().join("into");
    std::fs::create_dir(&into).unwrap();
    let down = run(HOST, &["cp", &remote, into.to_str().unwrap()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(std::fs::read(into.join("data.bin")).unwrap() == data);
    // A leftover .part is never written through (it could be a symlink); it stays as it was.
    std::fs::write(dir.path().join("again.bin.part"), b"leftover").unwrap();
    let again = dir.path().join("again.bin");
    let down = run(HOST, &["cp", &remote, again.to_str().unwrap()]);
    assert!(!down.status.success());
    assert!(
        text(&down.stderr).contains("again.bin.part"),
        "{}",
        text(&down.stderr)
    );
    assert_eq!(
        std::fs::read(dir.path().join("again.bin.part")).unwrap(),
        b"leftover"
    );
    assert!(!again.exists());

    for bad in ["../secret", "sub/../../secret"] {
        let out = run(
            HOST,
            &[
                "cp",
                &format!("{ep}:{bad}"),
                dir.path().join("x").to_str().unwrap(),
            ],
        );
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("`..` is not allowed"),
            "{}",
            text(&out.stderr)
        );
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("secret"), shared.join("link")).unwrap();
        let out = run(
            HOST,
            &[
                "cp",
                &format!("{ep}:link"),
                dir.path().join("x").to_str().unwrap(),
            ],
        );
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("leads outside the shared directory"),
            "{}",
            text(&out.stderr)
        );
        assert!(!dir.path().join("x").exists());
    }
}

/// Without `--files` the agent serves no files: `cp` fails and says the guest lacks it.
#[test]
fn cp_is_off_unless_the_agent_shares_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("unix://{}", dir.path().join("nofiles.sock").display());
    let _agent = spawn(AGENT, &["--listen", &ep]);
    let out = run(
        HOST,
        &[
            "cp",
            &format!("{ep}:anything"),
            dir.path().join("x").to_str().unwrap(),
            "--wait",
            "10",
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("GuestFiles"), "{err}");
}
