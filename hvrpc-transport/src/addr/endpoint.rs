//! [`Endpoint`] (where to connect or listen) and [`PeerAddr`] (who is on the other end).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{AddrParseError, HvSocketAddr, HybridVsockAddr, ServiceId, VmId, VsockAddr};

/// Where to connect or listen: any transport hvrpc speaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A Hyper-V socket (Windows, `AF_HYPERV`).
    HvSocket(HvSocketAddr),
    /// A vsock socket (Linux, `AF_VSOCK`).
    Vsock(VsockAddr),
    /// Guest vsock reached through a VMM's Unix socket (Firecracker, Cloud Hypervisor,
    /// vhost-user-vsock).
    HybridVsock(HybridVsockAddr),
    /// The parent partition on this service, portably: `hvsock://parent/<service>` on Windows,
    /// `vsock://host:<port>` on Linux (which requires a vsock-template service id).
    Parent(ServiceId),
    /// A Unix socket (development and tests).
    Unix(PathBuf),
    /// TCP (development and tests).
    Tcp(SocketAddr),
}

impl Endpoint {
    /// The portable "parent partition" endpoint for a vsock port.
    pub const fn parent_port(port: u32) -> Self {
        Endpoint::Parent(ServiceId::from_vsock_port(port))
    }

    /// A Unix socket endpoint.
    pub fn unix(path: impl AsRef<Path>) -> Self {
        Endpoint::Unix(path.as_ref().to_path_buf())
    }
}

impl From<VsockAddr> for Endpoint {
    fn from(a: VsockAddr) -> Self {
        Endpoint::Vsock(a)
    }
}

impl From<HvSocketAddr> for Endpoint {
    fn from(a: HvSocketAddr) -> Self {
        Endpoint::HvSocket(a)
    }
}

impl From<HybridVsockAddr> for Endpoint {
    fn from(a: HybridVsockAddr) -> Self {
        Endpoint::HybridVsock(a)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint::Tcp(a)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::HvSocket(a) => a.fmt(f),
            Endpoint::Vsock(a) => a.fmt(f),
            Endpoint::HybridVsock(a) => a.fmt(f),
            Endpoint::Parent(service) => match service.vsock_port() {
                Some(port) => write!(f, "parent://{port}"),
                None => write!(f, "parent://{service}"),
            },
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            AddrParseError::new(
                s,
                "expected <scheme>://…, with scheme hvsock, vsock, hybrid-vsock, parent, unix or tcp",
            )
        })?;
        match scheme {
            "hvsock" => s.parse().map(Endpoint::HvSocket),
            "vsock" => s.parse().map(Endpoint::Vsock),
            "hybrid-vsock" => s.parse().map(Endpoint::HybridVsock),
            "parent" => rest
                .parse::<ServiceId>()
                .map(Endpoint::Parent)
                .map_err(|e| AddrParseError::new(s, e.reason)),
            "unix" if rest.is_empty() => {
                Err(AddrParseError::new(s, "the unix socket path is empty"))
            }
            "unix" => Ok(Endpoint::Unix(PathBuf::from(rest))),
            "tcp" => rest.parse().map(Endpoint::Tcp).map_err(|_| {
                AddrParseError::new(s, "expected tcp://<ip>:<port>, e.g. tcp://127.0.0.1:5000")
            }),
            other => Err(AddrParseError::new(
                s,
                format!(
                    "unknown scheme {other:?}: expected hvsock, vsock, hybrid-vsock, parent, unix or tcp"
                ),
            )),
        }
    }
}

/// The address of the peer of an accepted or connected stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A Hyper-V socket peer: its partition (VM) id and the service it used.
    HvSocket(HvSocketAddr),
    /// A vsock peer: its CID and port.
    Vsock(VsockAddr),
    /// A guest reached through (or connecting through) a VMM's hybrid-vsock socket. The VMM does
    /// not tell the guest's CID; this is the VMM socket and the vsock port involved.
    HybridVsock(HybridVsockAddr),
    /// A Unix socket peer; `None` for an unnamed socket (the usual case for a connecting client).
    Unix(Option<PathBuf>),
    /// A TCP peer.
    Tcp(SocketAddr),
}

impl PeerAddr {
    /// The peer's partition id, for Hyper-V socket peers.
    pub fn vm_id(&self) -> Option<VmId> {
        match self {
            PeerAddr::HvSocket(a) => Some(a.vm_id),
            _ => None,
        }
    }

    /// The peer's CID, for vsock peers.
    pub fn cid(&self) -> Option<u32> {
        match self {
            PeerAddr::Vsock(a) => Some(a.cid),
            _ => None,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::HvSocket(a) => a.fmt(f),
            PeerAddr::Vsock(a) => a.fmt(f),
            PeerAddr::HybridVsock(a) => a.fmt(f),
            PeerAddr::Unix(Some(path)) => write!(f, "unix://{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix://(unnamed)"),
            PeerAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}
