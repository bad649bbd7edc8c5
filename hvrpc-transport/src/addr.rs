//! Addresses: VM ids, service ids, vsock and Hyper-V socket addresses, endpoints.
//!
//! # Textual forms
//!
//! Every address type prints and parses back (`parse(display(x)) == x`):
//!
//! | type | form | example |
//! |---|---|---|
//! | [`VmId`], [`ServiceId`] | GUID, braced or not, any case on input; lowercase out | `a42e7cda-d03f-480c-9cc2-a4de20abb878` |
//! | [`VmId`] (well-known) | a name: `wildcard`, `children`, `loopback`, `parent`, `silohost`, `broadcast` | `parent` |
//! | [`VsockAddr`] | `vsock://<cid>:<port>`; cid may be `any`, `hypervisor`, `local`, `host`; port `any` | `vsock://3:5000` |
//! | [`HvSocketAddr`] | `hvsock://<vm>/<service>`; service a GUID or a vsock port number | `hvsock://parent/5000` |
//! | [`HybridVsockAddr`] | `hybrid-vsock://<unix socket path>:<port>` | `hybrid-vsock:///run/vm.vsock:5000` |
//! | [`Endpoint::Unix`] | `unix://<path>` | `unix:///run/agent.sock` |
//! | [`Endpoint::Tcp`] | `tcp://<ip>:<port>` | `tcp://127.0.0.1:5000` |
//! | [`Endpoint::Parent`] | `parent://<service>` | `parent://5000` |
//!
//! Numbers may be written in decimal or as `0x…` hexadecimal.
//!
//! # Well-known VM ids ("wildcards")
//!
//! | constant | binding a listener | connecting |
//! |---|---|---|
//! | [`VmId::WILDCARD`] | accept connections from every partition (host: all VMs; the host itself too) | not meaningful |
//! | [`VmId::CHILDREN`] | accept connections from this partition's child VMs only | not meaningful |
//! | [`VmId::LOOPBACK`] | accept connections from this same partition | connect within this partition |
//! | [`VmId::PARENT`] | in a VM or container: accept connections from the parent | reach the parent (from a VM: the host; from a container: its VM or host) |
//! | [`VmId::SILOHOST`] | — | reach the silo (container) host |
//! | [`VmId::BROADCAST`] | no documented use | no documented use |
//!
//! A listener bound to a wildcard learns each peer's real VM id from the accepted connection's
//! address ([`PeerAddr::vm_id`]); on Linux the peer's CID ([`PeerAddr::cid`]) plays that role.
//!
//! On Linux guests services are vsock *ports*. Hyper-V maps port `P` to the service GUID
//! `PPPPPPPP-facb-11e6-bd58-64006a7986d3` ([`ServiceId::from_vsock_port`]); a service with any
//! other GUID can only be reached between Windows partitions. [`Endpoint::Parent`] names "the
//! parent partition" portably: `HV_GUID_PARENT` on Windows, CID 2 ([`VsockAddr::HOST_CID`]) on
//! Linux.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use uuid::Uuid;

/// Why an address string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError {
    input: String,
    reason: String,
}

impl AddrParseError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// What was wrong with the input.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid address {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for AddrParseError {}

/// Parses a `u32` written in decimal or as `0x…` hexadecimal.
fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && !hex.starts_with('+') => u32::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

/// Parses a GUID, braced (`{…}`) or not, in any case.
fn parse_guid(s: &str) -> Option<Uuid> {
    let inner = match s.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => s,
    };
    // Only the hyphenated 36-character form: a bare 32-digit hex string is too easy to confuse
    // with a number.
    if inner.len() != 36 {
        return None;
    }
    Uuid::try_parse(inner).ok()
}

/// The Windows in-memory layout of a GUID: `Data1`, `Data2` and `Data3` little-endian, `Data4`
/// as is. This is how GUIDs sit inside `SOCKADDR_HV`.
fn guid_to_bytes_le(id: Uuid) -> [u8; 16] {
    id.to_bytes_le()
}

