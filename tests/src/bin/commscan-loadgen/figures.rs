//! Figures of a run, medians over runs, and how they are printed.

use crate::bench::Scenario;
use commscan_tests::loadgen::sled_baseline::SledFigures;
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
    /// The server's CPU use, in cores.
    pub server_cores: f64,
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

impl Hold {
    /// RSS per held stream, KiB.
    pub fn per_agent_kib(&self) -> f64 {
        self.held_rss_kib.saturating_sub(self.idle_rss_kib) as f64 / self.connected.max(1) as f64
    }
}

/// The reconnect storm after a collector restart.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    /// The new collector's time from process start to listening (store open, re-judging).
    pub restart_ms: f64,
    /// Whether every agent was back before the deadline.
    pub all_back: bool,
    /// Agents back.
    pub back: i64,
    /// From the kill to the last agent's welcome, seconds.
    pub back_after_kill_s: f64,
    /// From the new collector listening to the last agent's welcome, seconds.
    pub back_after_ready_s: f64,
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
    /// The collector's capacity.
    pub ingest: Option<Capacity>,
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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_line(name: &str, l: &Load) -> String {
    format!(
        "{name}: {:.0} reports/s, ack p50 {:.2} ms, p99 {:.2} ms, server {:.2} cores (throttled {}, skipped {}, failed sessions {})",
        l.per_second, l.p50_ms, l.p99_ms, l.server_cores, l.throttled, l.skipped, l.failures
    )
}

