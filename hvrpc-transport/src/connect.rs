//! Connecting to an [`Endpoint`]: timeouts, retries with backoff, socket options, and the
//! hybrid-vsock `CONNECT` handshake.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::addr::{Endpoint, HybridVsockAddr, PeerAddr};
use crate::stream::Stream;
use crate::sys;

/// Socket options applied before `connect()`/`listen()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// Send and receive buffer size in bytes (`SO_SNDBUF`/`SO_RCVBUF`, and on vsock also
    /// `SO_VM_SOCKETS_BUFFER_SIZE`). Linux `hv_sock` sizes its ring buffers from this (24 KiB
    /// by default, up to 256 KiB); it cannot change once connected. `None` keeps the system
    /// default.
    pub buffer_size: Option<usize>,
    /// Windows only: set `HVSOCKET_CONNECTED_SUSPEND` on Hyper-V sockets (WSL sets it on every
    /// socket). Ignored elsewhere.
    pub hv_connected_suspend: bool,
}

impl SocketOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`buffer_size`](Self::buffer_size).
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = Some(bytes);
        self
    }

    /// Sets [`hv_connected_suspend`](Self::hv_connected_suspend).
    pub fn hv_connected_suspend(mut self, on: bool) -> Self {
        self.hv_connected_suspend = on;
        self
    }
}

/// How often and how patiently to retry a failed connect.
///
/// Only errors that can go away by themselves are retried ([`is_retryable`]): refused,
/// reset, timed out, unreachable — the guest is still booting, the host service is restarting,
/// the VM was just restored. The delay before attempt `n + 1` is `initial_backoff * 2^(n-1)`,
/// capped at `max_backoff`, with ±20 % jitter so that many guests reconnecting to one host do
/// not do it in lockstep.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total attempts, the first included; at least 1.
    pub max_attempts: u32,
    /// The delay after the first failure.
    pub initial_backoff: Duration,
    /// The largest delay between attempts.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// A single attempt.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    };

    /// Up to `max_attempts` attempts with backoff from 100 ms up to 2 s.
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::NONE
        }
    }

    /// Sets the backoff range.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The delay to wait after failed attempt number `attempt` (1-based), without jitter.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    fn jittered_delay_after(&self, attempt: u32) -> Duration {
        let base = self.delay_after(attempt);
        // A random factor in [0.8, 1.2) from the std hasher's per-process random keys.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(attempt);
        let permille = 800 + (h.finish() % 400) as u32;
        base.saturating_mul(permille) / 1000
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::NONE
    }
}

/// Options for [`connect_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The time one attempt may take, handshakes (hybrid vsock `CONNECT`) included.
    pub timeout: Duration,
    /// Whether and how to retry.
    pub retry: RetryPolicy,
    /// Socket options.
    pub socket: SocketOptions,
}

impl ConnectOptions {
    /// The default per-attempt timeout: 10 s. Linux and Windows default to about 2 s, which
    /// is too short for a busy host; production users pick 1–30 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Default options: one attempt, [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT).
    pub fn new() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            retry: RetryPolicy::NONE,
            socket: SocketOptions::default(),
        }
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the socket options.
    pub fn socket(mut self, socket: SocketOptions) -> Self {
        self.socket = socket;
        self
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a connect error may go away by itself, so that trying again makes sense: refused,
/// reset, aborted, timed out, not connected, unreachable, or network down. A missing Unix
/// socket file (`NotFound`) counts too for `unix://` and `hybrid-vsock://`, whose server may
/// not have created it yet.
pub fn is_retryable(endpoint: &Endpoint, e: &io::Error) -> bool {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | NotConnected
        | NetworkUnreachable | HostUnreachable | NetworkDown => true,
        NotFound => matches!(endpoint, Endpoint::Unix(_) | Endpoint::HybridVsock(_)),
        _ => false,
    }
}

/// Connects with [`ConnectOptions::default`].
pub async fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
    connect_with(endpoint, &ConnectOptions::default()).await
}

/// Connects to `endpoint`, retrying as `opts.retry` says.
///
/// | endpoint | connects to |
/// |---|---|
/// | `hvsock://<vm>/<service>` | a Hyper-V socket (Windows) |
/// | `vsock://<cid>:<port>` | a vsock socket (Linux); from a guest, the host is `vsock://host:<port>` |
/// | `parent://<service>` | the parent partition, portably |
/// | `hybrid-vsock://<path>:<port>` | guest port `<port>` through the VMM's Unix socket `<path>` |
/// | `unix://<path>`, `tcp://<ip>:<port>` | as named |
///
/// The error after the last attempt says what was tried and keeps the last error's kind.
pub async fn connect_with(endpoint: &Endpoint, opts: &ConnectOptions) -> io::Result<Stream> {
    let max_attempts = opts.retry.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let result = tokio::time::timeout(opts.timeout, connect_once(endpoint, opts))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out after {:?}", opts.timeout),
                ))
            });
        match result {
            Ok(stream) => return Ok(stream),
            Err(e) if attempt < max_attempts && is_retryable(endpoint, &e) => {
                let delay = opts.retry.jittered_delay_after(attempt);
                tracing::debug!(%endpoint, attempt, error = %e, ?delay, "connect failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(ConnectError::wrap(endpoint, attempt, e)),
        }
    }
}

