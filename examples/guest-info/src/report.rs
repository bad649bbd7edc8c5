//! Gathering every answer of an agent into a [`Report`], and rendering it for people.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::{
    AgentInfo, Filesystem, GuestInfoClient, InfoError, LoadInfo, MemoryInfo, NetInterface, OsInfo,
    Sample, TimeInfo, UserSession,
};

/// Everything an agent says about its guest. A part that failed is `None`, with the reason in
/// `errors`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The agent.
    pub agent: Option<AgentInfo>,
    /// The host name.
    pub hostname: Option<String>,
    /// The OS.
    pub os: Option<OsInfo>,
    /// The clock.
    pub time: Option<TimeInfo>,
    /// Uptime and load.
    pub load: Option<LoadInfo>,
    /// Memory.
    pub memory: Option<MemoryInfo>,
    /// Logged-in users.
    pub users: Option<Vec<UserSession>>,
    /// Network interfaces.
    pub network_interfaces: Option<Vec<NetInterface>>,
    /// Filesystems.
    pub filesystems: Option<Vec<Filesystem>>,
    /// Why parts are missing, by part.
    pub errors: BTreeMap<String, String>,
}

fn keep<T>(
    errors: &mut BTreeMap<String, String>,
    part: &str,
    r: Result<T, hvrpc::Error<InfoError>>,
) -> Option<T> {
    r.map_err(|e| errors.insert(part.to_owned(), e.to_string()))
        .ok()
}

impl Report {
    /// Asks the agent everything, all questions at once on one connection.
    pub async fn gather(guest: &GuestInfoClient) -> Report {
        let (agent, hostname, os, time, load, memory, users, nics, fs) = tokio::join!(
            guest.agent_info(),
            guest.hostname(),
            guest.os_info(),
            guest.time(),
            guest.load(),
            guest.memory(),
            guest.users(),
            guest.network_interfaces(),
            guest.filesystems(),
        );
        let mut errors = BTreeMap::new();
        Report {
            agent: keep(
                &mut errors,
                "agent_info",
                agent.map_err(|e| e.with_application()),
            ),
            hostname: keep(&mut errors, "hostname", hostname),
            os: keep(&mut errors, "os_info", os),
            time: keep(&mut errors, "time", time),
            load: keep(&mut errors, "load", load),
            memory: keep(&mut errors, "memory", memory),
            users: keep(&mut errors, "users", users),
            network_interfaces: keep(&mut errors, "network_interfaces", nics),
            filesystems: keep(&mut errors, "filesystems", fs),
            errors,
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS.get(unit).copied().unwrap_or("?"))
    }
}

/// `93784.2` → `1d 2h 3m 4s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC` (proleptic Gregorian calendar).
pub fn utc(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86400);
    let secs = unix_seconds.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// One line for a live sample.
pub fn sample_line(s: &Sample) -> String {
    let load = s
        .load1
        .map_or_else(|| "-".to_owned(), |l| format!("{l:.2}"));
    format!(
        "uptime {:>14}  load {:>5}  memory available {:>10} of {}",
        duration(s.uptime_seconds),
        load,
        bytes(s.memory_available_bytes),
        bytes(s.memory_total_bytes)
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.hostname {
            writeln!(f, "Host name    {h}")?;
        }
        if let Some(os) = &self.os {
            writeln!(
                f,
                "OS           {}",
                if os.pretty_name.is_empty() {
                    &os.name
                } else {
                    &os.pretty_name
                }
            )?;
            writeln!(
                f,
                "Kernel       {} {} ({})",
                os.kernel_name, os.kernel_release, os.machine
            )?;
        }
        if let Some(t) = &self.time {
            let zone = t.timezone.as_deref().unwrap_or("unknown zone");
            let offset = t.utc_offset_seconds.map_or_else(String::new, |o| {
                format!(
                    ", UTC{}{:02}:{:02}",
                    if o < 0 { '-' } else { '+' },
                    o.abs() / 3600,
                    o.abs() / 60 % 60
                )
            });
            writeln!(f, "Time         {} ({zone}{offset})", utc(t.unix_seconds))?;
        }
        if let Some(l) = &self.load {
            write!(f, "Uptime       {}", duration(l.uptime_seconds))?;
            if let Some([a, b, c]) = l.load {
                write!(f, ", load {a:.2} {b:.2} {c:.2}")?;
            }
            if let (Some(r), Some(t)) = (l.running_tasks, l.total_tasks) {
                write!(f, ", {r}/{t} tasks running")?;
            }
            writeln!(f)?;
        }
        if let Some(m) = &self.memory {
            writeln!(
                f,
                "Memory       {} available of {} ({} free), swap {} free of {}",
                bytes(m.available_bytes),
                bytes(m.total_bytes),
                bytes(m.free_bytes),
                bytes(m.swap_free_bytes),
                bytes(m.swap_total_bytes)
            )?;
        }
        if let Some(users) = &self.users {
            if users.is_empty() {
                writeln!(f, "Users        nobody logged in")?;
            }
            for u in users {
                let from = if u.host.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", u.host)
                };
                writeln!(
                    f,
                    "User         {} on {}{from} since {}",
                    u.user,
                    u.terminal,
                    utc(u.login_unix_seconds)
                )?;
            }
        }
        if let Some(nics) = &self.network_interfaces {
            writeln!(f, "Network")?;
            for n in nics {
                let addrs: Vec<String> = n
                    .addresses
                    .iter()
                    .map(|a| format!("{}/{}", a.addr, a.prefix))
                    .collect();
                writeln!(
                    f,
                    "  {:<10} {:<4} {:<17} rx {:>10} tx {:>10}  {}",
                    n.name,
                    if n.up { "up" } else { "down" },
                    n.mac.as_deref().unwrap_or("-"),
                    bytes(n.rx_bytes),
                    bytes(n.tx_bytes),
                    addrs.join(" ")
                )?;
            }
        }
        if let Some(fs) = &self.filesystems {
            writeln!(f, "Filesystems")?;
            for x in fs {
                writeln!(
                    f,
                    "  {:<20} {:<8} {:>10} used of {:>10}  ({})",
                    x.mount_point,
                    x.fs_type,
                    bytes(x.used_bytes),
                    bytes(x.total_bytes),
                    x.device
                )?;
            }
        }
        if let Some(a) = &self.agent {
            writeln!(
                f,
                "Agent        guest-info {} ({}), answers: {}",
                a.version,
                a.os_family,
                a.supported.join(", ")
            )?;
        }
        for (part, why) in &self.errors {
            writeln!(f, "Unavailable  {part}: {why}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(93784.2), "1d 2h 3m 4s");
        assert_eq!(duration(59.0), "59s");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }
}
