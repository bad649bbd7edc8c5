//! The Windows registry side of [`crate::registry`].
#![allow(unsafe_code, reason = "the registry API is FFI")]

use std::io;
use std::ptr;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_MORE_DATA, ERROR_NO_MORE_ITEMS, ERROR_SUCCESS,
    WIN32_ERROR,
};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_READ, KEY_WRITE, REG_OPTION_NON_VOLATILE, REG_SZ, RRF_RT_REG_SZ,
    RegCloseKey, RegCreateKeyExW, RegDeleteKeyW, RegEnumKeyExW, RegGetValueW, RegOpenKeyExW,
    RegSetValueExW,
};

use super::SERVICES_KEY;
use crate::addr::ServiceId;

/// An open registry key, closed on drop.
struct Key(HKEY);

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a key handle this value opened and owns; it is closed once.
        unsafe { RegCloseKey(self.0) };
    }
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// Turns a registry status into an `io::Result`, explaining access problems.
pub(crate) fn check(rc: WIN32_ERROR, what: &str) -> io::Result<()> {
    match rc {
        ERROR_SUCCESS => Ok(()),
        ERROR_ACCESS_DENIED => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{what}: access denied; changing HKLM\\{SERVICES_KEY} needs administrator rights \
                 (run from an elevated prompt, or register once at install time)"
            ),
        )),
        rc => {
            let e = io::Error::from_raw_os_error(rc as i32);
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
    }
}

fn open(path: &str, access: u32) -> Result<Key, WIN32_ERROR> {
    let path = wide(path);
    let mut key: HKEY = ptr::null_mut();
    // SAFETY: `path` is NUL-terminated and outlives the call; `key` is a live out-pointer.
    let rc = unsafe { RegOpenKeyExW(HKEY_LOCAL_MACHINE, path.as_ptr(), 0, access, &mut key) };
    if rc == ERROR_SUCCESS {
        Ok(Key(key))
    } else {
        Err(rc)
    }
}

pub(crate) fn register(service: ServiceId, element_name: &str) -> io::Result<()> {
    let what = format!("registering service {service}");
    let path = wide(&format!("{SERVICES_KEY}\\{service}"));
    let mut key: HKEY = ptr::null_mut();
    // SAFETY: `path` is NUL-terminated and outlives the call; class and security attributes
    // may be null; `key` is a live out-pointer; the disposition is not requested.
    let rc = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            path.as_ptr(),
            0,
            ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_WRITE,
            ptr::null(),
            &mut key,
            ptr::null_mut(),
        )
    };
    check(rc, &what)?;
    let key = Key(key);
    let name = wide("ElementName");
    let value = wide(element_name);
    let bytes = u32::try_from(value.len() * 2).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "the friendly name is too long")
    })?;
    // SAFETY: the key is open for writing; `name` is NUL-terminated; `value` is a
    // NUL-terminated UTF-16 string of exactly `bytes` bytes, as REG_SZ requires.
    let rc = unsafe {
        RegSetValueExW(
            key.0,
            name.as_ptr(),
            0,
            REG_SZ,
            value.as_ptr().cast(),
            bytes,
        )
    };
    check(rc, &what)
}

pub(crate) fn unregister(service: ServiceId) -> io::Result<()> {
    let path = wide(&format!("{SERVICES_KEY}\\{service}"));
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let rc = unsafe { RegDeleteKeyW(HKEY_LOCAL_MACHINE, path.as_ptr()) };
    if rc == ERROR_FILE_NOT_FOUND {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("service {service} is not registered"),
        ));
    }
    check(rc, &format!("unregistering service {service}"))
}

