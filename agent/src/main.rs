//! `commscan-agent`: parse flags, set up logging, load and validate the configuration, call
//! the library. Exit codes: 0 success, 1 runtime failure, 64 bad usage or configuration
//! (EX_USAGE; also "not enrolled", which no restart can fix — the systemd unit does not
//! restart on 64).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use commscan_agent::config::{self, AgentConfig, RawConfig};
use commscan_agent::delivery::Agent;
use commscan_agent::scanner::{HostInventory, ScanTarget, Scanner};
#[cfg(windows)]
use commscan_agent::service::windows as service;
use commscan_agent::state::{DataDir, StateError};
use commscan_agent::status::StatusReport;
use commscan_agent::{enroll, output};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_runtime::bootstrap::{LogFormat, Main, Threads, Usage};
use commscan_runtime::{out, outln};
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
    /// Log lines as text (colour on a terminal only) or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "COMMSCAN_LOG_FORMAT",
        default_value = "text",
        value_parser = LogFormat::parse
    )]
    log_format: LogFormat,
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
        /// Replace an identity already stored in the data directory (the device gets a new id).
        #[arg(long)]
        force: bool,
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
    /// The Windows service: install, configure, uninstall, purge, and what SCM runs.
    #[cfg(windows)]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[cfg(windows)]
#[derive(Subcommand)]
enum ServiceAction {
    /// Register the service (automatic start, restart on failure) and secure its directories.
    Install {
        /// Configuration file the service reads (default: the Windows default path).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Set restart on failure and secure the directories of a registered service (the MSI).
    Configure {
        /// Configuration file the service reads.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Stop the service and wait until it has stopped (its spool flushed).
    Stop,
    /// Stop the service (its spool is flushed) and delete it; data stays.
    Uninstall,
    /// Delete the identity, spool, log and configuration kept under %ProgramData%.
    Purge {
        /// Configuration file the service read.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// What the Service Control Manager starts; not for a console.
    #[command(hide = true)]
    Run {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
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

/// The inventory of this machine (or of `cfg.root`), with the embedded catalog.
fn host_inventory(cfg: &AgentConfig) -> anyhow::Result<Arc<HostInventory>> {
    let target = target(cfg.root.clone(), None, !cfg.processes)?;
    Ok(Arc::new(HostInventory::new(
        Arc::new(Scanner::new(&Catalog::embedded())),
        target,
    )))
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
                Output::Table => out!("{}", output::table(&report))?,
                Output::Json => outln!("{}", output::json(&report))?,
            }
        }
        Command::Enroll {
            collector,
            token,
            ca,
            data_dir,
            org,
            force,
        } => {
            if !force {
                enroll::ensure_not_enrolled(&DataDir::new(&data_dir))?;
            }
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
            outln!(
                "enrolled as device {} in organisation {}; identity stored in {}",
                id.device_id,
                id.organisation,
                data_dir.display()
            )?;
        }
        Command::Run {
            config,
            data_dir,
            interval,
            root,
            no_processes,
            once,
        } => {
            commscan_runtime::stdout::serving();
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
            let inventory = host_inventory(&cfg)?;
            let agent = Agent::open(cfg, inventory).map_err(|e| match e {
                commscan_agent::delivery::AgentError::State(
                    e @ (StateError::NotEnrolled(_) | StateError::Corrupt { .. }),
                ) => anyhow::Error::new(Usage(e.to_string())),
                other => other.into(),
            })?;
            let shutdown = commscan_runtime::signals::on_signals();
            if once {
                let seq = agent.report_once(&shutdown).await?;
                outln!("acknowledged up to report {seq}")?;
            } else {
                agent.run(shutdown).await;
            }
        }
        Command::Validate { config } => {
            let cfg = load_config(config)?;
            outln!(
                "configuration ok: data_dir {}, full scan every {:?}, spool cap {} bytes",
                cfg.data_dir.display(),
                cfg.triggers.full_scan_interval,
                cfg.spool_cap
            )?;
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
                Output::Table => out!("{}", report.render(now))?,
                Output::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("status serialises")
                )?,
            }
        }
        #[cfg(windows)]
        Command::Service { action } => service_command(action)?,
    }
    Ok(())
}

/// The directories of the service reading `config` (or the default configuration).
#[cfg(windows)]
fn service_dirs(config: Option<&std::path::Path>) -> anyhow::Result<service::Dirs> {
    let path = config.map_or_else(|| PathBuf::from(config::DEFAULT_PATH), ToOwned::to_owned);
    Ok(service::Dirs {
        data: load_config(Some(path.clone()).filter(|p| p.exists()))?.data_dir,
        config: path,
    })
}

