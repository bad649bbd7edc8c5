//! File copy in and out of the guest, confined to one directory: the [`GuestFiles`] service,
//! served only when the agent runs with `--files <dir>` ([`FileShare`]).
//!
//! * Every path is relative to the shared directory (a leading `/` is allowed and means the
//!   same). `..` components are refused, and so is any path whose real location (symlinks
//!   followed) is outside the directory.
//! * Reading streams the file in chunks ([`CHUNK`]), flow-controlled by hvrpc's stream credit.
//! * Writing is atomic: the data goes to a temporary file beside the target
//!   (`.<name>.<id>.part`, mode 0600, given the old file's permissions), which replaces the
//!   target only when [`GuestFiles::write_commit`] confirms the size. An upload belongs to the
//!   peer that began it (its id is random); one that is aborted, or left untouched for
//!   [`STALE_AFTER`], leaves nothing behind ([`FileShare::sweep`]). (Upload travels as one
//!   call per chunk: hvrpc has no client streams yet.)
//! * Only the host may use it ([`may_use_files`]): on vsock the peer must be CID 2, so a
//!   process inside the guest cannot reach the directory with the agent's rights through vsock
//!   loopback; Hyper-V peers are whoever the hypervisor lets in; a Unix socket is guarded by
//!   its file's permissions; TCP is refused.
//! * Only regular files are read (no FIFOs, no devices).
//!
//! Limitation: paths are checked, then used by name. A process *inside the guest* that can
//! write in the shared directory could swap a directory for a symlink in between; share only a
//! directory that untrusted local users cannot write to.

use std::collections::HashMap;
use std::io::{SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hvrpc::{Bytes, Context, PeerAddr, Streaming};
use serde::{Deserialize, Serialize};

/// How much one item of a [`GuestFiles::read`] stream (and one upload chunk of the host tool)
/// carries.
pub const CHUNK: usize = 256 * 1024;

/// The largest chunk [`GuestFiles::write_chunk`] takes.
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// How many uploads may be open at once.
pub const MAX_UPLOADS: usize = 16;

/// An upload untouched for this long is dropped (its temporary file removed).
pub const STALE_AFTER: Duration = Duration::from_secs(600);

/// Why a file operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FileError {
    /// The path leads outside the shared directory, or is not allowed.
    #[error("{0}")]
    Refused(String),
    /// No such file or directory.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The upload id is unknown (never begun, committed, aborted or dropped as stale).
    #[error("no upload {0} (it was committed, aborted, or dropped after being idle)")]
    UnknownUpload(u64),
    /// A chunk does not continue the upload where it stands.
    #[error("chunk at offset {got}, but the upload stands at {expected}")]
    OutOfOrder {
        /// Bytes written so far.
        expected: u64,
        /// The chunk's offset.
        got: u64,
    },
    /// The guest's filesystem said no.
    #[error("{0}")]
    Io(String),
}

/// What [`GuestFiles::stat`] tells about a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// Files in the guest's shared directory (`guest-info-agent --files <dir>`).
#[hvrpc::service(port = 0x4856)]
pub trait GuestFiles {
    /// Size and kind of `path`.
    #[hvrpc(blocking)]
    async fn stat(path: String) -> Result<FileStat, FileError>;
    /// The contents of `path` from byte `offset` on, in chunks.
    async fn read(path: String, offset: u64) -> Streaming<Result<Bytes, FileError>>;
    /// Starts writing `path` (created or replaced at commit); returns the upload's id.
    #[hvrpc(blocking)]
    async fn write_begin(path: String) -> Result<u64, FileError>;
    /// Appends `data` at `offset` (which must be the bytes written so far) to upload `id`.
    #[hvrpc(blocking)]
    async fn write_chunk(id: u64, offset: u64, data: Bytes) -> Result<u64, FileError>;
    /// Finishes upload `id` if it holds exactly `size` bytes: the file takes its place
    /// atomically. Returns the size.
    #[hvrpc(blocking)]
    async fn write_commit(id: u64, size: u64) -> Result<u64, FileError>;
    /// Abandons upload `id`; the target is left as it was.
    #[hvrpc(blocking)]
    async fn write_abort(id: u64) -> Result<(), FileError>;
    /// Writes `path` from the stream `data` in one call (created or replaced atomically when
    /// the stream ends; left as it was if the call fails or is cancelled). Returns the size.
    /// Newer than the `write_*` calls: a host falls back to those for an agent without it.
    async fn upload(path: String, data: Streaming<Bytes>) -> Result<u64, FileError>;
}