macro_rules! guid_newtype {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a GUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// Builds the id from the GUID's value as a `u128` (the text form read as one
            /// hexadecimal number).
            pub const fn from_u128(v: u128) -> Self {
                Self(Uuid::from_u128(v))
            }

            /// The GUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 bytes of the GUID in Windows memory layout (`Data1..3` little-endian),
            /// as stored in `SOCKADDR_HV`.
            pub fn to_bytes_le(&self) -> [u8; 16] {
                guid_to_bytes_le(self.0)
            }

            /// Reads a GUID from its Windows memory layout (`Data1..3` little-endian).
            pub fn from_bytes_le(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes_le(bytes))
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

guid_newtype!(
    /// The id of a Hyper-V partition (a VM, a container, the host) as used in `SOCKADDR_HV.VmId`.
    ///
    /// On a Windows host, `(Get-VM -Name X).Id` or `hvc.exe id X` prints a VM's id. The
    /// well-known values ([`VmId::WILDCARD`], [`VmId::PARENT`], …) are described in the
    /// [module documentation](self).
    VmId,
    "VM id"
);

guid_newtype!(
    /// The id of a Hyper-V socket service (`SOCKADDR_HV.ServiceId`): the "port" of a Hyper-V
    /// socket.
    ///
    /// Services that must be reachable from Linux guests use the vsock template
    /// ([`ServiceId::from_vsock_port`]).
    ServiceId,
    "service id"
);

impl VmId {
    /// `HV_GUID_ZERO`: bound by a listener, accepts connections from all partitions.
    pub const WILDCARD: VmId = VmId::from_u128(0);
    /// `HV_GUID_BROADCAST`: all ones; no documented use.
    pub const BROADCAST: VmId = VmId::from_u128(u128::MAX);
    /// `HV_GUID_CHILDREN`: bound by a listener, accepts connections from child partitions.
    pub const CHILDREN: VmId = VmId::from_u128(0x90db8b89_0d35_4f79_8ce9_49ea0ac8b7cd);
    /// `HV_GUID_LOOPBACK`: the partition itself.
    pub const LOOPBACK: VmId = VmId::from_u128(0xe0e16197_dd56_4a10_9195_5ee7a155a838);
    /// `HV_GUID_PARENT`: the parent partition (from a VM, the host; from a container, its host).
    pub const PARENT: VmId = VmId::from_u128(0xa42e7cda_d03f_480c_9cc2_a4de20abb878);
    /// `HV_GUID_SILOHOST`: the silo (container) host.
    pub const SILOHOST: VmId = VmId::from_u128(0x36bd0c5c_7276_4223_88ba_7d03b654c568);

    const NAMED: [(&'static str, VmId); 6] = [
        ("wildcard", VmId::WILDCARD),
        ("broadcast", VmId::BROADCAST),
        ("children", VmId::CHILDREN),
        ("loopback", VmId::LOOPBACK),
        ("parent", VmId::PARENT),
        ("silohost", VmId::SILOHOST),
    ];

    /// The name of a well-known VM id (`"parent"`, `"wildcard"`, …), if this is one.
    pub fn well_known_name(&self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(_, id)| id == self)
            .map(|(name, _)| *name)
    }

    /// Whether this id only makes sense for binding a listener (accepting from many partitions)
    /// and never as a connect target.
    pub fn is_listen_wildcard(&self) -> bool {
        *self == Self::WILDCARD || *self == Self::CHILDREN || *self == Self::BROADCAST
    }
}

impl ServiceId {
    /// `HV_GUID_VSOCK_TEMPLATE`: `00000000-facb-11e6-bd58-64006a7986d3`. Its first 32 bits carry
    /// a vsock port.
    pub const VSOCK_TEMPLATE: ServiceId =
        ServiceId::from_u128(0x00000000_facb_11e6_bd58_64006a7986d3);

    const TEMPLATE_TAIL_MASK: u128 = (1u128 << 96) - 1;

    /// The service GUID under which Hyper-V exposes vsock port `port`
    /// (`PPPPPPPP-facb-11e6-bd58-64006a7986d3`).
    pub const fn from_vsock_port(port: u32) -> ServiceId {
        ServiceId::from_u128(((port as u128) << 96) | Self::VSOCK_TEMPLATE.0.as_u128())
    }

    /// The vsock port this service id stands for, if it is of the template form.
    pub fn vsock_port(&self) -> Option<u32> {
        let v = self.0.as_u128();
        if v & Self::TEMPLATE_TAIL_MASK == Self::VSOCK_TEMPLATE.0.as_u128() {
            u32::try_from(v >> 96).ok()
        } else {
            None
        }
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.well_known_name() {
            Some(name) => f.write_str(name),
            None => fmt::Display::fmt(&self.0.hyphenated(), f),
        }
    }
}

impl fmt::Debug for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmId({self})")
    }
}

