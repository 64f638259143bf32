//! `commscanctl`: the officer's and analyst's command line. Parses flags, calls the collector
//! through `commscan_collector::ctl`, prints tables, JSON or CSV. Exit codes: 0 success,
//! 1 failure, 2 a check found problems (`policy check`).
//!
//! This file declares the command line; the commands live beside it: `query` (devices,
//! summaries, candidates, events, exports), `admin` (tokens, people, audit, revocation) and
//! `offline` (catalog, policies).

mod admin;
mod offline;
mod query;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use commscan_collector::ctl::output::{self, Format};
use commscan_collector::ctl::{Connection, resolve_token};
use commscan_core::catalog::Catalog;
use commscan_core::policy::Policy;
use commscan_core::register::Registers;
use commscan_core::scan::ScanReport;
use commscan_core::verdict::{Status, Subject};
use commscan_proto::{convert, v1};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "commscanctl",
    version,
    about = "Query a commscan collector; check and test policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Conn {
    /// Collector URL.
    #[arg(
        long,
        env = "COMMSCAN_COLLECTOR",
        default_value = "https://127.0.0.1:7443"
    )]
    collector: String,
    /// The deployment CA certificate (the collector's pki/ca.crt).
    #[arg(long, env = "COMMSCAN_CA")]
    ca: Option<PathBuf>,
    /// File holding your bearer token (or set COMMSCAN_TOKEN).
    #[arg(long, env = "COMMSCAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

impl Conn {
    fn connection(&self) -> anyhow::Result<Connection> {
        let ca = self.ca.clone().context(
            "no CA certificate: set COMMSCAN_CA (or --ca) to the collector's pki/ca.crt",
        )?;
        let token = resolve_token(
            self.token_file.as_ref(),
            std::env::var("COMMSCAN_TOKEN").ok(),
        )?;
        Ok(Connection {
            collector: self.collector.clone(),
            ca,
            token,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// List devices (or `devices revoke ID`).
    #[command(args_conflicts_with_subcommands = true)]
    Devices {
        #[command(subcommand)]
        action: Option<DevicesAction>,
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Only this status (compliant, noncompliant, waived, stale, unknown).
        #[arg(long)]
        status: Option<Status>,
        /// Only devices with this product.
        #[arg(long)]
        product: Option<String>,
        /// Only devices of this platform (linux, macos, windows).
        #[arg(long)]
        platform: Option<commscan_core::platform::Platform>,
        /// Stop after this many rows (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Show one device: verdict, reasons, findings with evidence.
    Device {
        #[command(flatten)]
        conn: Conn,
        /// Device id.
        id: String,
    },
    /// An organisation's compliance summary, with its daily trend.
    Summary {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long, default_value = "default")]
        org: String,
        /// Days of trend to show.
        #[arg(long, default_value_t = 14)]
        days: u32,
    },
    /// One row per organisation (for ministry analysts): aggregates only. On a ministry
    /// collector, enterprises' organisations too, with when each last pushed and whether it is
    /// stale (a stale organisation's devices count as stale, never compliant).
    Fleet {
        #[command(flatten)]
        conn: Conn,
    },
    /// Per product, devices and violating devices across your organisations.
    Products {
        #[command(flatten)]
        conn: Conn,
    },
    /// Unclassified communication-like software seen in an organisation; map or dismiss it.
    Candidates {
        #[command(subcommand)]
        command: CandidatesCommand,
    },
    /// Print verdict changes as they happen (Ctrl-C to stop).
    Watch {
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
    },
    /// Export every device you may see as CSV or JSON lines, streamed.
    Export {
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Only this status.
        #[arg(long)]
        status: Option<Status>,
    },
    /// Enrolment tokens: create, list, revoke.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// People's access tokens.
    People {
        #[command(subcommand)]
        command: PeopleCommand,
    },
    /// Read the audit log.
    Audit {
        #[command(flatten)]
        conn: Conn,
        /// Entries after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// What commscan recognises.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Check and test policies offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum CandidatesCommand {
    /// List candidates with how many devices report each.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long)]
        org: String,
    },
    /// Map a candidate to a catalog product: its devices are judged as having that product.
    Map {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long)]
        org: String,
        /// The candidate's name, as listed.
        name: String,
        /// Catalog product id.
        #[arg(long)]
        product: String,
    },
    /// Dismiss a candidate: not listed again.
    Dismiss {
        #[command(flatten)]
        conn: Conn,
        /// Organisation.
        #[arg(long)]
        org: String,
        /// The candidate's name, as listed.
        name: String,
    },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Remove a revoked, decommissioned device: its record and history are deleted.
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// Device id.
        id: String,
    },
    /// Revoke a device: refused from its next connection on; its history stays.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// Device id.
        id: String,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create an enrolment token for an organisation; the secret is shown once.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Organisation devices will enrol into.
        #[arg(long)]
        org: String,
        /// Number of enrolments it allows (default: unlimited until it expires).
        #[arg(long)]
        uses: Option<u64>,
        /// Lifetime, e.g. 7d, 12h (default 7d, at most 366d).
        #[arg(long, value_parser = commscan_core::duration::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List enrolment tokens (never their secrets).
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke an enrolment token by id.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// Token id from `tokens list`.
        id: String,
    },
}

#[derive(Subcommand)]
enum PeopleCommand {
    /// Create a bearer token for a person; the secret is shown once.
    Add {
        #[command(flatten)]
        conn: Conn,
        /// Their name, as the audit log shows it.
        name: String,
        /// ROLE or ROLE:ORG, repeatable: admin, officer:ORG, analyst, auditor[:ORG].
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// List catalogued products.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show one product and its signatures.
    Show {
        /// Product id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file against the catalog; lists every problem.
    Check {
        /// Policy file.
        file: PathBuf,
    },
    /// Judge a saved `commscan-agent scan --output json` result under a policy.
    Test {
        /// Policy file.
        file: PathBuf,
        /// Scan JSON file.
        scan: PathBuf,
    },
}

fn colour() -> bool {
    std::io::stdout().is_terminal()
}

impl Command {
    /// The command's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Command::Devices { .. } => "devices",
            Command::Device { .. } => "device",
            Command::Summary { .. } => "summary",
            Command::Fleet { .. } => "fleet",
            Command::Products { .. } => "products",
            Command::Candidates { .. } => "candidates",
            Command::Watch { .. } => "watch",
            Command::Export { .. } => "export",
            Command::Tokens { .. } => "tokens",
            Command::People { .. } => "people",
            Command::Audit { .. } => "audit",
            Command::Catalog { .. } => "catalog",
            Command::Policy { .. } => "policy",
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        c @ (Command::Tokens { .. }
        | Command::People { .. }
        | Command::Audit { .. }
        | Command::Devices {
            action: Some(_), ..
        }) => admin::run(c).await,
        c @ (Command::Catalog { .. } | Command::Policy { .. }) => offline::run(c),
        c => query::run(c).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COMMSCAN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if let Some(s) = e.downcast_ref::<tonic::Status>() {
                eprintln!(
                    "commscanctl: collector answered {:?}: {}",
                    s.code(),
                    s.message()
                );
            } else {
                eprintln!("commscanctl: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
