//! `commscan-agent`: parse flags, set up logging, load and validate the configuration, call
//! the library. Exit codes: 0 success, 1 runtime failure, 64 bad usage or configuration
//! (EX_USAGE; also "not enrolled", which no restart can fix — the systemd unit does not
//! restart on 64).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use commscan_agent::config::{self, AgentConfig, RawConfig};
use commscan_agent::delivery::Agent;
use commscan_agent::scanner::{HostInventory, ScanTarget, Scanner};
use commscan_agent::state::{DataDir, StateError};
use commscan_agent::status::StatusReport;
use commscan_agent::{enroll, output};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_runtime::bootstrap::{Main, Threads, Usage};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "commscan-agent",
    version,
    about = "Inventories communication software on this device and reports it to a commscan collector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Scan and print findings; sends nothing.
    Scan {
        /// Scan this directory tree (a fixture or a mounted disk) instead of this machine.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Platform of the tree given with --root (default: this machine's).
        #[arg(long)]
        platform: Option<Platform>,
        /// Do not read the process table.
        #[arg(long)]
        no_processes: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Use this catalog file instead of the embedded one.
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Enrol this device with a collector.
    Enroll {
        /// Collector URL, e.g. https://collector.example:7443
        #[arg(long, env = "COMMSCAN_COLLECTOR")]
        collector: String,
        /// Enrolment token from `commscanctl tokens create` (or set COMMSCAN_ENROLL_TOKEN).
        #[arg(long, env = "COMMSCAN_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// The deployment CA certificate (PEM) to pin.
        #[arg(long, env = "COMMSCAN_CA")]
        ca: PathBuf,
        /// The organisation this device must join; enrolment is refused if the token is for another.
        #[arg(long)]
        org: Option<String>,
        /// Data directory.
        #[arg(
            long,
            env = "COMMSCAN_AGENT_DATA_DIR",
            default_value = config::DEFAULT_DATA_DIR
        )]
        data_dir: PathBuf,
    },
    /// Report to the collector until stopped (SIGTERM flushes and exits 0).
    Run {
        /// Configuration file.
        #[arg(long, env = "COMMSCAN_AGENT_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides the file).
        #[arg(long, env = "COMMSCAN_AGENT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Time between full scans, e.g. 1h, 15m (overrides the file).
        #[arg(long, value_parser = parse_interval)]
        interval: Option<Duration>,
        /// Scan this tree instead of this machine (testing; overrides the file).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Do not read the process table.
        #[arg(long)]
        no_processes: bool,
        /// Scan once, deliver until everything is acknowledged, exit.
        #[arg(long)]
        once: bool,
    },
    /// Check the configuration file; exit 64 naming every problem (systemd ExecStartPre).
    Validate {
        /// Configuration file.
        #[arg(long, env = "COMMSCAN_AGENT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show last scan, last acknowledgement, spool depth, certificate expiry, quarantine;
    /// reads the data directory only, never contacts the collector.
    Status {
        /// Configuration file (for its data_dir).
        #[arg(long, env = "COMMSCAN_AGENT_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides the file).
        #[arg(long, env = "COMMSCAN_AGENT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// Loads and validates the configuration file (`--config`, or the default path if present).
fn load_config(path: Option<PathBuf>) -> anyhow::Result<AgentConfig> {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    RawConfig::load(&path, explicit)
        .and_then(|raw| raw.validate())
        .map_err(|e| {
            Usage(format!(
                "{}: invalid configuration:\n{}",
                path.display(),
                e.0.iter()
                    .map(|p| format!("  {}: {}", p.key, p.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
            .into()
        })
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    commscan_core::duration::parse_duration(s)
}

fn target(
    root: Option<PathBuf>,
    platform: Option<Platform>,
    no_processes: bool,
) -> anyhow::Result<ScanTarget> {
    match root {
        Some(root) => {
            anyhow::ensure!(root.is_dir(), "--root {}: not a directory", root.display());
            let platform = platform
                .or_else(|| ScanTarget::detect_platform(&root))
                .with_context(|| {
                    format!(
                        "--root {}: cannot tell its platform; give --platform linux|macos|windows",
                        root.display()
                    )
                })?;
            Ok(ScanTarget::tree(&root, platform))
        }
        None => {
            let host =
                ScanTarget::host(no_processes).context("this operating system is not supported")?;
            if let Some(p) = platform {
                anyhow::ensure!(
                    p == host.platform,
                    "--platform {p} needs --root: this machine is {}",
                    host.platform
                );
            }
            Ok(host)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Scan {
            root,
            platform,
            no_processes,
            output,
            catalog,
        } => {
            let catalog = match catalog {
                Some(path) => Catalog::from_file(&path)?,
                None => Catalog::embedded(),
            };
            let report = Scanner::new(&catalog).scan(&target(root, platform, no_processes)?);
            match output {
                Output::Table => print!("{}", output::table(&report)),
                Output::Json => println!("{}", output::json(&report)),
            }
        }
        Command::Enroll {
            collector,
            token,
            ca,
            data_dir,
            org,
        } => {
            let ca_pem = std::fs::read_to_string(&ca)
                .with_context(|| format!("--ca {}: cannot read", ca.display()))?;
            let platform = Platform::host().context("this operating system is not supported")?;
            let id = enroll::enroll(
                &collector,
                &token,
                &ca_pem,
                platform,
                org.as_deref(),
                &DataDir::new(&data_dir),
            )
            .await?;
            println!(
                "enrolled as device {} in organisation {}; identity stored in {}",
                id.device_id,
                id.organisation,
                data_dir.display()
            );
        }
        Command::Run {
            config,
            data_dir,
            interval,
            root,
            no_processes,
            once,
        } => {
            let mut cfg = load_config(config)?;
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if let Some(i) = interval {
                cfg.triggers.full_scan_interval = i;
            }
            if root.is_some() {
                cfg.root = root;
            }
            if no_processes {
                cfg.processes = false;
            }
            let target = target(cfg.root.clone(), None, !cfg.processes)?;
            let inventory = Arc::new(HostInventory::new(
                Arc::new(Scanner::new(&Catalog::embedded())),
                target,
            ));
            let agent = Agent::open(cfg, inventory).map_err(|e| match e {
                commscan_agent::delivery::AgentError::State(
                    e @ (StateError::NotEnrolled(_) | StateError::Corrupt { .. }),
                ) => anyhow::Error::new(Usage(e.to_string())),
                other => other.into(),
            })?;
            let shutdown = commscan_runtime::signals::on_signals();
            if once {
                let seq = agent.report_once(&shutdown).await?;
                println!("acknowledged up to report {seq}");
            } else {
                agent.run(shutdown).await;
            }
        }
        Command::Validate { config } => {
            let cfg = load_config(config)?;
            println!(
                "configuration ok: data_dir {}, full scan every {:?}, spool cap {} bytes",
                cfg.data_dir.display(),
                cfg.triggers.full_scan_interval,
                cfg.spool_cap
            );
        }
        Command::Status {
            config,
            data_dir,
            output,
        } => {
            let dir = match data_dir {
                Some(d) => d,
                None => load_config(config)?.data_dir,
            };
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let report = StatusReport::gather(&DataDir::new(&dir), now);
            match output {
                Output::Table => print!("{}", report.render(now)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("status serialises")
                ),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    Main {
        name: "commscan-agent",
        default_log: "warn,commscan_agent=info",
        threads: Threads::Workers(Some(2)),
    }
    .run(async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}
