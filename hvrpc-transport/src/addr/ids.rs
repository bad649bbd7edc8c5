//! [`VmId`] and [`ServiceId`]: the two kinds of GUID a Hyper-V socket address holds.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::{AddrParseError, guid_to_bytes_le, parse_guid, parse_u32};

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
    /// [module documentation](crate::addr).
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

    pub(crate) const NAMED: [(&'static str, VmId); 6] = [
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
