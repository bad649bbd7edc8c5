//! Windows collectors: Win32 system information, time zone, volumes, the registry, logged-on
//! sessions (WTS) and network interfaces (IP Helper).
#![allow(unsafe_code, reason = "the Win32 API is FFI")]

use std::ptr;

use windows_sys::Win32::NetworkManagement::IpHelper::{
    GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_DNS_SERVER, GAA_FLAG_SKIP_MULTICAST, GetAdaptersAddresses,
    GetIfEntry2, IP_ADAPTER_ADDRESSES_LH, MIB_IF_ROW2,
};
use windows_sys::Win32::NetworkManagement::Ndis::IfOperStatusUp;
use windows_sys::Win32::Storage::FileSystem::{
    GetDiskFreeSpaceExW, GetLogicalDriveStringsW, GetVolumeInformationW,
};
use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RegGetValueW};
use windows_sys::Win32::System::RemoteDesktop::{
    WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS, WTS_SESSION_INFOW, WTSActive, WTSClientName,
    WTSDisconnected, WTSDomainName, WTSEnumerateSessionsW, WTSFreeMemory, WTSINFOW,
    WTSQuerySessionInformationW, WTSSessionInfo, WTSUserName,
};
use windows_sys::Win32::System::SystemInformation::{
    ComputerNamePhysicalDnsHostname, GetComputerNameExW, GetTickCount64, GlobalMemoryStatusEx,
    MEMORYSTATUSEX,
};
use windows_sys::Win32::System::Time::{GetTimeZoneInformation, TIME_ZONE_INFORMATION};

