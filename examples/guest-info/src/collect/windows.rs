//! Windows collectors: Win32 system information, time zone, volumes and the registry.
//! Logged-in users (WTS) and network interfaces (IP Helper) are not implemented yet and say so.
#![allow(unsafe_code, reason = "the Win32 API is FFI")]

use std::ptr;

use windows_sys::Win32::Storage::FileSystem::{
    GetDiskFreeSpaceExW, GetLogicalDriveStringsW, GetVolumeInformationW,
};
use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RegGetValueW};
use windows_sys::Win32::System::SystemInformation::{
    ComputerNamePhysicalDnsHostname, GetComputerNameExW, GetTickCount64, GlobalMemoryStatusEx,
    MEMORYSTATUSEX,
};
use windows_sys::Win32::System::Time::{GetTimeZoneInformation, TIME_ZONE_INFORMATION};

use crate::{
    Filesystem, InfoError, LoadInfo, MemoryInfo, NetInterface, OsInfo, Sample, TimeInfo,
    UserSession,
};

/// The methods this build answers.
pub const SUPPORTED: &[&str] = &[
    "agent_info",
    "os_info",
    "hostname",
    "time",
    "load",
    "memory",
    "filesystems",
    "watch",
];

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

fn from_wide(buf: &[u16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(buf.get(..end).unwrap_or_default())
}

fn last_error(what: &str) -> InfoError {
    InfoError::Failed(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn registry_string(key: &str, value: &str) -> Option<String> {
    let (key, value) = (wide(key), wide(value));
    let mut buf = vec![0u16; 512];
    let mut bytes = u32::try_from(buf.len() * 2).ok()?;
    // SAFETY: key and value names are NUL-terminated; `buf` has room for `bytes` bytes.
    let rc = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ,
            ptr::null_mut(),
            buf.as_mut_ptr().cast(),
            &mut bytes,
        )
    };
    (rc == 0).then(|| from_wide(&buf))
}

/// See [`crate::GuestInfo::os_info`].
pub fn os_info() -> Result<OsInfo, InfoError> {
    const CV: &str = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion";
    let product = registry_string(CV, "ProductName").unwrap_or_else(|| "Windows".into());
    let display = registry_string(CV, "DisplayVersion").unwrap_or_default();
    let build = registry_string(CV, "CurrentBuild").unwrap_or_default();
    Ok(OsInfo {
        pretty_name: format!("{product} {display}").trim().to_owned(),
        name: product,
        id: "windows".into(),
        version: display,
        kernel_name: "Windows NT".into(),
        kernel_release: build,
        kernel_version: registry_string(CV, "BuildLabEx").unwrap_or_default(),
        machine: std::env::consts::ARCH.to_owned(),
    })
}

/// See [`crate::GuestInfo::hostname`].
pub fn hostname() -> Result<String, InfoError> {
    let mut buf = vec![0u16; 256];
    let mut len = buf.len() as u32;
    // SAFETY: `buf` has room for `len` UTF-16 units, which the call updates.
    let ok =
        unsafe { GetComputerNameExW(ComputerNamePhysicalDnsHostname, buf.as_mut_ptr(), &mut len) };
    if ok == 0 {
        return Err(last_error("GetComputerNameExW"));
    }
    Ok(from_wide(buf.get(..len as usize).unwrap_or_default()))
}

/// See [`crate::GuestInfo::time`].
pub fn time() -> Result<TimeInfo, InfoError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| InfoError::Failed(format!("the clock is before 1970: {e}")))?;
    // SAFETY: an all-zero TIME_ZONE_INFORMATION is a valid value to be overwritten.
    let mut tz: TIME_ZONE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: `tz` is a live TIME_ZONE_INFORMATION for the call.
    let state = unsafe { GetTimeZoneInformation(&mut tz) };
    // 0 unknown, 1 standard time, 2 daylight time; u32::MAX is failure.
    let (name, bias) = match state {
        2 => (from_wide(&tz.DaylightName), tz.Bias + tz.DaylightBias),
        1 | 0 => (from_wide(&tz.StandardName), tz.Bias + tz.StandardBias),
        _ => (String::new(), 0),
    };
    Ok(TimeInfo {
        unix_seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: now.subsec_nanos(),
        timezone: (!name.is_empty()).then_some(name),
        // Bias is minutes *west* of UTC.
        utc_offset_seconds: (state != u32::MAX).then_some(-bias * 60),
    })
}

fn uptime_seconds() -> f64 {
    // SAFETY: no arguments; reads a counter.
    (unsafe { GetTickCount64() }) as f64 / 1000.0
}

