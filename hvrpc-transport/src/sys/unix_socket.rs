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
            let stale = is_socket
                && matches!(
                    std::os::unix::net::UnixStream::connect(path),
                    Err(ref c) if c.kind() == io::ErrorKind::ConnectionRefused
                );
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

/// Accepts a connection and returns it with the peer's socket path (`None` when unnamed).
pub(crate) async fn accept(
    listener: &UnixListener,
) -> io::Result<(UnixStream, Option<std::path::PathBuf>)> {
    let (stream, addr) = listener.accept().await?;
    Ok((stream, addr.as_pathname().map(Path::to_path_buf)))
}