use super::parse;
use crate::{
    Filesystem, InfoError, IpNet, LoadInfo, MemoryInfo, NetInterface, OsInfo, Sample, TimeInfo,
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
    "users",
    "network_interfaces",
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

/// A NUL-terminated UTF-16 string from the system; empty for null.
///
/// # Safety
/// `p` is null or points to a NUL-terminated UTF-16 string.
unsafe fn from_wide_ptr(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the caller promises a NUL-terminated string; we stop at the NUL.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` units before the NUL are readable.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Session information of class `class`, as the bytes WTS returns (freed here).
fn session_query(session: u32, class: WTS_INFO_CLASS) -> Option<Vec<u8>> {
    let mut buf: *mut u16 = ptr::null_mut();
    let mut bytes = 0u32;
    // SAFETY: out-pointers to live locals; the buffer is freed below with WTSFreeMemory.
    let ok = unsafe {
        WTSQuerySessionInformationW(
            WTS_CURRENT_SERVER_HANDLE,
            session,
            class,
            &mut buf,
            &mut bytes,
        )
    };
    if ok == 0 || buf.is_null() {
        return None;
    }
    // SAFETY: WTS returned `bytes` readable bytes at `buf`.
    let out = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), bytes as usize) }.to_vec();
    // SAFETY: `buf` came from WTSQuerySessionInformationW and is freed once.
    unsafe { WTSFreeMemory(buf.cast()) };
    Some(out)
}

fn session_string(session: u32, class: WTS_INFO_CLASS) -> String {
    let units: Vec<u16> = session_query(session, class)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    from_wide(&units)
}

/// See [`crate::GuestInfo::users`]: the sessions with a user logged on, active or disconnected
/// (like `who`, which lists logins, not only the ones in use). `terminal` is the session's
/// window station (`Console`, `RDP-Tcp#3`), `host` the remote client's name, `pid` 0 (a
/// Windows session has no single login process).
pub fn users() -> Result<Vec<UserSession>, InfoError> {
    let mut sessions: *mut WTS_SESSION_INFOW = ptr::null_mut();
    let mut count = 0u32;
    // SAFETY: out-pointers to live locals; the list is freed below with WTSFreeMemory.
    let ok = unsafe {
        WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, &mut sessions, &mut count)
    };
    if ok == 0 {
        return Err(last_error("WTSEnumerateSessionsW"));
    }
    let list = if sessions.is_null() {
        &[][..]
    } else {
        // SAFETY: WTS returned `count` entries at `sessions`, valid until freed below.
        unsafe { std::slice::from_raw_parts(sessions, count as usize) }
    };
    let mut out = Vec::new();
    for s in list {
        if s.State != WTSActive && s.State != WTSDisconnected {
            continue;
        }
        let user = session_string(s.SessionId, WTSUserName);
        if user.is_empty() {
            // Session 0 (services) and listeners have no user.
            continue;
        }
        let domain = session_string(s.SessionId, WTSDomainName);
        let logon = session_query(s.SessionId, WTSSessionInfo)
            .filter(|b| b.len() >= size_of::<WTSINFOW>())
            // SAFETY: at least size_of::<WTSINFOW>() bytes, read unaligned from the copy.
            .map(|b| unsafe { ptr::read_unaligned(b.as_ptr().cast::<WTSINFOW>()) }.LogonTime);
        out.push(UserSession {
            user: if domain.is_empty() {
                user
            } else {
                format!("{domain}\\{user}")
            },
            // SAFETY: WTS gives a NUL-terminated name (or null).
            terminal: unsafe { from_wide_ptr(s.pWinStationName) },
            host: session_string(s.SessionId, WTSClientName),
            login_unix_seconds: logon.and_then(parse::filetime_to_unix).unwrap_or(0),
            pid: 0,
        });
    }
    // SAFETY: `sessions` came from WTSEnumerateSessionsW and is freed once (null is allowed).
    unsafe { WTSFreeMemory(sessions.cast()) };
    Ok(out)
}

/// See [`crate::GuestInfo::network_interfaces`]: every adapter IP Helper lists, with its
/// unicast addresses and the counters of `GetIfEntry2`.
pub fn network_interfaces() -> Result<Vec<NetInterface>, InfoError> {
    const ERROR_BUFFER_OVERFLOW: u32 = 111;
    const ERROR_NO_DATA: u32 = 232;
    const AF_UNSPEC: u32 = 0;
    let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
    // u64s: the adapter list needs 8-byte alignment.
    let mut size = 16 * 1024u32;
    let mut buf: Vec<u64> = Vec::new();
    let mut rc = ERROR_BUFFER_OVERFLOW;
    for _ in 0..4 {
        buf = vec![0u64; size as usize / 8 + 1];
        // SAFETY: `buf` has room for `size` bytes; `size` is updated with what is needed.
        rc = unsafe {
            GetAdaptersAddresses(
                AF_UNSPEC,
                flags,
                ptr::null(),
                buf.as_mut_ptr().cast(),
                &mut size,
            )
        };
        if rc != ERROR_BUFFER_OVERFLOW {
            break;
        }
    }
    match rc {
        0 => {}
        ERROR_NO_DATA => return Ok(Vec::new()),
        e => {
            return Err(InfoError::Failed(format!(
                "GetAdaptersAddresses: {}",
                std::io::Error::from_raw_os_error(e as i32)
            )));
        }
    }
    let mut out = Vec::new();
    let mut next = buf.as_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>();
    while !next.is_null() {
        // SAFETY: a list GetAdaptersAddresses wrote into `buf`, which outlives this loop.
        let a = unsafe { &*next };
        next = a.Next;
        let mut addresses = Vec::new();
        let mut u = a.FirstUnicastAddress;
        while !u.is_null() {
            // SAFETY: an entry of the same list.
            let ua = unsafe { &*u };
            u = ua.Next;
            let sa = ua.Address;
            if sa.lpSockaddr.is_null() || sa.iSockaddrLength <= 0 {
                continue;
            }
            // SAFETY: the sockaddr is `iSockaddrLength` bytes long.
            let bytes = unsafe {
                std::slice::from_raw_parts(sa.lpSockaddr.cast::<u8>(), sa.iSockaddrLength as usize)
            };
            if let Some(addr) = parse::windows_sockaddr_ip(bytes) {
                addresses.push(IpNet {
                    addr,
                    prefix: ua.OnLinkPrefixLength,
                });
            }
        }
        // SAFETY: an all-zero MIB_IF_ROW2 with the LUID set is the documented input.
        let mut row: MIB_IF_ROW2 = unsafe { std::mem::zeroed() };
        row.InterfaceLuid = a.Luid;
        // SAFETY: `row` is a live MIB_IF_ROW2.
        let counted = unsafe { GetIfEntry2(&mut row) } == 0;
        let mac_len = (a.PhysicalAddressLength as usize).min(a.PhysicalAddress.len());
        out.push(NetInterface {
            // SAFETY: a NUL-terminated name (or null) in the same list.
            name: unsafe { from_wide_ptr(a.FriendlyName) },
            mac: parse::mac_string(a.PhysicalAddress.get(..mac_len).unwrap_or_default()),
            up: a.OperStatus == IfOperStatusUp,
            mtu: (a.Mtu != u32::MAX).then_some(a.Mtu),
            addresses,
            rx_bytes: if counted { row.InOctets } else { 0 },
            tx_bytes: if counted { row.OutOctets } else { 0 },
            rx_packets: if counted {
                row.InUcastPkts.saturating_add(row.InNUcastPkts)
            } else {
                0
            },
            tx_packets: if counted {
                row.OutUcastPkts.saturating_add(row.OutNUcastPkts)
            } else {
                0
            },
        });
    }
    Ok(out)
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
        // Under Wine: whatever sessions it reports, each with a user; the loopback adapter
        // at least, with its address.
        for u in users().unwrap() {
            assert!(!u.user.is_empty(), "{u:?}");
        }
        let nics = network_interfaces().unwrap();
        println!("{nics:#?}");
        assert!(!nics.is_empty(), "no network interface at all");
        assert!(
            nics.iter()
                .flat_map(|n| &n.addresses)
                .any(|a| a.addr.is_loopback() || !a.addr.is_unspecified()),
            "no address on any interface: {nics:?}"
        );
    }
}
