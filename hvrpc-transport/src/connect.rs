//! Connecting to an [`Endpoint`]: timeouts, retries with backoff, socket options, and the
//! hybrid-vsock `CONNECT` handshake.

use std::fmt;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::addr::{Endpoint, HybridVsockAddr, PeerAddr};
use crate::options::ConnectOptions;
use crate::stream::Stream;
use crate::sys;

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
