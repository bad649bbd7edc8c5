//! The Host Compute Service, loaded at run time so that a machine without Hyper-V still runs
//! every other part of hvrpc (and says clearly what is missing).
#![allow(unsafe_code, reason = "computecore.dll is FFI, loaded dynamically")]

use std::io;
use std::ptr;

use windows_sys::Win32::Foundation::{FreeLibrary, HLOCAL, LocalFree};
use windows_sys::Win32::System::LibraryLoader::{
    GetProcAddress, LOAD_LIBRARY_SEARCH_SYSTEM32, LoadLibraryExW,
};

use crate::addr::VmId;

type HcsOperation = *mut core::ffi::c_void;
/// What `GetProcAddress` returns.
type FarProc = unsafe extern "system" fn() -> isize;
type CreateOperation =
    unsafe extern "system" fn(*const core::ffi::c_void, *const core::ffi::c_void) -> HcsOperation;
type Enumerate = unsafe extern "system" fn(*const u16, HcsOperation) -> i32;
type WaitResult = unsafe extern "system" fn(HcsOperation, u32, *mut *mut u16) -> i32;
type CloseOperation = unsafe extern "system" fn(HcsOperation);

const E_ACCESSDENIED: i32 = 0x8007_0005_u32 as i32;
const WAIT_MS: u32 = 30_000;

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// Explains an HCS failure.
pub(crate) fn hresult_error(hr: i32, detail: &str) -> io::Error {
    if hr == E_ACCESSDENIED {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            "enumerating VMs needs administrator rights (or membership in the \"Hyper-V \
             Administrators\" group)",
        );
    }
    io::Error::other(format!(
        "the Host Compute Service failed (HRESULT 0x{:08x}){}{detail}",
        hr as u32,
        if detail.is_empty() { "" } else { ": " }
    ))
}

/// Runs `HcsEnumerateComputeSystems` and returns its JSON result document.
pub(crate) fn enumerate() -> io::Result<String> {
    let name = wide("computecore.dll");
    // SAFETY: `name` is NUL-terminated; loading from System32 only.
    let module =
        unsafe { LoadLibraryExW(name.as_ptr(), ptr::null_mut(), LOAD_LIBRARY_SEARCH_SYSTEM32) };
    if module.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the Host Compute Service (computecore.dll) is not available: VM discovery needs a \
             Windows host with Hyper-V (Windows 10 1809 / Server 2019 or later)",
        ));
    }
    let lookup = |symbol: &[u8]| {
        // SAFETY: `module` is a loaded library and `symbol` a NUL-terminated name.
        unsafe { GetProcAddress(module, symbol.as_ptr()) }
    };
    let result = (|| {
        let (Some(create), Some(enumerate), Some(wait), Some(close)) = (
            lookup(b"HcsCreateOperation\0"),
            lookup(b"HcsEnumerateComputeSystems\0"),
            lookup(b"HcsWaitForOperationResult\0"),
            lookup(b"HcsCloseOperation\0"),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "computecore.dll lacks the HCS enumeration functions (Windows too old)",
            ));
        };
        // SAFETY: these exports have exactly these signatures (ComputeCore.h).
        let (create, enumerate, wait, close) = unsafe {
            (
                std::mem::transmute::<FarProc, CreateOperation>(create),
                std::mem::transmute::<FarProc, Enumerate>(enumerate),
                std::mem::transmute::<FarProc, WaitResult>(wait),
                std::mem::transmute::<FarProc, CloseOperation>(close),
            )
        };
        // SAFETY: no context and no callback: a synchronous operation.
        let op = unsafe { create(ptr::null(), ptr::null()) };
        if op.is_null() {
            return Err(io::Error::other("HcsCreateOperation failed"));
        }
        // SAFETY: a null query enumerates everything; `op` is a live operation.
        let hr = unsafe { enumerate(ptr::null(), op) };
        let mut doc: *mut u16 = ptr::null_mut();
        let hr = if hr < 0 {
            hr
        } else {
            // SAFETY: `op` is live; `doc` receives a LocalAlloc'ed string or stays null.
            unsafe { wait(op, WAIT_MS, &mut doc) }
        };
        let text = if doc.is_null() {
            String::new()
        } else {
            // SAFETY: `doc` is a NUL-terminated UTF-16 string from HCS.
            let len = (0..).take_while(|&i| unsafe { *doc.add(i) } != 0).count();
            // SAFETY: `len` units before the NUL are readable.
            let s = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(doc, len) });
            // SAFETY: HCS allocated the document with LocalAlloc; freed once.
            unsafe { LocalFree(doc as HLOCAL) };
            s
        };
        // SAFETY: `op` is live and closed once.
        unsafe { close(op) };
        if hr < 0 {
            Err(hresult_error(hr, &text))
        } else {
            Ok(text)
        }
    })();
    // SAFETY: `module` was loaded above and nothing from it is used after this.
    unsafe { FreeLibrary(module) };
    result
}

/// Asks `hvc.exe id <name>` for a VM's id.
pub(crate) fn hvc_id(name: &str) -> io::Result<VmId> {
    let out = std::process::Command::new("hvc.exe")
        .args(["id", name])
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run hvc.exe: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.parse::<VmId>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "hvc.exe id {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_says_what_is_needed() {
        let e = hresult_error(E_ACCESSDENIED, "");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("administrator rights"));
        assert!(hresult_error(-1, "x").to_string().contains("0xffffffff"));
    }

    /// Under Wine (no Hyper-V) the enumeration reports that HCS is missing, without crashing.
    #[test]
    fn enumeration_without_hyperv() {
        match enumerate() {
            Ok(json) => assert!(json.trim_start().starts_with('[')),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
                ),
                "{e}"
            ),
        }
    }
}
