//! The one platform switch point of this crate.
//!
//! Each socket family has a real implementation where the platform has it and a
//! [`never::Never`] placeholder elsewhere, so the portable code needs no `cfg` of its own:
//!
//! | family | Linux | Windows | other Unix |
//! |---|---|---|---|
//! | `AF_VSOCK` | `af_vsock` | — | — |
//! | `AF_HYPERV` | — | `af_hyperv` | — |
//! | Unix sockets (and hybrid vsock) | `unix_socket` | — | `unix_socket` |

mod never;

// ---- AF_VSOCK ----
#[cfg(target_os = "linux")]
mod af_vsock;
#[cfg(target_os = "linux")]
pub(crate) use af_vsock::{
    VsockListener, VsockReadHalf, VsockStream, VsockWriteHalf, connect as vsock_connect,
    local_cid as vsock_local_cid,
};

#[cfg(target_os = "linux")]
pub(crate) fn vsock_bind(
    addr: crate::VsockAddr,
    opts: &crate::SocketOptions,
) -> std::io::Result<VsockListener> {
    VsockListener::bind(addr, opts)
}

#[cfg(not(target_os = "linux"))]
mod no_vsock {
    use super::never::{Never, unsupported};
    use crate::{SocketOptions, VsockAddr};
    use std::io;

    const MSG: &str = "vsock sockets (AF_VSOCK) exist only on Linux; \
        on a Windows host reach a Linux guest's port P as hvsock://<vm-id>/P";

    pub(crate) type VsockStream = Never;
    pub(crate) type VsockReadHalf = Never;
    pub(crate) type VsockWriteHalf = Never;
    pub(crate) type VsockListener = Never;

    pub(crate) async fn vsock_connect(
        _: VsockAddr,
        _: &SocketOptions,
        _: std::time::Duration,
    ) -> io::Result<Never> {
        unsupported(MSG)
    }

    pub(crate) fn vsock_bind(_: VsockAddr, _: &SocketOptions) -> io::Result<Never> {
        unsupported(MSG)
    }

    pub(crate) fn vsock_local_cid() -> io::Result<u32> {
        unsupported(MSG)
    }
}
#[cfg(not(target_os = "linux"))]
pub(crate) use no_vsock::*;

// ---- AF_HYPERV ----
#[cfg(windows)]
mod af_hyperv;
#[cfg(windows)]
pub(crate) use af_hyperv::{HvListener, HvReadHalf, HvStream, HvWriteHalf, connect as hv_connect};

/// Drops a Hyper-V write half (a tokio TCP half) without shutting the stream down.
#[cfg(windows)]
pub(crate) fn hv_forget(w: HvWriteHalf) {
    w.forget();
}

#[cfg(windows)]
pub(crate) fn hv_bind(
    addr: crate::HvSocketAddr,
    opts: &crate::SocketOptions,
) -> std::io::Result<HvListener> {
    HvListener::bind(addr, opts)
}

#[cfg(not(windows))]
mod no_hyperv {
    use super::never::{Never, unsupported};
    use crate::{HvSocketAddr, SocketOptions};
    use std::io;

    const MSG: &str = "Hyper-V sockets (AF_HYPERV) exist only on Windows; \
        in a Linux guest use vsock://host:<port> or parent://<port>";

    pub(crate) type HvStream = Never;
    pub(crate) type HvReadHalf = Never;
    pub(crate) type HvWriteHalf = Never;
    pub(crate) type HvListener = Never;

    pub(crate) async fn hv_connect(
        _: HvSocketAddr,
        _: &SocketOptions,
        _: std::time::Duration,
    ) -> io::Result<Never> {
        unsupported(MSG)
    }

    pub(crate) fn hv_bind(_: HvSocketAddr, _: &SocketOptions) -> io::Result<Never> {
        unsupported(MSG)
    }

    pub(crate) fn hv_forget(never: Never) {
        match never {}
    }
}
#[cfg(not(windows))]
pub(crate) use no_hyperv::*;

// ---- Unix sockets ----
#[cfg(unix)]
mod unix_socket;
#[cfg(unix)]
pub(crate) use unix_socket::{
    UnixReadHalf, UnixSocketListener, UnixSocketStream, UnixWriteHalf, accept as unix_accept,
    bind as unix_bind, connect as unix_connect,
};

/// Drops a Unix write half without shutting the stream down (tokio's halves shut the write
/// direction down when dropped; the stream closes with its read half instead).
#[cfg(unix)]
pub(crate) fn unix_forget(w: UnixWriteHalf) {
    w.forget();
}