fn element_name(root: &Key, subkey: &[u16]) -> Option<String> {
    let value = wide("ElementName");
    let mut buf: Vec<u16> = vec![0; 128];
    loop {
        let mut bytes = u32::try_from(buf.len() * 2).ok()?;
        // SAFETY: the key is open for reading; `subkey` and `value` are NUL-terminated; `buf`
        // has room for `bytes` bytes, which the call updates to the size written.
        let rc = unsafe {
            RegGetValueW(
                root.0,
                subkey.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_SZ,
                ptr::null_mut(),
                buf.as_mut_ptr().cast(),
                &mut bytes,
            )
        };
        match rc {
            ERROR_SUCCESS => {
                let chars = (bytes as usize / 2).min(buf.len());
                let text = buf.get(..chars)?;
                let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
                return Some(String::from_utf16_lossy(text.get(..end)?));
            }
            ERROR_MORE_DATA if buf.len() < 32 * 1024 => buf.resize(buf.len() * 4, 0),
            _ => return None,
        }
    }
}

/// The registered services: each id with its friendly name, if it has one.
pub(crate) fn list() -> io::Result<Vec<(ServiceId, Option<String>)>> {
    let root = match open(SERVICES_KEY, KEY_READ) {
        Ok(k) => k,
        Err(ERROR_FILE_NOT_FOUND) => return Ok(Vec::new()),
        Err(rc) => return check(rc, "listing services").map(|()| Vec::new()),
    };
    let mut out = Vec::new();
    for index in 0.. {
        // Subkey names are at most 255 characters.
        let mut name = [0u16; 256];
        let mut len = name.len() as u32;
        // SAFETY: the key is open for reading; `name` has room for `len` characters; the
        // optional class, reserved and time pointers are null.
        let rc = unsafe {
            RegEnumKeyExW(
                root.0,
                index,
                name.as_mut_ptr(),
                &mut len,
                ptr::null(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if rc == ERROR_NO_MORE_ITEMS {
            break;
        }
        check(rc, "listing services")?;
        let Some(chars) = name.get(..len as usize) else {
            continue;
        };
        let text = String::from_utf16_lossy(chars);
        let Ok(service_id) = text.parse::<ServiceId>() else {
            continue;
        };
        let subkey: Vec<u16> = chars.iter().copied().chain(Some(0)).collect();
        out.push((service_id, element_name(&root, &subkey)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_explains_admin_rights() {
        let e = check(ERROR_ACCESS_DENIED, "registering service x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("needs administrator rights"), "{e}");
        assert!(check(ERROR_SUCCESS, "x").is_ok());
    }

    /// Runs against the real registry (Wine's in CI): register, list, unregister.
    #[test]
    fn register_list_unregister_round_trip() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let by_port = ServiceId::from_vsock_port(0x4000_0000 | (nanos & 0xffff));
        let by_guid =
            ServiceId::from_u128(0x5a7e3e8d_2c1b_4d3e_9f00_000000000000 | u128::from(nanos));
        for (id, name) in [
            (by_port, "hvrpc test (port)"),
            (by_guid, "hvrpc test (guid)"),
        ] {
            crate::registry::register(id, name).unwrap();
            // Registering again updates in place.
            crate::registry::register(id, name).unwrap();
        }
        let listed = crate::registry::list().unwrap();
        let port_entry = listed
            .iter()
            .find(|r| r.service_id == by_port)
            .expect("listed");
        assert_eq!(
            port_entry.element_name.as_deref(),
            Some("hvrpc test (port)")
        );
        assert_eq!(port_entry.vsock_port(), by_port.vsock_port());
        let guid_entry = listed
            .iter()
            .find(|r| r.service_id == by_guid)
            .expect("listed");
        assert_eq!(
            guid_entry.element_name.as_deref(),
            Some("hvrpc test (guid)")
        );
        assert_eq!(guid_entry.vsock_port(), None);
        for id in [by_port, by_guid] {
            crate::registry::unregister(id).unwrap();
            let e = crate::registry::unregister(id).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        }
        let after = crate::registry::list().unwrap();
        assert!(
            !after
                .iter()
                .any(|r| r.service_id == by_port || r.service_id == by_guid)
        );
    }
}
