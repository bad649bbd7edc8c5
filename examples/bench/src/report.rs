//! The report: targets, text tables for the terminal, `docs/BENCHMARKS.md`, and the plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::model::{Lat, Results};
use crate::proto::Impl;
use crate::run::size_name;

/// One of the targets, as measured.
pub(crate) struct Target {
    /// What is compared.
    pub(crate) what: &'static str,
    /// The goal, e.g. `≤ 1.30×`.
    pub(crate) goal: &'static str,
    /// The measured ratio (or value) with its inputs.
    pub(crate) measured: String,
    /// Whether the goal is met.
    pub(crate) met: bool,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// The targets (Unix sockets, same run): the benchmark issue's, then the engine issue's.
pub(crate) fn targets(r: &Results) -> Vec<Target> {
    let (raw, hv, tp) = (Impl::Raw.index(), Impl::Hvrpc.index(), Impl::Tarpc.index());
    let mut out = Vec::new();
    if let Some(add) = r.latency.iter().find(|l| l.payload == 0) {
        let q = ratio(add.by_impl[hv].p50_us, add.by_impl[raw].p50_us);
        out.push(Target {
            what: "tiny call (`add`) p50 latency vs raw",
            goal: "≤ 1.30×",
            measured: format!(
                "{q:.2}× ({:.1} µs vs {:.1} µs)",
                add.by_impl[hv].p50_us, add.by_impl[raw].p50_us
            ),
            met: q <= 1.30,
        });
    }
    if let Some(t) = r.throughput.iter().find(|t| t.in_flight == 64) {
        let q = ratio(t.calls_per_s[hv], t.calls_per_s[tp]);
        out.push(Target {
            what: "throughput, 64 in flight, vs tarpc",
            goal: "≥ 2.00×",
            measured: format!(
                "{q:.2}× ({} vs {} calls/s)",
                int(t.calls_per_s[hv]),
                int(t.calls_per_s[tp])
            ),
            met: q >= 2.0,
        });
        let q = ratio(t.calls_per_s[hv], t.calls_per_s[raw]);
        out.push(Target {
            what: "throughput, 64 in flight on one connection, vs raw",
            goal: "≥ 0.70×",
            measured: format!(
                "{q:.2}× ({} vs {} calls/s)",
                int(t.calls_per_s[hv]),
                int(t.calls_per_s[raw])
            ),
            met: q >= 0.7,
        });
    }
    let a = &r.active;
    let q = ratio(a.calls_per_s[hv], a.calls_per_s[raw]);
    out.push(Target {
        what: "throughput, 1000 connections with one call in flight each, vs raw",
        goal: "≥ 0.80×",
        measured: format!(
            "{q:.2}× ({} vs {} calls/s)",
            int(a.calls_per_s[hv]),
            int(a.calls_per_s[raw])
        ),
        met: q >= 0.8,
    });
    if let Some(t) = r.throughput.iter().find(|t| t.in_flight == 16)
        && let Some(cpu) = t.server_cpu_us
    {
        let q = ratio(cpu[hv], cpu[raw]);
        let instr = r
            .instructions
            .as_ref()
            .map(|i| {
                format!(
                    "; callgrind at {} in flight: {:.0} vs {:.0} instructions/call",
                    i.in_flight, i.server[hv], i.server[raw]
                )
            })
            .unwrap_or_default();
        out.push(Target {
            what: "server CPU per call, 16 in flight, vs raw",
            goal: "≤ 1.30×",
            measured: format!("{q:.2}× ({:.2} µs vs {:.2} µs{instr})", cpu[hv], cpu[raw]),
            met: q <= 1.3,
        });
    }
    let q = ratio(r.bulk.mb_per_s[hv], r.bulk.mb_per_s[raw]);
    out.push(Target {
        what: "bulk echo of 1 MiB vs raw (MB/s)",
        goal: "≥ 0.80×",
        measured: format!(
            "{q:.2}× ({:.0} vs {:.0} MB/s)",
            r.bulk.mb_per_s[hv], r.bulk.mb_per_s[raw]
        ),
        met: q >= 0.8,
    });
    if let Some(t) = &r.transfer {
        let q = ratio(t.stream_down_mb_s, t.raw_down_mb_s);
        out.push(Target {
            what: "1 GiB download, a server stream of 1 MiB items, vs raw (MB/s)",
            goal: "≥ 0.90×",
            measured: format!(
                "{q:.2}× ({:.0} vs {:.0} MB/s)",
                t.stream_down_mb_s, t.raw_down_mb_s
            ),
            met: q >= 0.9,
        });
        let q = ratio(t.stream_up_mb_s, t.raw_up_mb_s);
        out.push(Target {
            what: "1 GiB upload, a client stream of 1 MiB items, vs raw (MB/s)",
            goal: "≥ 0.90×",
            measured: format!(
                "{q:.2}× ({:.0} vs {:.0} MB/s)",
                t.stream_up_mb_s, t.raw_up_mb_s
            ),
            met: q >= 0.9,
        });
        let q = ratio(t.busy.p99_us, t.idle.p99_us);
        out.push(Target {
            what: "`add` p99 while 1 GiB streams down the same connection, vs idle",
            goal: "(reported)",
            measured: format!(
                "{q:.1}× ({:.0} µs vs {:.0} µs, {} calls during the transfer)",
                t.busy.p99_us, t.idle.p99_us, t.busy.calls
            ),
            met: true,
        });
    }
    let worst = r.idle.worst_bytes(Impl::Hvrpc) / 1024.0;
    out.push(Target {
        what: "server memory per idle connection",
        goal: "≤ 16 KiB",
        measured: format!(
            "{worst:.1} KiB (connected: {:.1} KiB; after one call: {:.1} KiB)",
            r.idle.fresh_bytes[hv] / 1024.0,
            r.idle.used_bytes[hv] / 1024.0
        ),
        met: worst <= 16.0,
    });
    out
}

/// `1234567` as `1 234 567`.
fn int(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn x(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}×")
    } else {
        "–".into()
    }
}

