//! File copy in and out of the guest, confined to one directory: the [`GuestFiles`] service,
//! served only when the agent runs with `--files <dir>` ([`FileShare`]).
//!
//! * Every path is relative to the shared directory (a leading `/` is allowed and means the
//!   same). `..` components are refused, and so is any path whose real location (symlinks
//!   followed) is outside the directory.
//! * Reading streams the file in chunks ([`CHUNK`]), flow-controlled by hvrpc's stream credit.
//! * Writing is atomic: the data goes to a temporary file beside the target
//!   (`.<name>.<id>.part`), which replaces the target only when [`GuestFiles::write_commit`]
//!   confirms the size. An upload that is aborted, or left untouched for [`STALE_AFTER`],
//!   leaves nothing behind. (Upload travels as one call per chunk: hvrpc has no client
//!   streams yet.)

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hvrpc::{Bytes, Context, Streaming};
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
}

struct Upload {
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
    next_id: AtomicU64,
}

impl std::fmt::Debug for FileShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileShare")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
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
            next_id: AtomicU64::new(1),
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

    fn stat_now(&self, path: &str) -> Result<FileStat, FileError> {
        let real = self.existing(path)?;
        let meta = std::fs::metadata(&real).map_err(|e| io_error(path, &e))?;
        Ok(FileStat {
            size: meta.len(),
            is_dir: meta.is_dir(),
        })
    }

    fn begin(&self, path: &str) -> Result<u64, FileError> {
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
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<u64> = uploads
            .iter()
            .filter(|(_, u)| u.touched.elapsed() >= STALE_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(u) = uploads.remove(&id) {
                u.discard();
            }
        }
        if uploads.len() >= MAX_UPLOADS {
            return Err(FileError::Refused(format!(
                "{MAX_UPLOADS} uploads are already open; commit or abort one"
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let temp = real_parent.join(format!(".{}.{id}.part", name.to_string_lossy()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_error(path, &e))?;
        uploads.insert(
            id,
            Upload {
                file,
                temp,
                target,
                written: 0,
                touched: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Takes upload `id` out of the table (so that its I/O runs without the lock).
    fn take(&self, id: u64) -> Result<Upload, FileError> {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .ok_or(FileError::UnknownUpload(id))
    }

    fn put_back(&self, id: u64, mut upload: Upload) {
        upload.touched = Instant::now();
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, upload);
    }

    fn chunk(&self, id: u64, offset: u64, data: &[u8]) -> Result<u64, FileError> {
        if data.len() > MAX_CHUNK {
            return Err(FileError::Refused(format!(
                "a chunk of {} bytes is more than {MAX_CHUNK}",
                data.len()
            )));
        }
        let mut upload = self.take(id)?;
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

    fn commit(&self, id: u64, size: u64) -> Result<u64, FileError> {
        let upload = self.take(id)?;
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
    async fn stat(&self, _ctx: Context, path: String) -> Result<FileStat, FileError> {
        self.stat_now(&path)
    }

    async fn read(
        &self,
        _ctx: Context,
        path: String,
        offset: u64,
    ) -> Streaming<Result<Bytes, FileError>> {
        let (tx, items) = Streaming::channel(4);
        let share = std::sync::Arc::clone(self);
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let opened = share.existing(&path).and_then(|real| {
                let mut f = std::fs::File::open(&real).map_err(|e| io_error(&path, &e))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| io_error(&path, &e))?;
                Ok(f)
            });
            let mut file = match opened {
                Ok(f) => f,
                Err(e) => {
                    let _ = rt.block_on(tx.send(Err(e)));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                let item = match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(Bytes::from(buf))
                    }
                    Err(e) => Err(io_error(&path, &e)),
                };
                let failed = item.is_err();
                // The caller gone (or its stream dropped): stop reading.
                if rt.block_on(tx.send(item)).is_err() || failed {
                    return;
                }
            }
        });
        items
    }

    async fn write_begin(&self, _ctx: Context, path: String) -> Result<u64, FileError> {
        self.begin(&path)
    }

    async fn write_chunk(
        &self,
        _ctx: Context,
        id: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<u64, FileError> {
        self.chunk(id, offset, &data)
    }

    async fn write_commit(&self, _ctx: Context, id: u64, size: u64) -> Result<u64, FileError> {
        self.commit(id, size)
    }

    async fn write_abort(&self, _ctx: Context, id: u64) -> Result<(), FileError> {
        self.take(id)?.discard();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(matches!(share.begin("link"), Err(FileError::Refused(_))));
            assert!(matches!(share.begin("out/new"), Err(FileError::Refused(_))));
            assert!(!dir.path().join("new").exists());
        }
    }

    #[test]
    fn an_upload_replaces_the_target_only_at_commit() {
        let (_dir, share) = share();
        let target = share.root().join("f");
        std::fs::write(&target, b"old").unwrap();
        let id = share.begin("f").unwrap();
        assert_eq!(share.chunk(id, 0, b"new ").unwrap(), 4);
        assert_eq!(
            share.chunk(id, 0, b"again"),
            Err(FileError::OutOfOrder {
                expected: 4,
                got: 0
            })
        );
        assert_eq!(share.chunk(id, 4, b"data").unwrap(), 8);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"old",
            "untouched until commit"
        );
        assert!(
            share.commit(id, 9).is_err(),
            "a wrong size discards the upload"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(share.commit(id, 8), Err(FileError::UnknownUpload(id)));

        let id = share.begin("f").unwrap();
        share.chunk(id, 0, b"new data").unwrap();
        assert_eq!(share.commit(id, 8).unwrap(), 8);
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
        let a = share.begin("a").unwrap();
        share.chunk(a, 0, b"x").unwrap();
        share.take(a).unwrap().discard();
        let b = share.begin("b").unwrap();
        share.chunk(b, 0, b"y").unwrap();
        drop(share);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        drop(dir);
    }

    #[test]
    fn open_uploads_are_limited() {
        let (_dir, share) = share();
        for i in 0..MAX_UPLOADS {
            share.begin(&format!("f{i}")).unwrap();
        }
        assert!(matches!(
            share.begin("one-more"),
            Err(FileError::Refused(_))
        ));
    }
}
