//! Helpers shared by the transport's integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use hvrpc_transport::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Deterministic pseudo-random bytes (xorshift64*), so both ends can generate the same data.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, 64 bit: a checksum to print next to the comparison.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Upper bound on any single test step: a hang fails the test instead of the run.
pub(crate) const STEP: Duration = Duration::from_secs(120);

/// Sends `data` and reads back as many bytes concurrently (through owned halves, so that a full
/// send buffer never blocks reading), then checks they are equal.
pub(crate) async fn echo_roundtrip(stream: Stream, data: &[u8]) {
    let (r, w) = stream.into_split();
    echo_roundtrip_halves(r, w, data).await;
}

/// [`echo_roundtrip`] over any stream's halves (another crate's stream, say).
pub(crate) async fn echo_roundtrip_halves(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
    data: &[u8],
) {
    let send = async {
        w.write_all(data).await.expect("write");
        w.flush().await.expect("flush");
        w
    };
    let recv = async {
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await.expect("read echo");
        back
    };
    let (_w, back) = tokio::time::timeout(STEP, async { tokio::join!(send, recv) })
        .await
        .expect("echo timed out");
    assert_eq!(back.len(), data.len());
    assert_eq!(fnv1a(&back), fnv1a(data), "checksum of echoed data");
    assert!(back == data, "echoed data differs");
    println!("echoed {} bytes, fnv1a {:016x}", data.len(), fnv1a(data));
}

/// Echoes everything read until end of stream or `limit` bytes.
pub(crate) async fn echo_server<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    limit: usize,
) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while total < limit {
        let n = s.read(&mut buf).await.expect("server read");
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await.expect("server write");
        total += n;
    }
    total
}

/// Returns the value of `var` if set, or prints why the test is skipped.
pub(crate) fn require_env(var: &str, why: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            println!("skipped: {var} is not set ({why})");
            None
        }
    }
}
