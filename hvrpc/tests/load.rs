//! Load: 1000 client connections, each keeping calls in flight, against one server for a
//! bounded time, on Unix sockets (loopback only). Zero calls may fail, and the server's memory
//! must stay bounded: it runs in a process of its own (this test binary, started again), whose
//! resident set is sampled from `/proc/<pid>/status` every second.
//!
//! CI runs 15 s. The figures in `docs/SECURITY.md` come from the 60 s run:
//!
//! ```text
//! HVRPC_LOAD_SECS=60 cargo test -p hvrpc --release --test load -- --nocapture
//! ```
//!
//! `HVRPC_LOAD_CONNS` changes the number of connections (default 1000).
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hvrpc::transport::Listener;
use hvrpc::{Config, Context, Endpoint, Server};

/// The service under load.
#[hvrpc::service(port = 6300)]
pub trait Load {
    /// Echoes bytes.
    async fn echo(data: Vec<u8>) -> Vec<u8>;
    /// Sleeps, so that calls stay in flight.
    async fn nap(ms: u64) -> u64;
}

struct Imp;

impl Load for Imp {
    async fn echo(&self, _: Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn nap(&self, _: Context, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The server process: serves until its standard input closes (so it also ends if the test
/// process dies).
#[test]
#[ignore = "the server process of `thousand_connections_with_calls_in_flight`, not a test"]
fn load_server_process() {
    let Ok(path) = std::env::var("HVRPC_LOAD_SOCKET") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = Listener::bind(&Endpoint::unix(path)).await.unwrap();
        let mut config = Config::server();
        config.max_connections = 4096;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = tx.send(());
        });
        println!("\nhvrpc-load-server-ready");
        Server::new()
            .config(config)
            .add_service(LoadServer::new(Imp))
            .serve_with_shutdown(listener, async {
                let _ = rx.await;
            })
            .await;
    });
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The soft limit on open files of this process.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(1024)
}

struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing its stdin ends it; kill it if it does not end by itself.
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(socket: &std::path::Path) -> ServerProcess {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "load_server_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HVRPC_LOAD_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l == "hvrpc-load-server-ready" => break,
            Some(Ok(_)) => continue,
            other => panic!("the server process did not start: {other:?}"),
        }
    }
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ServerProcess { child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_connections_with_calls_in_flight() {
    let secs = env_or("HVRPC_LOAD_SECS", 15);
    let mut conns = env_or("HVRPC_LOAD_CONNS", 1000);
    // Each connection is a descriptor here and one in the server process.
    let limit = open_files_limit();
    if limit < conns + 200 {
        println!(
            "load: only {limit} open files allowed; using {} connections",
            limit - 200
        );
        conns = limit.saturating_sub(200);
    }
    const IN_FLIGHT: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("load.sock");
    let server = start_server(&socket);
    let pid = server.child.id();
    let ep = Endpoint::unix(&socket);
    let rss_idle = status_kib(pid, "VmRSS:");

    // Connect everybody first.
    let started = Instant::now();
    let mut clients = Vec::new();
    for chunk in 0..conns.div_ceil(100) {
        let batch: Vec<_> = (chunk * 100..((chunk + 1) * 100).min(conns))
            .map(|_| {
                let ep = ep.clone();
                tokio::spawn(async move { LoadClient::connect(&ep).await })
            })
            .collect();
        for b in batch {
            clients.push(b.await.unwrap().expect("connecting"));
        }
    }
    let connect_time = started.elapsed();
    let rss_connected = status_kib(pid, "VmRSS:");

    // Then calls, IN_FLIGHT at a time on every connection, until the time is up.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        for j in 0..IN_FLIGHT {
            let (client, stop, ok, failed, slowest_us) = (
                client.clone(),
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                Arc::clone(&slowest_us),
            );
            let mut rng = fastrand::Rng::with_seed((i as u64) << 8 | j);
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let good = if rng.bool() {
                        let data = vec![rng.u8(..); rng.usize(1..512)];
                        client.echo(data.clone()).await.map(|r| r == data)
                    } else {
                        let ms = rng.u64(1..50);
                        client.nap(ms).await.map(|r| r == ms)
                    };
                    match good {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("load: a call failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    let us = start.elapsed().as_micros() as u64;
                    slowest_us.fetch_max(us, Ordering::Relaxed);
                }
            }));
        }
    }
    let load_start = Instant::now();
    let mut samples = Vec::new();
    while load_start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(status_kib(pid, "VmRSS:"));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a call hung")
            .unwrap();
    }
    let elapsed = load_start.elapsed();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let peak = status_kib(pid, "VmHWM:");
    let quarter = samples.get(samples.len() / 4).copied().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    let client_rss = status_kib(std::process::id(), "VmRSS:");
    println!(
        "load: {conns} connections (connected in {connect_time:?}), {} calls in flight, \
         {elapsed:.1?}: {ok} calls ok, {failed} failed, {:.0} calls/s, slowest {} ms\n\
         load: server RSS idle {} MiB, connected {} MiB, at 1/4 {} MiB, at end {} MiB, peak {} \
         MiB ({} KiB per connection at peak); client process RSS {} MiB",
        conns * IN_FLIGHT,
        ok as f64 / elapsed.as_secs_f64(),
        slowest_us.load(Ordering::Relaxed) / 1000,
        rss_idle / 1024,
        rss_connected / 1024,
        quarter / 1024,
        last / 1024,
        peak / 1024,
        peak.saturating_sub(rss_idle) / conns.max(1),
        client_rss / 1024,
    );
    assert_eq!(failed, 0, "calls failed under load");
    assert!(ok > conns, "too few calls: {ok}");
    // Bounded: well under a gigabyte, and no steady growth while the load is steady.
    assert!(peak < 1024 * 1024, "server peak RSS {peak} KiB");
    assert!(
        last <= quarter + quarter / 2 + 16 * 1024,
        "server RSS grew from {quarter} KiB to {last} KiB under a steady load"
    );
    drop(clients);
    drop(server);
}