/// Discards an upload whose streaming call ended early (failed, cancelled, dropped).
struct AbortOnDrop {
    share: std::sync::Arc<FileShare>,
    peer: PeerAddr,
    id: Option<u64>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(u) = self.share.take(&self.peer, id)
        {
            u.discard();
        }
    }
}

/// Runs blocking file I/O off the runtime's threads.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(FileError::Io(format!("the write failed: {e}"))))
}

struct Upload {
    /// Who began it: only they may continue, commit or abort it.
    owner: PeerAddr,
    file: std::fs::File,
    temp: PathBuf,
    target: PathBuf,
    written: u64,
    touched: Instant,
}

impl Upload {
    fn discard(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Serves [`GuestFiles`] for one directory.
pub struct FileShare {
    root: PathBuf,
    uploads: Mutex<HashMap<u64, Upload>>,
}

impl std::fmt::Debug for FileShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileShare")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Whether `peer` may use the shared directory: the host, not the guest's own processes.
pub fn may_use_files(peer: &PeerAddr) -> bool {
    match peer {
        PeerAddr::Vsock(a) => a.cid == hvrpc::VsockAddr::HOST_CID,
        PeerAddr::HvSocket(_) | PeerAddr::HybridVsock(_) | PeerAddr::Unix(_) => true,
        // TCP, and any kind of peer this version does not know.
        _ => false,
    }
}

fn check_peer(ctx: &Context) -> Result<(), FileError> {
    if may_use_files(ctx.peer()) {
        Ok(())
    } else {
        Err(FileError::Refused(format!(
            "{} may not use the guest's files (only the host may)",
            ctx.peer()
        )))
    }
}

/// A fresh upload id: random, so that one peer cannot guess another's.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn io_error(what: &str, e: &std::io::Error) -> FileError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FileError::NotFound(what.to_owned()),
        _ => FileError::Io(format!("{what}: {e}")),
    }
}

