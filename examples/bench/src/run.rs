//! One benchmark run: servers in their own processes, every workload measured in interleaved
//! rounds (raw, hvrpc, tarpc, then the next round in a rotated order), so that the noise of a
//! shared machine hits the three alike and the ratios hold even when absolute numbers drift.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hvrpc::{Endpoint, VsockAddr};

use crate::client::{self, Call, Conn, ServerProc};
use crate::model::{BulkRow, IdleRow, Lat, LatencyRow, Meta, PerImpl, RateRow, Results};
use crate::proto::Impl;

/// The transport every implementation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Unix sockets in a temporary directory.
    Unix,
    /// AF_VSOCK loopback (CID 1); only inside the test VM.
    Vsock,
}

/// How long and how much to measure.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// `--quick`: a smoke run.
    pub(crate) quick: bool,
    /// The transport.
    pub(crate) transport: Transport,
    /// Interleaved rounds per measurement.
    pub(crate) rounds: usize,
    /// Time per implementation per round for latency and throughput.
    pub(crate) segment: Duration,
    /// Time per implementation per round for the bulk echo.
    pub(crate) bulk_segment: Duration,
    /// Connections for the idle and active measurements.
    pub(crate) conns: usize,
    /// Calls in flight for the throughput measurements.
    pub(crate) in_flight: Vec<usize>,
    /// Echo payload sizes for the latency measurements.
    pub(crate) echo_sizes: Vec<usize>,
    /// Bulk payload size.
    pub(crate) bulk_size: usize,
}

impl Plan {
    /// The plan for a full or a quick run.
    pub(crate) fn new(quick: bool, transport: Transport) -> Plan {
        let (rounds, segment, bulk_segment) = if quick {
            (1, Duration::from_millis(150), Duration::from_millis(250))
        } else {
            (3, Duration::from_millis(800), Duration::from_millis(1200))
        };
        Plan {
            quick,
            transport,
            rounds,
            segment,
            bulk_segment,
            conns: 1000,
            in_flight: vec![1, 16, 64, 256],
            echo_sizes: vec![64, 4 * 1024, 64 * 1024],
            bulk_size: 1024 * 1024,
        }
    }
}

/// Where servers listen and clients dial.
struct Places {
    transport: Transport,
    dir: Option<PathBuf>,
    next: u32,
}

impl Places {
    fn new(transport: Transport) -> Result<Places, String> {
        let dir = match transport {
            Transport::Unix => {
                let dir = std::env::temp_dir().join(format!("hvrpc-bench-{}", std::process::id()));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                Some(dir)
            }
            Transport::Vsock => None,
        };
        Ok(Places {
            transport,
            dir,
            next: 0,
        })
    }

    /// A fresh (listen, dial) pair.
    fn next(&mut self, imp: Impl) -> (Endpoint, Endpoint) {
        self.next += 1;
        match (&self.dir, self.transport) {
            (Some(dir), _) => {
                let ep = Endpoint::unix(dir.join(format!("{imp}-{}.sock", self.next)));
                (ep.clone(), ep)
            }
            (None, _) => {
                let port = 0x4860_0000 + self.next;
                (
                    Endpoint::Vsock(VsockAddr::any(port)),
                    Endpoint::Vsock(VsockAddr::new(VsockAddr::LOCAL_CID, port)),
                )
            }
        }
    }

