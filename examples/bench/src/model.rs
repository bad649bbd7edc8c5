//! What a run measured (serialisable, so that a run in the VM can be reported on the host).

use serde::{Deserialize, Serialize};

use crate::proto::Impl;

/// One value per implementation, in [`Impl::ALL`] order.
pub(crate) type PerImpl<T> = [T; 3];

/// Everything one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    /// Where and how it ran.
    pub(crate) meta: Meta,
    /// Unary latency, one call in flight.
    pub(crate) latency: Vec<LatencyRow>,
    /// `add` calls/s with several calls in flight on one connection.
    pub(crate) throughput: Vec<RateRow>,
    /// Echo of large payloads, one in flight.
    pub(crate) bulk: BulkRow,
    /// Server memory for many idle connections.
    pub(crate) idle: IdleRow,
    /// `add` calls/s over many connections, one call in flight on each.
    pub(crate) active: RateRow,
    /// Large transfers and the head-of-line figure (Unix sockets only).
    #[serde(default)]
    pub(crate) transfer: Option<TransferRow>,
    /// callgrind instructions per call, when the report ran it.
    #[serde(default)]
    pub(crate) instructions: Option<Instructions>,
}

/// Instructions per call counted by callgrind (independent of the machine's noise), client and
/// server process, at one load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Instructions {
    /// Calls in flight on one connection.
    pub(crate) in_flight: usize,
    /// Client process instructions per call answered.
    pub(crate) client: PerImpl<f64>,
    /// Server process instructions per call answered.
    pub(crate) server: PerImpl<f64>,
    /// hvrpc's server instructions per call at the margin (start-up subtracted): without a
    /// `tracing` subscriber, with one at info (its per-call span off), and at debug (on).
    #[serde(default)]
    pub(crate) traced_server: Option<[f64; 3]>,
}

/// Where and how a run happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// UTC date and time.
    pub(crate) date: String,
    /// CPU model (from `/proc/cpuinfo`).
    pub(crate) cpu: String,
    /// Logical CPUs in `/proc/cpuinfo`.
    pub(crate) cpus: usize,
    /// What `nproc` would say: CPUs this process may use.
    pub(crate) nproc: usize,
    /// Total memory, MiB.
    pub(crate) mem_mib: u64,
    /// Kernel release.
    pub(crate) kernel: String,
    /// Whether this ran inside the test VM (`HVRPC_IN_GUEST=1`).
    pub(crate) in_guest: bool,
    /// `rustc -V` of the compiler that built the benchmark.
    pub(crate) rustc: String,
    /// hvrpc's version (and git commit, when known).
    pub(crate) hvrpc: String,
    /// tarpc's version.
    pub(crate) tarpc: String,
    /// The transport: `unix` or `vsock`.
    pub(crate) transport: String,
    /// Whether this was a `--quick` run.
    pub(crate) quick: bool,
    /// Interleaved rounds per measurement.
    pub(crate) rounds: usize,
    /// Wall time of the run, seconds.
    pub(crate) seconds: f64,
    /// `/proc/loadavg` (1, 5, 15 minutes) before and after the run: other work on the machine
    /// moves the figures, and not all implementations alike.
    #[serde(default)]
    pub(crate) load: [String; 2],
}

/// Latency of one call, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Lat {
    /// Median.
    pub(crate) p50_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// Mean.
    pub(crate) mean_us: f64,
    /// Calls measured.
    pub(crate) calls: usize,
}

impl Lat {
    /// Summarises samples in nanoseconds.
    pub(crate) fn from_ns(samples: &mut [u32]) -> Lat {
        if samples.is_empty() {
            return Lat::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            f64::from(samples.get(i).copied().unwrap_or(0)) / 1000.0
        };
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Lat {
            p50_us: at(0.50),
            p99_us: at(0.99),
            mean_us: sum as f64 / samples.len() as f64 / 1000.0,
            calls: samples.len(),
        }
    }
}

/// Latency of one kind of call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LatencyRow {
    /// `add`, or `echo 64 B` …
    pub(crate) name: String,
    /// Payload bytes (0 for `add`).
    pub(crate) payload: usize,
    /// Per implementation.
    pub(crate) by_impl: PerImpl<Lat>,
}

/// A rate in calls/s.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RateRow {
    /// Calls in flight per connection (throughput) or connections (active).
    pub(crate) in_flight: usize,
    /// Connections used.
    pub(crate) conns: usize,
    /// Per implementation.
    pub(crate) calls_per_s: PerImpl<f64>,
    /// The server's CPU time (user + system) per call answered, µs.
    #[serde(default)]
    pub(crate) server_cpu_us: Option<PerImpl<f64>>,
    /// Raw with one task keeping the requests written ahead (no multiplexing of callers): the
    /// stream's own limit, for reference.
    #[serde(default)]
    pub(crate) raw_pipelined: Option<f64>,
}

/// Bulk echo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BulkRow {
    /// Payload bytes per call.
    pub(crate) payload: usize,
    /// Payload MB (10^6 bytes) echoed per second; twice as much crosses the socket.
    pub(crate) mb_per_s: PerImpl<f64>,
    /// Calls measured.
    pub(crate) calls: PerImpl<usize>,
    /// hvrpc's MB/s when the method takes and returns `Vec<u8>` instead of `Bytes`.
    #[serde(default)]
    pub(crate) hvrpc_vec_mb_per_s: Option<f64>,
}

/// 1 GiB down and up, and tiny calls while 1 GiB streams down their connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TransferRow {
    /// Bytes per transfer.
    pub(crate) bytes: u64,
    /// Raw: the server writes 1 MiB frames.
    pub(crate) raw_down_mb_s: f64,
    /// hvrpc: a server stream of 1 MiB items.
    pub(crate) stream_down_mb_s: f64,
    /// hvrpc: four unary results of 256 MiB (messages in parts).
    pub(crate) unary_down_mb_s: f64,
    /// Raw: the client writes 1 MiB frames.
    pub(crate) raw_up_mb_s: f64,
    /// hvrpc: four unary calls with 256 MiB arguments (messages in parts).
    pub(crate) unary_up_mb_s: f64,
    /// hvrpc: a client stream of 1 MiB items (absent in reports from before client streams).
    #[serde(default)]
    pub(crate) stream_up_mb_s: f64,
    /// `add` on the connection with nothing else on it.
    pub(crate) idle: Lat,
    /// `add` on the same connection while 1 GiB streams down it.
    pub(crate) busy: Lat,
}

/// Server memory per idle connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IdleRow {
    /// Connections opened.
    pub(crate) conns: usize,
    /// Server VmRSS before they were opened, KiB.
    pub(crate) base_kib: PerImpl<u64>,
    /// Bytes of server VmRSS per connection: connected (hvrpc: handshake done), no call yet.
    pub(crate) fresh_bytes: PerImpl<f64>,
    /// The same after one call on every connection, then idle again.
    pub(crate) used_bytes: PerImpl<f64>,
}

impl IdleRow {
    /// The figure a target is judged on: the larger of the two states.
    pub(crate) fn worst_bytes(&self, imp: Impl) -> f64 {
        let i = imp.index();
        self.fresh_bytes[i].max(self.used_bytes[i])
    }
}
