//! Pure parsers for the files the Linux collectors read. Each takes the file's content and never
//! panics on malformed input: what cannot be parsed is skipped or reported.

use std::collections::HashMap;

use crate::{InfoError, MemoryInfo, UserSession};

/// `/etc/os-release`: `KEY=value` lines; values may be quoted (`"…"` or `'…'`) with backslash
/// escapes inside double quotes. Comments and malformed lines are skipped.
pub fn os_release(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            let mut v = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        v.push(next);
                    }
                } else {
                    v.push(c);
                }
            }
            v
        } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            raw.to_owned()
        };
        out.insert(key.trim().to_owned(), value);
    }
    out
}

/// `/proc/meminfo`: `Name:   1234 kB` lines.
pub fn meminfo(text: &str) -> Result<MemoryInfo, InfoError> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(value)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            _ => value,
        };
        fields.insert(name.trim(), bytes);
    }
    let get = |k: &str| fields.get(k).copied();
    let total =
        get("MemTotal").ok_or_else(|| InfoError::Failed("/proc/meminfo has no MemTotal".into()))?;
    let free = get("MemFree").unwrap_or(0);
    // Kernels before 3.14 have no MemAvailable: estimate it as free + buffers + page cache.
    let available = get("MemAvailable").unwrap_or_else(|| {
        free.saturating_add(get("Buffers").unwrap_or(0))
            .saturating_add(get("Cached").unwrap_or(0))
    });
    Ok(MemoryInfo {
        total_bytes: total,
        available_bytes: available,
        free_bytes: free,
        swap_total_bytes: get("SwapTotal").unwrap_or(0),
        swap_free_bytes: get("SwapFree").unwrap_or(0),
    })
}

/// `/proc/loadavg`: `0.52 0.58 0.59 2/1234 5678` → load averages, running and total tasks.
pub fn loadavg(text: &str) -> Result<([f64; 3], u32, u32), InfoError> {
    let bad = || InfoError::Failed(format!("unexpected /proc/loadavg content {text:?}"));
    let mut parts = text.split_whitespace();
    let mut load = [0f64; 3];
    for slot in &mut load {
        *slot = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    }
    let (running, total) = parts
        .next()
        .and_then(|t| t.split_once('/'))
        .and_then(|(r, t)| Some((r.parse().ok()?, t.parse().ok()?)))
        .ok_or_else(bad)?;
    Ok((load, running, total))
}

/// `/proc/uptime`: `12345.67 23456.78` → seconds since boot.
pub fn uptime(text: &str) -> Result<f64, InfoError> {
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| InfoError::Failed(format!("unexpected /proc/uptime content {text:?}")))
}

/// Decodes the octal escapes (`\040` for a space) in `/proc/self/mounts` fields.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i..i + 4) {
            Some([b'\\', a, b, c]) if [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d)) => {
                let v =
                    (u32::from(a - b'0') << 6) | (u32::from(b - b'0') << 3) | u32::from(c - b'0');
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(bytes.get(i).copied().unwrap_or(b'?'));
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystem types that are views of kernel state rather than storage.
pub const PSEUDO_FILESYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tracefs",
];

/// `/proc/self/mounts`: `device mountpoint fstype options 0 0` → (device, mount point, type),
/// pseudo filesystems left out.
pub fn mounts(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            (!PSEUDO_FILESYSTEMS.contains(&ty))
                .then(|| (unescape_mount(dev), unescape_mount(mnt), ty.to_owned()))
        })
        .collect()
}

/// `/proc/net/dev`: per interface, (rx bytes, rx packets, tx bytes, tx packets).
pub fn net_dev(text: &str) -> HashMap<String, [u64; 4]> {
    let mut out = HashMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let (Some(&rx_b), Some(&rx_p), Some(&tx_b), Some(&tx_p)) =
            (v.first(), v.get(1), v.get(8), v.get(9))
        {
            out.insert(name.trim().to_owned(), [rx_b, rx_p, tx_b, tx_p]);
        }
    }
    out
}

/// The size of a glibc `struct utmp` record on Linux (x86-64, aarch64 and others alike).
pub const UTMP_RECORD: usize = 384;
const USER_PROCESS: i16 = 7;

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

fn i32_at(rec: &[u8], at: usize) -> i32 {
    rec.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_ne_bytes)
}

