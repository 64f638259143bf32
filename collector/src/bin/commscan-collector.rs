//! `commscan-collector`: parse flags, set up logging, call the library. Exit codes: 0 success,
//! 1 runtime failure, 64 bad usage or configuration.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use commscan_collector::config::{self, Settings};
use commscan_collector::federation::push;
use commscan_collector::layout::{InitOptions, Layout, LayoutError, OpenSettings};
use commscan_collector::server::serve;
use commscan_runtime::bootstrap::{LogFormat, Main, Threads, Usage};
use commscan_runtime::outln;
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
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Federation between enterprise collectors and a ministry collector.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Signed catalogs for agents: the offline catalog key and signing (no collector needed).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
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
    /// Copy the embedded store (consistently, while the collector runs: it makes the copy)
    /// and the deployment's files into a new directory. PostgreSQL: use its own tools.
    Backup {
        /// The new directory to write the backup into.
        dest: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Restore a backup into a data directory holding no deployment; then start `serve`.
    /// Run it as the collector's user (files keep their owner).
    Restore {
        /// The directory `backup` wrote.
        backup: PathBuf,
        /// Data directory to restore into [default: /var/lib/commscan-collector].
        #[arg(long, env = "COMMSCAN_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Check that `serve` would start with the same configuration file and flags (data
    /// directory, PKI, store, rules files, addresses, limits, federation); exit 64 naming every
    /// problem otherwise (systemd ExecStartPre).
    Validate {
        #[command(flatten)]
        settings: SettingsArgs,
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

#[derive(Subcommand)]
enum CatalogCommand {
    /// Write a new catalog signing key (0600) and print its public key for agents'
    /// `catalog_keys`. Keep it offline, apart from every TLS key.
    Keygen {
        /// The private key file to create (never overwritten).
        #[arg(long, short = 'o')]
        out: PathBuf,
    },
    /// Validate a catalog file and sign it as a release; hand the result to
    /// `commscanctl catalog apply`.
    Sign {
        /// A catalog key from `catalog keygen` (repeatable: several signatures).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The release number: higher than every release agents hold (they refuse others).
        #[arg(long)]
        version: u64,
        /// The catalog file (the format of the embedded catalog).
        catalog: PathBuf,
        /// Where to write the signed catalog.
        #[arg(long, short = 'o')]
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
    /// A public key (`ed25519:<64 hex>`, printed by `catalog keygen`) whose signed catalogs
    /// this collector accepts (repeatable). With any, a signed catalog signed by none of them
    /// is refused, and an enterprise adopts its ministry's signed catalog.
    #[arg(long = "catalog-key")]
    catalog_keys: Vec<String>,
}

/// `serve` and `validate`: the configuration file, and flags (or their environment
/// variables) that override it. Defaults are the file's (`commscan_collector::config`).
#[derive(Args)]
struct SettingsArgs {
    /// Configuration file (TOML) [default: /etc/commscan/collector.toml, if it exists].
    #[arg(long, env = "COMMSCAN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory made by `init` [default: /var/lib/commscan-collector].
    #[arg(long, env = "COMMSCAN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:7443].
    #[arg(long, env = "COMMSCAN_LISTEN")]
    listen: Option<String>,
    /// Address of the web console (HTTPS with the same server certificate, no client
    /// certificates); `off` serves none [default: 0.0.0.0:7444].
    #[arg(long, env = "COMMSCAN_WEB_LISTEN")]
    web_listen: Option<String>,
    /// Address of the Prometheus endpoint (`GET /metrics`, plain HTTP: loopback or a
    /// management network); `off` serves none [default: 127.0.0.1:9464].
    #[arg(long, env = "COMMSCAN_METRICS_LISTEN")]
    metrics_listen: Option<String>,
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
    /// Enterprise: push at least this often, and soon after every change [default: 15m].
    #[arg(long, value_parser = commscan_core::duration::parse_duration)]
    push_interval: Option<Duration>,
    /// Enterprise: take the ministry's registers too (they replace this collector's).
    #[arg(long)]
    fetch_registers: bool,
    /// Ministry: an enterprise whose last push is older than this shows as stale (keep it
    /// at about three push intervals) [default: 45m].
    #[arg(long, value_parser = commscan_core::duration::parse_duration)]
    federation_stale_after: Option<Duration>,
    #[command(flatten)]
    store: StoreArgs,
}

impl SettingsArgs {
    /// The file (if any) merged with the flags; every problem at once, as a usage error.
    fn resolve(self) -> anyhow::Result<Settings> {
        let file = config::read(self.config.as_deref()).map_err(|e| Usage(e.to_string()))?;
        let flags = config::Overrides {
            data_dir: self.data_dir,
            listen: self.listen,
            web_listen: self.web_listen,
            metrics_listen: self.metrics_listen,
            store_url: self.store.url,
            store_password_file: self.store.store_password_file,
            store_connections: self.store.store_connections,
            policy: self.rules.policy,
            org_policies: self.rules.org_policies,
            catalog: self.rules.catalog,
            registers: self.rules.registers,
            catalog_keys: self.rules.catalog_keys,
            fetch_registers: self.fetch_registers.then_some(true),
            upstream: self.upstream,
            upstream_ca: self.upstream_ca,
            upstream_cert: self.upstream_cert,
            upstream_key: self.upstream_key,
            push_interval: self.push_interval,
            federation_stale_after: self.federation_stale_after,
        };
        let settings = config::resolve(file.as_ref(), flags).map_err(|e| Usage(e.to_string()))?;
        if let Some(f) = &settings.file {
            tracing::info!(file = %f.display(), "configuration file read");
        }
        Ok(settings)
    }
}

/// The PostgreSQL configuration of `settings`, its password read.
fn postgres(
    settings: &Settings,
) -> anyhow::Result<Option<commscan_collector::store::pg_store::PgConfig>> {
    settings
        .store
        .as_ref()
        .map(|s| s.pg_config().map_err(|e| Usage(e).into()))
        .transpose()
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
            outln!("initialised {}", data_dir.display())?;
            outln!(
                "  CA certificate for agents:  {}",
                layout.path("pki/ca.crt").display()
            )?;
            outln!(
                "  admin bearer token file:    {}",
                layout.path("admin.token").display()
            )?;
            outln!(
                "  enrolment token for '{org}' (valid 7 days, shown once):\n    {}",
                s.enrolment_token
            )?;
            outln!(
                "\nThe CA key is {}; after issuing, it can be moved offline (see deploy/README.md).",
                layout.path("pki/ca.key").display()
            )?;
        }
        Command::Serve { settings } => {
            commscan_runtime::stdout::serving();
            let settings = settings.resolve()?;
            let data_dir = settings.data_dir.clone();
            let rules = settings.rules.clone();
            match commscan_collector::open_files::raise_to_hard_limit() {
                Ok(l) => tracing::info!(soft = ?l.soft, hard = ?l.hard, "open files limit"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
            }
            let upstream = settings
                .upstream
                .resolve()
                .map_err(|e| Usage(e.to_string()))?;
            let open = OpenSettings {
                federation_stale_after: settings.federation_stale_after,
                postgres: postgres(&settings)?,
                catalog_keys: settings.catalog_keys.clone(),
                ..OpenSettings::default()
            };
            let (collector, tls) = Layout::new(&data_dir).open_with(&rules, &open)?;
            if !settings.alerts.is_empty() {
                let alerts = commscan_collector::alerts::Alerts::new(settings.alerts.clone());
                tracing::info!(sinks = ?alerts, "alert hooks");
                collector.set_alerts(std::sync::Arc::new(alerts));
            }
            // Signals are caught from here on: a SIGTERM right after start stops cleanly.
            let shutdown = commscan_runtime::signals::on_signals();
            let listen = settings.listen;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listen {listen}: cannot bind"))?;
            tracing::info!(addr = %listener.local_addr()?, data_dir = %data_dir.display(), "serving");
            // Verdicts stored under another policy (or catalog) are brought up to date while
            // agents reconnect (rejudge.rs states why that is safe).
            let rejudge = commscan_collector::rejudge::spawn_rejudge_at_start(
                collector.clone(),
                shutdown.clone(),
            );
            let console = match settings.web_listen {
                None => None,
                Some(addr) => {
                    let web_tls = Layout::new(&data_dir).web_tls()?;
                    let l = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("web_listen {addr}: cannot bind"))?;
                    tracing::info!(addr = %l.local_addr()?, "web console");
                    Some(tokio::spawn(commscan_collector::web::serve(
                        collector.clone(),
                        web_tls,
                        l,
                        shutdown.clone(),
                    )))
                }
            };
            let metrics = match settings.metrics_listen {
                None => None,
                Some(addr) => {
                    let l = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("metrics_listen {addr}: cannot bind"))?;
                    tracing::info!(addr = %l.local_addr()?, "metrics");
                    Some(tokio::spawn(commscan_collector::metrics::serve(
                        collector.clone(),
                        l,
                        shutdown.clone(),
                    )))
                }
            };
            // The control socket (`backup`) serves the embedded store only.
            let control = settings.store.is_none().then(|| {
                tokio::spawn(commscan_collector::backup::serve_control(
                    collector.clone(),
                    data_dir.clone(),
                    shutdown.clone(),
                ))
            });
            let maintenance =
                commscan_collector::service::spawn(collector.clone(), rules, shutdown.clone());
            // When shutdown began, for the "stopped" line (the bound is stated in server.rs).
            let began = {
                let s = shutdown.clone();
                tokio::spawn(async move {
                    s.cancelled().await;
                    std::time::Instant::now()
                })
            };
            let pusher = upstream
                .map(|u| tokio::spawn(push::run_exclusive(collector.clone(), u, shutdown.clone())));
            let alert_hooks =
                commscan_collector::alerts::spawn(collector.clone(), shutdown.clone());
            serve(
                collector.clone(),
                tls,
                listener,
                settings.limits,
                shutdown.clone(),
            )
            .await?;
            shutdown.cancel();
            // Stops between two devices; what it re-judged is flushed.
            let _ = rejudge.await;
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
            if let Some(c) = control {
                let _ = c.await;
            }
            // Acknowledged reports are durable already; this writes what is not (audit,
            // sessions) before the process ends.
            let c = collector.clone();
            tokio::task::spawn_blocking(move || c.store().flush())
                .await
                .context("final flush")?
                .context("final flush")?;
            let began = began.await.unwrap_or_else(|_| std::time::Instant::now());
            tracing::info!(after_ms = began.elapsed().as_millis() as u64, "stopped");
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
            outln!(
                "issued enterprise '{}' for organisations {} (expires {})",
                issued.identity.enterprise,
                issued.identity.organisations.join(", "),
                issued.not_after.date()
            )?;
            outln!("  key (0600, hand over securely): {}", issued.key.display())?;
            outln!(
                "  certificate:                    {}",
                issued.cert.display()
            )?;
            outln!("  ministry CA certificate:        {}", issued.ca.display())?;
            outln!(
                "\nOn the enterprise collector:\n  commscan-collector serve --upstream https://<ministry>:7443 --upstream-ca {} --upstream-cert {} --upstream-key {}",
                issued.ca.display(),
                issued.cert.display(),
                issued.key.display()
            )?;
        }
        Command::Catalog { command } => catalog_command(command)?,
        Command::Migrate {
            data_dir,
            to,
            store_password_file,
        } => {
            let pg = StoreArgs {
                url: Some(to),
                store_password_file,
                store_connections: Some(4),
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
            outln!("{:<18} {:>12} {:>12}", "table", "sled", "postgres")?;
            for (table, n) in &written {
                // `findings` rows are derived from devices; sled keeps no such table.
                let r = read.get(table).map_or("-".to_owned(), u64::to_string);
                outln!("{table:<18} {r:>12} {n:>12}")?;
            }
            outln!(
                "copied {} into {}; serve with --store {}",
                store_dir.display(),
                pg.url,
                pg.url
            )?;
        }
        Command::Backup { dest, settings } => {
            let settings = settings.resolve()?;
            if settings.store.is_some() {
                return Err(Usage(
                    "the store is PostgreSQL: back the database up with its own tools (pg_dump, base backups); `backup` copies the embedded store".into(),
                )
                .into());
            }
            let m = commscan_collector::backup::backup(&settings.data_dir, &dest)?;
            outln!(
                "backed up {} into {} ({}: {} trees, {} entries; store calls held {} ms)",
                settings.data_dir.display(),
                dest.display(),
                m.mode,
                m.trees,
                m.entries,
                m.held_ms
            )?;
            outln!(
                "restore: stop the collector, move {} aside, `commscan-collector restore {} --data-dir {}`, start it",
                settings.data_dir.display(),
                dest.display(),
                settings.data_dir.display()
            )?;
        }
        Command::Restore { backup, data_dir } => {
            let m = commscan_collector::backup::restore(&backup, &data_dir)
                .map_err(|e| Usage(e.to_string()))?;
            outln!(
                "restored the backup of {} ({} entries) into {}; start the collector: agents that reported since heal by themselves",
                m.taken_at,
                m.entries,
                data_dir.display()
            )?;
        }
        Command::Validate { settings } => {
            let settings = settings.resolve()?;
            settings
                .upstream
                .resolve()
                .map_err(|e| Usage(e.to_string()))?;
            let (data_dir, rules) = (&settings.data_dir, &settings.rules);
            let open = OpenSettings {
                federation_stale_after: settings.federation_stale_after,
                postgres: postgres(&settings)?,
                catalog_keys: settings.catalog_keys.clone(),
                ..OpenSettings::default()
            };
            let (collector, _) = Layout::new(data_dir)
                .open_with(rules, &open)
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
                outln!(
                    "stored {} {}version {} by {} at {} in force",
                    v.kind,
                    v.organisation
                        .as_deref()
                        .map(|o| format!("for {o}, "))
                        .unwrap_or_default(),
                    v.version,
                    v.author,
                    v.at
                )?;
            }
            outln!("{}: ready to serve", data_dir.display())?;
        }
    }
    Ok(())
}

fn catalog_command(command: CatalogCommand) -> anyhow::Result<()> {
    use commscan_collector::catalog_signing::{self, CatalogToolError};
    let usage = |e: CatalogToolError| {
        if e.is_usage() {
            anyhow::Error::new(Usage(e.to_string()))
        } else {
            e.into()
        }
    };
    match command {
        CatalogCommand::Keygen { out } => {
            let public = catalog_signing::keygen(&out).map_err(usage)?;
            eprintln!(
                "wrote {} (0600); keep it offline. Agents accept catalogs signed by it with:",
                out.display()
            );
            eprintln!("  catalog_keys = [\"{public}\"]");
            println!("{public}");
        }
        CatalogCommand::Sign {
            keys,
            version,
            catalog,
            out,
        } => {
            let signed = catalog_signing::sign(&keys, version, &catalog, &out).map_err(usage)?;
            println!(
                "signed release {} ({} products, sha256 {}, {} bytes) by {}",
                signed.release,
                signed.products,
                signed.digest,
                signed.bytes,
                signed
                    .keys
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("  wrote {}", out.display());
            println!("\nPublish it: commscanctl catalog apply {}", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // `completions SHELL`, `man DIR`: what the packages install (runtime/src/docs.rs).
    if let Some(code) = commscan_runtime::docs::generate_if_asked::<Cli>() {
        return code;
    }
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
    #[arg(long, env = "COMMSCAN_STORE_PASSWORD_FILE")]
    store_password_file: Option<PathBuf>,
    /// Connections in each of the store's two pools (plus 4 lock sessions and a listener) [default: 32].
    #[arg(long)]
    store_connections: Option<usize>,
}

impl StoreArgs {
    /// `init` and `migrate`: the database named by the flags alone.
    fn resolve(self) -> anyhow::Result<Option<commscan_collector::store::pg_store::PgConfig>> {
        let flags = config::Overrides {
            store_url: self.url,
            store_password_file: self.store_password_file,
            store_connections: self.store_connections,
            ..config::Overrides::default()
        };
        let settings = config::resolve(None, flags).map_err(|e| Usage(e.to_string()))?;
        postgres(&settings)
    }
}
