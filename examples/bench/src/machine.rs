//! A description of the machine and the software a run used.

use std::process::Command;

use crate::model::Meta;

/// The machine, the versions and the date; the run fills in the rest.
pub(crate) fn describe() -> Meta {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let hvrpc = match git_commit() {
        Some(c) => format!("{} ({c})", env!("BENCH_HVRPC")),
        None => env!("BENCH_HVRPC").to_owned(),
    };
    Meta {
        date: utc_now(),
        cpu,
        cpus,
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_mib,
        kernel,
        in_guest: std::env::var("HVRPC_IN_GUEST").as_deref() == Ok("1"),
        rustc: env!("BENCH_RUSTC").to_owned(),
        hvrpc,
        tarpc: env!("BENCH_TARPC").to_owned(),
        ..Meta::default()
    }
}

/// The first three fields of `/proc/loadavg`.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The workspace's commit, `+changes` when the work tree differs from it.
fn git_commit() -> Option<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?.trim().to_owned();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.trim().is_empty());
    Some(if dirty {
        format!("{commit}+changes")
    } else {
        commit
    })
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Raises this process's open-file limit (inherited by the servers it starts) towards `want`:
/// the usual soft limit of 1024 is too low for the many-connections workload. Returns the
/// limit in force afterwards.
#[allow(unsafe_code, reason = "std has no wrapper for getrlimit/setrlimit")]
pub(crate) fn raise_open_files(want: u64) -> u64 {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the `rlimit` it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 {
        return 1024;
    }
    if cur.rlim_cur >= want {
        return cur.rlim_cur;
    }
    // Root may raise the hard limit too; anyone may raise the soft one up to the hard one.
    for new in [
        libc::rlimit {
            rlim_cur: want,
            rlim_max: cur.rlim_max.max(want),
        },
        libc::rlimit {
            rlim_cur: want.min(cur.rlim_max),
            rlim_max: cur.rlim_max,
        },
    ] {
        // SAFETY: setrlimit only reads the `rlimit` it is given, which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return new.rlim_cur;
        }
    }
    cur.rlim_cur
}
