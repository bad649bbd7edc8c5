//! A new host copies into an agent from before `GuestFiles::upload`: the streaming call is
//! answered `Unimplemented`, and `copy::upload` falls back to the resumable chunk calls on the
//! same connection — the file arrives whole, and the connection stays usable.
//!
//! Unix only: the file service refuses TCP peers, and hvrpc has Unix-domain sockets only on
//! Unix systems (so not under Wine).
#![cfg(unix)]

use std::sync::Arc;

use guest_info::copy;
use guest_info::files::{FileError, FileShare, FileStat, GuestFilesClient};
use hvrpc::{Bytes, Context, Server, Streaming};

/// The file service as the previous release declared it: no `upload`.
mod old {
    use super::*;

    #[hvrpc::service(port = 0x4856)]
    pub(crate) trait GuestFiles {
        async fn stat(path: String) -> Result<FileStat, FileError>;
        async fn read(path: String, offset: u64) -> Streaming<Result<Bytes, FileError>>;
        async fn write_begin(path: String) -> Result<u64, FileError>;
        async fn write_chunk(id: u64, offset: u64, data: Bytes) -> Result<u64, FileError>;
        async fn write_commit(id: u64, size: u64) -> Result<u64, FileError>;
        async fn write_abort(id: u64) -> Result<(), FileError>;
    }

    /// The old agent: today's file share behind the old declaration, so only the method set
    /// differs.
    pub(crate) struct Agent(pub(crate) Arc<FileShare>);

    impl GuestFiles for Agent {
        async fn stat(&self, ctx: Context, path: String) -> Result<FileStat, FileError> {
            guest_info::files::GuestFiles::stat(&self.0, ctx, path).await
        }
        async fn read(
            &self,
            ctx: Context,
            path: String,
            offset: u64,
        ) -> Streaming<Result<Bytes, FileError>> {
            guest_info::files::GuestFiles::read(&self.0, ctx, path, offset).await
        }
        async fn write_begin(&self, ctx: Context, path: String) -> Result<u64, FileError> {
            guest_info::files::GuestFiles::write_begin(&self.0, ctx, path).await
        }
        async fn write_chunk(
            &self,
            ctx: Context,
            id: u64,
            offset: u64,
            data: Bytes,
        ) -> Result<u64, FileError> {
            guest_info::files::GuestFiles::write_chunk(&self.0, ctx, id, offset, data).await
        }
        async fn write_commit(&self, ctx: Context, id: u64, size: u64) -> Result<u64, FileError> {
            guest_info::files::GuestFiles::write_commit(&self.0, ctx, id, size).await
        }
        async fn write_abort(&self, ctx: Context, id: u64) -> Result<(), FileError> {
            guest_info::files::GuestFiles::write_abort(&self.0, ctx, id).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_into_an_agent_without_the_streaming_method_uses_chunk_calls() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let share = Arc::new(FileShare::new(&shared).unwrap());
    let ep: hvrpc::Endpoint = format!("unix://{}", dir.path().join("old.sock").display())
        .parse()
        .unwrap();
    let listener = hvrpc::transport::Listener::bind(&ep).await.unwrap();
    let server = Server::new().add_service(old::GuestFilesServer::new(old::Agent(share)));
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));

    // Several chunks and a tail, so the fallback really resumes chunk by chunk.
    let size = 3 * guest_info::files::CHUNK + 12_345;
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let local = dir.path().join("local.bin");
    std::fs::write(&local, &data).unwrap();

    let files = GuestFilesClient::connect(&ep).await.unwrap();
    // The new method really is missing there: the call is refused, not failed otherwise.
    let direct = files
        .upload("x.bin".into(), Streaming::iter([Bytes::from_static(b"x")]))
        .await;
    assert!(
        matches!(direct, Err(hvrpc::Error::Unimplemented(_))),
        "{direct:?}"
    );

    let mut last = (0, 0);
    let copied = copy::upload(&files, &local, "data.bin", |done, total| {
        last = (done, total)
    })
    .await
    .unwrap();
    assert_eq!(copied, data.len() as u64);
    assert_eq!(last, (copied, copied), "progress ends at the whole file");
    assert!(std::fs::read(shared.join("data.bin")).unwrap() == data);
    assert!(!shared.join("x.bin").exists());
    let names: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["data.bin"], "no temporary file left in the guest");
    // The refused stream left the connection as it was.
    let stat = files.stat("data.bin".into()).await.unwrap();
    assert_eq!(stat.size, copied);
}
