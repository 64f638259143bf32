//! Printing figures: each scenario's as it ends, and the medians over runs as Markdown rows.

use crate::bench::Scenario;
use crate::figures::{Capacity, FleetFigures, Hold, Load, RunFigures};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_line(name: &str, l: &Load) -> String {
    let db = l
        .db_cores
        .map(|d| format!(", database {d:.2} cores"))
        .unwrap_or_default();
    format!(
        "{name}: {:.0} reports/s, ack p50 {:.2} ms, p99 {:.2} ms, server {:.2} cores{db}, {:.0} µs CPU per report (throttled {}, skipped {}, failed sessions {})",
        l.per_second,
        l.p50_ms,
        l.p99_ms,
        l.server_cores,
        l.cpu_per_report_us(),
        l.throttled,
        l.skipped,
        l.failures
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
        Scenario::Echo | Scenario::Ingest | Scenario::IngestPg | Scenario::IngestPg2 => {
            let (name, c) = match s {
                Scenario::Echo => ("echo", &f.echo),
                Scenario::Ingest => ("ingest", &f.ingest),
                Scenario::IngestPg => ("ingest-pg", &f.ingest_pg),
                _ => ("ingest-pg2", &f.ingest_pg2),
            };
            if c.is_none() {
                println!("{name}: skipped");
            }
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
                println!(
                    "catalog push: signed catalog in force {:.0} ms, {:.0} ms to the last agent; {} catalogs received",
                    x.catalog_apply_ms, x.catalog_to_last_ms, x.catalogs_pushed
                );
                let s = &x.storm;
                println!(
                    "storm: restart {:.0} ms; {} back{} {:.1} s after the kill ({:.1} s after listening); {} snapshots asked; peak RSS {:.0} MiB; {:.1} CPU s; {} failed sessions ({})",
                    s.restart_ms,
                    s.back,
                    if s.all_back { " (all)" } else { " (NOT all)" },
                    s.back_after_kill_s,
                    s.back_after_ready_s,
                    s.snapshots_asked,
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
        ("ingest-pg", |r: &RunFigures| r.ingest_pg.clone()),
        ("ingest-pg2", |r: &RunFigures| r.ingest_pg2.clone()),
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
            row(
                &format!("{name} {pct}: database CPU"),
                m(&|r| l(r).and_then(|x| x.db_cores)),
                "cores",
            );
            row(
                &format!("{name} {pct}: CPU per report (server + database)"),
                m(&|r| l(r).map(|x| x.cpu_per_report_us())),
                "µs",
            );
        }
    }
    // Ratios within a run, then the median.
    let full = |c: &Option<Capacity>| c.as_ref().map(|c| c.full.per_second);
    let ratio = |a: fn(&RunFigures) -> &Option<Capacity>,
                 b: fn(&RunFigures) -> &Option<Capacity>| {
        m(&|r| Some(full(a(r))? / full(b(r))?)) * 100.0
    };
    row(
        "ingest / echo at 100%",
        ratio(|r| &r.ingest, |r| &r.echo),
        "%",
    );
    row(
        "ingest-pg / echo at 100%",
        ratio(|r| &r.ingest_pg, |r| &r.echo),
        "%",
    );
    row(
        "ingest-pg / ingest (sled) at 100%",
        ratio(|r| &r.ingest_pg, |r| &r.ingest),
        "%",
    );
    row(
        "ingest-pg2 / ingest (sled) at 100%",
        ratio(|r| &r.ingest_pg2, |r| &r.ingest),
        "%",
    );
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
        "catalog: in force to last agent",
        f(&|x| x.catalog_to_last_ms),
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
