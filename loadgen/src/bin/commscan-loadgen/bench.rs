//! The coordinator: runs each scenario in fresh child processes, reads their events and
//! `/proc`, and returns the figures. Scenarios:
//!
//! - **sled**: raw sled writes with the collector's flush policy ([`sled_baseline`]).
//! - **echo** and **ingest**: capacity at `capacity_agents` concurrent agents, against the bare
//!   echo and against the collector (per-device report limit lifted): a closed-loop phase
//!   (every agent reports back to back: 100% of capacity) then an open-loop phase offering
//!   half the closed-loop rate (50%), each `load_secs` long.
//! - **ingest-pg** and **ingest-pg2**: the same against collectors on PostgreSQL: a throw-away
//!   cluster (fsync and synchronous commit on) holding a copy of the fleet
//!   ([`commscan_loadgen::postgres`]), served by one collector, or by two collector processes
//!   with the agents split between them (each worker process talks to one of them). The
//!   database's CPU (postmaster and backends) is read beside the collectors'. Skipped, with a
//!   message, where the PostgreSQL server binaries are missing.
//! - **fleet**: `agents` agents over `workers` processes connect (ramped), hold their streams
//!   idle for `hold_secs`, get a policy change pushed, then the collector is killed and
//!   restarted and the reconnect storm is timed.

use crate::child::{Child, Command, Event};
use anyhow::{Context, bail};
use commscan_loadgen::fleet::Fleet;
use commscan_loadgen::pool::Snapshot;
use commscan_loadgen::postgres::PgDeployment;
use commscan_loadgen::{sled_baseline, unix_nanos};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::figures::{Capacity, FleetFigures, Hold, Load, RunFigures, Storm};
use crate::roles::ServerKind;

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Raw sled writes.
    Sled,
    /// Capacity of the bare echo.
    Echo,
    /// Capacity of the collector.
    Ingest,
    /// Capacity of one collector on PostgreSQL.
    IngestPg,
    /// Capacity of two collectors on one PostgreSQL database.
    IngestPg2,
    /// The bare echo holding the fleet's connections (the stack's memory per connection).
    EchoHold,
    /// Concurrent streams, policy push, reconnect storm.
    Fleet,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The fleet cache.
    pub cache: PathBuf,
    /// Agents in the fleet scenario.
    pub agents: usize,
    /// Organisations they belong to.
    pub organisations: usize,
    /// Agent processes.
    pub workers: usize,
    /// Loopback source addresses (127.0.0.2 onwards).
    pub sources: usize,
    /// Connections per second while agents connect.
    pub ramp: f64,
    /// Agents in the capacity scenarios.
    pub capacity_agents: usize,
    /// Length of each load phase, seconds.
    pub load_secs: f64,
    /// Idle hold before the policy push, seconds.
    pub hold_secs: f64,
    /// Scenarios to run.
    pub scenarios: Vec<Scenario>,
}

async fn start_server(
    kind: ServerKind,
    data: &Path,
    listen: SocketAddr,
    unlimited_reports: bool,
) -> anyhow::Result<(Child, SocketAddr, f64)> {
    start_server_on(kind, data, listen, unlimited_reports, None).await
}

/// [`start_server`], with the collector's store in `pg` when given.
async fn start_server_on(
    kind: ServerKind,
    data: &Path,
    listen: SocketAddr,
    unlimited_reports: bool,
    pg: Option<&PgDeployment>,
) -> anyhow::Result<(Child, SocketAddr, f64)> {
    let mut args = vec![
        "serve".to_owned(),
        "--kind".into(),
        format!("{kind:?}").to_lowercase(),
        "--data".into(),
        data.display().to_string(),
        "--listen".into(),
        listen.to_string(),
    ];
    if unlimited_reports {
        args.push("--unlimited-reports".into());
    }
    if let Some(pg) = pg {
        args.push("--store".into());
        args.push(pg.url());
        args.push("--store-password-file".into());
        args.push(pg.password_file().display().to_string());
    }
    let mut child = Child::spawn("server", &args)?;
    // Re-judging the fleet before listening takes longer on PostgreSQL (a round trip or
    // three per device).
    match child.recv(Duration::from_secs(600)).await? {
        Event::Ready {
            addr: Some(addr),
            startup_ms,
        } => Ok((child, addr.parse()?, startup_ms.unwrap_or(0.0))),
        other => bail!("server: expected ready, got {other:?}"),
    }
}