#[cfg(not(unix))]
mod no_unix {
    use super::never::{Never, unsupported};
    use std::io;
    use std::path::{Path, PathBuf};

    const MSG: &str = "unix:// and hybrid-vsock:// endpoints need Unix-domain sockets, \
        which hvrpc supports only on Unix systems";

    pub(crate) type UnixSocketStream = Never;
    pub(crate) type UnixReadHalf = Never;
    pub(crate) type UnixWriteHalf = Never;
    pub(crate) type UnixSocketListener = Never;

    pub(crate) async fn unix_connect(_: &Path) -> io::Result<Never> {
        unsupported(MSG)
    }

    pub(crate) fn unix_bind(_: &Path) -> io::Result<Never> {
        unsupported(MSG)
    }

    pub(crate) async fn unix_accept(never: &Never) -> io::Result<(Never, Option<PathBuf>)> {
        match *never {}
    }

    pub(crate) fn unix_forget(never: Never) {
        match never {}
    }
}
#[cfg(not(unix))]
pub(crate) use no_unix::*;

// ---- "the parent" ----

/// What [`Endpoint::Parent`](crate::Endpoint::Parent) means on this platform when connecting.
pub(crate) fn parent_connect_endpoint(
    service: crate::ServiceId,
) -> std::io::Result<crate::Endpoint> {
    if cfg!(windows) {
        Ok(crate::Endpoint::HvSocket(crate::HvSocketAddr::new(
            crate::VmId::PARENT,
            service,
        )))
    } else {
        parent_port(service).map(|port| crate::Endpoint::Vsock(crate::VsockAddr::host(port)))
    }
}

/// What [`Endpoint::Parent`](crate::Endpoint::Parent) means on this platform when listening:
/// accept connections from the parent.
pub(crate) fn parent_listen_endpoint(
    service: crate::ServiceId,
) -> std::io::Result<crate::Endpoint> {
    if cfg!(windows) {
        Ok(crate::Endpoint::HvSocket(crate::HvSocketAddr::new(
            crate::VmId::PARENT,
            service,
        )))
    } else {
        parent_port(service).map(|port| crate::Endpoint::Vsock(crate::VsockAddr::any(port)))
    }
}

fn parent_port(service: crate::ServiceId) -> std::io::Result<u32> {
    service.vsock_port().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "service {service} is not a vsock port (<port>-facb-11e6-bd58-64006a7986d3): \
                 Linux guests can reach only port-based services"
            ),
        )
    })
}

// ---- Hyper-V service registration (Windows registry) ----

/// The registry key (under `HKEY_LOCAL_MACHINE`) that lists Hyper-V socket services.
pub(crate) const SERVICES_KEY: &str =
    r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\GuestCommunicationServices";

#[cfg(windows)]
mod registry_windows;
#[cfg(windows)]
pub(crate) use registry_windows::{
    list as registry_list, register as registry_register, unregister as registry_unregister,
};

#[cfg(not(windows))]
mod no_registry {
    use super::never::unsupported;
    use crate::ServiceId;
    use std::io;

    const MSG: &str = "Hyper-V service registration is for a Windows host only \
        (HKLM\\...\\Virtualization\\GuestCommunicationServices); nothing to do on this system";

    pub(crate) fn registry_register(_: ServiceId, _: &str) -> io::Result<()> {
        unsupported(MSG)
    }

    pub(crate) fn registry_unregister(_: ServiceId) -> io::Result<()> {
        unsupported(MSG)
    }

    pub(crate) fn registry_list() -> io::Result<Vec<(ServiceId, Option<String>)>> {
        unsupported(MSG)
    }
}
#[cfg(not(windows))]
pub(crate) use no_registry::*;

// ---- VM discovery (Host Compute Service) ----
#[cfg(windows)]
mod hcs_windows;
#[cfg(windows)]
pub(crate) use hcs_windows::{enumerate as hcs_enumerate, hvc_id};

#[cfg(not(windows))]
pub(crate) fn hcs_enumerate() -> std::io::Result<String> {
    never::unsupported(
        "VM discovery (the Host Compute Service) needs a Windows host with Hyper-V; on a Linux \
         host list the VMMs' hybrid-vsock sockets instead",
    )
}

#[cfg(not(windows))]
pub(crate) fn hvc_id(_: &str) -> std::io::Result<crate::VmId> {
    never::unsupported("hvc.exe exists only on a Windows host")
}

/// Whether `path` is a Unix socket.
pub(crate) fn is_socket(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}
