//! The host side of file copy (`guest-info cp`): remote paths, download and upload through
//! [`GuestFilesClient`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hvrpc::{Bytes, Endpoint, Streaming};
use tokio::io::AsyncReadExt;

use crate::files::{CHUNK, FileError, GuestFilesClient};

/// `<endpoint>:<path>` split into its parts, if `spec` is one: the shortest prefix before a
/// `:` that parses as an endpoint, followed by a non-empty path
/// (`vsock://3:18518:/etc/hosts`, `hybrid-vsock:///run/vm.sock:18518:log.txt`).
pub fn parse_remote(spec: &str) -> Option<(Endpoint, String)> {
    spec.match_indices(':').find_map(|(i, _)| {
        let (endpoint, path) = (&spec[..i], &spec[i + 1..]);
        if path.is_empty() || path.starts_with("//") {
            return None;
        }
        Some((endpoint.parse().ok()?, path.to_owned()))
    })
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The guest refused or failed.
    #[error("guest: {0}")]
    Guest(#[from] hvrpc::Error<FileError>),
    /// A local file failed.
    #[error("{0}")]
    Local(String),
}

fn local(what: &Path, e: std::io::Error) -> CopyError {
    CopyError::Local(format!("{}: {e}", what.display()))
}

/// Copies the guest's `remote` to `local` (into it under the remote name if `local` is a
/// directory), written to `<local>.part` (which must not exist) and renamed when complete;
/// `progress(done, total)` after every chunk. Returns the bytes copied.
pub async fn download(
    files: &GuestFilesClient,
    remote: &str,
    local_path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, CopyError> {
    let stat = files.stat(remote.to_owned()).await?;
    if stat.is_dir {
        return Err(CopyError::Local(format!(
            "{remote} is a directory in the guest"
        )));
    }
    // Into a directory: under the guest file's own name.
    let named;
    let local_path = if local_path.is_dir() {
        let name = Path::new(remote)
            .file_name()
            .ok_or_else(|| CopyError::Local(format!("{remote} names no file")))?;
        named = local_path.join(name);
        named.as_path()
    } else {
        local_path
    };
    let part = part_name(local_path);
    // Never through a file (or symlink) already there: a leftover must be looked at first.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .map_err(|e| local(&part, e))?;
    let copied = async {
        let mut chunks = files.read(remote.to_owned(), 0).await?;
        let mut done = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).map_err(|e| local(&part, e))?;
            done += chunk.len() as u64;
            progress(done, stat.size.max(done));
        }
        out.sync_all().map_err(|e| local(&part, e))?;
        Ok::<u64, CopyError>(done)
    }
    .await;
    match copied {
        Ok(done) => match std::fs::rename(&part, local_path) {
            Ok(()) => Ok(done),
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(local(local_path, e))
            }
        },
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Copies `local` to the guest's `remote`, which the guest replaces atomically when the whole
/// file has arrived; `progress(done, total)` as it goes. Returns the bytes copied. One
/// streaming call ([`GuestFilesClient::upload`]); an agent too old for it gets the file in
/// `write_chunk` calls instead.
pub async fn upload(
    files: &GuestFilesClient,
    local_path: &Path,
    remote: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, CopyError> {
    let input = tokio::fs::File::open(local_path)
        .await
        .map_err(|e| local(local_path, e))?;
    let total = input
        .metadata()
        .await
        .map_err(|e| local(local_path, e))?
        .len();
    let read = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(None));
    let chunks = file_chunks(input, Arc::clone(&read), Arc::clone(&failed));
    let call = files.upload(remote.to_owned(), Streaming::try_new(chunks));
    tokio::pin!(call);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let streamed = loop {
        tokio::select! {
            done = &mut call => break done,
            _ = tick.tick() => {
                let n = read.load(Ordering::Relaxed);
                progress(n, total.max(n));
            }
        }
    };
    match streamed {
        Ok(size) => {
            progress(size, total.max(size));
            Ok(size)
        }
        // The agent predates `upload`: nothing was read or sent yet.
        Err(hvrpc::Error::Unimplemented(_)) => {
            upload_in_chunks(files, local_path, remote, total, progress).await
        }
        // A local read failure ends the call; say what failed here rather than what the
        // guest saw of it.
        Err(e) => Err(failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(CopyError::Guest(e))),
    }
}

/// The file's contents in chunks of `4 * CHUNK`, read only as fast as the guest takes them;
/// `read` counts the bytes handed on, `failed` keeps a read error (which ends the stream with
/// an error, and so the call).
fn file_chunks(
    file: tokio::fs::File,
    read: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<CopyError>>>,
) -> impl futures_util::Stream<Item = Result<Bytes, hvrpc::Error>> + Send + 'static {
    futures_util::stream::unfold(Some(file), move |file| {
        let (read, failed) = (Arc::clone(&read), Arc::clone(&failed));
        async move {
            let mut file = file?;
            let mut buf = vec![0u8; 4 * CHUNK];
            match read_full(&mut file, &mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    read.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(e) => {
                    let msg = format!("reading the local file: {e}");
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(CopyError::Local(msg.clone()));
                    Some((Err(hvrpc::Error::Encode(msg.into())), None))
                }
            }
        }
    })
}

/// [`upload`] for an agent without the streaming call: `write_begin`, `write_chunk`s and
/// `write_commit`.
async fn upload_in_chunks(
    files: &GuestFilesClient,
    local_path: &Path,
    remote: &str,
    total: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, CopyError> {
    let mut input = tokio::fs::File::open(local_path)
        .await
        .map_err(|e| local(local_path, e))?;
    let id = files.write_begin(remote.to_owned()).await?;
    let sent = async {
        let mut offset = 0u64;
        loop {
            let mut buf = vec![0u8; 4 * CHUNK];
            let n = read_full(&mut input, &mut buf)
                .await
                .map_err(|e| local(local_path, e))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            offset = files.write_chunk(id, offset, Bytes::from(buf)).await?;
            progress(offset, total.max(offset));
        }
        Ok::<u64, CopyError>(files.write_commit(id, offset).await?)
    }
    .await;
    if sent.is_err() {
        // Best effort: the guest also drops uploads left idle.
        let _ = files.write_abort(id).await;
    }
    sent
}

/// Reads until `buf` is full or the file ends.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn part_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_specs_split_after_the_endpoint() {
        let (ep, path) = parse_remote("vsock://3:18518:/etc/hosts").unwrap();
        assert_eq!(ep.to_string(), "vsock://3:18518");
        assert_eq!(path, "/etc/hosts");
        let (ep, path) = parse_remote("hybrid-vsock:///run/vm.sock:18518:a:b.txt").unwrap();
        assert_eq!(ep.to_string(), "hybrid-vsock:///run/vm.sock:18518");
        assert_eq!(path, "a:b.txt");
        let (ep, path) = parse_remote("unix:///tmp/agent.sock:log.txt").unwrap();
        assert_eq!(ep.to_string(), "unix:///tmp/agent.sock");
        assert_eq!(path, "log.txt");
        for local in [
            "file.txt",
            "/tmp/file",
            "C:notes",
            "vsock://3:18518",
            "unix:///x:",
        ] {
            assert!(parse_remote(local).is_none(), "{local}");
        }
    }
}