/// A plain-text summary for the terminal: every figure with its ratios, and the targets.
pub(crate) fn text(r: &Results) -> String {
    let mut s = String::new();
    let (raw, hv, tp) = (0, 1, 2);
    let _ = writeln!(
        s,
        "\nhvrpc-bench over {} ({}, {} round(s), {:.0} s; load average {} -> {})",
        r.meta.transport,
        if r.meta.quick { "quick" } else { "full" },
        r.meta.rounds,
        r.meta.seconds,
        r.meta.load[0],
        r.meta.load[1]
    );
    let _ = writeln!(
        s,
        "\n{:<14} {:>21} {:>21} {:>21} {:>9} {:>9}",
        "p50/p99 µs", "raw", "hvrpc", "tarpc", "hv/raw", "hv/tarpc"
    );
    let cell = |l: &Lat| format!("{:.1} / {:.1}", l.p50_us, l.p99_us);
    for l in &r.latency {
        let _ = writeln!(
            s,
            "{:<14} {:>21} {:>21} {:>21} {:>9} {:>9}",
            l.name,
            cell(&l.by_impl[raw]),
            cell(&l.by_impl[hv]),
            cell(&l.by_impl[tp]),
            x(ratio(l.by_impl[hv].p50_us, l.by_impl[raw].p50_us)),
            x(ratio(l.by_impl[hv].p50_us, l.by_impl[tp].p50_us)),
        );
    }
    let _ = writeln!(
        s,
        "\n{:<14} {:>21} {:>21} {:>21} {:>9} {:>9}",
        "calls/s", "raw", "hvrpc", "tarpc", "hv/raw", "hv/tarpc"
    );
    let rows = r
        .throughput
        .iter()
        .map(|t| (format!("{} in flight", t.in_flight), t.calls_per_s))
        .chain([(format!("{} conns", r.active.conns), r.active.calls_per_s)]);
    for (name, v) in rows {
        let _ = writeln!(
            s,
            "{:<14} {:>21.0} {:>21.0} {:>21.0} {:>9} {:>9}",
            name,
            v[raw],
            v[hv],
            v[tp],
            x(ratio(v[hv], v[raw])),
            x(ratio(v[hv], v[tp])),
        );
    }
    let cpu_rows = r
        .throughput
        .iter()
        .map(|t| (format!("{} in flight", t.in_flight), t.server_cpu_us))
        .chain([(format!("{} conns", r.active.conns), r.active.server_cpu_us)]);
    for (name, v) in cpu_rows {
        if let Some(v) = v {
            let _ = writeln!(
                s,
                "{:<14} {:>21.2} {:>21.2} {:>21.2} {:>9} {:>9}",
                format!("CPU µs {name}"),
                v[raw],
                v[hv],
                v[tp],
                x(ratio(v[hv], v[raw])),
                x(ratio(v[hv], v[tp])),
            );
        }
    }
    let b = &r.bulk.mb_per_s;
    let _ = writeln!(
        s,
        "{:<14} {:>21.0} {:>21.0} {:>21.0} {:>9} {:>9}",
        format!("MB/s {}", size_name(r.bulk.payload)),
        b[raw],
        b[hv],
        b[tp],
        x(ratio(b[hv], b[raw])),
        x(ratio(b[hv], b[tp])),
    );
    let m = [0, 1, 2].map(|i| r.idle.worst_bytes(Impl::ALL[i]) / 1024.0);
    let _ = writeln!(
        s,
        "{:<14} {:>21.1} {:>21.1} {:>21.1} {:>9} {:>9}",
        "KiB/idle conn",
        m[raw],
        m[hv],
        m[tp],
        x(ratio(m[hv], m[raw])),
        x(ratio(m[hv], m[tp])),
    );
    let _ = writeln!(s, "\ntargets (hvrpc):");
    for t in targets(r) {
        let _ = writeln!(
            s,
            "  [{}] {}: {} (goal {})",
            if t.met { "met" } else { "NOT met" },
            t.what,
            t.measured,
            t.goal
        );
    }
    s
}

