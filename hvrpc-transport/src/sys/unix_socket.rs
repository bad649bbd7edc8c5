//! Unix-domain sockets (development transport and the host side of hybrid vsock).

use std::io;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

pub(crate) use tokio::net::unix::{OwnedReadHalf as UnixReadHalf, OwnedWriteHalf as UnixWriteHalf};
pub(crate) use tokio::net::{UnixListener as UnixSocketListener, UnixStream as UnixSocketStream};

pub(crate) async fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path).await
}

/// Binds `path`, first removing a stale socket file that no process listens on any more (what a
/// crashed server leaves behind). A socket somebody still listens on is left alone.
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            let stale = is_socket && nobody_listens(path);
            if !stale {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another listener", path.display()),
                ));
            }
            tracing::debug!(path = %path.display(), "removing stale unix socket");
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// Whether connecting to the socket file `path` is refused: nobody listens on it. The probe
/// never blocks: a listener that is alive but does not accept (its backlog full) answers
/// `EAGAIN` to a non-blocking connect, and counts as listening.
fn nobody_listens(path: &Path) -> bool {
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .and_then(|s| s.set_nonblocking(true).map(|()| s));
    let (Ok(probe), Ok(addr)) = (probe, socket2::SockAddr::unix(path)) else {
        return false;
    };
    matches!(probe.connect(&addr), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// Accepts a connection and returns it with the peer's socket path (`None` when unnamed).
pub(crate) async fn accept(
    listener: &UnixListener,
) -> io::Result<(UnixStream, Option<std::path::PathBuf>)> {
    let (stream, addr) = listener.accept().await?;
    Ok((stream, addr.as_pathname().map(Path::to_path_buf)))
}
