//! Limits and timeouts for connections, servers and clients.

use std::time::Duration;

use hvrpc_transport::ConnectOptions;
use hvrpc_transport::framing::DEFAULT_MAX_FRAME_LEN;

/// Limits and timeouts. Every limit is enforced against the peer, whatever the peer claims.
///
/// ```
/// let mut config = hvrpc::Config::default();
/// config.max_concurrent_calls = 64;
/// config.default_deadline = Some(std::time::Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The largest frame payload (header plus encoded value) this side accepts; announced in
    /// the handshake. Larger frames from the peer end the connection before anything is
    /// allocated for them; the peer's own limit bounds what this side sends. Default 4 MiB.
    pub max_frame: usize,
    /// How many of the peer's calls this side runs at once; announced in the handshake, so a
    /// well-behaved peer queues further calls itself (backpressure). Calls beyond it are
    /// refused with `ResourceExhausted`. Default 256.
    pub max_concurrent_calls: u32,
    /// Servers: how many connections at once; further ones are closed on accept. Default 1024.
    pub max_connections: usize,
    /// Servers: how many of those one VM may hold — one Hyper-V partition (VM id), one vsock
    /// CID, or one VMM's hybrid-vsock socket — so that a single guest cannot take every slot
    /// from the others. Unix and TCP peers have no VM identity and only count against
    /// `max_connections`. Default 64.
    pub max_connections_per_vm: usize,
    /// Close a connection on which no call has been in flight for this long. Default: 5
    /// minutes for servers' connections, never for clients'.
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive ping after this much silence from the peer. Default 10 s.
    pub keepalive_interval: Duration,
    /// Declare the peer dead when a ping stays unanswered (no frame at all) this long, or when
    /// it reads nothing of what this side sends for this long; every pending call then fails.
    /// Default 20 s.
    pub keepalive_timeout: Duration,
    /// The time the peer has to complete the handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// The deadline of unary calls that do not set their own. Streaming calls have none unless
    /// set per call. Default 30 s.
    pub default_deadline: Option<Duration>,
    /// How many stream items a caller accepts before it must grant more credit: the most a
    /// server buffers for one slow consumer. Default 16.
    pub stream_window: u32,
    /// Bytes of outgoing frames that may wait for the socket before senders wait too.
    /// Default 8 MiB.
    pub send_buffer: usize,
    /// Graceful shutdown: how long in-flight calls may take to finish after a go-away.
    /// Default 10 s.
    pub shutdown_grace: Duration,
    /// The longest any of the peer's calls may run here: calls without a deadline, or with a
    /// longer one, get this one (and end with `DeadlineExceeded` when it passes). Default:
    /// none, since streams that run for days (logs, events) are legitimate; set it where
    /// every call is short.
    pub max_deadline: Option<Duration>,
    /// Bytes of the peer's requests this side holds at once (the bodies of calls admitted and
    /// not finished); requests beyond it are refused with `ResourceExhausted`, so a peer cannot
    /// park unbounded memory in slow handlers. Default 64 MiB.
    pub max_request_bytes: usize,
    /// The largest message (a call's arguments, a result, a stream item) this side takes from
    /// the peer; announced in the handshake. A message larger than the peer's frame limit
    /// travels in parts, which interleave with other calls' frames; this bounds them (checked
    /// before anything is allocated, and memory grows only as the parts arrive). Requests are
    /// bounded further by `max_request_bytes`. Default 1 GiB.
    pub max_message: usize,
    /// Clients: how to connect and reconnect (timeout, retries with backoff, socket options).
    pub connect: ConnectOptions,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME_LEN,
            max_concurrent_calls: 256,
            max_connections: 1024,
            max_connections_per_vm: 64,
            idle_timeout: None,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            default_deadline: Some(Duration::from_secs(30)),
            stream_window: 16,
            send_buffer: 8 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            max_deadline: None,
            max_request_bytes: 64 * 1024 * 1024,
            max_message: 1 << 30,
            connect: ConnectOptions::default(),
        }
    }
}

impl Config {
    /// The defaults for a server's connections: [`Config::default`] with a 5-minute idle
    /// timeout.
    pub fn server() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(300)),
            ..Self::default()
        }
    }
}