/// `docs/BENCHMARKS.md`.
pub(crate) fn markdown(
    r: &Results,
    vm: Result<&Results, &str>,
    notes: Option<&str>,
    png_name: &str,
) -> String {
    let mut s = String::new();
    let m = &r.meta;
    let (raw, hv, tp) = (0, 1, 2);
    let _ = writeln!(
        s,
        "# Benchmarks\n\n\
         <!-- Generated by `cargo run --release -p hvrpc-bench -- report`; edit \
         examples/bench/NOTES.md or the generator, not this file. -->\n\n\
         hvrpc against **raw** — a hand-written length-prefixed echo over the same socket, with \
         request ids: the practical limit of the stream — and against **tarpc** \
         {tarpc} (serde transport, bincode). With several calls in flight on one connection, \
         raw's callers share it the way hvrpc's and tarpc's do, through a minimal hand-written \
         multiplexer (one writer task that writes whatever has gathered in one write, one \
         reader task that hands each answer to its caller by id); raw with one task keeping \
         the requests written ahead (no callers to multiplex) is shown beside it. Client and server run in separate processes over \
         the same transport (Unix sockets here), each with a multi-threaded tokio runtime, at \
         the same concurrency. The three implementations are measured in interleaved rounds \
         (raw, hvrpc, tarpc, then again in rotated order), so the noise of this shared machine \
         hits them alike: **absolute numbers are noisy, the ratios within one run are what \
         count.**\n",
        tarpc = m.tarpc
    );
    let _ = writeln!(
        s,
        "![latency and throughput per implementation]({png_name})\n"
    );
    let _ = writeln!(s, "## Machine and software\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| date | {} |", m.date);
    let _ = writeln!(
        s,
        "| CPU | {} ({} logical CPUs in /proc/cpuinfo; nproc {}) |",
        m.cpu, m.cpus, m.nproc
    );
    let _ = writeln!(s, "| memory | {} MiB |", m.mem_mib);
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| rustc | {} |", m.rustc);
    let _ = writeln!(s, "| hvrpc | {} |", m.hvrpc);
    let _ = writeln!(s, "| tarpc | {} |", m.tarpc);
    let _ = writeln!(
        s,
        "| run | {}, {} interleaved round(s), {:.0} s; transport: {} sockets |",
        if m.quick { "quick" } else { "full" },
        m.rounds,
        m.seconds,
        if m.transport == "unix" {
            "Unix"
        } else {
            &m.transport
        }
    );
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) | {} before, {} after |",
        m.load[0], m.load[1]
    );
    let _ = writeln!(s, "\n## Targets\n");
    let _ = writeln!(
        s,
        "| target | goal | measured (hvrpc) | met |\n|---|---|---|---|"
    );
    for t in targets(r) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }

    let _ = writeln!(
        s,
        "\n## Unary latency, one call in flight\n\n\
         Microseconds per call on one connection, measured by the caller. Ratios compare \
         hvrpc's p50 (lower is better).\n"
    );
    let _ = writeln!(
        s,
        "| call | | p50 µs | p99 µs | mean µs | calls | p50 vs raw | p50 vs tarpc |\n\
         |---|---|--:|--:|--:|--:|--:|--:|"
    );
    for l in &r.latency {
        for imp in Impl::ALL {
            let v = &l.by_impl[imp.index()];
            let q = |o: usize| x(ratio(v.p50_us, l.by_impl[o].p50_us));
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                if imp == Impl::Raw {
                    l.name.as_str()
                } else {
                    ""
                },
                imp,
                v.p50_us,
                v.p99_us,
                v.mean_us,
                v.calls,
                if imp == Impl::Raw { "".into() } else { q(raw) },
                if imp == Impl::Tarpc { "".into() } else { q(tp) },
            );
        }
    }

    let _ = writeln!(
        s,
        "\n## Throughput\n\n\
         `add` calls per second on **one** connection with N calls in flight (N tasks sharing \
         one client; raw: N tasks sharing one connection through the minimal multiplexer), and \
         over **{} connections** with one call in flight on each. *Raw pipelined*: one raw \
         task keeping N requests written ahead. *Server CPU*: the server process's user + \
         system CPU time over the calls it answered in those segments (`getrusage`). Ratios: \
         higher is better for calls/s, lower for CPU.\n",
        r.active.conns
    );
    let _ = writeln!(
        s,
        "| load | raw | hvrpc | tarpc | hvrpc / raw | hvrpc / tarpc | raw pipelined | server CPU µs/call raw / hvrpc / tarpc | CPU hvrpc / raw |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let rows = r
        .throughput
        .iter()
        .map(|t| (format!("{} in flight", t.in_flight), t))
        .chain([(format!("{} connections", r.active.conns), &r.active)]);
    for (name, t) in rows {
        let v = t.calls_per_s;
        let (cpu, cpu_q) = match t.server_cpu_us {
            Some(c) => (
                format!("{:.2} / {:.2} / {:.2}", c[raw], c[hv], c[tp]),
                x(ratio(c[hv], c[raw])),
            ),
            None => ("".into(), "".into()),
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {cpu} | {cpu_q} |",
            int(v[raw]),
            int(v[hv]),
            int(v[tp]),
            x(ratio(v[hv], v[raw])),
            x(ratio(v[hv], v[tp])),
            t.raw_pipelined.map(int).unwrap_or_default(),
        );
    }
    if let Some(i) = &r.instructions {
        let _ = writeln!(
            s,
            "\n**Instructions per call** (`valgrind --tool=callgrind`, which counts instructions, \
             not time: the same for the same binary and load whatever else the machine does; \
             callgrind runs each process's threads one at a time, so batching differs from the \
             runs above), {} calls in flight on one connection:\n",
            i.in_flight
        );
        let _ = writeln!(
            s,
            "| process | raw | hvrpc | tarpc | hvrpc / raw | hvrpc / tarpc |\n|---|--:|--:|--:|--:|--:|"
        );
        for (name, v) in [("client", i.client), ("server", i.server)] {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} |",
                int(v[raw]),
                int(v[hv]),
                int(v[tp]),
                x(ratio(v[hv], v[raw])),
                x(ratio(v[hv], v[tp]))
            );
        }
        if let Some([plain, info, debug]) = i.traced_server {
            let pct = |v: f64| (v / plain - 1.0) * 100.0;
            let _ = writeln!(
                s,
                "\n**Tracing.** hvrpc's server opens a `tracing` span per call (service, method, \
                 peer, call id, outcome, duration) only when debug events are wanted. Server \
                 instructions per call at the margin (callgrind, a run of half the time \
                 subtracted from one of twice the time, so start-up drops out), same load: no \
                 subscriber {}; a subscriber at `info`, so the span is off, {} ({:+.1} %); at \
                 `debug`, the span and every debug event on and formatted into a sink, {} \
                 ({:+.1} %).",
                int(plain),
                int(info),
                pct(info),
                int(debug),
                pct(debug)
            );
        }
    }

    let b = &r.bulk;
    let _ = writeln!(
        s,
        "\n## Bulk\n\n\
         Echo of {} payloads, one call in flight: payload MB (10⁶ bytes) per second; twice \
         that crosses the socket. hvrpc's `echo` takes and returns `hvrpc::Bytes` (its \
         zero-copy byte type; the caller passes a reference-counted clone); tarpc's takes and \
         returns a `Vec<u8>` (the caller passes a copy). *hvrpc, `Vec<u8>`*: hvrpc with the \
         same signature as tarpc's.\n",
        size_name(b.payload)
    );
    let _ = writeln!(
        s,
        "| | raw | hvrpc | tarpc | hvrpc / raw | hvrpc / tarpc |\n|---|--:|--:|--:|--:|--:|"
    );
    let _ = writeln!(
        s,
        "| MB/s | {:.0} | {:.0} | {:.0} | {} | {} |",
        b.mb_per_s[raw],
        b.mb_per_s[hv],
        b.mb_per_s[tp],
        x(ratio(b.mb_per_s[hv], b.mb_per_s[raw])),
        x(ratio(b.mb_per_s[hv], b.mb_per_s[tp]))
    );
    if let Some(v) = b.hvrpc_vec_mb_per_s {
        let _ = writeln!(
            s,
            "| MB/s, hvrpc with `Vec<u8>` | | {v:.0} | | {} | {} |",
            x(ratio(v, b.mb_per_s[raw])),
            x(ratio(v, b.mb_per_s[tp]))
        );
    }

    if let Some(t) = &r.transfer {
        let _ = writeln!(
            s,
            "\n## Large transfers\n\n\
             {} moved in one direction, one transfer at a time, MB (10⁶ bytes) per second. Raw: \
             1 MiB frames written from one reused buffer and read into one. hvrpc: a server \
             stream (down) or client stream (up) of 1 MiB items, each a whole frame, and four \
             unary calls of 256 MiB (messages in parts, §3.1 of PROTOCOL.md: each result or \
             argument is a fresh 256 MiB buffer, page-faulted in as it fills).\n",
            size_name(t.bytes as usize)
        );
        let _ = writeln!(
            s,
            "| | raw | hvrpc stream | hvrpc unary | stream / raw | unary / raw |\n\
             |---|--:|--:|--:|--:|--:|"
        );
        let _ = writeln!(
            s,
            "| download MB/s | {:.0} | {:.0} | {:.0} | {} | {} |",
            t.raw_down_mb_s,
            t.stream_down_mb_s,
            t.unary_down_mb_s,
            x(ratio(t.stream_down_mb_s, t.raw_down_mb_s)),
            x(ratio(t.unary_down_mb_s, t.raw_down_mb_s))
        );
        let _ = writeln!(
            s,
            "| upload MB/s | {:.0} | {:.0} | {:.0} | {} | {} |",
            t.raw_up_mb_s,
            t.stream_up_mb_s,
            t.unary_up_mb_s,
            x(ratio(t.stream_up_mb_s, t.raw_up_mb_s)),
            x(ratio(t.unary_up_mb_s, t.raw_up_mb_s))
        );
        let _ = writeln!(
            s,
            "\n**Head of line.** `add` called one at a time on one connection, first with nothing \
             else on it, then while {} streams down the same connection:\n\n\
             | | p50 µs | p99 µs | calls |\n|---|--:|--:|--:|\n\
             | idle connection | {:.1} | {:.1} | {} |\n\
             | during the transfer | {:.1} | {:.1} | {} |\n\n\
             p99 ratio: {}. A stream's producer holds at most 256 KiB of items (or one item in \
             parts) ahead of the writer, so a tiny call's frames wait behind about one item in \
             each direction, not behind the 8 MiB send budget.",
            size_name(t.bytes as usize),
            t.idle.p50_us,
            t.idle.p99_us,
            t.idle.calls,
            t.busy.p50_us,
            t.busy.p99_us,
            t.busy.calls,
            x(ratio(t.busy.p99_us, t.idle.p99_us))
        );
    }

    let i = &r.idle;
    let _ = writeln!(
        s,
        "\n## Server memory per idle connection\n\n\
         The server process's VmRSS (`/proc/self/status`, reported by the server itself) \
         after {n} more connections, divided by {n}; a fresh server per implementation, \
         measured after a first connection and a few calls. *Connected*: hvrpc's handshake \
         done, no call yet; *after one call*: every connection made one call and is idle \
         again. Kernel socket buffers are not in VmRSS.\n",
        n = i.conns
    );
    let _ = writeln!(
        s,
        "| KiB per connection | raw | hvrpc | tarpc | hvrpc / raw | hvrpc / tarpc |\n\
         |---|--:|--:|--:|--:|--:|"
    );
    for (name, v) in [
        ("connected", i.fresh_bytes),
        ("after one call", i.used_bytes),
    ] {
        let k = v.map(|b| b / 1024.0);
        let _ = writeln!(
            s,
            "| {name} | {:.1} | {:.1} | {:.1} | {} | {} |",
            k[raw],
            k[hv],
            k[tp],
            x(ratio(k[hv], k[raw])),
            x(ratio(k[hv], k[tp]))
        );
    }
    let _ = writeln!(
        s,
        "| server VmRSS before, KiB | {} | {} | {} | | |",
        i.base_kib[raw], i.base_kib[hv], i.base_kib[tp]
    );

    let _ = writeln!(
        s,
        "\n## AF_VSOCK loopback inside the test VM\n\n\
         The same benchmark (`run --quick --rounds 3 --transport vsock`) inside the QEMU guest \
         of `.ci/vm/run`, over AF_VSOCK loopback (`vsock://1:…`). The guest's CPU is emulated \
         (TCG): only the ratios mean anything, and even they are noisy.\n"
    );
    match vm {
        Ok(v) => s.push_str(&vm_ratios(v)),
        Err(why) => {
            let _ = writeln!(s, "Not in this report: {why}");
        }
    }
    if let Some(notes) = notes {
        let _ = writeln!(s, "\n{}", notes.trim_end());
    }
    s
}

