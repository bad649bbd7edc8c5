//! Finding VMs to talk to.
//!
//! * On a Windows host, [`list_vms`] enumerates the running compute systems through the Host
//!   Compute Service (`HcsEnumerateComputeSystems` in `computecore.dll`, Windows 10 1809 /
//!   Server 2019 or later). That needs administrator rights (or membership in "Hyper-V
//!   Administrators"); the error says so. [`resolve_vm`] turns a VM id or name into a
//!   [`VmId`]: ids are parsed, names matched against the enumeration and, failing that, asked
//!   of `hvc.exe id <name>` (the Hyper-V client shipped with Windows).
//! * On a Linux/KVM host, guests behind Firecracker, Cloud Hypervisor or vhost-user-vsock are
//!   reached through their VMM's Unix socket: [`hybrid_sockets`] lists the sockets matching a
//!   pattern such as `/run/firecracker/*.vsock`.
//!
//! Which of the candidates serve a given service is then decided by a handshake
//! (`hvrpc::discover`).

use std::io;
use std::path::{Path, PathBuf};

use crate::addr::VmId;
use crate::sys;

/// A compute system (VM or container) known to the Host Compute Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmInfo {
    /// The VM id: the `VmId` of its Hyper-V sockets.
    pub id: VmId,
    /// Its name, when HCS reports one.
    pub name: Option<String>,
    /// `VirtualMachine` or `Container`.
    pub system_type: Option<String>,
    /// `Running`, `Paused`, …
    pub state: Option<String>,
    /// Who created it: `VMMS` for Hyper-V Manager VMs, `WSL`, a container runtime, …
    pub owner: Option<String>,
}

/// Parses the JSON document `HcsEnumerateComputeSystems` returns: an array of objects with
/// `Id`, and optionally `Name`, `SystemType`, `State` and `Owner`. Entries without a valid `Id`
/// are skipped.
pub fn parse_hcs_systems(json: &str) -> io::Result<Vec<VmInfo>> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer from the Host Compute Service: {e}"),
        )
    })?;
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_owned);
    Ok(items
        .iter()
        .filter_map(|v| {
            Some(VmInfo {
                id: text(v, "Id")?.parse().ok()?,
                name: text(v, "Name"),
                system_type: text(v, "SystemType"),
                state: text(v, "State"),
                owner: text(v, "Owner"),
            })
        })
        .collect())
}

/// The running VMs and containers (Windows host only).
pub fn list_vms() -> io::Result<Vec<VmInfo>> {
    sys::hcs_enumerate().and_then(|json| parse_hcs_systems(&json))
}

/// Resolves `name_or_id` (a VM id, or a VM's name) to its VM id (Windows host only for names).
pub fn resolve_vm(name_or_id: &str) -> io::Result<VmId> {
    if let Ok(id) = name_or_id.parse::<VmId>() {
        return Ok(id);
    }
    let enumerated = list_vms();
    if let Ok(vms) = &enumerated {
        let mut matches = vms.iter().filter(|v| {
            v.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name_or_id))
        });
        if let (Some(vm), None) = (matches.next(), matches.next()) {
            return Ok(vm.id);
        }
    }
    match sys::hvc_id(name_or_id) {
        Ok(id) => Ok(id),
        Err(hvc_error) => Err(io::Error::new(
            hvc_error.kind(),
            format!(
                "no VM named {name_or_id:?} found ({}; hvc.exe: {hvc_error})",
                match &enumerated {
                    Ok(vms) => format!("{} compute systems enumerated", vms.len()),
                    Err(e) => format!("enumeration failed: {e}"),
                }
            ),
        )),
    }
}

/// Matches `name` against a pattern with `*` (any run of characters) and `?` (one character).
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            wildcard_match(rest, name)
                || name
                    .split_first()
                    .is_some_and(|(_, n)| wildcard_match(pattern, n))
        }
        (Some((b'?', p)), Some((_, n))) => wildcard_match(p, n),
        (Some((a, p)), Some((b, n))) if a == b => wildcard_match(p, n),
        _ => false,
    }
}

/// The Unix sockets matching `pattern`, whose last component may contain `*` and `?`
/// (`/run/firecracker/*.vsock`), sorted. Other files are skipped; so is a missing directory
/// (no VMs).
pub fn hybrid_sockets(pattern: &str) -> io::Result<Vec<PathBuf>> {
    let path = Path::new(pattern);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_pattern = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pattern:?} names no file"),
            )
        })?;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", dir.display()),
            ));
        }
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            wildcard_match(
                file_pattern.as_bytes(),
                e.file_name().to_string_lossy().as_bytes(),
            )
        })
        .filter(|e| sys::is_socket(&e.path()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcs_json() {
        let json = r#"[
            {"Id":"5A7E3E8D-2C1B-4D3E-9F00-112233445566","SystemType":"VirtualMachine","Name":"build-01","Owner":"VMMS","State":"Running","RuntimeId":"x"},
            {"Id":"not-a-guid","SystemType":"Container"},
            {"Id":"90db8b89-0d35-4f79-8ce9-49ea0ac8b7c0","SystemType":"Container","Owner":"containerd"}
        ]"#;
        let vms = parse_hcs_systems(json).unwrap();
        assert_eq!(vms.len(), 2);
        assert_eq!(
            vms[0].id.to_string(),
            "5a7e3e8d-2c1b-4d3e-9f00-112233445566"
        );
        assert_eq!(vms[0].name.as_deref(), Some("build-01"));
        assert_eq!(vms[0].owner.as_deref(), Some("VMMS"));
        assert_eq!(vms[1].name, None);
        assert!(parse_hcs_systems("{").is_err());
        assert!(parse_hcs_systems("{}").unwrap().is_empty());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.vsock", b"vm1.vsock"));
        assert!(wildcard_match(b"vm?.vsock", b"vm1.vsock"));
        assert!(!wildcard_match(b"vm?.vsock", b"vm12.vsock"));
        assert!(wildcard_match(b"*", b""));
        assert!(!wildcard_match(b"*.vsock", b"vm1.vsock_52"));
        assert!(wildcard_match(b"a*b*c", b"aXXbYYc"));
    }

    #[test]
    fn ids_resolve_without_asking_anyone() {
        let id = resolve_vm("{5A7E3E8D-2C1B-4D3E-9F00-112233445566}").unwrap();
        assert_eq!(id.to_string(), "5a7e3e8d-2c1b-4d3e-9f00-112233445566");
    }

    #[cfg(unix)]
    #[test]
    fn sockets_by_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let _a = std::os::unix::net::UnixListener::bind(dir.path().join("a.vsock")).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(dir.path().join("b.vsock")).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(dir.path().join("a.vsock_52")).unwrap();
        std::fs::write(dir.path().join("c.vsock"), b"not a socket").unwrap();
        let found = hybrid_sockets(&format!("{}/*.vsock", dir.path().display())).unwrap();
        assert_eq!(
            found,
            [dir.path().join("a.vsock"), dir.path().join("b.vsock")]
        );
        assert!(
            hybrid_sockets("/nonexistent-dir/*.vsock")
                .unwrap()
                .is_empty()
        );
    }

    #[cfg(not(windows))]
    #[test]
    fn vm_enumeration_is_windows_only() {
        let e = list_vms().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("Windows host"), "{e}");
        let e = resolve_vm("build-01").unwrap_err();
        assert!(
            e.to_string().starts_with("no VM named \"build-01\" found"),
            "{e}"
        );
    }
}