/// Starts `o.workers` agent processes sharing `agents` agents; worker `w` talks to
/// `targets[w % targets.len()]`.
async fn start_workers(
    o: &Options,
    agents: usize,
    targets: &[SocketAddr],
) -> anyhow::Result<Vec<Child>> {
    let sources: Vec<String> = (0..o.sources.max(1))
        .map(|i| format!("127.0.0.{}", 2 + i))
        .collect();
    let workers = o.workers.clamp(targets.len().max(1), agents.max(1));
    let mut children = Vec::new();
    let mut from = 0;
    for w in 0..workers {
        let count = agents / workers + usize::from(w < agents % workers);
        let args = vec![
            "agents".to_owned(),
            "--cache".into(),
            o.cache.display().to_string(),
            "--from".into(),
            from.to_string(),
            "--count".into(),
            count.to_string(),
            "--target".into(),
            targets[w % targets.len()].to_string(),
            "--sources".into(),
            sources.join(","),
            "--ramp".into(),
            (o.ramp / workers as f64).to_string(),
        ];
        let mut child = Child::spawn(&format!("agents {w}"), &args)?;
        child.recv(Duration::from_secs(120)).await?;
        children.push(child);
        from += count;
    }
    Ok(children)
}

async fn stats(workers: &mut [Child]) -> anyhow::Result<Snapshot> {
    let mut total = Snapshot::default();
    for w in workers.iter_mut() {
        match w.ask(&Command::Stats, Duration::from_secs(30)).await? {
            Event::Stats(s) => total.merge(&s),
            other => bail!("expected stats, got {other:?}"),
        }
    }
    Ok(total)
}

async fn reset(workers: &mut [Child]) -> anyhow::Result<()> {
    for w in workers.iter_mut() {
        w.send(&Command::Reset).await?;
    }
    Ok(())
}