/// The ratio tables of a run in the VM.
fn vm_ratios(v: &Results) -> String {
    let mut s = String::new();
    let (raw, hv, tp) = (0, 1, 2);
    let _ = writeln!(
        s,
        "Guest: {} CPU(s), {} MiB, kernel {}; {} round(s), {:.0} s.\n",
        v.meta.nproc, v.meta.mem_mib, v.meta.kernel, v.meta.rounds, v.meta.seconds
    );
    let _ = writeln!(
        s,
        "| measure | hvrpc / raw | hvrpc / tarpc |\n|---|--:|--:|"
    );
    for l in &v.latency {
        let b = &l.by_impl;
        let _ = writeln!(
            s,
            "| {} p50 latency (lower is better) | {} | {} |",
            l.name,
            x(ratio(b[hv].p50_us, b[raw].p50_us)),
            x(ratio(b[hv].p50_us, b[tp].p50_us))
        );
    }
    for t in &v.throughput {
        let c = &t.calls_per_s;
        let _ = writeln!(
            s,
            "| calls/s, {} in flight | {} | {} |",
            t.in_flight,
            x(ratio(c[hv], c[raw])),
            x(ratio(c[hv], c[tp]))
        );
    }
    let b = &v.bulk.mb_per_s;
    let _ = writeln!(
        s,
        "| bulk {} MB/s | {} | {} |",
        size_name(v.bulk.payload),
        x(ratio(b[hv], b[raw])),
        x(ratio(b[hv], b[tp]))
    );
    let c = &v.active.calls_per_s;
    let _ = writeln!(
        s,
        "| calls/s, {} connections | {} | {} |",
        v.active.conns,
        x(ratio(c[hv], c[raw])),
        x(ratio(c[hv], c[tp]))
    );
    let m = [0, 1, 2].map(|i| v.idle.worst_bytes(Impl::ALL[i]));
    let _ = writeln!(
        s,
        "| memory per idle connection | {} | {} |",
        x(ratio(m[hv], m[raw])),
        x(ratio(m[hv], m[tp]))
    );
    s
}

