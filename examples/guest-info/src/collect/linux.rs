//! Linux collectors: `/proc`, `/sys`, `/etc`, utmp, and `getifaddrs`/`statvfs`/`localtime_r`.
#![allow(
    unsafe_code,
    reason = "getifaddrs, statvfs and localtime_r are libc FFI"
)]

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

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

fn read(path: &str) -> Result<String, InfoError> {
    fs::read_to_string(path).map_err(|e| InfoError::Failed(format!("reading {path}: {e}")))
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// See [`crate::GuestInfo::os_info`].
pub fn os_info() -> Result<OsInfo, InfoError> {
    let release = read("/etc/os-release")
        .or_else(|_| read("/usr/lib/os-release"))
        .map(|t| parse::os_release(&t))
        .unwrap_or_default();
    let field = |k: &str| release.get(k).cloned().unwrap_or_default();
    Ok(OsInfo {
        name: field("NAME"),
        pretty_name: field("PRETTY_NAME"),
        id: field("ID"),
        version: release
            .get("VERSION")
            .or_else(|| release.get("VERSION_ID"))
            .cloned()
            .unwrap_or_default(),
        kernel_name: read_trimmed("/proc/sys/kernel/ostype").unwrap_or_else(|| "Linux".into()),
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        kernel_version: read_trimmed("/proc/sys/kernel/version").unwrap_or_default(),
        machine: std::env::consts::ARCH.to_owned(),
    })
}

/// See [`crate::GuestInfo::hostname`].
pub fn hostname() -> Result<String, InfoError> {
    read("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned())
}

fn utc_offset(unix_seconds: i64) -> Option<i32> {
    let t = libc::time_t::try_from(unix_seconds).ok()?;
    // SAFETY: an all-zero `tm` is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers point to live locals of the right types for the call's duration;
    // localtime_r is the thread-safe variant and writes only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        None
    } else {
        i32::try_from(tm.tm_gmtoff).ok()
    }
}

/// See [`crate::GuestInfo::time`].
pub fn time() -> Result<TimeInfo, InfoError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| InfoError::Failed(format!("the clock is before 1970: {e}")))?;
    let unix_seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let timezone = read_trimmed("/etc/timezone")
        .filter(|z| !z.is_empty())
        .or_else(|| {
            fs::read_link("/etc/localtime")
                .ok()
                .and_then(|t| parse::zone_from_localtime_link(&t.to_string_lossy()))
        });
    Ok(TimeInfo {
        unix_seconds,
        nanos: now.subsec_nanos(),
        timezone,
        utc_offset_seconds: utc_offset(unix_seconds),
    })
}

/// See [`crate::GuestInfo::load`].
pub fn load() -> Result<LoadInfo, InfoError> {
    let uptime = parse::uptime(&read("/proc/uptime")?)?;
    let (load, running, total) = parse::loadavg(&read("/proc/loadavg")?)?;
    Ok(LoadInfo {
        uptime_seconds: uptime,
        load: Some(load),
        running_tasks: Some(running),
        total_tasks: Some(total),
    })
}

/// See [`crate::GuestInfo::memory`].
pub fn memory() -> Result<MemoryInfo, InfoError> {
    parse::meminfo(&read("/proc/meminfo")?)
}