    fn spawn(&mut self, imp: Impl) -> Result<ServerProc, String> {
        let (listen, dial) = self.next(imp);
        ServerProc::spawn(imp, &listen, dial)
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The implementations in round `r`'s order.
fn order(r: usize) -> [Impl; 3] {
    let mut all = Impl::ALL;
    all.rotate_left(r % Impl::ALL.len());
    all
}

/// Runs a future on a worker thread of `rt` (as every client task runs), not on the
/// thread that blocks.
fn on_worker<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    rt.block_on(rt.spawn(fut))
        .map_err(|e| format!("benchmark task failed: {e}"))?
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Runs every workload of `plan`.
pub(crate) fn run(plan: &Plan) -> Result<Results, String> {
    let started = Instant::now();
    let load_before = crate::machine::loadavg();
    // Three implementations' connections are open at once in this process.
    let want = 3 * plan.conns as u64 + 256;
    let limit = crate::machine::raise_open_files(want);
    if limit < want {
        return Err(format!(
            "{want} open files are needed but the limit is {limit} (ulimit -n)"
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut places = Places::new(plan.transport)?;

    // Latency, throughput and bulk: one server per implementation for all of them.
    let mut servers: Vec<ServerProc> = Impl::ALL
        .iter()
        .map(|&imp| places.spawn(imp))
        .collect::<Result<_, _>>()?;
    let eps: PerImpl<Endpoint> = [0, 1, 2].map(|i| servers[i].dial.clone());
    for imp in Impl::ALL {
        let ep = eps[imp.index()].clone();
        on_worker(&rt, async move {
            let mut c = Conn::connect(imp, &ep).await?;
            c.check().await.map_err(|e| format!("{imp}: {e}"))
        })?;
    }
    progress("all three implementations answer add and echo correctly");

    let mut calls = vec![("add".to_owned(), 0, Call::Add)];
    for &size in &plan.echo_sizes {
        let data = hvrpc::Bytes::from(vec![0x5a; size]);
        calls.push((format!("echo {}", size_name(size)), size, Call::Echo(data)));
    }
    let mut latency = Vec::new();
    for (name, payload, call) in calls {
        let mut samples: PerImpl<Vec<u32>> = Default::default();
        for r in 0..plan.rounds {
            for imp in order(r) {
                let (ep, call, dur) = (eps[imp.index()].clone(), call.clone(), plan.segment);
                let timed = on_worker(
                    &rt,
                    async move { client::latency(imp, &ep, &call, dur).await },
                )?;
                samples[imp.index()].extend(timed.samples);
            }
        }
        let by_impl = samples.map(|mut s| Lat::from_ns(&mut s));
        progress(format!(
            "latency {name}: p50 {:.1} / {:.1} / {:.1} us (raw / hvrpc / tarpc)",
            by_impl[0].p50_us, by_impl[1].p50_us, by_impl[2].p50_us
        ));
        latency.push(LatencyRow {
            name,
            payload,
            by_impl,
        });
    }

    let mut throughput = Vec::new();
    for &n in &plan.in_flight {
        let mut rates: PerImpl<Vec<f64>> = Default::default();
        let mut cpu: PerImpl<CpuPerCall> = Default::default();
        let mut pipelined = Vec::new();
        for r in 0..plan.rounds {
            for imp in order(r) {
                let (ep, dur) = (eps[imp.index()].clone(), plan.segment);
                let before = servers[imp.index()].stats()?;
                let rate = on_worker(
                    &rt,
                    async move { client::throughput(imp, &ep, n, dur).await },
                )?;
                let after = servers[imp.index()].stats()?;
                cpu[imp.index()].add(&before, &after);
                rates[imp.index()].push(rate);
                if imp == Impl::Raw {
                    let (ep, dur) = (eps[imp.index()].clone(), plan.segment);
                    pipelined.push(on_worker(&rt, async move {
                        client::throughput_pipelined(&ep, n, dur).await
                    })?);
                }
            }
        }
        let calls_per_s = rates.map(|r| mean(&r));
        let server_cpu_us = cpu.map(|c| c.us_per_call());
        progress(format!(
            "throughput, {n} in flight: {:.0} / {:.0} / {:.0} calls/s (raw pipelined {:.0}); \
             server CPU {:.2} / {:.2} / {:.2} us/call",
            calls_per_s[0],
            calls_per_s[1],
            calls_per_s[2],
            mean(&pipelined),
            server_cpu_us[0],
            server_cpu_us[1],
            server_cpu_us[2]
        ));
        throughput.push(RateRow {
            in_flight: n,
            conns: 1,
            calls_per_s,
            server_cpu_us: Some(server_cpu_us),
            raw_pipelined: Some(mean(&pipelined)),
        });
    }

    let bulk = {
        let data = hvrpc::Bytes::from(vec![0xa5; plan.bulk_size]);
        let mut bytes = [0f64; 3];
        let mut secs = [0f64; 3];
        let mut n = [0usize; 3];
        // hvrpc once more with `echo_vec` (a `Vec<u8>` copy in, a `Vec<u8>` out, like tarpc).
        let (mut vec_bytes, mut vec_secs) = (0f64, 0f64);
        for r in 0..plan.rounds {
            for imp in order(r) {
                let (ep, call, dur) = (
                    eps[imp.index()].clone(),
                    Call::Echo(data.clone()),
                    plan.bulk_segment,
                );
                let timed = on_worker(
                    &rt,
                    async move { client::latency(imp, &ep, &call, dur).await },
                )?;
                let i = imp.index();
                n[i] += timed.samples.len();
                bytes[i] += (timed.samples.len() * plan.bulk_size) as f64;
                secs[i] += timed.wall.as_secs_f64();
            }
            let (ep, call, dur) = (
                eps[Impl::Hvrpc.index()].clone(),
                Call::EchoVec(data.clone()),
                plan.bulk_segment,
            );
            let timed = on_worker(&rt, async move {
                client::latency(Impl::Hvrpc, &ep, &call, dur).await
            })?;
            vec_bytes += (timed.samples.len() * plan.bulk_size) as f64;
            vec_secs += timed.wall.as_secs_f64();
        }
        let mb_per_s = [0, 1, 2].map(|i| bytes[i] / secs[i] / 1e6);
        let hvrpc_vec_mb_per_s = vec_bytes / vec_secs / 1e6;
        progress(format!(
            "bulk echo {}: {:.0} / {:.0} / {:.0} MB/s (hvrpc with Vec<u8>: {:.0})",
            size_name(plan.bulk_size),
            mb_per_s[0],
            mb_per_s[1],
            mb_per_s[2],
            hvrpc_vec_mb_per_s
        ));
        BulkRow {
            payload: plan.bulk_size,
            mb_per_s,
            calls: n,
            hvrpc_vec_mb_per_s: Some(hvrpc_vec_mb_per_s),
        }
    };
    // Over vsock the guest's memory is too small for 256 MiB messages.
    let transfer = if plan.transport == Transport::Unix {
        let (raw_ep, hv_ep) = (
            eps[Impl::Raw.index()].clone(),
            eps[Impl::Hvrpc.index()].clone(),
        );
        let rounds = plan.rounds;
        let t = on_worker(&rt, async move {
            crate::transfer::measure(raw_ep, hv_ep, rounds).await
        })?;
        progress(format!(
            "1 GiB down: raw {:.0}, hvrpc stream {:.0}, hvrpc unary {:.0} MB/s; up: raw {:.0}, \
             hvrpc stream {:.0}, hvrpc unary {:.0} MB/s; add p99 {:.1} us idle, {:.1} us under a 1 GiB stream",
            t.raw_down_mb_s,
            t.stream_down_mb_s,
            t.unary_down_mb_s,
            t.raw_up_mb_s,
            t.stream_up_mb_s,
            t.unary_up_mb_s,
            t.idle.p99_us,
            t.busy.p99_us
        ));
        Some(t)
    } else {
        None
    };
    drop(servers);

    let (idle, active) = many_connections(plan, &rt, &mut places)?;

    Ok(Results {
        meta: Meta {
            transport: match plan.transport {
                Transport::Unix => "unix".into(),
                Transport::Vsock => "vsock".into(),
            },
            quick: plan.quick,
            rounds: plan.rounds,
            seconds: started.elapsed().as_secs_f64(),
            load: [load_before, crate::machine::loadavg()],
            ..crate::machine::describe()
        },
        latency,
        throughput,
        bulk,
        idle,
        active,
        transfer,
        instructions: None,
    })
}

/// Server CPU time over the calls it answered, summed over segments.
#[derive(Clone, Copy, Debug, Default)]
struct CpuPerCall {
    cpu_us: u64,
    calls: u64,
}

impl CpuPerCall {
    fn add(&mut self, before: &client::ServerStats, after: &client::ServerStats) {
        self.cpu_us += after.cpu_us.saturating_sub(before.cpu_us);
        self.calls += after.served.saturating_sub(before.served);
    }

    fn us_per_call(&self) -> f64 {
        if self.calls == 0 {
            f64::NAN
        } else {
            self.cpu_us as f64 / self.calls as f64
        }
    }
}

/// Idle memory per connection, then calls/s over all of them: fresh servers, so that memory
/// freed by earlier workloads does not hide what connections cost.
fn many_connections(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    places: &mut Places,
) -> Result<(IdleRow, RateRow), String> {
    let n = plan.conns;
    let mut base_kib = [0u64; 3];
    let mut fresh_bytes = [0f64; 3];
    let mut used_bytes = [0f64; 3];
    let mut held: Vec<(ServerProc, Vec<Conn>)> = Vec::new();
    for imp in Impl::ALL {
        let mut server = places.spawn(imp)?;
        let ep = server.dial.clone();
        // One connection and a few calls first: what the first connection costs (runtime
        // threads, allocator arenas) is not what each further one costs.
        let warm = {
            let ep = ep.clone();
            on_worker(rt, async move {
                let mut c = Conn::connect(imp, &ep).await?;
                c.check().await?;
                Ok(c)
            })?
        };
        std::thread::sleep(Duration::from_millis(300));
        let s0 = server.stats()?;
        let conns = {
            let ep = ep.clone();
            on_worker(rt, async move { client::open(imp, &ep, n).await })?
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = server.stats()?;
            if s.conns >= s0.conns + n {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{imp}: the server has {} of {n} connections after 60 s",
                    s.conns - s0.conns
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        let s1 = server.stats()?;
        let conns = on_worker(rt, async move {
            let mut conns = conns;
            for (i, c) in conns.iter_mut().enumerate() {
                c.call(&Call::Add, i as u64).await?;
            }
            Ok(conns)
        })?;
        std::thread::sleep(Duration::from_millis(500));
        let s2 = server.stats()?;
        let i = imp.index();
        base_kib[i] = s0.rss_kib;
        fresh_bytes[i] = s1.rss_kib.saturating_sub(s0.rss_kib) as f64 * 1024.0 / n as f64;
        used_bytes[i] = s2.rss_kib.saturating_sub(s0.rss_kib) as f64 * 1024.0 / n as f64;
        progress(format!(
            "{imp}: {n} idle connections cost the server {:.1} KiB each ({:.1} KiB after a call)",
            fresh_bytes[i] / 1024.0,
            used_bytes[i] / 1024.0
        ));
        drop(warm);
        held.push((server, conns));
    }

    let mut rates: PerImpl<Vec<f64>> = Default::default();
    let mut cpu: PerImpl<CpuPerCall> = Default::default();
    for r in 0..plan.rounds {
        for imp in order(r) {
            let i = imp.index();
            let conns = std::mem::take(&mut held[i].1);
            let dur = plan.segment.max(Duration::from_millis(300));
            let before = held[i].0.stats()?;
            let (rate, back) = rt
                .block_on(rt.spawn(client::active(conns, dur)))
                .map_err(|e| format!("benchmark task failed: {e}"))?;
            let after = held[i].0.stats()?;
            cpu[i].add(&before, &after);
            held[i].1 = back;
            rates[i].push(rate.map_err(|e| format!("{imp}, {n} active connections: {e}"))?);
        }
    }
    let calls_per_s = rates.map(|r| mean(&r));
    let server_cpu_us = cpu.map(|c| c.us_per_call());
    progress(format!(
        "{n} active connections: {:.0} / {:.0} / {:.0} calls/s; server CPU {:.2} / {:.2} / {:.2} us/call",
        calls_per_s[0],
        calls_per_s[1],
        calls_per_s[2],
        server_cpu_us[0],
        server_cpu_us[1],
        server_cpu_us[2]
    ));
    // Close the clients while the runtime still runs, then stop the servers.
    rt.block_on(async move {
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    Ok((
        IdleRow {
            conns: n,
            base_kib,
            fresh_bytes,
            used_bytes,
        },
        RateRow {
            in_flight: 1,
            conns: n,
            calls_per_s,
            server_cpu_us: Some(server_cpu_us),
            raw_pipelined: None,
        },
    ))
}

/// Runs one workload of one implementation for `dur` (for profilers); returns a summary.
pub(crate) fn profile(
    imp: Impl,
    workload: &str,
    size: usize,
    n: usize,
    dur: Duration,
) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    crate::machine::raise_open_files(n as u64 + 256);
    let mut places = Places::new(Transport::Unix)?;
    let server = places.spawn(imp)?;
    let ep = server.dial.clone();
    match workload {
        "latency" => {
            let call = if size == 0 {
                Call::Add
            } else {
                Call::Echo(hvrpc::Bytes::from(vec![0x5a; size]))
            };
            let mut t = on_worker(
                &rt,
                async move { client::latency(imp, &ep, &call, dur).await },
            )?;
            let lat = Lat::from_ns(&mut t.samples);
            Ok(format!(
                "{imp} latency ({} B): p50 {:.1} us, p99 {:.1} us, {} calls, {:.0} MB/s",
                size,
                lat.p50_us,
                lat.p99_us,
                lat.calls,
                (lat.calls * size) as f64 / t.wall.as_secs_f64() / 1e6
            ))
        }
        "throughput" => {
            let mut server = server;
            let s0 = server.stats()?;
            let rate = on_worker(
                &rt,
                async move { client::throughput(imp, &ep, n, dur).await },
            )?;
            let s1 = server.stats()?;
            let per_call = (s1.cpu_us - s0.cpu_us) as f64 / (s1.served - s0.served).max(1) as f64;
            Ok(format!(
                "{imp} throughput, {n} in flight: {rate:.0} calls/s; server CPU {per_call:.2} us/call"
            ))
        }
        "active" => {
            let conns = on_worker(&rt, async move { client::open(imp, &ep, n).await })?;
            let (rate, back) = rt
                .block_on(rt.spawn(client::active(conns, dur)))
                .map_err(|e| format!("benchmark task failed: {e}"))?;
            rt.block_on(async move { drop(back) });
            Ok(format!(
                "{imp}, {n} active connections: {:.0} calls/s",
                rate?
            ))
        }
        other => Err(format!("unknown workload {other}")),
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// `64 B`, `4 KiB`, `1 MiB`.
pub(crate) fn size_name(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}