/// See [`crate::GuestInfo::load`].
pub fn load() -> Result<LoadInfo, InfoError> {
    Ok(LoadInfo {
        uptime_seconds: uptime_seconds(),
        load: None,
        running_tasks: None,
        total_tasks: None,
    })
}

/// See [`crate::GuestInfo::memory`].
pub fn memory() -> Result<MemoryInfo, InfoError> {
    // SAFETY: an all-zero MEMORYSTATUSEX is valid; dwLength is set before the call.
    let mut m: MEMORYSTATUSEX = unsafe { std::mem::zeroed() };
    m.dwLength = size_of::<MEMORYSTATUSEX>() as u32;
    // SAFETY: `m` is a live MEMORYSTATUSEX with its length set.
    if unsafe { GlobalMemoryStatusEx(&mut m) } == 0 {
        return Err(last_error("GlobalMemoryStatusEx"));
    }
    Ok(MemoryInfo {
        total_bytes: m.ullTotalPhys,
        available_bytes: m.ullAvailPhys,
        free_bytes: m.ullAvailPhys,
        swap_total_bytes: m.ullTotalPageFile.saturating_sub(m.ullTotalPhys),
        swap_free_bytes: m.ullAvailPageFile.saturating_sub(m.ullAvailPhys),
    })
}

/// See [`crate::GuestInfo::users`].
pub fn users() -> Result<Vec<UserSession>, InfoError> {
    Err(InfoError::Unsupported(
        "logged-in users are not implemented for Windows guests yet".into(),
    ))
}

/// See [`crate::GuestInfo::network_interfaces`].
pub fn network_interfaces() -> Result<Vec<NetInterface>, InfoError> {
    Err(InfoError::Unsupported(
        "network interfaces are not implemented for Windows guests yet".into(),
    ))
}

/// See [`crate::GuestInfo::filesystems`].
pub fn filesystems() -> Result<Vec<Filesystem>, InfoError> {
    let mut buf = vec![0u16; 1024];
    // SAFETY: `buf` has room for the length passed.
    let n = unsafe { GetLogicalDriveStringsW(buf.len() as u32, buf.as_mut_ptr()) } as usize;
    if n == 0 || n > buf.len() {
        return Err(last_error("GetLogicalDriveStringsW"));
    }
    let mut out = Vec::new();
    for root in buf
        .get(..n)
        .unwrap_or_default()
        .split(|&c| c == 0)
        .filter(|r| !r.is_empty())
    {
        let root_z: Vec<u16> = root.iter().copied().chain(Some(0)).collect();
        let (mut avail, mut total, mut free) = (0u64, 0u64, 0u64);
        // SAFETY: `root_z` is NUL-terminated; the three out-pointers point to live u64s.
        let ok = unsafe { GetDiskFreeSpaceExW(root_z.as_ptr(), &mut avail, &mut total, &mut free) };
        if ok == 0 || total == 0 {
            continue;
        }
        let mut fs_name = [0u16; 64];
        // SAFETY: `root_z` is NUL-terminated; `fs_name` has room for its length; the other
        // optional outputs are null.
        let got_fs = unsafe {
            GetVolumeInformationW(
                root_z.as_ptr(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                fs_name.as_mut_ptr(),
                fs_name.len() as u32,
            )
        };
        let root = String::from_utf16_lossy(root);
        out.push(Filesystem {
            device: root.clone(),
            mount_point: root,
            fs_type: if got_fs != 0 {
                from_wide(&fs_name)
            } else {
                String::new()
            },
            total_bytes: total,
            used_bytes: total.saturating_sub(free),
            available_bytes: avail,
        });
    }
    Ok(out)
}

/// See [`crate::GuestInfo::watch`].
pub fn sample() -> Result<Sample, InfoError> {
    let m = memory()?;
    Ok(Sample {
        uptime_seconds: uptime_seconds(),
        load1: None,
        memory_available_bytes: m.available_bytes,
        memory_total_bytes: m.total_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs under Wine in CI: the Win32 calls answer with plausible values.
    #[test]
    fn collectors_answer() {
        assert!(!hostname().unwrap().is_empty());
        let m = memory().unwrap();
        assert!(m.total_bytes > 0);
        assert!(load().unwrap().uptime_seconds >= 0.0);
        assert!(time().unwrap().unix_seconds > 1_600_000_000);
        os_info().unwrap();
        filesystems().unwrap();
        assert!(matches!(users(), Err(InfoError::Unsupported(_))));
    }
}
