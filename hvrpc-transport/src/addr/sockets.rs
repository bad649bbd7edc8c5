//! Socket addresses: [`VsockAddr`], [`HvSocketAddr`], [`HybridVsockAddr`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::{AddrParseError, ServiceId, VmId, parse_u32};

/// A Linux `AF_VSOCK` address: context id (CID) and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VsockAddr {
    /// The context id: which VM (or the host) the address is in.
    pub cid: u32,
    /// The port.
    pub port: u32,
}

impl VsockAddr {
    /// `VMADDR_CID_ANY`: bind to any CID.
    pub const ANY_CID: u32 = u32::MAX;
    /// `VMADDR_CID_HYPERVISOR`.
    pub const HYPERVISOR_CID: u32 = 0;
    /// `VMADDR_CID_LOCAL`: loopback inside the same VM (needs `vsock_loopback`).
    pub const LOCAL_CID: u32 = 1;
    /// `VMADDR_CID_HOST`: the parent (from a guest, the host).
    pub const HOST_CID: u32 = 2;
    /// `VMADDR_PORT_ANY`: let the kernel pick the port.
    pub const ANY_PORT: u32 = u32::MAX;

    /// An address from a CID and a port.
    pub const fn new(cid: u32, port: u32) -> Self {
        Self { cid, port }
    }

    /// The host (CID 2) on `port`: what a guest connects to.
    pub const fn host(port: u32) -> Self {
        Self::new(Self::HOST_CID, port)
    }

    /// Any CID on `port`: what a guest listener binds.
    pub const fn any(port: u32) -> Self {
        Self::new(Self::ANY_CID, port)
    }

    const CID_NAMES: [(&'static str, u32); 4] = [
        ("any", Self::ANY_CID),
        ("hypervisor", Self::HYPERVISOR_CID),
        ("local", Self::LOCAL_CID),
        ("host", Self::HOST_CID),
    ];
}

impl fmt::Display for VsockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("vsock://")?;
        if self.cid == Self::ANY_CID {
            f.write_str("any")?;
        } else {
            write!(f, "{}", self.cid)?;
        }
        if self.port == Self::ANY_PORT {
            f.write_str(":any")
        } else {
            write!(f, ":{}", self.port)
        }
    }
}

impl FromStr for VsockAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("vsock://")
            .ok_or_else(|| AddrParseError::new(s, "expected the scheme vsock://"))?;
        let (cid, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| AddrParseError::new(s, "expected vsock://<cid>:<port>"))?;
        let cid = VsockAddr::CID_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(cid))
            .map(|(_, v)| *v)
            .or_else(|| parse_u32(cid))
            .ok_or_else(|| {
                AddrParseError::new(
                    s,
                    format!(
                        "bad CID {cid:?}: expected a number or one of any, hypervisor, local, host"
                    ),
                )
            })?;
        let port = if port.eq_ignore_ascii_case("any") {
            VsockAddr::ANY_PORT
        } else {
            parse_u32(port).ok_or_else(|| {
                AddrParseError::new(
                    s,
                    format!("bad port {port:?}: expected a number from 0 to 4294967295 or any"),
                )
            })?
        };
        Ok(VsockAddr { cid, port })
    }
}

/// A Windows `AF_HYPERV` address: partition and service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HvSocketAddr {
    /// The partition (VM) id, or a well-known id such as [`VmId::PARENT`].
    pub vm_id: VmId,
    /// The service id.
    pub service_id: ServiceId,
}

impl HvSocketAddr {
    /// `AF_HYPERV`.
    pub const AF_HYPERV: u16 = 34;
    /// The size of `SOCKADDR_HV` in bytes.
    pub const SOCKADDR_LEN: usize = 36;

    /// An address from a VM id and a service id.
    pub const fn new(vm_id: VmId, service_id: ServiceId) -> Self {
        Self { vm_id, service_id }
    }