/// `/var/run/utmp`: the logged-in user sessions (`USER_PROCESS` records). Layout of each
/// 384-byte record: `ut_type` i16 at 0, `ut_pid` i32 at 4, `ut_line[32]` at 8, `ut_id[4]` at
/// 40, `ut_user[32]` at 44, `ut_host[256]` at 76, `ut_exit` at 332, `ut_session` at 336,
/// `ut_tv` (two i32) at 340, `ut_addr_v6` at 348.
pub fn utmp(bytes: &[u8]) -> Vec<UserSession> {
    bytes
        .chunks_exact(UTMP_RECORD)
        .filter_map(|rec| {
            let ty = i16::from_ne_bytes(rec.get(0..2)?.try_into().ok()?);
            if ty != USER_PROCESS {
                return None;
            }
            Some(UserSession {
                pid: i32_at(rec, 4),
                terminal: c_string(rec.get(8..40)?),
                user: c_string(rec.get(44..76)?),
                host: c_string(rec.get(76..332)?),
                login_unix_seconds: i64::from(i32_at(rec, 340)),
            })
        })
        .collect()
}

/// The zone name from the target of `/etc/localtime` (`/usr/share/zoneinfo/Europe/Berlin`).
pub fn zone_from_localtime_link(target: &str) -> Option<String> {
    target
        .split_once("zoneinfo/")
        .map(|(_, zone)| zone.to_owned())
        .filter(|z| !z.is_empty())
}

/// The number of leading one bits of a netmask.
pub fn prefix_len(mask: &[u8]) -> u8 {
    let mut n = 0u8;
    for byte in mask {
        n = n.saturating_add(u8::try_from(byte.leading_ones()).unwrap_or(0));
        if *byte != 0xff {
            break;
        }
    }
    n
}

/// Seconds since the Unix epoch for a Windows FILETIME (100 ns units since 1601-01-01 UTC);
/// `None` for 0 (Windows' "never").
pub fn filetime_to_unix(filetime: i64) -> Option<i64> {
    const EPOCH_DIFF_SECS: i64 = 11_644_473_600;
    (filetime > 0).then(|| filetime / 10_000_000 - EPOCH_DIFF_SECS)
}

