//! A process's memory and CPU time, read from `/proc/PID/status` and `/proc/PID/stat`, and
//! the CPU time of a process with its children (a PostgreSQL server: the postmaster and its
//! backends).

use serde::{Deserialize, Serialize};

/// One reading.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcSample {
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_kib: u64,
    /// User plus system CPU time so far, all threads, seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// `/proc/PID/stat` after the command name (which is in parentheses and may hold spaces):
/// field 3 of the whole line (the state) is the first.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    // The state is a letter; keep its place so indexes match the man page's minus 3.
    Some(
        after
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds of `pid` and its direct children: each live child's own user and system time,
/// and `pid`'s own plus what its children that exited used (`cutime`, `cstime`, counted once
/// the parent reaped them). A child that exits between two readings moves from one term to
/// the other, so differences between readings stay right. `None` if `pid` is gone.
pub fn cpu_with_children(pid: u32) -> Option<f64> {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    // After the name: utime 11, stime 12, cutime 13, cstime 14; ppid 1.
    let own = stat_fields(pid)?;
    let mut ticks: u64 = own.get(11..15)?.iter().sum();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(child)
            && f.get(1) == Some(&u64::from(pid))
        {
            ticks += f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
        }
    }
    Some(ticks as f64 / hz)
}

/// Reads process `pid`; `None` if it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(ProcSample {
        rss_kib: status_field(&status, "VmRSS:")?,
        peak_kib: status_field(&status, "VmHWM:")?,
        cpu_seconds: ticks as f64 / hz,
        threads: status_field(&status, "Threads:").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_and_has_used_cpu() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.peak_kib >= s.rss_kib);
        assert!(s.cpu_seconds >= 0.0 && s.threads >= 1);
    }

    #[test]
    fn a_process_with_children_is_read_and_a_gone_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(super::cpu_with_children(std::process::id()).is_some());
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(super::cpu_with_children(pid), None);
    }
}
