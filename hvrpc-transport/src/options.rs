//! Options of connecting and listening: [`SocketOptions`], [`RetryPolicy`], [`ConnectOptions`].

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

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
/// Only errors that can go away by themselves are retried ([`is_retryable`](crate::is_retryable)): refused,
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

    pub(crate) fn jittered_delay_after(&self, attempt: u32) -> Duration {
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

/// Options for [`connect_with`](crate::connect_with).
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
}
