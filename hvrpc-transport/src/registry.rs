//! Registering Hyper-V socket services on a Windows host.
//!
//! A host that *listens* for connections from guests of VMs managed by Hyper-V (VMMS) must list
//! the service under
//! `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\GuestCommunicationServices\<service GUID>`,
//! with a string value `ElementName` (a friendly name, shown in performance counters). Writing
//! there needs administrator rights, so do it once at install time; connecting *to* a guest
//! listener needs no registration. VMs created through HCS (WSL2, containers) use a per-VM
//! service table instead and are not affected by this key.
//!
//! On other systems every function here returns an `Unsupported` error saying that this is a
//! Windows host feature.

use std::io;

use crate::addr::ServiceId;
use crate::sys;

/// The registry key (under `HKEY_LOCAL_MACHINE`) that lists Hyper-V socket services.
pub const SERVICES_KEY: &str = sys::SERVICES_KEY;

/// A registered service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The service id (the subkey's name).
    pub service_id: ServiceId,
    /// The friendly name (`ElementName`), if the key has one.
    pub element_name: Option<String>,
}

impl Registration {
    /// The vsock port, for services registered under a vsock template id.
    pub fn vsock_port(&self) -> Option<u32> {
        self.service_id.vsock_port()
    }
}

/// Registers `service_id` with the friendly name `element_name` (creating or updating the key).
/// Fails with `PermissionDenied` and a message about administrator rights when not elevated.
pub fn register(service_id: ServiceId, element_name: &str) -> io::Result<()> {
    if element_name.is_empty() || element_name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the service's friendly name must be non-empty text without NUL characters",
        ));
    }
    sys::registry_register(service_id, element_name)
}

/// Removes the registration of `service_id`; `NotFound` if it is not registered.
pub fn unregister(service_id: ServiceId) -> io::Result<()> {
    sys::registry_unregister(service_id)
}

/// Lists the registered services. Subkeys whose names are not GUIDs are skipped. An absent
/// `GuestCommunicationServices` key (no Hyper-V) is an empty list.
pub fn list() -> io::Result<Vec<Registration>> {
    Ok(sys::registry_list()?
        .into_iter()
        .map(|(service_id, element_name)| Registration {
            service_id,
            element_name,
        })
        .collect())
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    #[test]
    fn windows_host_only_elsewhere() {
        for result in [
            register(ServiceId::from_vsock_port(1), "x"),
            unregister(ServiceId::from_vsock_port(1)),
            list().map(|_| ()),
        ] {
            let e = result.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            assert!(e.to_string().contains("Windows host only"), "{e}");
        }
    }

    #[test]
    fn bad_names_rejected_before_the_registry() {
        let e = register(ServiceId::from_vsock_port(1), "").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
