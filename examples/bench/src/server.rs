//! The server process (`hvrpc-bench serve IMPL ENDPOINT`): serves one implementation, and
//! answers `stats` on standard input with its resident memory and connection count. It exits
//! when standard input closes, so it never outlives the benchmark that started it.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use hvrpc::Endpoint;
use hvrpc::transport::{Listener, Stream};
use tarpc::server::{BaseChannel, Channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::proto::{Impl, MAX_FRAME, hv, raw, tp};

/// Connections accepted (hvrpc: handshakes completed) since the start.
type Counter = Arc<AtomicUsize>;

/// The environment variable that installs a `tracing` subscriber in the server process, at
/// `info` (hvrpc's per-call span off) or `debug` (on, written to nowhere); unset: none.
pub(crate) const TRACE_ENV: &str = "HVRPC_BENCH_TRACE";

/// Installs the subscriber [`TRACE_ENV`] asks for.
fn install_tracing() -> Result<(), String> {
    let level = match std::env::var(TRACE_ENV).as_deref() {
        Err(_) | Ok("") => return Ok(()),
        Ok("info") => tracing_subscriber::filter::LevelFilter::INFO,
        Ok("debug") => tracing_subscriber::filter::LevelFilter::DEBUG,
        Ok(other) => return Err(format!("{TRACE_ENV}={other}: expected info or debug")),
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::sink)
        .try_init()
        .map_err(|e| format!("installing the tracing subscriber: {e}"))
}

/// Runs the server process.
pub(crate) fn main(imp: Impl, endpoint: &Endpoint) -> Result<(), String> {
    install_tracing()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let conns: Counter = Arc::default();
    rt.block_on(async {
        let listener = Listener::bind(endpoint)
            .await
            .map_err(|e| format!("binding {endpoint}: {e}"))?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ready");
            let _ = out.flush();
        }
        let control = Arc::clone(&conns);
        std::thread::spawn(move || control_loop(&control));
        match imp {
            Impl::Raw => serve_raw(listener, conns).await,
            Impl::Hvrpc => serve_hvrpc(listener, conns).await,
            Impl::Tarpc => serve_tarpc(listener, conns).await,
        }
        Ok(())
    })
}

/// Answers `stats` with `stats <VmRSS KiB> <connections> <calls served> <CPU µs>`; exits the
/// process at end of input (saying on standard error how many calls it served, for profilers).
fn control_loop(conns: &Counter) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let rss = vm_rss_kib().unwrap_or(0);
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "stats {rss} {} {} {}",
                conns.load(Ordering::SeqCst),
                crate::proto::SERVED.load(Ordering::Relaxed),
                cpu_micros()
            );
            let _ = out.flush();
        }
    }
    eprintln!(
        "[bench] server served {} calls",
        crate::proto::SERVED.load(Ordering::Relaxed)
    );
    std::process::exit(0);
}

/// CPU time (user and system) this process has used, in microseconds.
#[allow(unsafe_code, reason = "std has no wrapper for getrusage")]
pub(crate) fn cpu_micros() -> u64 {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0;
        }
        u
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// This process's resident set size from `/proc/self/status`, in KiB.
pub(crate) fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn serve_hvrpc(listener: Listener, conns: Counter) {
    let mut config = hvrpc::Config::server();
    config.max_frame = MAX_FRAME;
    // Room for the transfer rows' 256 MiB uploads.
    config.max_request_bytes = 512 << 20;
    config.max_connections = 1 << 16;
    // Over vsock loopback in the VM every connection comes from the same CID.
    config.max_connections_per_vm = 1 << 16;
    let server = hvrpc::Server::new()
        .config(config)
        .add_service(hv::BenchServer::new(hv::Impl))
        .on_connection(move |_| {
            conns.fetch_add(1, Ordering::SeqCst);
        });
    server
        .serve_with_shutdown(listener, std::future::pending())
        .await;
}

async fn serve_tarpc(listener: Listener, conns: Counter) {
    use tp::Bench as _;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        conns.fetch_add(1, Ordering::SeqCst);
        let framed = tarpc::tokio_util::codec::Framed::new(stream, tp::codec());
        let transport =
            tarpc::serde_transport::new(framed, tarpc::tokio_serde::formats::Bincode::default());
        tokio::spawn(
            BaseChannel::with_defaults(transport)
                .execute(tp::Impl.serve())
                .for_each(|call| async move {
                    tokio::spawn(call);
                }),
        );
    }
}

async fn serve_raw(listener: Listener, conns: Counter) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        conns.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = raw_connection(stream).await;
        });
    }
}

/// One raw connection: read a request, answer it, flush when no further request is buffered.
async fn raw_connection(stream: Stream) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let mut payload = Vec::new();
    let mut uploaded = 0u64;
    let mut chunk = Vec::new();
    loop {
        let len = match r.read_u32().await {
            Ok(len) => len as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if !(raw::HEAD..=MAX_FRAME).contains(&len) {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let id = r.read_u64_le().await?;
        let op = r.read_u8().await?;
        payload.resize(len - raw::HEAD, 0);
        r.read_exact(&mut payload).await?;
        if op == raw::OP_UPLOAD {
            uploaded += payload.len() as u64;
            continue;
        }
        crate::proto::served();
        match op {
            raw::OP_END => {
                w.write_u32((raw::HEAD + 8) as u32).await?;
                w.write_u64_le(id).await?;
                w.write_u8(op).await?;
                w.write_u64_le(std::mem::take(&mut uploaded)).await?;
            }
            raw::OP_DOWNLOAD => {
                let word = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(payload.get(at..at + 8).unwrap_or(&[0; 8]));
                    u64::from_le_bytes(b)
                };
                let (mut left, size) = (word(0), (word(8) as u32).max(1) as usize);
                chunk.resize(size.min(MAX_FRAME - raw::HEAD), 0x3c);
                while left > 0 {
                    let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    w.write_u32((raw::HEAD + n) as u32).await?;
                    w.write_u64_le(id).await?;
                    w.write_u8(op).await?;
                    w.write_all(&chunk[..n]).await?;
                    left -= n as u64;
                }
                w.write_u32(raw::HEAD as u32).await?;
                w.write_u64_le(id).await?;
                w.write_u8(raw::OP_END).await?;
            }
            raw::OP_ADD => {
                let mut a = [0u8; 8];
                let mut b = [0u8; 8];
                a.copy_from_slice(payload.get(..8).unwrap_or(&[0; 8]));
                b.copy_from_slice(payload.get(8..16).unwrap_or(&[0; 8]));
                let sum = u64::from_le_bytes(a).wrapping_add(u64::from_le_bytes(b));
                w.write_u32((raw::HEAD + 8) as u32).await?;
                w.write_u64_le(id).await?;
                w.write_u8(op).await?;
                w.write_u64_le(sum).await?;
            }
            _ => {
                w.write_u32(len as u32).await?;
                w.write_u64_le(id).await?;
                w.write_u8(op).await?;
                w.write_all(&payload).await?;
            }
        }
        if r.buffer().is_empty() {
            w.flush().await?;
        }
    }
}