const COLORS: [RGBColor; 3] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
];

/// Draws `docs/benchmarks.png`: latency, throughput, bulk, many connections.
pub(crate) fn plot(r: &Results, path: &Path) -> Result<(), String> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded font is invalid".to_owned())?;
    plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| "the embedded font is invalid".to_owned())?;
    let root = BitMapBackend::new(path, (1500, 960)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "hvrpc vs raw vs tarpc over {} sockets — {} ({} CPUs), {}",
        if r.meta.transport == "unix" {
            "Unix"
        } else {
            &r.meta.transport
        },
        r.meta.cpu,
        r.meta.nproc,
        r.meta.date
    );
    let root = root
        .titled(
            &title,
            ("sans-serif", 22).into_font().style(FontStyle::Bold),
        )
        .map_err(|e| e.to_string())?;
    let legend = root.split_vertically(34);
    draw_legend(&legend.0).map_err(|e| e.to_string())?;
    let panels = legend.1.split_evenly((2, 3));

    let names: Vec<String> = r.latency.iter().map(|l| l.name.clone()).collect();
    let p50: Vec<[f64; 3]> = r
        .latency
        .iter()
        .map(|l| l.by_impl.map(|v| v.p50_us))
        .collect();
    let p99: Vec<[f64; 3]> = r
        .latency
        .iter()
        .map(|l| l.by_impl.map(|v| v.p99_us))
        .collect();
    grouped_bars(
        &panels[0],
        "Unary latency p50 (µs, log)",
        &names,
        &p50,
        true,
        "",
    )
    .map_err(|e| e.to_string())?;
    grouped_bars(
        &panels[1],
        "Unary latency p99 (µs, log)",
        &names,
        &p99,
        true,
        "",
    )
    .map_err(|e| e.to_string())?;
    throughput_lines(&panels[2], r).map_err(|e| e.to_string())?;
    grouped_bars(
        &panels[3],
        &format!("Bulk echo {} (MB/s)", size_name(r.bulk.payload)),
        &["MB/s".to_owned()],
        &[r.bulk.mb_per_s],
        false,
        "",
    )
    .map_err(|e| e.to_string())?;
    grouped_bars(
        &panels[4],
        &format!("{} active connections (calls/s)", r.active.conns),
        &["calls/s".to_owned()],
        &[r.active.calls_per_s],
        false,
        "k",
    )
    .map_err(|e| e.to_string())?;
    let mem = [
        r.idle.fresh_bytes.map(|b| b / 1024.0),
        r.idle.used_bytes.map(|b| b / 1024.0),
    ];
    grouped_bars(
        &panels[5],
        "Server memory per idle connection (KiB)",
        &["connected".to_owned(), "after one call".to_owned()],
        &mem,
        false,
        "",
    )
    .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_legend(area: &Area<'_>) -> DrawResult {
    let (w, _) = area.dim_in_pixel();
    let mut x0 = w as i32 / 2 - 220;
    for imp in Impl::ALL {
        let c = COLORS[imp.index()];
        area.draw(&Rectangle::new([(x0, 8), (x0 + 26, 26)], c.filled()))?;
        let label = match imp {
            Impl::Raw => "raw (the limit)",
            Impl::Hvrpc => "hvrpc",
            Impl::Tarpc => "tarpc",
        };
        area.draw(&Text::new(
            label,
            (x0 + 34, 8),
            ("sans-serif", 18).into_font(),
        ))?;
        x0 += 160;
    }
    Ok(())
}

