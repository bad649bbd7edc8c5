//! Release B of the `Agent` service (the newer one): serves it, or calls it on a peer.

use hvrpc::{Context, Streaming};
use serde::{Deserialize, Serialize};
use skew_fixture::outcome;

/// A file's metadata, release B: `mtime` inserted, with a default.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stat {
    /// Bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch (0 from release A).
    #[serde(default)]
    pub mtime: u64,
    /// Permission bits.
    pub mode: u32,
}

/// A directory entry, release B: `owner` added as an `Option`, `legacy` removed, fields
/// reordered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Bytes.
    pub size: u64,
    /// File name.
    pub name: String,
    /// The owner, if known.
    pub owner: Option<String>,
}

/// What a path is, release B: `Link` added.
#[derive(Debug, Serialize, Deserialize)]
pub enum Kind {
    /// A file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
}

/// The agent's errors, release B: `Denied` added.
#[derive(Debug, Serialize, Deserialize)]
pub enum AgentError {
    /// No such path.
    NotFound(String),
    /// Not allowed.
    Denied {
        /// Why.
        reason: String,
    },
}

/// A watch event, release B: `Note` added.
#[derive(Debug, Serialize, Deserialize)]
pub enum Event {
    /// A tick.
    Tick(u32),
    /// A note.
    Note(String),
}

/// The agent, release B: methods reordered, `hostname` inserted, `uptime` appended, `remove`
/// gone, `size_of` now a string, `echo_count` widened.
#[hvrpc::service(port = 0x5a5a)]
pub trait Agent {
    /// A file's metadata.
    async fn stat(path: String) -> Result<Stat, AgentError>;
    /// The release.
    async fn version() -> String;
    /// New in B.
    async fn hostname() -> String;
    /// A directory listing.
    async fn list(dir: String) -> Vec<Entry>;
    /// What a path is.
    async fn kind(path: String) -> Kind;
    /// A file's size, human-readable.
    async fn size_of(path: String) -> String;
    /// Counts, wider.
    async fn echo_count(n: u64) -> String;
    /// Ticks, then a note when asked for more than two.
    async fn watch(n: u32) -> Streaming<Event>;
    /// New in B.
    async fn uptime() -> u64;
}

struct B;

impl Agent for B {
    async fn stat(&self, _: Context, path: String) -> Result<Stat, AgentError> {
        match path.as_str() {
            "/f" => Ok(Stat {
                size: 300,
                mtime: 5,
                mode: 0o644,
            }),
            "/denied" => Err(AgentError::Denied {
                reason: "policy".into(),
            }),
            _ => Err(AgentError::NotFound(path)),
        }
    }
    async fn version(&self, _: Context) -> String {
        "B".into()
    }
    async fn hostname(&self, _: Context) -> String {
        "guest".into()
    }
    async fn list(&self, _: Context, _dir: String) -> Vec<Entry> {
        vec![Entry {
            size: 300,
            name: "f".into(),
            owner: Some("root".into()),
        }]
    }
    async fn kind(&self, _: Context, path: String) -> Kind {
        match path.as_str() {
            "/l" => Kind::Link,
            p if p.ends_with('/') => Kind::Dir,
            _ => Kind::File,
        }
    }
    async fn size_of(&self, _: Context, _path: String) -> String {
        "300 B".into()
    }
    async fn echo_count(&self, _: Context, n: u64) -> String {
        format!("B counted {n}")
    }
    async fn watch(&self, _: Context, n: u32) -> Streaming<Event> {
        let ticks = (0..n).map(Event::Tick);
        let note = (n > 2).then(|| Event::Note("done".into()));
        Streaming::iter(ticks.chain(note))
    }
    async fn uptime(&self, _: Context) -> u64 {
        42
    }
}

async fn call(ep: &hvrpc::Endpoint) -> Result<(), String> {
    let c = AgentClient::connect(ep)
        .await
        .map_err(|e| format!("connecting to {ep}: {e}"))?;
    println!("{}", outcome("version", c.version().await));
    println!("{}", outcome("hostname", c.hostname().await));
    println!("{}", outcome("uptime", c.uptime().await));
    println!("{}", outcome("stat(/f)", c.stat("/f".into()).await));
    println!("{}", outcome("stat(/nope)", c.stat("/nope".into()).await));
    println!("{}", outcome("list", c.list("/".into()).await));
    println!("{}", outcome("kind(/f)", c.kind("/f".into()).await));
    println!("{}", outcome("size_of", c.size_of("/f".into()).await));
    println!("{}", outcome("echo_count", c.echo_count(7).await));
    let watched = async { skew_fixture::collect(c.watch(3).await?).await };
    println!("{}", outcome("watch", watched.await));
    println!(
        "peer_supports hostname={:?} stat={:?}",
        c.peer_supports("hostname").await,
        c.peer_supports("stat").await
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    skew_fixture::main::<AgentClient, _, _>("agent-b", AgentServer::new(B), |ep| async move {
        call(&ep).await
    })
    .await
}
