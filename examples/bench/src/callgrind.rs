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

/// Client and server instructions per call of `imp` at `in_flight` calls in flight; `trace`:
/// the server's tracing level ([`crate::server::TRACE_ENV`]), if any.
fn one(imp: Impl, in_flight: usize, secs: f64, trace: Option<&str>) -> Result<(f64, f64), String> {
    let (client, server, served) = run(imp, in_flight, secs, trace)?;
    let per = |v: u64| v as f64 / served.max(1) as f64;
    eprintln!(
        "[bench] callgrind {imp}, {in_flight} in flight, tracing {}: {served} calls, {:.0} / {:.0} instructions per call (client / server)",
        trace.unwrap_or("none"),
        per(client),
        per(server)
    );
    Ok((per(client), per(server)))
}

/// Server instructions per call at the margin: the difference between a `long` and a `short`
/// run over the difference in calls, so that start-up (and a subscriber's set-up) drops out.
fn marginal(
    imp: Impl,
    in_flight: usize,
    (short, long): (f64, f64),
    trace: Option<&str>,
) -> Result<f64, String> {
    let (_, s1, n1) = run(imp, in_flight, short, trace)?;
    let (_, s2, n2) = run(imp, in_flight, long, trace)?;
    if n2 <= n1 || s2 <= s1 {
        return Err(format!(
            "{imp} under callgrind, tracing {}: the longer run served {n2} calls, the shorter {n1}",
            trace.unwrap_or("none")
        ));
    }
    let per = (s2 - s1) as f64 / (n2 - n1) as f64;
    eprintln!(
        "[bench] callgrind {imp}, {in_flight} in flight, tracing {}: {n1} then {n2} calls, {per:.0} server instructions per call at the margin",
        trace.unwrap_or("none")
    );
    Ok(per)
}

/// Client and server instruction totals, and the calls served, of one run under callgrind.
fn run(
    imp: Impl,
    in_flight: usize,
    secs: f64,
    trace: Option<&str>,
) -> Result<(u64, u64, u64), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = std::env::temp_dir().join(format!(
        "hvrpc-callgrind-{}-{imp}-{}-{secs}",
        std::process::id(),
        trace.unwrap_or("none")
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cmd = Command::new("valgrind");
    match trace {
        Some(level) => cmd.env(crate::server::TRACE_ENV, level),
        None => cmd.env_remove(crate::server::TRACE_ENV),
    };
    let out = cmd
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
    Ok((client, server, served))
}

/// Instructions per call of every implementation.
pub(crate) fn measure(in_flight: usize, secs: f64) -> Result<Instructions, String> {
    let mut client: PerImpl<f64> = [0.0; 3];
    let mut server: PerImpl<f64> = [0.0; 3];
    for imp in Impl::ALL {
        let (c, s) = one(imp, in_flight, secs, None)?;
        client[imp.index()] = c;
        server[imp.index()] = s;
    }
    // What hvrpc's per-call span costs the server: with a subscriber that leaves debug off
    // (the span is never built), and with debug on.
    let mut traced = [0.0; 3];
    let durations = (secs / 2.0, secs * 2.0);
    for (slot, level) in traced.iter_mut().zip([None, Some("info"), Some("debug")]) {
        *slot = marginal(Impl::Hvrpc, in_flight, durations, level)?;
    }
    Ok(Instructions {
        in_flight,
        client,
        server,
        traced_server: Some(traced),
    })
}