/// Short numbers for labels: `1234` → `1.2k` when `unit` is `k`.
fn short(v: f64, unit: &str) -> String {
    match unit {
        "k" if v >= 1000.0 => format!("{:.0}k", v / 1000.0),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ if v >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// One group of three bars per label; values labelled on top.
fn grouped_bars(
    area: &Area<'_>,
    caption: &str,
    labels: &[String],
    values: &[[f64; 3]],
    log: bool,
    unit: &str,
) -> DrawResult {
    let max = values
        .iter()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let min = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let n = labels.len();
    let xs = -0.5f64..n as f64 - 0.5;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60);
    let label_of = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let bar = |i: usize, k: usize| {
        let w = 0.26;
        let x0 = i as f64 - 1.5 * w + k as f64 * w;
        (x0 + 0.02, x0 + w - 0.02)
    };
    if log {
        let lo = (min / 2.0).max(1e-3);
        let mut chart = builder.build_cartesian_2d(xs, (lo..max * 3.0).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(4 * n + 1)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| short(*v, unit))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, group) in values.iter().enumerate() {
            for (k, &v) in group.iter().enumerate() {
                let (a, b) = bar(i, k);
                chart.draw_series([Rectangle::new(
                    [(a, lo), (b, v.max(lo))],
                    COLORS[k].filled(),
                )])?;
                chart.draw_series([Text::new(
                    short(v, unit),
                    ((a + b) / 2.0, v.max(lo) * 1.15),
                    TextStyle::from(("sans-serif", 11).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )])?;
            }
        }
    } else {
        let mut chart = builder.build_cartesian_2d(xs, 0f64..max * 1.18)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(4 * n + 1)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| short(*v, unit))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, group) in values.iter().enumerate() {
            for (k, &v) in group.iter().enumerate() {
                let (a, b) = bar(i, k);
                chart.draw_series([Rectangle::new([(a, 0.0), (b, v)], COLORS[k].filled())])?;
                chart.draw_series([Text::new(
                    short(v, unit),
                    ((a + b) / 2.0, v + max * 0.015),
                    TextStyle::from(("sans-serif", 13).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )])?;
            }
        }
    }
    Ok(())
}

