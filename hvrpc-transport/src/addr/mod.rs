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

mod endpoint;
mod ids;
mod sockets;
#[cfg(test)]
mod tests;

use std::fmt;

use uuid::Uuid;

pub use endpoint::{Endpoint, PeerAddr};
pub use ids::{ServiceId, VmId};
pub use sockets::{HvSocketAddr, HybridVsockAddr, VsockAddr};

/// Why an address string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError {
    input: String,
    reason: String,
}

impl AddrParseError {
    pub(crate) fn new(input: &str, reason: impl Into<String>) -> Self {
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
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && !hex.starts_with('+') => u32::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

/// Parses a GUID, braced (`{…}`) or not, in any case.
pub(crate) fn parse_guid(s: &str) -> Option<Uuid> {
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
pub(crate) fn guid_to_bytes_le(id: Uuid) -> [u8; 16] {
    id.to_bytes_le()
}
