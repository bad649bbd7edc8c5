//! Release A of the `Agent` service (the older one): serves it, or calls it on a peer.

use hvrpc::{Context, Streaming};
use serde::{Deserialize, Serialize};
use skew_fixture::outcome;

/// A file's metadata, release A.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stat {
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// A directory entry, release A; release B drops `legacy`, which A fills in by default.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    /// File name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Gone in release B.
    #[serde(default)]
    pub legacy: String,
}

/// What a path is, release A.
#[derive(Debug, Serialize, Deserialize)]
pub enum Kind {
    /// A file.
    File,
    /// A directory.
    Dir,
}

/// The agent's errors, release A.
#[derive(Debug, Serialize, Deserialize)]
pub enum AgentError {
    /// No such path.
    NotFound(String),
}

/// A watch event, release A.
#[derive(Debug, Serialize, Deserialize)]
pub enum Event {
    /// A tick.
    Tick(u32),
}

/// The agent, release A.
#[hvrpc::service(port = 0x5a5a)]
pub trait Agent {
    /// The release.
    async fn version() -> String;
    /// A file's metadata.
    async fn stat(path: String) -> Result<Stat, AgentError>;
    /// A directory listing.
    async fn list(dir: String) -> Vec<Entry>;
    /// What a path is.
    async fn kind(path: String) -> Kind;
    /// Removes a file (gone in release B).
    async fn remove(path: String) -> bool;
    /// A file's size (release B answers a string: incompatible).
    async fn size_of(path: String) -> u64;
    /// Counts (release B takes a `u64`).
    async fn echo_count(n: u32) -> String;
    /// Ticks.
    async fn watch(n: u32) -> Streaming<Event>;
}

struct A;

impl Agent for A {
    async fn version(&self, _: Context) -> String {
        "A".into()
    }
    async fn stat(&self, _: Context, path: String) -> Result<Stat, AgentError> {
        match path.as_str() {
            "/f" => Ok(Stat {
                size: 300,
                mode: 0o644,
            }),
            _ => Err(AgentError::NotFound(path)),
        }
    }
    async fn list(&self, _: Context, _dir: String) -> Vec<Entry> {
        vec![Entry {
            name: "f".into(),
            size: 300,
            legacy: "old".into(),
        }]
    }
    async fn kind(&self, _: Context, path: String) -> Kind {
        if path.ends_with('/') {
            Kind::Dir
        } else {
            Kind::File
        }
    }
    async fn remove(&self, _: Context, _path: String) -> bool {
        true
    }
    async fn size_of(&self, _: Context, _path: String) -> u64 {
        300
    }
    async fn echo_count(&self, _: Context, n: u32) -> String {
        format!("A counted {n}")
    }
    async fn watch(&self, _: Context, n: u32) -> Streaming<Event> {
        Streaming::iter((0..n).map(Event::Tick))
    }
}

async fn call(ep: &hvrpc::Endpoint) -> Result<(), String> {
    let c = AgentClient::connect(ep)
        .await
        .map_err(|e| format!("connecting to {ep}: {e}"))?;
    println!("{}", outcome("version", c.version().await));
    println!("{}", outcome("stat(/f)", c.stat("/f".into()).await));
    println!("{}", outcome("stat(/nope)", c.stat("/nope".into()).await));
    println!(
        "{}",
        outcome("stat(/denied)", c.stat("/denied".into()).await)
    );
    println!("{}", outcome("list", c.list("/".into()).await));
    println!("{}", outcome("kind(/f)", c.kind("/f".into()).await));
    println!("{}", outcome("kind(/l)", c.kind("/l".into()).await));
    println!("{}", outcome("remove", c.remove("/f".into()).await));
    println!("{}", outcome("size_of", c.size_of("/f".into()).await));
    println!("{}", outcome("echo_count", c.echo_count(7).await));
    let watched = async { skew_fixture::collect(c.watch(3).await?).await };
    println!("{}", outcome("watch", watched.await));
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    skew_fixture::main::<AgentClient, _, _>("agent-a", AgentServer::new(A), |ep| async move {
        call(&ep).await
    })
    .await
}
