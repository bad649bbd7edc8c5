//! The forms the macro accepts.
use serde::{Deserialize, Serialize};

/// An error.
#[derive(Debug, Serialize, Deserialize)]
pub struct FsError(pub String);

/// A load sample.
#[derive(Debug, Serialize, Deserialize)]
pub struct Load(pub f32);

/// Guest information.
#[hvrpc::service(port = 0x4856)]
pub trait GuestInfo {
    /// No arguments, unit result.
    async fn ping();
    /// A value.
    async fn hostname() -> String;
    /// A typed error.
    async fn read_file(path: String, max: u64) -> Result<Vec<u8>, FsError>;
    /// A stream.
    async fn watch_load(interval_ms: u32) -> hvrpc::Streaming<Load>;
    /// Blocking work, run on a thread for it.
    #[hvrpc(blocking)]
    async fn exec(cmd: String) -> Result<i32, FsError>;
    /// Blocking work with a byte-string result.
    #[hvrpc(blocking)]
    async fn slurp(path: String) -> Vec<u8>;
}

/// A Windows-only service with a name of its own.
#[hvrpc::service(id = "{6C4EB1BE-40E8-4C8B-A4D6-5B0F67D7E40F}", name = "host.Admin")]
pub(crate) trait Admin {
    async fn shutdown(reason: String) -> bool;
}

struct Agent;

impl GuestInfo for Agent {
    async fn ping(&self, _ctx: hvrpc::Context) {}
    async fn hostname(&self, _ctx: hvrpc::Context) -> String {
        "guest".into()
    }
    async fn read_file(&self, _ctx: hvrpc::Context, path: String, _max: u64) -> Result<Vec<u8>, FsError> {
        Err(FsError(path))
    }
    async fn watch_load(&self, _ctx: hvrpc::Context, _interval_ms: u32) -> hvrpc::Streaming<Load> {
        hvrpc::Streaming::iter(vec![Load(0.5)])
    }
    async fn exec(&self, _ctx: hvrpc::Context, cmd: String) -> Result<i32, FsError> {
        Err(FsError(cmd))
    }
    async fn slurp(&self, _ctx: hvrpc::Context, path: String) -> Vec<u8> {
        path.into_bytes()
    }
}

fn main() {
    use hvrpc::ServiceDef;
    assert_eq!(GuestInfoClient::NAME, "GuestInfo");
    assert_eq!(GuestInfoClient::ID.vsock_port(), Some(0x4856));
    assert_eq!(
        GuestInfoClient::METHODS,
        ["ping", "hostname", "read_file", "watch_load", "exec", "slurp"]
    );
    assert_eq!(AdminClient::NAME, "host.Admin");
    assert_eq!(AdminClient::ID.to_string(), "6c4eb1be-40e8-4c8b-a4d6-5b0f67d7e40f");
    // The methods traced from their types, hashed as PROTOCOL.md §6 says.
    let spec = GuestInfoClient::spec().unwrap();
    let names: Vec<&str> = spec.desc().methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, GuestInfoClient::METHODS);
    assert!(AdminClient::spec().is_ok());
    let _server = hvrpc::Server::new().add_service(GuestInfoServer::new(Agent));
}
