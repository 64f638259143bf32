//! A process's memory and CPU time, read from `/proc/PID/status` and `/proc/PID/stat`.

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
}