impl FileShare {
    /// Shares `root` (which must be an existing directory).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(FileShare {
            root,
            uploads: Mutex::new(HashMap::new()),
        })
    }

    /// The shared directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` inside the root, by its components alone (no filesystem access).
    fn join(&self, path: &str) -> Result<PathBuf, FileError> {
        let mut out = self.root.clone();
        let mut named = false;
        for c in Path::new(path).components() {
            match c {
                Component::Normal(n) => {
                    out.push(n);
                    named = true;
                }
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(FileError::Refused(format!("{path}: `..` is not allowed")));
                }
                Component::Prefix(_) => {
                    return Err(FileError::Refused(format!(
                        "{path}: paths are relative to the shared directory"
                    )));
                }
            }
        }
        if !named {
            return Err(FileError::Refused(format!("{path:?}: names no file")));
        }
        Ok(out)
    }

    /// Where `path` really is (symlinks followed), if that is inside the root.
    fn existing(&self, path: &str) -> Result<PathBuf, FileError> {
        let joined = self.join(path)?;
        let real = std::fs::canonicalize(&joined).map_err(|e| io_error(path, &e))?;
        if !real.starts_with(&self.root) {
            return Err(FileError::Refused(format!(
                "{path}: leads outside the shared directory"
            )));
        }
        Ok(real)
    }

    /// Drops uploads untouched for [`STALE_AFTER`], removing their temporary files (the agent
    /// calls this every minute; every new upload does too).
    pub fn sweep(&self) {
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<u64> = uploads
            .iter()
            .filter(|(_, u)| u.touched.elapsed() >= STALE_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(u) = uploads.remove(&id) {
                tracing::info!(target = %u.target.display(), "dropping an idle upload");
                u.discard();
            }
        }
    }

    fn stat_now(&self, path: &str) -> Result<FileStat, FileError> {
        let real = self.existing(path)?;
        let meta = std::fs::metadata(&real).map_err(|e| io_error(path, &e))?;
        Ok(FileStat {
            size: meta.len(),
            is_dir: meta.is_dir(),
        })
    }

    fn begin(&self, owner: PeerAddr, path: &str) -> Result<u64, FileError> {
        let target = self.join(path)?;
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(FileError::Refused(format!("{path}: names no file")));
        };
        let real_parent = std::fs::canonicalize(parent).map_err(|e| io_error(path, &e))?;
        if !real_parent.starts_with(&self.root) {
            return Err(FileError::Refused(format!(
                "{path}: leads outside the shared directory"
            )));
        }
        let target = real_parent.join(name);
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(FileError::Refused(format!(
                    "{path}: is a symbolic link; not replaced"
                )));
            }
            Ok(m) if m.is_dir() => {
                return Err(FileError::Refused(format!("{path}: is a directory")));
            }
            _ => {}
        }
        self.sweep();
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        if uploads.len() >= MAX_UPLOADS {
            return Err(FileError::Refused(format!(
                "{MAX_UPLOADS} uploads are already open; commit or abort one"
            )));
        }
        let id = loop {
            let id = random_id();
            if !uploads.contains_key(&id) {
                break id;
            }
        };
        let temp = real_parent.join(format!(".{}.{id:016x}.part", name.to_string_lossy()));
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let file = open.open(&temp).map_err(|e| io_error(path, &e))?;
        // The replacement keeps the permissions of the file it replaces.
        if let Ok(old) = std::fs::metadata(&target) {
            let _ = file.set_permissions(old.permissions());
        }
        uploads.insert(
            id,
            Upload {
                owner,
                file,
                temp,
                target,
                written: 0,
                touched: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Takes `peer`'s upload `id` out of the table (so that its I/O runs without the lock).
    fn take(&self, peer: &PeerAddr, id: u64) -> Result<Upload, FileError> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        match uploads.get(&id) {
            Some(u) if &u.owner == peer => uploads.remove(&id).ok_or(FileError::UnknownUpload(id)),
            // Someone else's upload is as unknown to this peer as one that never was.
            _ => Err(FileError::UnknownUpload(id)),
        }
    }

    fn put_back(&self, id: u64, mut upload: Upload) {
        upload.touched = Instant::now();
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, upload);
    }

    fn chunk(&self, peer: &PeerAddr, id: u64, offset: u64, data: &[u8]) -> Result<u64, FileError> {
        if data.len() > MAX_CHUNK {
            return Err(FileError::Refused(format!(
                "a chunk of {} bytes is more than {MAX_CHUNK}",
                data.len()
            )));
        }
        let mut upload = self.take(peer, id)?;
        if offset != upload.written {
            let expected = upload.written;
            self.put_back(id, upload);
            return Err(FileError::OutOfOrder {
                expected,
                got: offset,
            });
        }
        match upload.file.write_all(data) {
            Ok(()) => {
                upload.written += data.len() as u64;
                let written = upload.written;
                self.put_back(id, upload);
                Ok(written)
            }
            Err(e) => {
                let err = FileError::Io(format!("writing {}: {e}", upload.target.display()));
                upload.discard();
                Err(err)
            }
        }
    }

    fn commit(&self, peer: &PeerAddr, id: u64, size: u64) -> Result<u64, FileError> {
        let upload = self.take(peer, id)?;
        if upload.written != size {
            let err = FileError::Refused(format!(
                "the upload holds {} bytes, not {size}; discarded",
                upload.written
            ));
            upload.discard();
            return Err(err);
        }
        if let Err(e) = upload.file.sync_all() {
            let err = FileError::Io(format!("flushing {}: {e}", upload.target.display()));
            upload.discard();
            return Err(err);
        }
        let Upload {
            file, temp, target, ..
        } = upload;
        drop(file);
        std::fs::rename(&temp, &target).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            FileError::Io(format!("replacing {}: {e}", target.display()))
        })?;
        Ok(size)
    }
}

impl Drop for FileShare {
    fn drop(&mut self) {
        let uploads = std::mem::take(self.uploads.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (_, u) in uploads {
            u.discard();
        }
    }
}

impl GuestFiles for std::sync::Arc<FileShare> {
    async fn stat(&self, ctx: Context, path: String) -> Result<FileStat, FileError> {
        check_peer(&ctx)?;
        self.stat_now(&path)
    }