/// Polls until `done` holds for the merged counters, or `timeout`; returns the last reading
/// and whether `done` held.
async fn wait_for(
    workers: &mut [Child],
    timeout: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> anyhow::Result<(Snapshot, bool)> {
    wait_sampling(workers, timeout, done, |_| {}).await
}

/// [`wait_for`], calling `each` with every reading.
async fn wait_sampling(
    workers: &mut [Child],
    timeout: Duration,
    done: impl Fn(&Snapshot) -> bool,
    mut each: impl FnMut(&Snapshot),
) -> anyhow::Result<(Snapshot, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stats(workers).await?;
        each(&s);
        if done(&s) {
            return Ok((s, true));
        }
        if Instant::now() >= deadline {
            return Ok((s, false));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn load(
    workers: &mut [Child],
    interval_ms: Option<f64>,
    secs: f64,
) -> anyhow::Result<Snapshot> {
    for w in workers.iter_mut() {
        w.send(&Command::Load { interval_ms, secs }).await?;
    }
    let mut total = Snapshot::default();
    for w in workers.iter_mut() {
        match w.recv(Duration::from_secs_f64(secs + 60.0)).await? {
            Event::Stats(s) => total.merge(&s),
            other => bail!("expected stats, got {other:?}"),
        }
    }
    Ok(total)
}

async fn quit_all(workers: Vec<Child>) {
    for w in workers {
        w.quit(Duration::from_secs(10)).await;
    }
}

fn load_figures(s: &Snapshot, secs: f64, cpu: f64, db_cpu: Option<f64>) -> Load {
    let ms = |q| {
        s.latency
            .quantile(q)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Load {
        per_second: s.acks as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        server_cores: cpu / secs,
        db_cores: db_cpu.map(|c| c / secs),
        throttled: s.throttled,
        skipped: s.skipped,
        failures: s.failures,
    }
}

/// What serves the capacity scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// The bare echo.
    Echo,
    /// One collector on the data directory's sled store.
    Sled,
    /// `collectors` collector processes on one PostgreSQL database.
    Postgres {
        /// Collector processes; the agents are split between them.
        collectors: usize,
    },
}

/// CPU seconds so far of the servers and of the database (if any).
fn cpu_now(servers: &[Child], pg: Option<&PgDeployment>) -> (f64, Option<f64>) {
    (
        servers.iter().map(|s| s.sample().cpu_seconds).sum(),
        pg.map(PgDeployment::cpu_seconds),
    )
}

fn since(now: (f64, Option<f64>), before: (f64, Option<f64>)) -> (f64, Option<f64>) {
    (now.0 - before.0, now.1.zip(before.1).map(|(a, b)| a - b))
}

/// Capacity at `capacity_agents` concurrent agents; `None` when the deployment cannot be
/// made here (PostgreSQL binaries missing).
pub async fn capacity(
    o: &Options,
    fleet: &Fleet,
    run: &Path,
    deployment: Deployment,
) -> anyhow::Result<Option<Capacity>> {
    let layout = fleet.fresh_data_dir(run)?;
    let (kind, count) = match deployment {
        Deployment::Echo => (ServerKind::Echo, 1),
        Deployment::Sled => (ServerKind::Collector, 1),
        Deployment::Postgres { collectors } => (ServerKind::Collector, collectors.max(1)),
    };
    let pg = match deployment {
        Deployment::Postgres { .. } => {
            let l = layout.clone();
            let t = Instant::now();
            let started = tokio::task::spawn_blocking(move || {
                PgDeployment::start("commscan-loadgen ingest-pg", &l)
            })
            .await??;
            let Some(pg) = started else {
                return Ok(None);
            };
            println!(
                "postgres: cluster started and fleet copied in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            Some(pg)
        }
        _ => None,
    };
    let result = capacity_on(o, &layout.root, kind, count, pg.as_ref()).await;
    if let Some(pg) = pg {
        // Stopping the cluster blocks (bounded).
        tokio::task::spawn_blocking(move || drop(pg)).await?;
    }
    result.map(Some)
}

async fn capacity_on(
    o: &Options,
    data: &Path,
    kind: ServerKind,
    count: usize,
    pg: Option<&PgDeployment>,
) -> anyhow::Result<Capacity> {
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..count {
        let (server, addr, startup_ms) =
            start_server_on(kind, data, "127.0.0.1:0".parse()?, true, pg).await?;
        if pg.is_some() {
            println!(
                "postgres: collector listening {:.1} s after start",
                startup_ms / 1000.0
            );
        }
        servers.push(server);
        targets.push(addr);
    }
    let n = o.capacity_agents;
    let mut workers = start_workers(o, n, &targets).await?;
    let (s, ok) = wait_for(&mut workers, Duration::from_secs(300), |s| {
        s.connected as usize >= n && s.in_sync as usize >= n
    })
    .await?;
    if !ok {
        bail!(
            "capacity: only {} of {n} agents connected ({})",
            s.connected,
            s.last_failure
        );
    }
    let cpu = cpu_now(&servers, pg);
    let closed = load(&mut workers, None, o.load_secs).await?;
    let (c, d) = since(cpu_now(&servers, pg), cpu);
    let full = load_figures(&closed, o.load_secs, c, d);
    // Half the closed-loop rate, spread over every agent.
    let interval_ms = n as f64 / (full.per_second * 0.5) * 1000.0;
    let cpu = cpu_now(&servers, pg);
    let open = load(&mut workers, Some(interval_ms), o.load_secs).await?;
    let (c, d) = since(cpu_now(&servers, pg), cpu);
    let half = load_figures(&open, o.load_secs, c, d);
    quit_all(workers).await;
    for server in servers {
        server.quit(Duration::from_secs(10)).await;
    }
    Ok(Capacity {
        agents: n,
        servers: count,
        full,
        half,
    })
}

/// Raw sled writes in a scratch directory under `run`.
pub fn sled(o: &Options, run: &Path) -> anyhow::Result<sled_baseline::SledFigures> {
    let dir = run.join("sled-baseline");
    let _ = std::fs::remove_dir_all(&dir);
    let f = sled_baseline::measure(
        &dir,
        64,
        crate::figures::record_bytes(),
        o.agents as u64,
        Duration::from_secs_f64(o.load_secs / 2.0),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(f)
}

/// The bare echo holding `agents` idle streams.
pub async fn echo_hold(o: &Options, fleet: &Fleet, run: &Path) -> anyhow::Result<Hold> {
    let layout = fleet.fresh_data_dir(run)?;
    let (server, addr, _) = start_server(
        ServerKind::Echo,
        &layout.root,
        "127.0.0.1:0".parse()?,
        false,
    )
    .await?;
    let idle = server.sample();
    let n = o.agents;
    let mut workers = start_workers(o, n, &[addr]).await?;
    let budget = Duration::from_secs_f64(n as f64 / o.ramp.max(1.0) + 180.0);
    let mut points = Vec::new();
    wait_sampling(
        &mut workers,
        budget,
        |s| s.connected as usize >= n && s.in_sync as usize >= n,
        |s| points.push((s.connected as f64, server.sample().rss_kib as f64)),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = server.sample();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.hold_secs)).await;
    let after = server.sample();
    let hold_secs = t.elapsed().as_secs_f64();
    let connected = stats(&mut workers).await?.connected as usize;
    quit_all(workers).await;
    server.quit(Duration::from_secs(10)).await;
    Ok(Hold {
        connected,
        idle_rss_kib: idle.rss_kib,
        held_rss_kib: held.rss_kib,
        marginal_kib: crate::figures::slope(&points, n as f64 / 4.0),
        hold_cores: (after.cpu_seconds - held.cpu_seconds) / hold_secs,
    })
}

/// The fleet scenario: hold, push, storm.
pub async fn fleet_scenario(
    o: &Options,
    fleet: &Fleet,
    run: &Path,
) -> anyhow::Result<FleetFigures> {
    let layout = fleet.fresh_data_dir(run)?;
    let (server, addr, startup_ms) = start_server(
        ServerKind::Collector,
        &layout.root,
        "127.0.0.1:0".parse()?,
        false,
    )
    .await?;
    let idle = server.sample();
    let n = o.agents;
    let t = Instant::now();
    let mut workers = start_workers(o, n, &[addr]).await?;
    let ramp_budget = Duration::from_secs_f64(n as f64 / o.ramp.max(1.0) + 180.0);
    let mut points = Vec::new();
    let (s, ok) = wait_sampling(
        &mut workers,
        ramp_budget,
        |s| s.connected as usize >= n && s.in_sync as usize >= n,
        |s| points.push((s.connected as f64, server.sample().rss_kib as f64)),
    )
    .await?;
    if !ok {
        tracing::warn!(connected = s.connected, acked = s.acks, failure = %s.last_failure, "not every agent connected");
    }
    let connect_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = server.sample();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.hold_secs)).await;
    let after_hold = server.sample();
    let hold_secs = t.elapsed().as_secs_f64();
    let mut server = server;
    let collector_count = match server.ask(&Command::Stats, Duration::from_secs(30)).await? {
        Event::Connected { devices } => devices,
        other => bail!("expected connected, got {other:?}"),
    };
    let holding = stats(&mut workers).await?.connected as usize;

    // Policy push: from the reload call until the last agent has the announcement.
    reset(&mut workers).await?;
    let (started_ns, finished_ns, devices) = match server
        .ask(&Command::Reload, Duration::from_secs(300))
        .await?
    {
        Event::Reloaded {
            started_ns,
            finished_ns,
            devices,
            ..
        } => (started_ns, finished_ns, devices),
        other => bail!("expected reloaded, got {other:?}"),
    };
    let (pushed, _) = wait_for(&mut workers, Duration::from_secs(60), |s| {
        s.policy_changes as usize >= holding
    })
    .await?;
    let ms = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / 1e6;

    // Signed catalog: from putting it in force until the last agent has the envelope.
    reset(&mut workers).await?;
    let (catalog_started_ns, catalog_finished_ns) = match server
        .ask(&Command::PublishCatalog, Duration::from_secs(300))
        .await?
    {
        Event::Reloaded {
            started_ns,
            finished_ns,
            ..
        } => (started_ns, finished_ns),
        other => bail!("expected reloaded, got {other:?}"),
    };
    let (catalogs, _) = wait_for(&mut workers, Duration::from_secs(120), |s| {
        s.catalog_updates as usize >= holding
    })
    .await?;

    // Reconnect storm: kill the collector, start it again on the same port.
    reset(&mut workers).await?;
    let killed_ns = unix_nanos();
    server.kill().await;
    let (server, _, restart_ms) =
        start_server(ServerKind::Collector, &layout.root, addr, false).await?;
    let ready_ns = unix_nanos();
    let cpu = server.sample().cpu_seconds;
    let (back, all_back) = wait_for(&mut workers, Duration::from_secs(600), |s| {
        s.connected as usize >= holding && s.in_sync as usize >= holding
    })
    .await?;
    let stormed = server.sample();
    quit_all(workers).await;
    server.quit(Duration::from_secs(10)).await;

    Ok(FleetFigures {
        agents: n,
        connected: holding,
        collector_counted: collector_count,
        connect_secs,
        startup_ms,
        idle_rss_kib: idle.rss_kib,
        held_rss_kib: held.rss_kib,
        marginal_kib: crate::figures::slope(&points, n as f64 / 4.0),
        held_threads: held.threads,
        hold_cores: (after_hold.cpu_seconds - held.cpu_seconds) / hold_secs,
        rejudge_ms: ms(started_ns, finished_ns),
        rejudged_devices: devices,
        push_ms: ms(finished_ns, pushed.last_policy_ns),
        reload_to_last_ms: ms(started_ns, pushed.last_policy_ns),
        pushed: pushed.policy_changes,
        catalog_apply_ms: ms(catalog_started_ns, catalog_finished_ns),
        catalog_to_last_ms: ms(catalog_started_ns, catalogs.last_catalog_ns),
        catalogs_pushed: catalogs.catalog_updates,
        storm: Storm {
            restart_ms,
            all_back,
            back: back.connected,
            back_after_kill_s: ms(killed_ns, back.last_in_sync_ns) / 1000.0,
            back_after_ready_s: ms(ready_ns, back.last_in_sync_ns) / 1000.0,
            snapshots_asked: back.snapshots_asked,
            peak_rss_kib: stormed.peak_kib,
            cpu_seconds: stormed.cpu_seconds - cpu,
            failures: back.failures,
            last_failure: back.last_failure,
        },
    })
}

/// One run of every chosen scenario, in `run` (a scratch directory).
pub async fn run_once(o: &Options, fleet: &Fleet, run: &Path) -> anyhow::Result<RunFigures> {
    std::fs::create_dir_all(run).with_context(|| run.display().to_string())?;
    let mut f = RunFigures::default();
    for s in &o.scenarios {
        match s {
            Scenario::Sled => f.sled = Some(sled(o, run)?),
            Scenario::Echo => f.echo = capacity(o, fleet, run, Deployment::Echo).await?,
            Scenario::Ingest => f.ingest = capacity(o, fleet, run, Deployment::Sled).await?,
            Scenario::IngestPg => {
                f.ingest_pg =
                    capacity(o, fleet, run, Deployment::Postgres { collectors: 1 }).await?
            }
            Scenario::IngestPg2 => {
                f.ingest_pg2 =
                    capacity(o, fleet, run, Deployment::Postgres { collectors: 2 }).await?
            }
            Scenario::EchoHold => f.echo_hold = Some(echo_hold(o, fleet, run).await?),
            Scenario::Fleet => f.fleet = Some(fleet_scenario(o, fleet, run).await?),
        }
        crate::print::print_partial(s, &f);
    }
    Ok(f)
}
