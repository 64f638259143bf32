//! `commscan-collector`: parse flags, set up logging, call the library. Exit codes: 0 success,
//! 1 runtime failure, 64 bad usage or configuration.

use anyhow::Context;
use clap::{Parser, Subcommand};
use commscan_collector::compliance::RulesConfig;
use commscan_collector::dev::{self, DevOptions};
use commscan_collector::layout::{InitOptions, Layout};
use commscan_collector::server::{Limits, serve};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "commscan-collector",
    version,
    about = "Enrols devices, stores and judges their communication software, answers queries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a deployment: CA, server certificate, store, first tokens.
    Init {
        /// Data directory to create.
        #[arg(
            long,
            env = "COMMSCAN_DATA_DIR",
            default_value = "/var/lib/commscan-collector"
        )]
        data_dir: PathBuf,
        /// Trust domain written into device certificates.
        #[arg(long, default_value = "commscan.local")]
        trust_domain: String,
        /// DNS name or IP address agents use to reach this collector (repeatable).
        #[arg(long = "server-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        server_names: Vec<String>,
        /// Organisation of the first enrolment token.
        #[arg(long, default_value = "default")]
        org: String,
        /// Use the enterprise's own CA certificate (PEM) instead of creating one.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// The key of --ca-cert. Without it the collector cannot enrol devices.
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Use this server certificate (PEM) instead of issuing one from the CA.
        #[arg(long, requires = "server_key")]
        server_cert: Option<PathBuf>,
        /// The key of --server-cert.
        #[arg(long, requires = "server_cert")]
        server_key: Option<PathBuf>,
    },
    /// Serve enrolment, reporting and queries.
    Serve {
        /// Data directory made by `init`.
        #[arg(
            long,
            env = "COMMSCAN_DATA_DIR",
            default_value = "/var/lib/commscan-collector"
        )]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "COMMSCAN_LISTEN", default_value = "0.0.0.0:7443")]
        listen: SocketAddr,
        /// Default policy file (default: the embedded ministry-letter policy). SIGHUP reloads
        /// every rules file; an invalid one is refused and the previous rules stay in force.
        #[arg(long, env = "COMMSCAN_POLICY")]
        policy: Option<PathBuf>,
        /// ORG=FILE: a policy for one organisation (repeatable); others get the default.
        #[arg(long = "org-policy", value_parser = parse_org_policy)]
        org_policies: Vec<(String, PathBuf)>,
        /// Catalog file replacing the embedded catalog.
        #[arg(long, env = "COMMSCAN_CATALOG")]
        catalog: Option<PathBuf>,
        /// Registers file replacing the embedded registers.
        #[arg(long, env = "COMMSCAN_REGISTERS")]
        registers: Option<PathBuf>,
    },
    /// One-command start: throw-away collector, an agent scanning this machine, its verdict.
    Dev {
        /// Print the verdict and exit 0 (for scripts and CI).
        #[arg(long)]
        once: bool,
        /// Loopback address to serve on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Scan this directory tree instead of this machine.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Do not read the process table.
        #[arg(long)]
        no_processes: bool,
        /// Policy file (default: the embedded ministry-letter policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// How often the in-process agent rescans while serving.
        #[arg(long, default_value = "5m", value_parser = commscan_core::duration::parse_duration)]
        interval: Duration,
    },
}

fn parse_org_policy(s: &str) -> Result<(String, PathBuf), String> {
    let (org, file) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected ORG=FILE"))?;
    if !commscan_core::identity::is_valid_organisation(org) {
        return Err(format!("'{org}': not a valid organisation id"));
    }
    Ok((org.to_owned(), PathBuf::from(file)))
}

fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    #[cfg(unix)]
    {
        let t = token.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                t.cancel();
            }
        });
    }
    token
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            data_dir,
            trust_domain,
            server_names,
            org,
            ca_cert,
            ca_key,
            server_cert,
            server_key,
        } => {
            let layout = Layout::new(&data_dir);
            let s = layout.init(&InitOptions {
                trust_domain,
                server_names,
                organisation: org.clone(),
                import_ca: ca_cert.map(|c| (c, ca_key)),
                import_server: server_cert.zip(server_key),
            })?;
            println!("initialised {}", data_dir.display());
            println!(
                "  CA certificate for agents:  {}",
                layout.path("pki/ca.crt").display()
            );
            println!(
                "  admin bearer token file:    {}",
                layout.path("admin.token").display()
            );
            println!(
                "  enrolment token for '{org}' (valid 7 days, shown once):\n    {}",
                s.enrolment_token
            );
            println!(
                "\nThe CA key is {}; after issuing, it can be moved offline (see deploy/README.md).",
                layout.path("pki/ca.key").display()
            );
        }
        Command::Serve {
            data_dir,
            listen,
            policy,
            org_policies,
            catalog,
            registers,
        } => {
            let rules = RulesConfig {
                catalog,
                registers,
                policy,
                org_policies,
            };
            match commscan_collector::open_files::raise_to_hard_limit() {
                Ok(l) => tracing::info!(soft = ?l.soft, hard = ?l.hard, "open files limit"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
            }
            let (collector, tls) = Layout::new(&data_dir).open(&rules)?;
            // Verdicts stored under another policy (or catalog) are brought up to date at once.
            let r = collector.rejudge_all()?;
            tracing::info!(
                devices = r.devices,
                changed = r.changed,
                "devices judged under the policy in force"
            );
            #[cfg(unix)]
            {
                let collector = collector.clone();
                tokio::spawn(async move {
                    let Ok(mut hup) =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    else {
                        return;
                    };
                    while hup.recv().await.is_some() {
                        let (c, r) = (collector.clone(), rules.clone());
                        match tokio::task::spawn_blocking(move || c.reload(&r)).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "SIGHUP: policy reload failed")
                            }
                            Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
                        }
                    }
                });
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("--listen {listen}: cannot bind"))?;
            tracing::info!(addr = %listener.local_addr()?, data_dir = %data_dir.display(), "serving");
            serve(
                collector,
                tls,
                listener,
                Limits::default(),
                shutdown_on_signals(),
            )
            .await?;
        }
        Command::Dev {
            once,
            listen,
            root,
            no_processes,
            policy,
            interval,
        } => {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "--listen {listen}: dev mode serves on loopback only"
            );
            let opts = DevOptions {
                listen,
                once,
                root,
                no_processes,
                policy,
                interval,
                colour: std::io::stdout().is_terminal(),
            };
            let mut stdout = std::io::stdout();
            dev::run(opts, &mut stdout, shutdown_on_signals()).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `dev` prints its own story on stdout; its logs stay quiet unless asked for.
    let default_filter = match cli.command {
        Command::Dev { .. } => "warn",
        _ => "warn,commscan_collector=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COMMSCAN_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commscan-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