/// Prints what a scenario just measured.
pub fn print_partial(s: &Scenario, f: &RunFigures) {
    match s {
        Scenario::Sled => {
            if let Some(b) = &f.sled {
                println!(
                    "sled ({} B values): 1 writer {:.0}/s; {} writers, own flush {:.0}/s; grouped flushes {:.0}/s",
                    b.value_bytes,
                    b.serial_per_second,
                    b.threads,
                    b.concurrent_per_second,
                    b.grouped_per_second
                );
            }
        }
        Scenario::Echo | Scenario::Ingest => {
            let (name, c) = if *s == Scenario::Echo {
                ("echo", &f.echo)
            } else {
                ("ingest", &f.ingest)
            };
            if let Some(c) = c {
                println!(
                    "{}",
                    load_line(&format!("{name} {} agents, 100%", c.agents), &c.full)
                );
                println!(
                    "{}",
                    load_line(&format!("{name} {} agents,  50%", c.agents), &c.half)
                );
            }
        }
        Scenario::EchoHold => {
            if let Some(h) = &f.echo_hold {
                println!(
                    "echo holding {} agents: RSS {:.0} MiB idle, {:.0} MiB holding ({:.1} KiB per agent, {:.1} KiB marginal), {:.3} cores",
                    h.connected,
                    mib(h.idle_rss_kib),
                    mib(h.held_rss_kib),
                    h.per_agent_kib(),
                    h.marginal_kib,
                    h.hold_cores
                );
            }
        }
        Scenario::Fleet => {
            if let Some(x) = &f.fleet {
                let per = (x.held_rss_kib.saturating_sub(x.idle_rss_kib)) as f64
                    / x.connected.max(1) as f64;
                println!(
                    "fleet: {}/{} agents held ({} counted by the collector), connected in {:.1} s; collector RSS {:.0} MiB idle, {:.0} MiB holding ({:.1} KiB per agent, {:.1} KiB marginal, {} threads), {:.3} cores holding idle",
                    x.connected,
                    x.agents,
                    x.collector_counted,
                    x.connect_secs,
                    mib(x.idle_rss_kib),
                    mib(x.held_rss_kib),
                    per,
                    x.marginal_kib,
                    x.held_threads,
                    x.hold_cores
                );
                println!(
                    "policy push: reload {:.0} ms ({} devices re-judged), then {:.0} ms to the last agent; {:.0} ms in all; {} announcements",
                    x.rejudge_ms, x.rejudged_devices, x.push_ms, x.reload_to_last_ms, x.pushed
                );
                let s = &x.storm;
                println!(
                    "storm: restart {:.0} ms; {} back{} {:.1} s after the kill ({:.1} s after listening); peak RSS {:.0} MiB; {:.1} CPU s; {} failed sessions ({})",
                    s.restart_ms,
                    s.back,
                    if s.all_back { " (all)" } else { " (NOT all)" },
                    s.back_after_kill_s,
                    s.back_after_ready_s,
                    mib(s.peak_rss_kib),
                    s.cpu_seconds,
                    s.failures,
                    s.last_failure
                );
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints the medians over runs, as Markdown rows.
pub fn print_medians(runs: &[RunFigures]) {
    let m = |f: &dyn Fn(&RunFigures) -> Option<f64>| median(runs.iter().filter_map(f).collect());
    println!("\n## medians of {} runs\n", runs.len());
    println!("| figure | median |\n|---|---|");
    let row = |name: &str, v: f64, unit: &str| {
        if v.is_finite() {
            println!("| {name} | {v:.2} {unit} |");
        }
    };
    row(
        "sled, 1 writer, flush each",
        m(&|r| r.sled.map(|s| s.serial_per_second)),
        "writes/s",
    );
    row(
        "sled, 64 writers, own flush",
        m(&|r| r.sled.map(|s| s.concurrent_per_second)),
        "writes/s",
    );
    row(
        "sled, 64 writers, grouped flushes",
        m(&|r| r.sled.map(|s| s.grouped_per_second)),
        "writes/s",
    );
    for (name, get) in [
        (
            "echo",
            (|r: &RunFigures| r.echo.clone()) as fn(&RunFigures) -> Option<Capacity>,
        ),
        ("ingest", |r: &RunFigures| r.ingest.clone()),
    ] {
        for (pct, half) in [("100%", false), ("50%", true)] {
            let l = |r: &RunFigures| get(r).map(|c| if half { c.half } else { c.full });
            row(
                &format!("{name} {pct}: rate"),
                m(&|r| l(r).map(|x| x.per_second)),
                "reports/s",
            );
            row(
                &format!("{name} {pct}: ack p50"),
                m(&|r| l(r).map(|x| x.p50_ms)),
                "ms",
            );
            row(
                &format!("{name} {pct}: ack p99"),
                m(&|r| l(r).map(|x| x.p99_ms)),
                "ms",
            );
            row(
                &format!("{name} {pct}: server CPU"),
                m(&|r| l(r).map(|x| x.server_cores)),
                "cores",
            );
        }
    }
    let ratio = m(&|r| Some(r.ingest.as_ref()?.full.per_second / r.echo.as_ref()?.full.per_second));
    row("ingest / echo at 100%", ratio * 100.0, "%");
    row(
        "echo: RSS per held connection",
        m(&|r| r.echo_hold.as_ref().map(Hold::per_agent_kib)),
        "KiB",
    );
    row(
        "echo: RSS per held connection, marginal",
        m(&|r| r.echo_hold.as_ref().map(|h| h.marginal_kib)),
        "KiB",
    );
    row(
        "echo: CPU holding idle streams",
        m(&|r| r.echo_hold.as_ref().map(|h| h.hold_cores * 100.0)),
        "% of a core",
    );
    let f = |g: &dyn Fn(&FleetFigures) -> f64| m(&|r| r.fleet.as_ref().map(g));
    row("fleet: agents held", f(&|x| x.connected as f64), "");
    row(
        "fleet: collector RSS holding them",
        f(&|x| mib(x.held_rss_kib)),
        "MiB",
    );
    let per =
        f(&|x| (x.held_rss_kib.saturating_sub(x.idle_rss_kib)) as f64 / x.connected.max(1) as f64);
    row("fleet: RSS per agent (average)", per, "KiB");
    row(
        "fleet: RSS per agent (marginal)",
        f(&|x| x.marginal_kib),
        "KiB",
    );
    row(
        "fleet: projected RSS at 100k agents (held + marginal x the rest)",
        f(&|x| {
            mib(x.held_rss_kib)
                + x.marginal_kib * (100_000.0 - x.connected as f64).max(0.0) / 1024.0
        }),
        "MiB",
    );
    row(
        "fleet: CPU holding idle streams",
        f(&|x| x.hold_cores * 100.0),
        "% of a core",
    );
    row(
        "fleet: time to connect all (ramped)",
        f(&|x| x.connect_secs),
        "s",
    );
    row("push: reload (re-judge all)", f(&|x| x.rejudge_ms), "ms");
    row("push: reload end to last agent", f(&|x| x.push_ms), "ms");
    row(
        "push: reload start to last agent",
        f(&|x| x.reload_to_last_ms),
        "ms",
    );
    row(
        "storm: restart to listening",
        f(&|x| x.storm.restart_ms),
        "ms",
    );
    row(
        "storm: kill to all back",
        f(&|x| x.storm.back_after_kill_s),
        "s",
    );
    row(
        "storm: listening to all back",
        f(&|x| x.storm.back_after_ready_s),
        "s",
    );
    row("storm: peak RSS", f(&|x| mib(x.storm.peak_rss_kib)), "MiB");
    row("storm: collector CPU", f(&|x| x.storm.cpu_seconds), "s");
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