async fn connect_once(endpoint: &Endpoint, opts: &ConnectOptions) -> io::Result<Stream> {
    match endpoint {
        Endpoint::Tcp(addr) => Stream::tcp(TcpStream::connect(addr).await?),
        Endpoint::Unix(path) => {
            let s = sys::unix_connect(path).await?;
            Ok(Stream::unix(s, PeerAddr::Unix(Some(path.clone()))))
        }
        Endpoint::HybridVsock(addr) => {
            let s = hybrid_connect(addr).await?;
            Ok(Stream::unix(s, PeerAddr::HybridVsock(addr.clone())))
        }
        Endpoint::Vsock(addr) => {
            let s = sys::vsock_connect(*addr, &opts.socket, opts.timeout).await?;
            Ok(Stream::vsock(s, *addr))
        }
        Endpoint::HvSocket(addr) => {
            if addr.vm_id.is_listen_wildcard() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} names every partition and can only be listened on; \
                         connect to a VM id, or to parent/loopback",
                        addr.vm_id
                    ),
                ));
            }
            let s = sys::hv_connect(*addr, &opts.socket, opts.timeout).await?;
            Ok(Stream::hv(s, *addr))
        }
        Endpoint::Parent(service) => {
            let resolved = sys::parent_connect_endpoint(*service)?;
            Box::pin(connect_once(&resolved, opts)).await
        }
    }
}

/// The longest `OK …` reply line accepted from a VMM.
const MAX_REPLY_LINE: usize = 64;

/// The hybrid-vsock handshake: `CONNECT <port>\n`, then one `OK <number>\n` line read byte by
/// byte (bytes after it already belong to the guest). A VMM closes the socket when nothing
/// listens on the port; that is reported as `ConnectionRefused` so that retries apply.
async fn hybrid_connect(addr: &HybridVsockAddr) -> io::Result<sys::UnixSocketStream> {
    let mut s = sys::unix_connect(&addr.path).await?;
    let not_listening = || {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "the VMM closed the connection: nothing listens on guest vsock port {}",
                addr.port
            ),
        )
    };
    // A VMM that already closed the socket (nothing listens on the port) makes the write fail
    // with a broken pipe or a reset: the same answer as a clean close.
    match s
        .write_all(format!("CONNECT {}\n", addr.port).as_bytes())
        .await
    {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            return Err(not_listening());
        }
        other => other?,
    }
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        let n = match s.read(&mut byte).await {
            Ok(n) => n,
            // The VMM tore the connection down: same meaning as a clean close.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(not_listening());
        }
        match byte {
            [b'\n'] => break,
            [b] if line.len() < MAX_REPLY_LINE => line.push(b),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the VMM's reply to CONNECT is longer than {MAX_REPLY_LINE} bytes"),
                ));
            }
        }
    }
    let ok = line == b"OK"
        || line
            .strip_prefix(b"OK ")
            .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unexpected reply to CONNECT {}: {:?} (expected \"OK <port>\")",
                addr.port,
                String::from_utf8_lossy(&line)
            ),
        ));
    }
    Ok(s)
}

/// The error returned by a failed connect: what was tried, how often, and why it failed.
#[derive(Debug)]
struct ConnectError {
    endpoint: String,
    attempts: u32,
    source: io::Error,
}

impl ConnectError {
    fn wrap(endpoint: &Endpoint, attempts: u32, source: io::Error) -> io::Error {
        io::Error::new(
            source.kind(),
            ConnectError {
                endpoint: endpoint.to_string(),
                attempts,
                source,
            },
        )
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to {}", self.endpoint)?;
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule() {
        let p =
            RetryPolicy::attempts(10).backoff(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<_> = (1..=6).map(|n| p.delay_after(n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay_after(u32::MAX), Duration::from_secs(1));
        for n in 1..=6 {
            let j = p.jittered_delay_after(n);
            let base = p.delay_after(n);
            assert!(
                j >= base * 8 / 10 && j < base * 12 / 10,
                "{j:?} vs {base:?}"
            );
        }
        assert_eq!(RetryPolicy::attempts(0).max_attempts, 1);
    }

    #[test]
    fn retryable_kinds() {
        let tcp: Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
        let unix = Endpoint::unix("/nonexistent");
        let e = |k| io::Error::from(k);
        assert!(is_retryable(&tcp, &e(io::ErrorKind::ConnectionRefused)));
        assert!(is_retryable(&tcp, &e(io::ErrorKind::TimedOut)));
        assert!(is_retryable(&tcp, &e(io::ErrorKind::ConnectionReset)));
        assert!(!is_retryable(&tcp, &e(io::ErrorKind::NotFound)));
        assert!(is_retryable(&unix, &e(io::ErrorKind::NotFound)));
        assert!(!is_retryable(&tcp, &e(io::ErrorKind::PermissionDenied)));
        assert!(!is_retryable(&tcp, &e(io::ErrorKind::Unsupported)));
        assert!(!is_retryable(&tcp, &e(io::ErrorKind::InvalidInput)));
    }
}
