//! `commscan-loadgen`: the fleet simulator and the collector's scale benchmark.
//!
//! `commscan-loadgen bench` prepares (or reuses) a cached fleet of enrolled simulated devices,
//! then runs each scenario in fresh processes (a server, and agents spread over several worker
//! processes, because one process may hold at most 20,000 open files here) and prints figures
//! and medians. Every phase is bounded in time; children stop when the coordinator's pipe
//! closes. See BENCHMARKS.md ("Collector at scale") and `commscan_loadgen`.
//!
//! Exit codes: 0 success, 1 a run failed, 64 bad usage.

mod bench;
mod child;
mod figures;
mod print;
mod roles;

use clap::{Parser, Subcommand};
use commscan_runtime::bootstrap::{Main, Threads};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "commscan-loadgen",
    about = "Fleet simulator and scale benchmark of the collector"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

fn default_cache() -> PathBuf {
    std::env::temp_dir().join("commscan-loadgen")
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark: baselines, capacity (sled, PostgreSQL with one and two collectors),
    /// concurrent streams, policy push, reconnect storm.
    Bench {
        /// Fleet cache (enrolled devices and their certificates, reused between runs).
        #[arg(long, default_value_os_t = default_cache())]
        cache: PathBuf,
        /// Agents in the fleet scenario.
        #[arg(long, default_value_t = 16_000)]
        agents: usize,
        /// Organisations the devices belong to.
        #[arg(long, default_value_t = 50)]
        organisations: usize,
        /// Agent processes (each holds at most ~19,000 connections).
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Loopback source addresses, 127.0.0.2 onwards.
        #[arg(long, default_value_t = 4)]
        sources: usize,
        /// New connections per second while the fleet connects.
        #[arg(long, default_value_t = 1000.0)]
        ramp: f64,
        /// Concurrent agents in the capacity scenarios.
        #[arg(long, default_value_t = 1000)]
        capacity_agents: usize,
        /// Length of each load phase, seconds.
        #[arg(long, default_value_t = 10.0)]
        load_secs: f64,
        /// Idle hold before the policy push, seconds.
        #[arg(long, default_value_t = 20.0)]
        hold_secs: f64,
        /// Runs (figures are medians over runs).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Scenarios, in order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "sled,echo,ingest,ingest-pg,ingest-pg2,echo-hold,fleet"
        )]
        only: Vec<bench::Scenario>,
        /// Also write every run's figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Build the fleet cache only.
    Prepare {
        /// Fleet cache.
        #[arg(long, default_value_os_t = default_cache())]
        cache: PathBuf,
        /// Devices.
        #[arg(long, default_value_t = 16_000)]
        agents: usize,
        /// Organisations.
        #[arg(long, default_value_t = 50)]
        organisations: usize,
    },
    /// (child) Serve a data directory.
    #[command(hide = true)]
    Serve {
        #[arg(long, value_enum)]
        kind: roles::ServerKind,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        unlimited_reports: bool,
        /// A PostgreSQL store instead of the data directory's sled store.
        #[arg(long)]
        store: Option<String>,
        #[arg(long, requires = "store")]
        store_password_file: Option<PathBuf>,
    },
    /// (child) Run a share of the fleet's agents.
    #[command(hide = true)]
    Agents {
        #[arg(long)]
        cache: PathBuf,
        #[arg(long)]
        from: usize,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_delimiter = ',')]
        sources: Vec<IpAddr>,
        #[arg(long)]
        ramp: f64,
    },
}

async fn run(cli: Cli, started: Instant) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Prepare {
            cache,
            agents,
            organisations,
        } => {
            let t = Instant::now();
            let f = commscan_loadgen::fleet::Fleet::prepare(&cache, agents, organisations)?;
            println!(
                "fleet of {} devices ready in {} ({:.1} s)",
                f.devices.len(),
                cache.display(),
                t.elapsed().as_secs_f64()
            );
        }
        Cmd::Bench {
            cache,
            agents,
            organisations,
            workers,
            sources,
            ramp,
            capacity_agents,
            load_secs,
            hold_secs,
            runs,
            only,
            json,
        } => {
            let o = bench::Options {
                cache,
                agents,
                organisations,
                workers,
                sources,
                ramp,
                capacity_agents,
                load_secs,
                hold_secs,
                scenarios: only,
            };
            println!("machine: {}", figures::machine());
            let t = Instant::now();
            let fleet = commscan_loadgen::fleet::Fleet::prepare(
                &o.cache,
                o.agents.max(o.capacity_agents),
                o.organisations,
            )?;
            println!(
                "fleet: {} devices in {} ({:.1} s to prepare)",
                fleet.devices.len(),
                o.cache.display(),
                t.elapsed().as_secs_f64()
            );
            let run_dir = o.cache.join("run");
            let mut all = Vec::new();
            for r in 1..=runs.max(1) {
                println!("\n# run {r} of {runs} (load average {})", load_average());
                all.push(bench::run_once(&o, &fleet, &run_dir).await?);
                println!("# end of run {r} (load average {})", load_average());
            }
            let _ = std::fs::remove_dir_all(&run_dir);
            print::print_medians(&all);
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&all)?)?;
            }
        }
        Cmd::Serve {
            kind,
            data,
            listen,
            unlimited_reports,
            store,
            store_password_file,
        } => {
            let postgres = match (store, store_password_file) {
                (Some(url), Some(file)) => Some(commscan_collector::store::pg_store::PgConfig {
                    url,
                    password: Some(std::fs::read_to_string(&file)?.trim_end().to_owned()),
                    max_connections: commscan_loadgen::postgres::COLLECTOR_CONNECTIONS,
                }),
                (Some(url), None) => Some(commscan_collector::store::pg_store::PgConfig {
                    url,
                    password: None,
                    max_connections: commscan_loadgen::postgres::COLLECTOR_CONNECTIONS,
                }),
                _ => None,
            };
            roles::serve(kind, &data, listen, unlimited_reports, postgres, started).await?;
        }
        Cmd::Agents {
            cache,
            from,
            count,
            target,
            sources,
            ramp,
        } => {
            roles::agents(&cache, from, count, target, sources, ramp).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    Main {
        name: "commscan-loadgen",
        default_log: "warn",
        threads: Threads::Workers(None),
        log_format: commscan_runtime::bootstrap::LogFormat::from_env(),
    }
    .run(async move {
        run(cli, started).await?;
        // Children hold thousands of sockets and blocking threads: exit without waiting for them.
        std::process::exit(0)
    })
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), as printed beside each run: the
/// machine's other work shows in them, and the figures are read with it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