/// A hardware address as `aa:bb:cc:dd:ee:ff`; `None` if empty or all zero.
pub fn mac_string(bytes: &[u8]) -> Option<String> {
    if bytes.iter().all(|&b| b == 0) {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// The IP address in a Windows `SOCKADDR` of `AF_INET` (2) or `AF_INET6` (23), given as its
/// bytes (`SOCKADDR_IN`: family, port, 4 address bytes; `SOCKADDR_IN6`: family, port,
/// flow info, 16 address bytes). Anything else or anything short is `None`.
pub fn windows_sockaddr_ip(bytes: &[u8]) -> Option<std::net::IpAddr> {
    let family = u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?);
    match family {
        2 => {
            let a: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(std::net::IpAddr::from(a))
        }
        23 => {
            let a: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some(std::net::IpAddr::from(a))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_conversions() {
        // 2024-01-01T00:00:00Z as a FILETIME.
        assert_eq!(
            filetime_to_unix(133_485_408_000_000_000),
            Some(1_704_067_200)
        );
        assert_eq!(filetime_to_unix(0), None);
        assert_eq!(
            mac_string(&[0x00, 0x15, 0x5d, 0x01, 0x02, 0xab]).as_deref(),
            Some("00:15:5d:01:02:ab")
        );
        assert_eq!(mac_string(&[0; 6]), None);
        assert_eq!(mac_string(&[]), None);
        let v4 = [2u8, 0, 0, 0, 192, 168, 1, 20, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            windows_sockaddr_ip(&v4),
            Some("192.168.1.20".parse().unwrap())
        );
        let mut v6 = vec![23u8, 0, 0, 0, 0, 0, 0, 0];
        v6.extend_from_slice(&"fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(windows_sockaddr_ip(&v6), Some("fe80::1".parse().unwrap()));
        assert_eq!(windows_sockaddr_ip(&v6[..20]), None, "short");
        assert_eq!(windows_sockaddr_ip(&[1, 0, 0, 0]), None, "other family");
        assert_eq!(windows_sockaddr_ip(&[]), None);
    }

    const OS_RELEASE: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
# a comment
HOME_URL='https://www.debian.org/'
QUOTED="say \"hi\""
garbage line
"#;

    #[test]
    fn os_release_fields() {
        let f = os_release(OS_RELEASE);
        assert_eq!(f["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["VERSION"], "12 (bookworm)");
        assert_eq!(f["HOME_URL"], "https://www.debian.org/");
        assert_eq!(f["QUOTED"], r#"say "hi""#);
        assert!(!f.contains_key("garbage line"));
    }

    #[test]
    fn meminfo_values() {
        let text = "MemTotal:        2030024 kB\nMemFree:          123456 kB\nMemAvailable:    1500000 kB\nBuffers:           1000 kB\nSwapTotal:       1048572 kB\nSwapFree:        1048000 kB\nHugePages_Total:       0\n";
        let m = meminfo(text).unwrap();
        assert_eq!(m.total_bytes, 2_030_024 * 1024);
        assert_eq!(m.available_bytes, 1_500_000 * 1024);
        assert_eq!(m.free_bytes, 123_456 * 1024);
        assert_eq!(m.swap_total_bytes, 1_048_572 * 1024);
        assert_eq!(m.swap_free_bytes, 1_048_000 * 1024);
        // Old kernels: MemAvailable estimated.
        let old =
            meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n").unwrap();
        assert_eq!(old.available_bytes, 35 * 1024);
        assert!(meminfo("nothing useful").is_err());
    }

    #[test]
    fn loadavg_and_uptime() {
        assert_eq!(
            loadavg("0.52 0.58 0.59 2/1234 5678\n").unwrap(),
            ([0.52, 0.58, 0.59], 2, 1234)
        );
        assert!(loadavg("0.52 0.58").is_err());
        assert!(loadavg("a b c 1/2 3").is_err());
        assert_eq!(uptime("12345.67 23456.78\n").unwrap(), 12345.67);
        assert!(uptime("").is_err());
        assert!(uptime("-1 0").is_err());
    }

    #[test]
    fn mounts_skip_pseudo_and_unescape() {
        let text = "proc /proc proc rw 0 0\n/dev/vda1 / ext4 rw,relatime 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/sdb1 /mnt/my\\040disk vfat rw 0 0\nbroken\n";
        assert_eq!(
            mounts(text),
            [
                ("/dev/vda1".into(), "/".into(), "ext4".into()),
                ("tmpfs".into(), "/run".into(), "tmpfs".into()),
                ("/dev/sdb1".into(), "/mnt/my disk".into(), "vfat".into()),
            ]
        );
        assert_eq!(unescape_mount("a\\134b\\12"), "a\\b\\12");
    }

    #[test]
    fn net_dev_counters() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  12345      67    0    0    0     0          0         0    12345      67    0    0    0     0       0          0\n  eth0: 9876543   4321    0    0    0     0          0         0  1234567    3210    0    0    0     0       0          0\n";
        let d = net_dev(text);
        assert_eq!(d["lo"], [12345, 67, 12345, 67]);
        assert_eq!(d["eth0"], [9_876_543, 4321, 1_234_567, 3210]);
    }

    fn utmp_record(ty: i16, pid: i32, line: &str, user: &str, host: &str, secs: i32) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_RECORD];
        r[0..2].copy_from_slice(&ty.to_ne_bytes());
        r[4..8].copy_from_slice(&pid.to_ne_bytes());
        r[8..8 + line.len()].copy_from_slice(line.as_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r[76..76 + host.len()].copy_from_slice(host.as_bytes());
        r[340..344].copy_from_slice(&secs.to_ne_bytes());
        r
    }

    #[test]
    fn utmp_user_sessions() {
        let mut file = utmp_record(2, 0, "~", "reboot", "6.1.0", 1_700_000_000); // BOOT_TIME
        file.extend(utmp_record(
            7,
            4242,
            "pts/0",
            "alice",
            "10.0.0.5",
            1_700_000_100,
        ));
        file.extend(utmp_record(8, 11, "pts/1", "bob", "", 1_700_000_200)); // DEAD_PROCESS
        file.extend(utmp_record(7, 777, "tty1", "root", "", 1_700_000_300));
        file.extend([1, 2, 3]); // a torn last record is ignored
        let users = utmp(&file);
        assert_eq!(
            users,
            [
                UserSession {
                    user: "alice".into(),
                    terminal: "pts/0".into(),
                    host: "10.0.0.5".into(),
                    login_unix_seconds: 1_700_000_100,
                    pid: 4242
                },
                UserSession {
                    user: "root".into(),
                    terminal: "tty1".into(),
                    host: String::new(),
                    login_unix_seconds: 1_700_000_300,
                    pid: 777
                },
            ]
        );
    }

    #[test]
    fn zones_and_prefixes() {
        assert_eq!(
            zone_from_localtime_link("/usr/share/zoneinfo/Europe/Berlin").as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(
            zone_from_localtime_link("../usr/share/zoneinfo/UTC").as_deref(),
            Some("UTC")
        );
        assert_eq!(zone_from_localtime_link("/etc/custom"), None);
        assert_eq!(prefix_len(&[255, 255, 255, 0]), 24);
        assert_eq!(prefix_len(&[255, 255, 240, 0]), 20);
        assert_eq!(prefix_len(&[0; 16]), 0);
        assert_eq!(prefix_len(&[0xff; 16]), 128);
    }
}