    /// The bytes of `SOCKADDR_HV { Family = AF_HYPERV, Reserved = 0, VmId, ServiceId }` with the
    /// GUIDs in Windows memory layout.
    pub fn to_sockaddr_bytes(&self) -> [u8; Self::SOCKADDR_LEN] {
        let mut out = [0u8; Self::SOCKADDR_LEN];
        let (family, rest) = out.split_at_mut(2);
        family.copy_from_slice(&Self::AF_HYPERV.to_le_bytes());
        let (_reserved, rest) = rest.split_at_mut(2);
        let (vm, service) = rest.split_at_mut(16);
        vm.copy_from_slice(&self.vm_id.to_bytes_le());
        service.copy_from_slice(&self.service_id.to_bytes_le());
        out
    }

    /// Parses `SOCKADDR_HV` bytes. Returns `None` if the slice is shorter than 36 bytes or the
    /// family is not `AF_HYPERV`.
    pub fn from_sockaddr_bytes(bytes: &[u8]) -> Option<Self> {
        let family = bytes.get(0..2)?;
        if u16::from_le_bytes([*family.first()?, *family.get(1)?]) != Self::AF_HYPERV {
            return None;
        }
        let vm: [u8; 16] = bytes.get(4..20)?.try_into().ok()?;
        let service: [u8; 16] = bytes.get(20..36)?.try_into().ok()?;
        Some(Self {
            vm_id: VmId::from_bytes_le(vm),
            service_id: ServiceId::from_bytes_le(service),
        })
    }
}

impl fmt::Display for HvSocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hvsock://{}/{}", self.vm_id, self.service_id)
    }
}

impl FromStr for HvSocketAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("hvsock://")
            .ok_or_else(|| AddrParseError::new(s, "expected the scheme hvsock://"))?;
        let (vm, service) = rest
            .split_once('/')
            .ok_or_else(|| AddrParseError::new(s, "expected hvsock://<vm-id>/<service-id>"))?;
        let vm_id = vm
            .parse::<VmId>()
            .map_err(|e| AddrParseError::new(s, e.reason))?;
        let service_id = service
            .parse::<ServiceId>()
            .map_err(|e| AddrParseError::new(s, e.reason))?;
        Ok(Self { vm_id, service_id })
    }
}

/// A hybrid-vsock address: a VMM's Unix socket plus a guest vsock port.
///
/// Firecracker, Cloud Hypervisor and `vhost-device-vsock` expose guest vsock on the host through
/// a Unix socket: the host connects to `path` and asks for `port` (`CONNECT <port>\n`), and a
/// guest that connects to the host's port `P` reaches a host listener on `<path>_<P>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HybridVsockAddr {
    /// The VMM's Unix socket.
    pub path: PathBuf,
    /// The vsock port.
    pub port: u32,
}

impl HybridVsockAddr {
    /// An address from the VMM's socket path and a port.
    pub fn new(path: impl Into<PathBuf>, port: u32) -> Self {
        Self {
            path: path.into(),
            port,
        }
    }

    /// The Unix socket a host listener binds to receive guest connections to port
    /// [`port`](Self::port): `<path>_<port>`.
    pub fn listener_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!("_{}", self.port));
        PathBuf::from(p)
    }
}

impl fmt::Display for HybridVsockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hybrid-vsock://{}:{}", self.path.display(), self.port)
    }
}

impl FromStr for HybridVsockAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("hybrid-vsock://")
            .ok_or_else(|| AddrParseError::new(s, "expected the scheme hybrid-vsock://"))?;
        let (path, port) = rest.rsplit_once(':').ok_or_else(|| {
            AddrParseError::new(s, "expected hybrid-vsock://<unix socket path>:<port>")
        })?;
        if path.is_empty() {
            return Err(AddrParseError::new(s, "the unix socket path is empty"));
        }
        let port = parse_u32(port).ok_or_else(|| {
            AddrParseError::new(
                s,
                format!("bad port {port:?}: expected a number from 0 to 4294967295"),
            )
        })?;
        Ok(Self::new(path, port))
    }
}
