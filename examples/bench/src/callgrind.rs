//! Instructions per call, counted by callgrind: `hvrpc-bench profile IMP throughput` run under
//! `valgrind --tool=callgrind --trace-children=yes` (the server is a child process), the totals
//! of each process divided by the calls the server says it answered.

use std::path::Path;
use std::process::Command;

use crate::model::{Instructions, PerImpl};
use crate::proto::Impl;

/// The total instructions (`Ir`) of a callgrind output file, and whether it is the server's.
fn totals(file: &Path) -> Result<(u64, bool), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let server = text
        .lines()
        .find_map(|l| l.strip_prefix("cmd:"))
        .is_some_and(|cmd| cmd.contains(" serve "));
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{}: no instruction total", file.display()))?;
    Ok((total, server))
}

/// Client and server instructions per call of `imp` at `in_flight` calls in flight.
fn one(imp: Impl, in_flight: usize, secs: f64) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = std::env::temp_dir().join(format!("hvrpc-callgrind-{}-{imp}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--trace-children=yes")
        .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
        .arg(&exe)
        .args(["profile", imp.name(), "throughput", "--n"])
        .arg(in_flight.to_string())
        .arg("--secs")
        .arg(secs.to_string())
        .output()
        .map_err(|e| format!("running valgrind (is it installed?): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let served: u64 = stderr
        .lines()
        .find_map(|l| l.split("server served ").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{imp} under callgrind: the server did not say what it served"))?;
    let (mut client, mut server) = (0u64, 0u64);
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let (total, is_server) = totals(&path)?;
        if is_server {
            server += total;
        } else {
            client += total;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let per = |v: u64| v as f64 / served.max(1) as f64;
    eprintln!(
        "[bench] callgrind {imp}, {in_flight} in flight: {served} calls, {:.0} / {:.0} instructions per call (client / server)",
        per(client),
        per(server)
    );
    Ok((per(client), per(server)))
}

/// Instructions per call of every implementation.
pub(crate) fn measure(in_flight: usize, secs: f64) -> Result<Instructions, String> {
    let mut client: PerImpl<f64> = [0.0; 3];
    let mut server: PerImpl<f64> = [0.0; 3];
    for imp in Impl::ALL {
        let (c, s) = one(imp, in_flight, secs)?;
        client[imp.index()] = c;
        server[imp.index()] = s;
    }
    Ok(Instructions {
        in_flight,
        client,
        server,
    })
}
