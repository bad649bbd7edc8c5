//! Records, for the report, the compiler that builds the benchmark and the tarpc and hvrpc
//! versions in the workspace's Cargo.lock.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BENCH_RUSTC={version}");
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=BENCH_TARGET={target}");

    let lock_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    println!("cargo:rerun-if-changed={lock_path}");
    let lock = std::fs::read_to_string(lock_path).unwrap_or_default();
    for (krate, var) in [("tarpc", "BENCH_TARPC"), ("hvrpc", "BENCH_HVRPC")] {
        println!("cargo:rustc-env={var}={}", locked_version(&lock, krate));
    }
}

/// The version of `krate` in a Cargo.lock.
fn locked_version(lock: &str, krate: &str) -> String {
    let needle = format!("name = \"{krate}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| {
            let rest = &lock[i + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