#[cfg(windows)]
fn service_command(action: ServiceAction) -> anyhow::Result<()> {
    let print_access = |access: Vec<(PathBuf, String)>| -> anyhow::Result<()> {
        for (dir, sddl) in access {
            outln!("{}: access {sddl}", dir.display())?;
        }
        Ok(())
    };
    match action {
        ServiceAction::Install { config } => {
            let exe = std::env::current_exe().context("locating this executable")?;
            let dirs = service_dirs(config.as_deref())?;
            let access = service::install(&exe, config.as_deref(), &dirs)?;
            outln!(
                "installed service {} ({} service run); start it with `sc start {}`",
                commscan_agent::service::SERVICE_NAME,
                exe.display(),
                commscan_agent::service::SERVICE_NAME
            )?;
            print_access(access)?;
        }
        ServiceAction::Configure { config } => {
            print_access(service::configure(&service_dirs(config.as_deref())?)?)?;
        }
        ServiceAction::Stop => {
            let was_running = service::stop()?;
            outln!(
                "service {} {}",
                commscan_agent::service::SERVICE_NAME,
                if was_running {
                    "stopped"
                } else {
                    "was not running"
                }
            )?;
        }
        ServiceAction::Uninstall => {
            service::uninstall()?;
            outln!(
                "service {} stopped and deleted; data kept",
                commscan_agent::service::SERVICE_NAME
            )?;
        }
        ServiceAction::Purge { config } => {
            for path in service::purge(&service_dirs(config.as_deref())?)? {
                outln!("removed {}", path.display())?;
            }
        }
        ServiceAction::Run { .. } => unreachable!("dispatched in main before the runtime starts"),
    }
    Ok(())
}

/// `service run`: the service's body on the thread SCM's dispatcher gives it. Logs go to
/// `agent.log` beside the configuration (a service has no stderr).
#[cfg(windows)]
fn run_service(config: Option<PathBuf>) -> ExitCode {
    use commscan_runtime::bootstrap;
    commscan_runtime::stdout::serving();
    let body: service::Body = Box::new(move |stop| {
        let dirs = match service_dirs(config.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                // No log yet: the configuration names where it would be. SCM records the exit.
                eprintln!("commscan-agent: {e:#}");
                return bootstrap::exit_status(&e);
            }
        };
        match service::open_log(&dirs.log(), 8 << 20) {
            Ok(file) => bootstrap::init_logging_to_file(LOG, file),
            Err(_) => bootstrap::init_logging(LOG),
        }
        bootstrap::install_crypto_provider();
        let rt = match bootstrap::resident_runtime(BLOCKING_THREADS, BLOCKING_KEEP_ALIVE) {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the async runtime");
                return 1;
            }
        };
        match rt.block_on(serve_as_service(config, stop)) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "the service failed");
                bootstrap::exit_status(&e)
            }
        }
    });
    match service::dispatch(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => commscan_runtime::bootstrap::report("commscan-agent", &e.into()),
    }
}

/// The agent as a service: the configuration validated, then (once enrolled) the same loops
/// as `run` until SCM stops it.
#[cfg(windows)]
async fn serve_as_service(
    config: Option<PathBuf>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let inventory = host_inventory(&cfg)?;
    tracing::info!(data_dir = %cfg.data_dir.display(), "service starting");
    let agent = commscan_agent::service::open_when_enrolled(
        &cfg,
        inventory,
        &stop,
        commscan_agent::service::ENROLMENT_POLL,
    )
    .await
    .map_err(|e| match e {
        commscan_agent::delivery::AgentError::State(e @ StateError::Corrupt { .. }) => {
            anyhow::Error::new(Usage(e.to_string()))
        }
        other => other.into(),
    })?;
    if let Some(agent) = agent {
        tracing::info!("enrolled: scanning and delivering");
        agent.run(stop).await;
    }
    Ok(())
}

/// The log filter when `COMMSCAN_LOG` is not set.
const LOG: &str = "warn,commscan_agent=info";

/// Blocking threads at once (a scan, a catalog check, name resolution): the agent's async
/// work runs on the main thread alone (ARCHITECTURE.md, "The agent at rest").
const BLOCKING_THREADS: usize = 2;
/// An idle blocking thread ends this long after its last task, so an agent at rest keeps none.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    // `completions SHELL`, `man DIR`: what the packages install (runtime/src/docs.rs).
    if let Some(code) = commscan_runtime::docs::generate_if_asked::<Cli>() {
        return code;
    }
    let cli = Cli::parse();
    #[cfg(windows)]
    if let Command::Service {
        action: ServiceAction::Run { config },
    } = cli.command
    {
        return run_service(config);
    }
    commscan_agent::memory::limit_arenas();
    Main {
        name: "commscan-agent",
        default_log: LOG,
        threads: Threads::Resident {
            max_blocking: BLOCKING_THREADS,
            keep_alive: BLOCKING_KEEP_ALIVE,
        },
        log_format: cli.log_format,
    }
    .run(async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}
