//! Figures of a run, and the arithmetic on them (printing is in `print.rs`).

use commscan_loadgen::sled_baseline::SledFigures;
use serde::Serialize;

/// A load phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Load {
    /// Reports acknowledged per second.
    pub per_second: f64,
    /// Ack latency, median, ms.
    pub p50_ms: f64,
    /// Ack latency, 99th percentile, ms.
    pub p99_ms: f64,
    /// The server's CPU use, in cores (every collector process's, summed).
    pub server_cores: f64,
    /// The database server's CPU use (postmaster and backends), in cores; PostgreSQL only.
    pub db_cores: Option<f64>,
    /// Reports throttled.
    pub throttled: u64,
    /// Open-loop ticks skipped (previous report unacknowledged).
    pub skipped: u64,
    /// Failed sessions.
    pub failures: u64,
}

/// Capacity of a server at a number of concurrent agents.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Capacity {
    /// Agents.
    pub agents: usize,
    /// Server processes the agents were split between.
    pub servers: usize,
    /// Closed loop: 100% of capacity.
    pub full: Load,
    /// Open loop at half the closed-loop rate.
    pub half: Load,
}

/// A server holding idle streams.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hold {
    /// Agents holding a stream.
    pub connected: usize,
    /// Server RSS before any agent, KiB.
    pub idle_rss_kib: u64,
    /// Server RSS holding them, KiB.
    pub held_rss_kib: u64,
    /// RSS added per connected agent while they connected (slope), KiB.
    pub marginal_kib: f64,
    /// Server CPU while holding them, cores.
    pub hold_cores: f64,
}

impl Load {
    /// CPU per acknowledged report, servers and database together, µs.
    pub fn cpu_per_report_us(&self) -> f64 {
        (self.server_cores + self.db_cores.unwrap_or(0.0)) / self.per_second * 1e6
    }
}

impl Hold {
    /// RSS per held stream, KiB.
    pub fn per_agent_kib(&self) -> f64 {
        self.held_rss_kib.saturating_sub(self.idle_rss_kib) as f64 / self.connected.max(1) as f64
    }
}

/// The reconnect storm after a collector restart.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    /// The new collector's time from process start to listening (store open).
    pub restart_ms: f64,
    /// Whether every agent was back and in sync before the deadline.
    pub all_back: bool,
    /// Agents back.
    pub back: i64,
    /// From the kill to the last agent back in sync (its welcome asked no snapshot, or its
    /// snapshot was acknowledged), seconds.
    pub back_after_kill_s: f64,
    /// From the new collector listening to the same, seconds.
    pub back_after_ready_s: f64,
    /// Welcomes that asked for a snapshot during the storm (the stored state did not match
    /// the agent's digest).
    pub snapshots_asked: u64,
    /// The new collector's peak RSS, KiB.
    pub peak_rss_kib: u64,
    /// Its CPU time during the storm, seconds.
    pub cpu_seconds: f64,
    /// Failed sessions (refused, timed out) during the storm.
    pub failures: u64,
    /// The last failure.
    pub last_failure: String,
}

/// The fleet scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetFigures {
    /// Agents started.
    pub agents: usize,
    /// Agents holding a stream after the ramp.
    pub connected: usize,
    /// Devices the collector counted as connected.
    pub collector_counted: usize,
    /// Time for all to connect (ramp included), seconds.
    pub connect_secs: f64,
    /// Collector start to listening, ms.
    pub startup_ms: f64,
    /// Collector RSS before any agent, KiB.
    pub idle_rss_kib: u64,
    /// Collector RSS holding every agent, KiB.
    pub held_rss_kib: u64,
    /// RSS added per connected agent while they connected (slope), KiB.
    pub marginal_kib: f64,
    /// Collector threads then.
    pub held_threads: u64,
    /// Collector CPU while holding idle streams, cores.
    pub hold_cores: f64,
    /// Reload (load rules, re-judge every device, announce), ms.
    pub rejudge_ms: f64,
    /// Devices re-judged.
    pub rejudged_devices: usize,
    /// From the end of the reload to the last agent's announcement, ms.
    pub push_ms: f64,
    /// From the start of the reload to the last agent's announcement, ms.
    pub reload_to_last_ms: f64,
    /// Announcements received.
    pub pushed: u64,
    /// Putting a signed catalog in force (load, re-judge every device, announce), ms.
    pub catalog_apply_ms: f64,
    /// From putting it in force to the last agent holding the envelope, ms.
    pub catalog_to_last_ms: f64,
    /// Signed catalogs received by agents.
    pub catalogs_pushed: u64,
    /// The storm.
    pub storm: Storm,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFigures {
    /// Raw sled.
    pub sled: Option<SledFigures>,
    /// The echo's capacity.
    pub echo: Option<Capacity>,
    /// The collector's capacity (sled).
    pub ingest: Option<Capacity>,
    /// One collector's capacity on PostgreSQL.
    pub ingest_pg: Option<Capacity>,
    /// Two collectors' capacity on one PostgreSQL database, the agents split between them.
    pub ingest_pg2: Option<Capacity>,
    /// The echo holding the fleet's connections.
    pub echo_hold: Option<Hold>,
    /// The fleet.
    pub fleet: Option<FleetFigures>,
}

/// The size of a stored device record with three findings (the sled baseline writes values
/// of this size).
pub fn record_bytes() -> usize {
    use commscan_core::scan::{Evidence, Finding};
    let mut r = commscan_collector::store::DeviceRecord::enrolled(
        "00000000-0000-4000-8000-000000000001".into(),
        "org-01".into(),
        "sim-000001".into(),
        Some(commscan_core::platform::Platform::Linux),
        "Debian GNU/Linux 12".into(),
        commscan_core::VERSION.into(),
        time::OffsetDateTime::now_utc(),
    );
    r.findings = ["zoom", "slack", "discord"]
        .iter()
        .map(|p| Finding {
            product: (*p).into(),
            installed: true,
            running: false,
            version: Some("1.0.0".into()),
            evidence: vec![Evidence {
                source: "dpkg".into(),
                detail: format!("package {p} 1.0.0"),
                signature: "dpkg".into(),
            }],
        })
        .collect();
    serde_json::to_vec(&r).map_or(1500, |v| v.len())
}

/// Least-squares slope of `(x, y)` points with `x >= from`: RSS added per agent, which
/// leaves out fixed costs (threads started, caches warmed) that an average would spread.
pub fn slope(points: &[(f64, f64)], from: f64) -> f64 {
    let p: Vec<_> = points.iter().filter(|(x, _)| *x >= from).collect();
    let n = p.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (
        p.iter().map(|(x, _)| x).sum::<f64>() / n,
        p.iter().map(|(_, y)| y).sum::<f64>() / n,
    );
    let sxx: f64 = p.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = p.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx == 0.0 { f64::NAN } else { sxy / sxx }
}

/// Describes this machine (CPU, memory, kernel, open files).
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    format!(
        "{cpus} CPUs ({model}), {mem:.1} GiB RAM, Linux {}, open files soft {:?} hard {:?}",
        kernel.trim(),
        nofile.current,
        nofile.maximum
    )
}
