//! The AF_VSOCK variant: the benchmark (`run --quick --transport vsock`) inside the throw-away
//! QEMU guest of `.ci/vm/run`, never on this machine (itself a VM whose vsock is not ours).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::model::Results;

/// The line before the JSON results on standard output.
pub(crate) const BEGIN: &str = "----- hvrpc-bench results (json) -----";
/// The line after them.
pub(crate) const END: &str = "----- end of hvrpc-bench results -----";

/// Boots the guest, runs the quick benchmark over vsock loopback there, and returns its
/// results.
pub(crate) fn run_in_guest() -> Result<Results, String> {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/vm/run");
    if !harness.is_file() {
        return Err(format!("the VM harness {} is missing", harness.display()));
    }
    let exe = static_build()?;
    eprintln!("[bench] booting the test VM for the AF_VSOCK run (emulated CPU: a few minutes)");
    let out = Command::new(&harness)
        .args(["--timeout", "1500", "--"])
        .arg(&exe)
        // Quick segments, but three rounds: the emulated CPU is noisy.
        .args([
            "run",
            "--quick",
            "--rounds",
            "3",
            "--transport",
            "vsock",
            "--json",
            "-",
        ])
        .env(
            "HVRPC_VM_MEM_MIB",
            std::env::var("HVRPC_VM_MEM_MIB").unwrap_or_else(|_| "1024".into()),
        )
        .env(
            "HVRPC_VM_SMP",
            std::env::var("HVRPC_VM_SMP").unwrap_or_else(|_| "2".into()),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", harness.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let json = stdout
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(json, _)| json.trim());
    match json {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("the guest's results: {e}")),
        None => {
            let tail: Vec<&str> = stdout.lines().rev().take(20).collect();
            Err(format!(
                "the guest run produced no results ({}); last lines: {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        }
    }
}

/// Builds the benchmark as a static executable (the guest has no C library) and returns its
/// path.
fn static_build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = env!("BENCH_TARGET");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("[bench] building a static hvrpc-bench for the guest ({target})");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "hvrpc-bench",
            "--target",
            target,
        ])
        // --target keeps build scripts and proc macros dynamic.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("the static build failed ({status})"));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target_dir.join(target).join("release/hvrpc-bench");
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "the static build did not produce {}",
            exe.display()
        ))
    }
}
