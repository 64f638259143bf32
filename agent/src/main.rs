//! `commscan-agent`: parse flags, set up logging, call the library. Exit codes: 0 success,
//! 1 runtime failure, 64 bad usage or configuration (EX_USAGE).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_agent::state::DataDir;
use commscan_agent::transport::{Reporter, SessionEnd, backoff};
use commscan_agent::{enroll, output};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
            default_value = "/var/lib/commscan-agent"
        )]
        data_dir: PathBuf,
    },
    /// Report to the collector until stopped: a snapshot at start and after every scan.
    Run {
        /// Data directory.
        #[arg(
            long,
            env = "COMMSCAN_AGENT_DATA_DIR",
            default_value = "/var/lib/commscan-agent"
        )]
        data_dir: PathBuf,
        /// Time between scans, e.g. 1h, 15m.
        #[arg(long, default_value = "1h", value_parser = parse_interval)]
        interval: Duration,
        /// Scan this tree instead of this machine (testing).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Do not read the process table.
        #[arg(long)]
        no_processes: bool,
        /// Send one report, wait for its acknowledgement, exit.
        #[arg(long)]
        once: bool,
    },
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
            data_dir,
            interval,
            root,
            no_processes,
            once,
        } => {
            let data = DataDir::new(&data_dir);
            data.identity()?; // fail fast with "run enroll first"
            let target = target(root, None, no_processes)?;
            let reporter =
                Reporter::new(data, Arc::new(Scanner::new(&Catalog::embedded())), target);
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                signal.cancel();
            });
            #[cfg(unix)]
            {
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    if let Ok(mut term) =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        term.recv().await;
                        signal.cancel();
                    }
                });
            }
            let mut attempt = 0;
            loop {
                match reporter.session(interval, once, &shutdown).await {
                    Ok(SessionEnd::Acked(seq)) => {
                        println!("report {seq} acknowledged");
                        return Ok(());
                    }
                    Ok(SessionEnd::Shutdown) => return Ok(()),
                    Err(e) if once => return Err(e.into()),
                    Err(e) => {
                        let cap = if e.is_retriable() {
                            Duration::from_secs(300)
                        } else {
                            Duration::from_secs(3600)
                        };
                        let delay = backoff(attempt, Duration::from_secs(1), cap);
                        attempt += 1;
                        tracing::warn!(error = %e, retriable = e.is_retriable(), retry_in_ms = delay.as_millis() as u64, "session ended");
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COMMSCAN_LOG")
                .unwrap_or_else(|_| "warn,commscan_agent=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commscan-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