/// Calls/s against calls in flight on one connection, a line per implementation (log scale:
/// raw's pipelining is an order of magnitude above the RPC frameworks).
fn throughput_lines(area: &Area<'_>, r: &Results) -> DrawResult {
    let n = r.throughput.len();
    let all = || r.throughput.iter().flat_map(|t| t.calls_per_s);
    let max = all().fold(0.0f64, f64::max).max(1.0);
    let min = all()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(max);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Throughput, one connection (calls/s, log)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.3f64..n as f64 - 0.7, (min / 2.0..max * 2.5).log_scale())?;
    let flights: Vec<usize> = r.throughput.iter().map(|t| t.in_flight).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(4 * n + 1)
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                flights
                    .get(i as usize)
                    .map(|f| format!("{f} in flight"))
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| short(*v, "k"))
        .label_style(("sans-serif", 14))
        .draw()?;
    for imp in Impl::ALL {
        let c = COLORS[imp.index()];
        let pts: Vec<(f64, f64)> = r
            .throughput
            .iter()
            .enumerate()
            .map(|(i, t)| (i as f64, t.calls_per_s[imp.index()].max(min / 2.0)))
            .collect();
        chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))?;
        chart.draw_series(pts.iter().map(|&(px, py)| {
            // hvrpc's labels above its points, tarpc's below: the two lines run close.
            let (dy, v) = match imp {
                Impl::Tarpc => (0.72, VPos::Top),
                _ => (1.12, VPos::Bottom),
            };
            Text::new(
                short(py, "k"),
                (px + 0.04, py * dy),
                TextStyle::from(("sans-serif", 13).into_font())
                    .color(&c)
                    .pos(Pos::new(HPos::Left, v)),
            )
        }))?;
    }
    Ok(())
}
