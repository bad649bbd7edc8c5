//! guest-info: a small guest agent in the spirit of qemu-guest-agent's information commands,
//! served over Hyper-V sockets (vsock in Linux guests) with hvrpc.
//!
//! * [`GuestInfo`] is the service; [`Agent`] implements it with real data from the guest OS.
//! * `guest-info-agent` runs in the guest; `guest-info` queries it from the host.
//! * [`report`] renders the answers for people.

pub mod audit;
pub mod collect;
pub mod copy;
pub mod files;
pub mod report;

use std::time::Duration;

use futures_util::StreamExt;
use hvrpc::{Context, Streaming};
use serde::{Deserialize, Serialize};

/// The vsock port the agent serves on (`0x4856`, "HV"); on Hyper-V its service id is
/// `00004856-facb-11e6-bd58-64006a7986d3`.
pub const PORT: u32 = 0x4856;

/// Why the agent could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum InfoError {
    /// The guest OS or this agent does not support the request.
    #[error("not supported on this guest: {0}")]
    Unsupported(String),
    /// Reading the information failed.
    #[error("{0}")]
    Failed(String),
}

impl From<std::io::Error> for InfoError {
    fn from(e: std::io::Error) -> Self {
        InfoError::Failed(e.to_string())
    }
}

/// The agent's version and what it supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's version.
    pub version: String,
    /// The guest's OS family (`linux`, `windows`).
    pub os_family: String,
    /// The methods this agent answers (others return [`InfoError::Unsupported`]).
    pub supported: Vec<String>,
}

/// The guest OS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OsInfo {
    /// Distribution or product name (`Debian GNU/Linux`, `Windows Server 2022 Datacenter`).
    pub name: String,
    /// Human-readable full name (`PRETTY_NAME`).
    pub pretty_name: String,
    /// Identifier (`debian`).
    pub id: String,
    /// Version (`12 (bookworm)`).
    pub version: String,
    /// Kernel name (`Linux`).
    pub kernel_name: String,
    /// Kernel release (`6.1.0-30-amd64`).
    pub kernel_release: String,
    /// Kernel build (`#1 SMP PREEMPT_DYNAMIC …`).
    pub kernel_version: String,
    /// Machine architecture (`x86_64`).
    pub machine: String,
}

/// The guest's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeInfo {
    /// Seconds since the Unix epoch (UTC).
    pub unix_seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
    /// The time zone's name (`Europe/Berlin`), if known.
    pub timezone: Option<String>,
    /// The local time's offset from UTC now, in seconds east.
    pub utc_offset_seconds: Option<i32>,
}

/// Uptime and load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadInfo {
    /// Seconds since boot.
    pub uptime_seconds: f64,
    /// Load averages over 1, 5 and 15 minutes (Linux).
    pub load: Option<[f64; 3]>,
    /// Runnable tasks (Linux).
    pub running_tasks: Option<u32>,
    /// All tasks (Linux).
    pub total_tasks: Option<u32>,
}

/// Memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// Physical memory.
    pub total_bytes: u64,
    /// Memory available for new work without swapping.
    pub available_bytes: u64,
    /// Memory not used at all.
    pub free_bytes: u64,
    /// Swap space.
    pub swap_total_bytes: u64,
    /// Unused swap.
    pub swap_free_bytes: u64,
}

/// A logged-in user session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSession {
    /// The user name.
    pub user: String,
    /// The terminal (`pts/0`, `tty1`).
    pub terminal: String,
    /// Where from (remote host), if remote.
    pub host: String,
    /// Login time, seconds since the Unix epoch.
    pub login_unix_seconds: i64,
    /// The session's login process (Linux); 0 on Windows, where a session has no single one.
    pub pid: i32,
}

/// An IP address with its prefix length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNet {
    /// The address.
    pub addr: std::net::IpAddr,
    /// The prefix length (`24` for a /24).
    pub prefix: u8,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    /// The interface's name (`eth0`).
    pub name: String,
    /// Its hardware address (`52:54:00:12:34:56`).
    pub mac: Option<String>,
    /// Whether it is up.
    pub up: bool,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Its IP addresses.
    pub addresses: Vec<IpNet>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// A mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// Where it is mounted.
    pub mount_point: String,
    /// What is mounted (`/dev/sda1`).
    pub device: String,
    /// The filesystem type (`ext4`).
    pub fs_type: String,
    /// Size.
    pub total_bytes: u64,
    /// Used.
    pub used_bytes: u64,
    /// Available to unprivileged users.
    pub available_bytes: u64,
}

