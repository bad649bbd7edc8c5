//! Schema hashes do not depend on the compiler: both releases of `Agent`, built by this
//! toolchain (rustup's) and by Debian's `rustc-web` (which `.ci/windows/setup` installs),
//! announce the same hashes for every method. `.ci/test` runs this with
//! `HVRPC_REQUIRE_RUSTC_WEB=1` after installing it; elsewhere it is skipped, saying so, when
//! `/usr/bin/rustc` is not there.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn hashes(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("hashes")
        .output()
        .expect("run hashes");
    assert!(
        out.status.success(),
        "{}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn version(rustc: &str) -> String {
    let out = Command::new(rustc)
        .arg("--version")
        .output()
        .expect("rustc --version");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn hashes_are_equal_with_debians_rustc() {
    if !Path::new(DEBIAN_RUSTC).exists() {
        assert!(
            std::env::var_os("HVRPC_REQUIRE_RUSTC_WEB").is_none(),
            "HVRPC_REQUIRE_RUSTC_WEB is set but {DEBIAN_RUSTC} is missing: run .ci/windows/setup"
        );
        eprintln!("skipped: {DEBIAN_RUSTC} (Debian's rustc-web) is not installed");
        return;
    }
    let ours = version("rustc");
    let theirs = version(DEBIAN_RUSTC);
    assert_ne!(
        ours, theirs,
        "both toolchains are the same compiler: nothing is compared"
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rustc-web");
    let status = Command::new(DEBIAN_CARGO)
        .current_dir(&workspace)
        .args(["build", "--locked", "-p", "skew-fixture", "--bins"])
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run Debian's cargo");
    assert!(status.success(), "building with {theirs} failed");
    for bin in ["agent-a", "agent-b"] {
        let built_here = match bin {
            "agent-a" => env!("CARGO_BIN_EXE_agent-a"),
            _ => env!("CARGO_BIN_EXE_agent-b"),
        };
        let mine = hashes(Path::new(built_here));
        let debian = hashes(&target.join("debug").join(bin));
        assert!(mine.lines().count() >= 8, "{bin}: {mine}");
        assert_eq!(mine, debian, "{bin}: {ours} and {theirs} disagree");
        eprintln!(
            "{bin}: {} methods hash alike with {ours} and {theirs}",
            mine.lines().count()
        );
    }
}