/// See [`crate::GuestInfo::users`].
pub fn users() -> Result<Vec<UserSession>, InfoError> {
    for path in ["/run/utmp", "/var/run/utmp"] {
        match fs::read(path) {
            Ok(bytes) => return Ok(parse::utmp(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(InfoError::Failed(format!("reading {path}: {e}"))),
        }
    }
    // No utmp at all (minimal systems, containers): nobody is logged in through it.
    Ok(Vec::new())
}

/// Interface name → addresses, from `getifaddrs`.
fn interface_addresses() -> Result<BTreeMap<String, Vec<IpNet>>, InfoError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a live out-pointer; on success the list is freed below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(InfoError::Failed(format!(
            "getifaddrs: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut out: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr owned by the list.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let net = match family {
            libc::AF_INET => {
                // SAFETY: the family says this is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                let prefix = if ifa.ifa_netmask.is_null() {
                    32
                } else {
                    // SAFETY: a non-null netmask of an AF_INET entry is a sockaddr_in.
                    let mask = unsafe { &*ifa.ifa_netmask.cast::<libc::sockaddr_in>() };
                    parse::prefix_len(&mask.sin_addr.s_addr.to_ne_bytes())
                };
                IpNet {
                    addr: IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())),
                    prefix,
                }
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                let prefix = if ifa.ifa_netmask.is_null() {
                    128
                } else {
                    // SAFETY: a non-null netmask of an AF_INET6 entry is a sockaddr_in6.
                    let mask = unsafe { &*ifa.ifa_netmask.cast::<libc::sockaddr_in6>() };
                    parse::prefix_len(&mask.sin6_addr.s6_addr)
                };
                IpNet {
                    addr: IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                    prefix,
                }
            }
            _ => continue,
        };
        out.entry(name).or_default().push(net);
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once; no
    // reference into the list outlives this point.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// See [`crate::GuestInfo::network_interfaces`].
pub fn network_interfaces() -> Result<Vec<NetInterface>, InfoError> {
    let counters = parse::net_dev(&read("/proc/net/dev")?);
    let mut addresses = interface_addresses()?;
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for n in counters.keys().chain(addresses.keys()) {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let sys = Path::new("/sys/class/net").join(&name);
            let [rx_bytes, rx_packets, tx_bytes, tx_packets] =
                counters.get(&name).copied().unwrap_or_default();
            NetInterface {
                mac: read_trimmed(sys.join("address")).filter(|m| !m.is_empty()),
                up: read_trimmed(sys.join("operstate"))
                    .is_some_and(|s| s == "up" || s == "unknown"),
                mtu: read_trimmed(sys.join("mtu")).and_then(|m| m.parse().ok()),
                addresses: addresses.remove(&name).unwrap_or_default(),
                rx_bytes,
                tx_bytes,
                rx_packets,
                tx_packets,
                name,
            }
        })
        .collect())
}

#[allow(
    clippy::useless_conversion,
    reason = "statvfs fields are u64 here but 32-bit on some targets"
)]
fn usage(mount_point: &str) -> Option<(u64, u64, u64)> {
    let path = CString::new(mount_point).ok()?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a live statvfs, both for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = u64::from(st.f_frsize).max(1);
    let total = u64::from(st.f_blocks).saturating_mul(unit);
    let free = u64::from(st.f_bfree).saturating_mul(unit);
    let avail = u64::from(st.f_bavail).saturating_mul(unit);
    Some((total, total.saturating_sub(free), avail))
}

/// See [`crate::GuestInfo::filesystems`].
pub fn filesystems() -> Result<Vec<Filesystem>, InfoError> {
    let mounts = parse::mounts(&read("/proc/self/mounts")?);
    Ok(mounts
        .into_iter()
        .filter_map(|(device, mount_point, fs_type)| {
            let (total, used, available) = usage(&mount_point)?;
            (total > 0).then_some(Filesystem {
                mount_point,
                device,
                fs_type,
                total_bytes: total,
                used_bytes: used,
                available_bytes: available,
            })
        })
        .collect())
}

/// See [`crate::GuestInfo::watch`].
pub fn sample() -> Result<Sample, InfoError> {
    let mem = memory()?;
    let uptime = parse::uptime(&read("/proc/uptime")?)?;
    let load1 = read("/proc/loadavg")
        .ok()
        .and_then(|t| parse::loadavg(&t).ok())
        .map(|(l, _, _)| l[0]);
    Ok(Sample {
        uptime_seconds: uptime,
        load1,
        memory_available_bytes: mem.available_bytes,
        memory_total_bytes: mem.total_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collectors work on this (Linux) machine and give plausible values.
    #[test]
    fn collectors_on_this_machine() {
        let os = os_info().unwrap();
        assert_eq!(os.kernel_name, "Linux");
        assert!(!os.kernel_release.is_empty());
        assert!(!hostname().unwrap().is_empty());
        let t = time().unwrap();
        assert!(t.unix_seconds > 1_600_000_000);
        assert!(t.utc_offset_seconds.is_some());
        let l = load().unwrap();
        assert!(l.uptime_seconds > 0.0);
        let m = memory().unwrap();
        assert!(m.total_bytes > 0 && m.available_bytes <= m.total_bytes);
        users().unwrap();
        let nics = network_interfaces().unwrap();
        let lo = nics
            .iter()
            .find(|n| n.name == "lo")
            .expect("a loopback interface");
        assert!(
            lo.addresses
                .iter()
                .any(|a| a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST) && a.prefix == 8)
        );
        let fs = filesystems().unwrap();
        assert!(fs.iter().any(|f| f.mount_point == "/"), "{fs:?}");
        assert!(fs.iter().all(|f| f.used_bytes <= f.total_bytes));
        let s = sample().unwrap();
        assert_eq!(s.memory_total_bytes, m.total_bytes);
    }
}
