//! `commscan-collector`: parse flags, set up logging, call the library. Exit codes: 0 success,
//! 1 runtime failure, 64 bad usage or configuration.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use commscan_collector::compliance::RulesConfig;
use commscan_collector::federation::{push, upstream::UpstreamFlags};
use commscan_collector::layout::{InitOptions, Layout, LayoutError, OpenSettings};
use commscan_collector::server::{Limits, serve};
use commscan_runtime::bootstrap::{LogFormat, Main, Threads, Usage};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "commscan-collector",
    version,
    about = "Enrols devices, stores and judges their communication software, answers queries"
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
        #[command(flatten)]
        store: StoreArgs,
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
        /// Address of the web console (HTTPS with the same server certificate, no client
        /// certificates); `off` serves none.
        #[arg(long, env = "COMMSCAN_WEB_LISTEN", default_value = "0.0.0.0:7444")]
        web_listen: String,
        /// Address of the Prometheus endpoint (`GET /metrics`, plain HTTP: loopback or a
        /// management network); `off` serves none.
        #[arg(
            long,
            env = "COMMSCAN_METRICS_LISTEN",
            default_value = "127.0.0.1:9464"
        )]
        metrics_listen: String,
        #[command(flatten)]
        rules: RulesArgs,
        /// Enterprise: the ministry collector to push organisation aggregates to
        /// (https://HOST:PORT). Needs --upstream-ca, --upstream-cert and --upstream-key.
        #[arg(long, env = "COMMSCAN_UPSTREAM")]
        upstream: Option<String>,
        /// Enterprise: the ministry's CA certificate (ministry-ca.crt from `federation issue`).
        #[arg(long, env = "COMMSCAN_UPSTREAM_CA")]
        upstream_ca: Option<PathBuf>,
        /// Enterprise: this enterprise's certificate issued by the ministry (enterprise.crt).
        #[arg(long, env = "COMMSCAN_UPSTREAM_CERT")]
        upstream_cert: Option<PathBuf>,
        /// Enterprise: its key (enterprise.key).
        #[arg(long, env = "COMMSCAN_UPSTREAM_KEY")]
        upstream_key: Option<PathBuf>,
        /// Enterprise: push at least this often, and soon after every change.
        #[arg(long, default_value = "15m", value_parser = commscan_core::duration::parse_duration)]
        push_interval: Duration,
        /// Ministry: an enterprise whose last push is older than this shows as stale (keep it
        /// at about three push intervals).
        #[arg(long, default_value = "45m", value_parser = commscan_core::duration::parse_duration)]
        federation_stale_after: Duration,
        /// Alert hooks: a TOML file of `[[webhook]]` and `[[syslog]]` sinks receiving verdict
        /// changes, stale devices and stale enterprises (see deploy/alerts.toml).
        #[arg(long, env = "COMMSCAN_ALERTS")]
        alerts: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Federation between enterprise collectors and a ministry collector.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Copy this data directory's sled store into an empty PostgreSQL database, then serve
    /// with `--store`. Stop the collector first (sled refuses a second opener).
    Migrate {
        /// Data directory made by `init`.
        #[arg(
            long,
            env = "COMMSCAN_DATA_DIR",
            default_value = "/var/lib/commscan-collector"
        )]
        data_dir: PathBuf,
        /// The database, `postgres://USER@HOST:PORT/DATABASE`.
        #[arg(long)]
        to: String,
        /// A file holding the database password (else COMMSCAN_STORE_PASSWORD).
        #[arg(long, env = "COMMSCAN_STORE_PASSWORD_FILE")]
        store_password_file: Option<PathBuf>,
    },
    /// Check that `serve` would start (data directory, PKI, store, rules files); exit 64
    /// naming the problem otherwise (systemd ExecStartPre).
    Validate {
        /// Data directory made by `init`.
        #[arg(
            long,
            env = "COMMSCAN_DATA_DIR",
            default_value = "/var/lib/commscan-collector"
        )]
        data_dir: PathBuf,
        /// The rules files `serve` will use.
        #[command(flatten)]
        rules: RulesArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Ministry: issue an enterprise collector's certificate from the ministry's CA (offline).
    Issue {
        /// The ministry's data directory (its pki/ca.key is needed).
        #[arg(long, env = "COMMSCAN_DATA_DIR")]
        data_dir: PathBuf,
        /// The enterprise id (1-64 of a-z, 0-9 and '-').
        #[arg(long)]
        enterprise: String,
        /// An organisation the enterprise may push (repeatable).
        #[arg(long = "org", required = true)]
        orgs: Vec<String>,
        /// Directory to write enterprise.key, enterprise.crt and ministry-ca.crt into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The rules in force: catalog, registers, the default policy and per-organisation policies.
/// `serve` and `validate` take the same flags, so `validate` checks exactly what `serve` loads.
#[derive(Args)]
struct RulesArgs {
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
}

impl From<RulesArgs> for RulesConfig {
    fn from(a: RulesArgs) -> Self {
        RulesConfig {
            catalog: a.catalog,
            registers: a.registers,
            policy: a.policy,
            org_policies: a.org_policies,
        }
    }
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
            store,
        } => {
            let layout = Layout::new(&data_dir);
            let s = layout.init_with(
                &InitOptions {
                    trust_domain,
                    server_names,
                    organisation: org.clone(),
                    import_ca: ca_cert.map(|c| (c, ca_key)),
                    import_server: server_cert.zip(server_key),
                },
                store.resolve()?.as_ref(),
            )?;
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
            web_listen,
            metrics_listen,
            rules,
            upstream,
            upstream_ca,
            upstream_cert,
            upstream_key,
            push_interval,
            federation_stale_after,
            alerts,
            store,
        } => {
            let rules = RulesConfig::from(rules);
            let alerts = match &alerts {
                None => None,
                Some(path) => {
                    let sinks = commscan_collector::alerts::config::AlertsConfig::from_file(path)
                        .and_then(|c| c.validate())
                        .map_err(|e| Usage(format!("--alerts {}:\n{e}", path.display())))?;
                    Some(std::sync::Arc::new(
                        commscan_collector::alerts::Alerts::new(sinks),
                    ))
                }
            };
            match commscan_collector::open_files::raise_to_hard_limit() {
                Ok(l) => tracing::info!(soft = ?l.soft, hard = ?l.hard, "open files limit"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
            }
            let upstream = UpstreamFlags {
                url: upstream,
                ca: upstream_ca,
                cert: upstream_cert,
                key: upstream_key,
                interval: push_interval,
            }
            .resolve()
            .map_err(|e| Usage(e.to_string()))?;
            if federation_stale_after.is_zero() {
                return Err(
                    Usage("--federation-stale-after: must be longer than zero".into()).into(),
                );
            }
            let settings = OpenSettings {
                federation_stale_after,
                postgres: store.resolve()?,
                ..OpenSettings::default()
            };
            let (collector, tls) = Layout::new(&data_dir).open_with(&rules, &settings)?;
            if let Some(a) = alerts {
                tracing::info!(sinks = ?a, "alert hooks");
                collector.set_alerts(a);
            }
            // Verdicts stored under another policy (or catalog) are brought up to date at once.
            let r = collector.rejudge_all()?;
            tracing::info!(
                devices = r.devices,
                changed = r.changed,
                "devices judged under the policy in force"
            );
            // Signals are caught from here on: a SIGTERM right after start stops cleanly.
            let shutdown = commscan_runtime::signals::on_signals();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("--listen {listen}: cannot bind"))?;
            tracing::info!(addr = %listener.local_addr()?, data_dir = %data_dir.display(), "serving");
            let console = match web_listen.as_str() {
                "off" => None,
                addr => {
                    let addr: SocketAddr = addr.parse().map_err(|e| {
                        Usage(format!(
                            "--web-listen {addr}: not an address or `off` ({e})"
                        ))
                    })?;
                    let web_tls = Layout::new(&data_dir).web_tls()?;
                    let l = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("--web-listen {addr}: cannot bind"))?;
                    tracing::info!(addr = %l.local_addr()?, "web console");
                    Some(tokio::spawn(commscan_collector::web::serve(
                        collector.clone(),
                        web_tls,
                        l,
                        shutdown.clone(),
                    )))
                }
            };
            let metrics = match metrics_listen.as_str() {
                "off" => None,
                addr => {
                    let addr: SocketAddr = addr.parse().map_err(|e| {
                        Usage(format!(
                            "--metrics-listen {addr}: not an address or `off` ({e})"
                        ))
                    })?;
                    let l = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("--metrics-listen {addr}: cannot bind"))?;
                    tracing::info!(addr = %l.local_addr()?, "metrics");
                    Some(tokio::spawn(commscan_collector::metrics::serve(
                        collector.clone(),
                        l,
                        shutdown.clone(),
                    )))
                }
            };
            let maintenance =
                commscan_collector::service::spawn(collector.clone(), rules, shutdown.clone());
            let pusher = upstream
                .map(|u| tokio::spawn(push::run_exclusive(collector.clone(), u, shutdown.clone())));
            let alert_hooks =
                commscan_collector::alerts::spawn(collector.clone(), shutdown.clone());
            serve(
                collector,
                tls,
                listener,
                Limits::default(),
                shutdown.clone(),
            )
            .await?;
            shutdown.cancel();
            maintenance.wait().await;
            alert_hooks.wait().await;
            if let Some(p) = pusher {
                let _ = p.await;
            }
            if let Some(c) = console {
                let _ = c.await;
            }
            if let Some(m) = metrics {
                let _ = m.await;
            }
        }
        Command::Federation {
            command:
                FederationCommand::Issue {
                    data_dir,
                    enterprise,
                    orgs,
                    out,
                },
        } => {
            let issued = Layout::new(&data_dir)
                .issue_enterprise(&enterprise, &orgs, &out)
                .map_err(|e| match e {
                    LayoutError::Invalid(m) => anyhow::Error::new(Usage(m)),
                    e => e.into(),
                })?;
            println!(
                "issued enterprise '{}' for organisations {} (expires {})",
                issued.identity.enterprise,
                issued.identity.organisations.join(", "),
                issued.not_after.date()
            );
            println!("  key (0600, hand over securely): {}", issued.key.display());
            println!(
                "  certificate:                    {}",
                issued.cert.display()
            );
            println!("  ministry CA certificate:        {}", issued.ca.display());
            println!(
                "\nOn the enterprise collector:\n  commscan-collector serve --upstream https://<ministry>:7443 --upstream-ca {} --upstream-cert {} --upstream-key {}",
                issued.ca.display(),
                issued.cert.display(),
                issued.key.display()
            );
        }
        Command::Migrate {
            data_dir,
            to,
            store_password_file,
        } => {
            let pg = StoreArgs {
                url: Some(to),
                store_password_file,
                store_connections: 4,
            }
            .resolve()?
            .expect("a URL was given");
            let layout = Layout::new(&data_dir);
            let store_dir = layout.path("store");
            let from = commscan_collector::store::sled_store::SledStore::open(&store_dir).map_err(
                |e| {
                    anyhow::anyhow!(
                        "{}: {e} (is the collector still running?)",
                        store_dir.display()
                    )
                },
            )?;
            let to_store = commscan_collector::store::pg_store::PgStore::open(&pg)
                .map_err(|e| anyhow::anyhow!("--to {}: {e}", pg.url))?;
            let (read, written) = commscan_collector::store::migrate::copy(&from, &to_store)?;
            println!("{:<18} {:>12} {:>12}", "table", "sled", "postgres");
            for (table, n) in &written {
                // `findings` rows are derived from devices; sled keeps no such table.
                let r = read.get(table).map_or("-".to_owned(), u64::to_string);
                println!("{table:<18} {r:>12} {n:>12}");
            }
            println!(
                "copied {} into {}; serve with --store {}",
                store_dir.display(),
                pg.url,
                pg.url
            );
        }
        Command::Validate {
            data_dir,
            rules,
            store,
        } => {
            let rules = RulesConfig::from(rules);
            let settings = OpenSettings {
                postgres: store.resolve()?,
                ..OpenSettings::default()
            };
            let (collector, _) = Layout::new(&data_dir)
                .open_with(&rules, &settings)
                .map_err(|e| Usage(e.to_string()))?;
            // Stored rules that no longer validate leave the files in force: said, not fatal,
            // since `serve` would run (on the files) all the same.
            let stored = match collector.refresh_rules() {
                Ok(_) => collector.store().current_rules().unwrap_or_default(),
                Err(e) => {
                    eprintln!("warning: {e}");
                    Vec::new()
                }
            };
            for v in stored {
                println!(
                    "stored {} {}version {} by {} at {} in force",
                    v.kind,
                    v.organisation
                        .as_deref()
                        .map(|o| format!("for {o}, "))
                        .unwrap_or_default(),
                    v.version,
                    v.author,
                    v.at
                );
            }
            println!("{}: ready to serve", data_dir.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    Main {
        name: "commscan-collector",
        default_log: "warn,commscan_collector=info",
        threads: Threads::Workers(None),
        log_format: cli.log_format,
    }
    .run(async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}

/// Where the compliance data lives: the data directory's sled store unless `--store` names a
/// PostgreSQL database.
#[derive(clap::Args)]
struct StoreArgs {
    /// PostgreSQL store, `postgres://USER@HOST:PORT/DATABASE` (default: sled in the data
    /// directory). The password comes from --store-password-file or
    /// COMMSCAN_STORE_PASSWORD, never the URL. TLS: `?sslmode=require&sslrootcert=CA.pem`
    /// (libpq's parameters; the certificate and host name are always verified, against that
    /// file or the system's roots).
    #[arg(long = "store", env = "COMMSCAN_STORE")]
    url: Option<String>,
    /// A file holding the database password (one line).
    #[arg(long, env = "COMMSCAN_STORE_PASSWORD_FILE", requires = "url")]
    store_password_file: Option<PathBuf>,
    /// Most database connections this collector opens.
    #[arg(long, default_value_t = 32, requires = "url")]
    store_connections: usize,
}

impl StoreArgs {
    fn resolve(self) -> anyhow::Result<Option<commscan_collector::store::pg_store::PgConfig>> {
        let Some(url) = self.url else {
            return Ok(None);
        };
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(Usage(format!(
                "--store {url}: want postgres://USER@HOST:PORT/DATABASE"
            ))
            .into());
        }
        let password = match self.store_password_file {
            Some(p) => Some(
                std::fs::read_to_string(&p)
                    .map_err(|e| Usage(format!("--store-password-file {}: {e}", p.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => std::env::var("COMMSCAN_STORE_PASSWORD").ok(),
        };
        Ok(Some(commscan_collector::store::pg_store::PgConfig {
            url,
            password,
            max_connections: self.store_connections,
        }))
    }
}