    async fn read(
        &self,
        ctx: Context,
        path: String,
        offset: u64,
    ) -> Streaming<Result<Bytes, FileError>> {
        let (tx, items) = Streaming::channel(4);
        let share = std::sync::Arc::clone(self);
        // Async reads: a caller that stops consuming holds no thread, only this task.
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let opened = async {
                check_peer(&ctx)?;
                let real = share.existing(&path)?;
                let meta = tokio::fs::metadata(&real)
                    .await
                    .map_err(|e| io_error(&path, &e))?;
                if !meta.is_file() {
                    return Err(FileError::Refused(format!("{path}: not a regular file")));
                }
                let mut f = tokio::fs::File::open(&real)
                    .await
                    .map_err(|e| io_error(&path, &e))?;
                f.seek(SeekFrom::Start(offset))
                    .await
                    .map_err(|e| io_error(&path, &e))?;
                Ok(f)
            };
            let mut file = match opened.await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                let item = match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(Bytes::from(buf))
                    }
                    Err(e) => Err(io_error(&path, &e)),
                };
                let failed = item.is_err();
                // The caller gone (or its stream dropped): stop reading.
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        items
    }

    async fn write_begin(&self, ctx: Context, path: String) -> Result<u64, FileError> {
        check_peer(&ctx)?;
        self.begin(ctx.peer().clone(), &path)
    }

    async fn write_chunk(
        &self,
        ctx: Context,
        id: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<u64, FileError> {
        self.chunk(ctx.peer(), id, offset, &data)
    }

    async fn write_commit(&self, ctx: Context, id: u64, size: u64) -> Result<u64, FileError> {
        self.commit(ctx.peer(), id, size)
    }

    async fn write_abort(&self, ctx: Context, id: u64) -> Result<(), FileError> {
        self.take(ctx.peer(), id)?.discard();
        Ok(())
    }

    async fn upload(
        &self,
        ctx: Context,
        path: String,
        mut data: Streaming<Bytes>,
    ) -> Result<u64, FileError> {
        check_peer(&ctx)?;
        let (share, peer) = (std::sync::Arc::clone(self), ctx.peer().clone());
        let id = off_thread(move || share.begin(peer, &path)).await?;
        let mut guard = AbortOnDrop {
            share: std::sync::Arc::clone(self),
            peer: ctx.peer().clone(),
            id: Some(id),
        };
        let mut offset = 0u64;
        // One item at a time: a slow disk holds the caller to the stream's credit.
        while let Some(item) = data.next().await {
            let chunk = item.map_err(|e| FileError::Io(format!("receiving the data: {e}")))?;
            let (share, peer) = (std::sync::Arc::clone(self), ctx.peer().clone());
            offset = off_thread(move || share.chunk(&peer, id, offset, &chunk)).await?;
        }
        guard.id = None;
        let (share, peer) = (std::sync::Arc::clone(self), ctx.peer().clone());
        off_thread(move || share.commit(&peer, id, offset)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvrpc::VsockAddr;

    fn host() -> PeerAddr {
        PeerAddr::Vsock(VsockAddr::host(1234))
    }

    fn share() -> (tempfile::TempDir, FileShare) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shared")).unwrap();
        let share = FileShare::new(&dir.path().join("shared")).unwrap();
        (dir, share)
    }

    #[test]
    fn paths_stay_inside_the_shared_directory() {
        let (dir, share) = share();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::fs::write(share.root().join("ok"), b"yes").unwrap();
        assert_eq!(share.stat_now("ok").unwrap().size, 3);
        assert_eq!(
            share.stat_now("/ok").unwrap().size,
            3,
            "a leading / is the root"
        );
        for bad in ["../secret", "a/../../secret", "", "/"] {
            assert!(
                matches!(share.stat_now(bad), Err(FileError::Refused(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            share.stat_now("missing"),
            Err(FileError::NotFound(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), share.root().join("link"))
                .unwrap();
            std::os::unix::fs::symlink(dir.path(), share.root().join("out")).unwrap();
            assert!(matches!(share.stat_now("link"), Err(FileError::Refused(_))));
            assert!(matches!(
                share.begin(host(), "link"),
                Err(FileError::Refused(_))
            ));
            assert!(matches!(
                share.begin(host(), "out/new"),
                Err(FileError::Refused(_))
            ));
            assert!(!dir.path().join("new").exists());
        }
    }

    #[test]
    fn an_upload_replaces_the_target_only_at_commit() {
        let (_dir, share) = share();
        let target = share.root().join("f");
        std::fs::write(&target, b"old").unwrap();
        let id = share.begin(host(), "f").unwrap();
        assert_eq!(share.chunk(&host(), id, 0, b"new ").unwrap(), 4);
        assert_eq!(
            share.chunk(&host(), id, 0, b"again"),
            Err(FileError::OutOfOrder {
                expected: 4,
                got: 0
            })
        );
        assert_eq!(share.chunk(&host(), id, 4, b"data").unwrap(), 8);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"old",
            "untouched until commit"
        );
        assert!(
            share.commit(&host(), id, 9).is_err(),
            "a wrong size discards the upload"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(
            share.commit(&host(), id, 8),
            Err(FileError::UnknownUpload(id))
        );

        let id = share.begin(host(), "f").unwrap();
        share.chunk(&host(), id, 0, b"new data").unwrap();
        assert_eq!(share.commit(&host(), id, 8).unwrap(), 8);
        assert_eq!(std::fs::read(&target).unwrap(), b"new data");
        let names: Vec<_> = std::fs::read_dir(share.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"], "no temporary file is left behind");
    }

    #[test]
    fn aborted_and_dropped_uploads_leave_nothing() {
        let (dir, share) = share();
        let root = share.root().to_owned();
        let a = share.begin(host(), "a").unwrap();
        share.chunk(&host(), a, 0, b"x").unwrap();
        share.take(&host(), a).unwrap().discard();
        let b = share.begin(host(), "b").unwrap();
        share.chunk(&host(), b, 0, b"y").unwrap();
        drop(share);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        drop(dir);
    }

    #[test]
    fn open_uploads_are_limited() {
        let (_dir, share) = share();
        for i in 0..MAX_UPLOADS {
            share.begin(host(), &format!("f{i}")).unwrap();
        }
        assert!(matches!(
            share.begin(host(), "one-more"),
            Err(FileError::Refused(_))
        ));
    }

    #[test]
    fn only_the_host_may_use_the_files() {
        assert!(may_use_files(&host()));
        // A process in the guest, through vsock loopback or the guest's own CID.
        assert!(!may_use_files(&PeerAddr::Vsock(VsockAddr::new(1, 5000))));
        assert!(!may_use_files(&PeerAddr::Vsock(VsockAddr::new(3, 5000))));
        assert!(!may_use_files(&PeerAddr::Tcp(
            "127.0.0.1:9".parse().unwrap()
        )));
        // Guarded by the socket file's permissions.
        assert!(may_use_files(&PeerAddr::Unix(None)));
    }

    #[test]
    fn an_upload_belongs_to_the_peer_that_began_it() {
        let (_dir, share) = share();
        let id = share.begin(host(), "f").unwrap();
        let other = PeerAddr::Unix(None);
        assert_eq!(
            share.chunk(&other, id, 0, b"x"),
            Err(FileError::UnknownUpload(id))
        );
        assert_eq!(
            share.commit(&other, id, 0),
            Err(FileError::UnknownUpload(id))
        );
        assert!(share.take(&other, id).is_err());
        // Still the owner's, untouched.
        assert_eq!(share.chunk(&host(), id, 0, b"x").unwrap(), 1);
        assert_eq!(share.commit(&host(), id, 1).unwrap(), 1);
        let second = share.begin(host(), "g").unwrap();
        assert_ne!(second, id + 1, "ids are not sequential");
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, share) = share();
        let target = share.root().join("secret.conf");
        std::fs::write(&target, b"old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let id = share.begin(host(), "secret.conf").unwrap();
        share.chunk(&host(), id, 0, b"new").unwrap();
        share.commit(&host(), id, 3).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A new file is private to the agent's user until someone says otherwise.
        let id = share.begin(host(), "fresh").unwrap();
        share.commit(&host(), id, 0).unwrap();
        let mode = std::fs::metadata(share.root().join("fresh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