impl FromStr for VmId {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((_, id)) = Self::NAMED.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(*id);
        }
        parse_guid(s).map(VmId).ok_or_else(|| {
            AddrParseError::new(
                s,
                "expected a VM id: a GUID like a42e7cda-d03f-480c-9cc2-a4de20abb878 (braces \
                 optional) or one of wildcard, children, loopback, parent, silohost, broadcast",
            )
        })
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vsock_port() {
            Some(port) => write!(f, "ServiceId({self} = vsock port {port})"),
            None => write!(f, "ServiceId({self})"),
        }
    }
}

impl FromStr for ServiceId {
    type Err = AddrParseError;

    /// Parses a GUID, or a vsock port number (decimal or `0x…`) which maps to its template GUID.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(port) = parse_u32(s) {
            return Ok(ServiceId::from_vsock_port(port));
        }
        parse_guid(s).map(ServiceId).ok_or_else(|| {
            AddrParseError::new(
                s,
                "expected a service id: a GUID (braces optional) or a vsock port number",
            )
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_port_2761_known_answer() {
        let id = ServiceId::from_vsock_port(2761);
        assert_eq!(id.to_string(), "00000ac9-facb-11e6-bd58-64006a7986d3");
        assert_eq!(
            id.to_bytes_le(),
            [
                0xc9, 0x0a, 0x00, 0x00, 0xcb, 0xfa, 0xe6, 0x11, 0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79,
                0x86, 0xd3
            ]
        );
        assert_eq!(id.vsock_port(), Some(2761));
        // Linux reads the port back as the first four bytes, little-endian.
        let b = id.to_bytes_le();
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 2761);
    }

    #[test]
    fn template_edges() {
        assert_eq!(ServiceId::VSOCK_TEMPLATE.vsock_port(), Some(0));
        assert_eq!(
            ServiceId::from_vsock_port(u32::MAX).vsock_port(),
            Some(u32::MAX)
        );
        assert_eq!(
            ServiceId::from_vsock_port(u32::MAX).to_string(),
            "ffffffff-facb-11e6-bd58-64006a7986d3"
        );
        // One bit off in the tail: not a template id.
        let not = ServiceId::from_u128(ServiceId::VSOCK_TEMPLATE.as_uuid().as_u128() ^ 1);
        assert_eq!(not.vsock_port(), None);
        assert_eq!(
            "5a7e3e8d-2c1b-4d3e-9f00-112233445566"
                .parse::<ServiceId>()
                .unwrap()
                .vsock_port(),
            None
        );
    }

    #[test]
    fn well_known_vm_ids() {
        let cases = [
            (
                VmId::WILDCARD,
                "00000000-0000-0000-0000-000000000000",
                "wildcard",
            ),
            (
                VmId::BROADCAST,
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "broadcast",
            ),
            (
                VmId::CHILDREN,
                "90db8b89-0d35-4f79-8ce9-49ea0ac8b7cd",
                "children",
            ),
            (
                VmId::LOOPBACK,
                "e0e16197-dd56-4a10-9195-5ee7a155a838",
                "loopback",
            ),
            (
                VmId::PARENT,
                "a42e7cda-d03f-480c-9cc2-a4de20abb878",
                "parent",
            ),
            (
                VmId::SILOHOST,
                "36bd0c5c-7276-4223-88ba-7d03b654c568",
                "silohost",
            ),
        ];
        for (id, guid, name) in cases {
            assert_eq!(id.as_uuid().hyphenated().to_string(), guid);
            assert_eq!(id.to_string(), name);
            assert_eq!(guid.parse::<VmId>().unwrap(), id);
            assert_eq!(name.parse::<VmId>().unwrap(), id);
            assert_eq!(name.to_uppercase().parse::<VmId>().unwrap(), id);
        }
        assert!(VmId::WILDCARD.is_listen_wildcard());
        assert!(VmId::CHILDREN.is_listen_wildcard());
        assert!(!VmId::PARENT.is_listen_wildcard());
    }

    #[test]
    fn parent_guid_bytes_le() {
        // a42e7cda-d03f-480c-9cc2-a4de20abb878 in Windows layout.
        assert_eq!(
            VmId::PARENT.to_bytes_le(),
            [
                0xda, 0x7c, 0x2e, 0xa4, 0x3f, 0xd0, 0x0c, 0x48, 0x9c, 0xc2, 0xa4, 0xde, 0x20, 0xab,
                0xb8, 0x78
            ]
        );
    }

    #[test]
    fn sockaddr_hv_known_answer() {
        let addr = HvSocketAddr::new(VmId::PARENT, ServiceId::from_vsock_port(2761));
        let bytes = addr.to_sockaddr_bytes();
        assert_eq!(&bytes[0..4], &[34, 0, 0, 0]);
        assert_eq!(&bytes[4..20], &VmId::PARENT.to_bytes_le());
        assert_eq!(
            &bytes[20..36],
            &[
                0xc9, 0x0a, 0x00, 0x00, 0xcb, 0xfa, 0xe6, 0x11, 0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79,
                0x86, 0xd3
            ]
        );
        assert_eq!(HvSocketAddr::from_sockaddr_bytes(&bytes), Some(addr));
        assert_eq!(HvSocketAddr::from_sockaddr_bytes(&bytes[..35]), None);
        let mut wrong_family = bytes;
        wrong_family[0] = 40;
        assert_eq!(HvSocketAddr::from_sockaddr_bytes(&wrong_family), None);
    }

    #[test]
    fn guid_input_forms() {
        let want: VmId = "5a7e3e8d-2c1b-4d3e-9f00-112233445566".parse().unwrap();
        for s in [
            "{5a7e3e8d-2c1b-4d3e-9f00-112233445566}",
            "5A7E3E8D-2C1B-4D3E-9F00-112233445566",
            "{5A7E3E8D-2c1b-4d3e-9f00-112233445566}",
        ] {
            assert_eq!(s.parse::<VmId>().unwrap(), want, "{s}");
        }
        assert_eq!(want.to_string(), "5a7e3e8d-2c1b-4d3e-9f00-112233445566");
        for bad in [
            "",
            "{5a7e3e8d-2c1b-4d3e-9f00-112233445566",
            "5a7e3e8d2c1b4d3e9f00112233445566",
            "5a7e3e8d-2c1b-4d3e-9f00-11223344556",
            "5a7e3e8d-2c1b-4d3e-9f00-11223344556g",
            "host",
        ] {
            let err = bad.parse::<VmId>().unwrap_err();
            assert!(err.to_string().contains("expected a VM id"), "{err}");
        }
    }

    #[test]
    fn vsock_addr_forms() {
        assert_eq!("vsock://3:5000".parse(), Ok(VsockAddr::new(3, 5000)));
        assert_eq!("vsock://host:0x4856".parse(), Ok(VsockAddr::host(0x4856)));
        assert_eq!(
            "vsock://any:any".parse(),
            Ok(VsockAddr::new(u32::MAX, u32::MAX))
        );
        assert_eq!("vsock://local:1".parse(), Ok(VsockAddr::new(1, 1)));
        assert_eq!("vsock://hypervisor:1".parse(), Ok(VsockAddr::new(0, 1)));
        assert_eq!(VsockAddr::any(5).to_string(), "vsock://any:5");
        assert_eq!(VsockAddr::host(5).to_string(), "vsock://2:5");
        for (bad, why) in [
            ("vsock:/3:5000", "scheme"),
            ("vsock://3", "<cid>:<port>"),
            ("vsock://x:5000", "bad CID"),
            ("vsock://3:", "bad port"),
            ("vsock://3:4294967296", "bad port"),
            ("vsock://3:-1", "bad port"),
            ("vsock://3:+1", "bad port"),
            ("vsock://3:0x", "bad port"),
        ] {
            let err = bad.parse::<VsockAddr>().unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn hvsock_and_endpoint_forms() {
        let a: HvSocketAddr = "hvsock://parent/2761".parse().unwrap();
        assert_eq!(
            a,
            HvSocketAddr::new(VmId::PARENT, ServiceId::from_vsock_port(2761))
        );
        assert_eq!(
            a.to_string(),
            "hvsock://parent/00000ac9-facb-11e6-bd58-64006a7986d3"
        );
        let e: Endpoint = "hybrid-vsock:///tmp/a:b/vm.sock:52".parse().unwrap();
        assert_eq!(
            e,
            Endpoint::HybridVsock(HybridVsockAddr::new("/tmp/a:b/vm.sock", 52))
        );
        assert_eq!(
            HybridVsockAddr::new("/run/vm.vsock", 52).listener_path(),
            PathBuf::from("/run/vm.vsock_52")
        );
        assert_eq!("parent://0x4856".parse(), Ok(Endpoint::parent_port(0x4856)));
        assert_eq!(Endpoint::parent_port(0x4856).to_string(), "parent://18518");
        assert_eq!(
            "unix:///run/x.sock".parse(),
            Ok(Endpoint::unix("/run/x.sock"))
        );
        assert_eq!(
            "tcp://[::1]:80".parse::<Endpoint>().unwrap().to_string(),
            "tcp://[::1]:80"
        );
        for (bad, why) in [
            ("http://x", "unknown scheme"),
            ("localhost:80", "expected <scheme>://"),
            ("unix://", "path is empty"),
            ("tcp://localhost:80", "tcp://<ip>:<port>"),
            ("hvsock://parent", "hvsock://<vm-id>/<service-id>"),
            ("hvsock://nope/1", "expected a VM id"),
            ("hvsock://parent/nope", "expected a service id"),
            ("hybrid-vsock://:5", "path is empty"),
            ("hybrid-vsock:///x", "<unix socket path>:<port>"),
            ("parent://x", "expected a service id"),
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_vm() -> impl Strategy<Value = VmId> {
            prop_oneof![
                any::<u128>().prop_map(VmId::from_u128),
                proptest::sample::select(VmId::NAMED.iter().map(|(_, v)| *v).collect::<Vec<_>>()),
            ]
        }

        fn any_service() -> impl Strategy<Value = ServiceId> {
            prop_oneof![
                any::<u128>().prop_map(ServiceId::from_u128),
                any::<u32>().prop_map(ServiceId::from_vsock_port),
            ]
        }

        fn any_endpoint() -> impl Strategy<Value = Endpoint> {
            prop_oneof![
                (any_vm(), any_service())
                    .prop_map(|(v, s)| Endpoint::HvSocket(HvSocketAddr::new(v, s))),
                (any::<u32>(), any::<u32>())
                    .prop_map(|(c, p)| Endpoint::Vsock(VsockAddr::new(c, p))),
                ("/[a-z0-9_:./-]{0,40}", any::<u32>())
                    .prop_map(|(path, p)| Endpoint::HybridVsock(HybridVsockAddr::new(path, p))),
                any_service().prop_map(Endpoint::Parent),
                "[a-z0-9_:./-]{1,40}".prop_map(|p| Endpoint::Unix(p.into())),
                (any::<std::net::IpAddr>(), any::<u16>())
                    .prop_map(|(ip, port)| Endpoint::Tcp(SocketAddr::new(ip, port))),
            ]
        }

        proptest! {
            #[test]
            fn endpoint_display_parse_round_trip(e in any_endpoint()) {
                let text = e.to_string();
                prop_assert_eq!(text.parse::<Endpoint>(), Ok(e), "{}", text);
            }

            #[test]
            fn guid_ids_round_trip(v in any_vm(), s in any_service()) {
                prop_assert_eq!(v.to_string().parse::<VmId>(), Ok(v));
                prop_assert_eq!(s.to_string().parse::<ServiceId>(), Ok(s));
                prop_assert_eq!(VmId::from_bytes_le(v.to_bytes_le()), v);
                let a = HvSocketAddr::new(v, s);
                prop_assert_eq!(HvSocketAddr::from_sockaddr_bytes(&a.to_sockaddr_bytes()), Some(a));
            }

            #[test]
            fn template_round_trip(port in any::<u32>()) {
                prop_assert_eq!(ServiceId::from_vsock_port(port).vsock_port(), Some(port));
            }

            #[test]
            fn parse_never_panics(s in "\\PC{0,80}") {
                let _ = s.parse::<Endpoint>();
                let _ = s.parse::<VmId>();
                let _ = s.parse::<ServiceId>();
            }
        }
    }
}