/// A live sample of load and memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since boot.
    pub uptime_seconds: f64,
    /// 1-minute load average (Linux).
    pub load1: Option<f64>,
    /// Available memory.
    pub memory_available_bytes: u64,
    /// Total memory.
    pub memory_total_bytes: u64,
}

/// Information about a guest, for its host.
#[hvrpc::service(port = 0x4856)]
pub trait GuestInfo {
    /// The agent's version and the methods it supports.
    async fn agent_info() -> AgentInfo;
    /// The operating system.
    async fn os_info() -> Result<OsInfo, InfoError>;
    /// The host name.
    async fn hostname() -> Result<String, InfoError>;
    /// The clock and time zone.
    async fn time() -> Result<TimeInfo, InfoError>;
    /// Uptime and load.
    async fn load() -> Result<LoadInfo, InfoError>;
    /// Memory.
    async fn memory() -> Result<MemoryInfo, InfoError>;
    /// Logged-in users.
    async fn users() -> Result<Vec<UserSession>, InfoError>;
    /// Network interfaces with addresses and counters.
    async fn network_interfaces() -> Result<Vec<NetInterface>, InfoError>;
    /// Mounted filesystems with usage.
    async fn filesystems() -> Result<Vec<Filesystem>, InfoError>;
    /// Live samples of load and memory every `interval_ms` (at least 100 ms).
    async fn watch(interval_ms: u32) -> hvrpc::Streaming<Sample>;
}

/// The agent: answers [`GuestInfo`] from this machine's OS. The collectors run on tokio's
/// blocking pool, so a slow filesystem cannot stall other calls.
#[derive(Debug, Clone, Default)]
pub struct Agent;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InfoError> + Send + 'static,
) -> Result<T, InfoError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(InfoError::Failed(format!("collector failed: {e}"))))
}

impl GuestInfo for Agent {
    async fn agent_info(&self, _ctx: Context) -> AgentInfo {
        AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            os_family: std::env::consts::OS.to_owned(),
            supported: collect::SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    async fn os_info(&self, _ctx: Context) -> Result<OsInfo, InfoError> {
        blocking(collect::os_info).await
    }

    async fn hostname(&self, _ctx: Context) -> Result<String, InfoError> {
        blocking(collect::hostname).await
    }

    async fn time(&self, _ctx: Context) -> Result<TimeInfo, InfoError> {
        blocking(collect::time).await
    }

    async fn load(&self, _ctx: Context) -> Result<LoadInfo, InfoError> {
        blocking(collect::load).await
    }

    async fn memory(&self, _ctx: Context) -> Result<MemoryInfo, InfoError> {
        blocking(collect::memory).await
    }

    async fn users(&self, _ctx: Context) -> Result<Vec<UserSession>, InfoError> {
        blocking(collect::users).await
    }

    async fn network_interfaces(&self, _ctx: Context) -> Result<Vec<NetInterface>, InfoError> {
        blocking(collect::network_interfaces).await
    }

    async fn filesystems(&self, _ctx: Context) -> Result<Vec<Filesystem>, InfoError> {
        blocking(collect::filesystems).await
    }

    async fn watch(&self, _ctx: Context, interval_ms: u32) -> Streaming<Sample> {
        let period = Duration::from_millis(u64::from(interval_ms.clamp(100, 3_600_000)));
        let ticker = tokio::time::interval(period);
        Streaming::try_new(
            futures_util::stream::unfold(ticker, |mut ticker| async move {
                ticker.tick().await;
                let sample = blocking(collect::sample)
                    .await
                    .map_err(|e| hvrpc::Error::Remote {
                        code: hvrpc::ErrorCode::Internal,
                        message: e.to_string().into(),
                    });
                Some((sample, ticker))
            })
            .boxed(),
        )
    }
}
