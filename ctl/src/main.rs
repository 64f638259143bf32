//! `commscanctl`: the officer's, auditor's and analyst's command line. Declares the command
//! tree and hands each command group to its own module under `cmd/`, which parses nothing and
//! prints its result as a table, JSON or CSV (`commscan_ctl::output`).
//!
//! Exit codes: 0 success, 1 failure, 2 a check found problems (`policy check`), 64 bad usage.

mod cmd;

use clap::{Parser, Subcommand};
use cmd::{
    audit, candidates, catalog, devices, events, people, policy, registers, summaries, tokens,
};
use commscan_runtime::bootstrap::{Main, Threads};
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

#[derive(Subcommand)]
enum Command {
    /// List devices (or `devices revoke ID`, `devices remove ID`).
    #[command(args_conflicts_with_subcommands = true)]
    Devices(devices::DevicesArgs),
    /// Show one device: verdict, reasons, findings with evidence.
    Device(devices::DeviceArgs),
    /// An organisation's compliance summary, with its daily trend.
    Summary(summaries::SummaryArgs),
    /// One row per organisation (for ministry analysts): aggregates only. On a ministry
    /// collector, enterprises' organisations too, with when each last pushed and whether it is
    /// stale (a stale organisation's devices count as stale, never compliant).
    Fleet(summaries::FleetArgs),
    /// Per product, devices and violating devices across your organisations.
    Products(summaries::ProductsArgs),
    /// Unclassified communication-like software seen in an organisation; map or dismiss it.
    #[command(subcommand)]
    Candidates(candidates::CandidatesCommand),
    /// Print verdict changes as they happen (Ctrl-C to stop).
    Watch(events::WatchArgs),
    /// Export every device you may see as CSV or JSON lines, streamed.
    Export(events::ExportArgs),
    /// Enrolment tokens: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// People's access tokens.
    #[command(subcommand)]
    People(people::PeopleCommand),
    /// Read the audit log.
    Audit(audit::AuditArgs),
    /// What commscan recognises; the catalog kept in the collector's store.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Check and test policies offline; apply, review and roll back the collector's policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The registers (approved lists) kept in the collector's store.
    #[command(subcommand)]
    Registers(registers::RegistersCommand),
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Devices(a) => devices::run(a).await,
        Command::Device(a) => devices::show(a).await,
        Command::Summary(a) => summaries::summary(a).await,
        Command::Fleet(a) => summaries::fleet(a).await,
        Command::Products(a) => summaries::products(a).await,
        Command::Candidates(c) => candidates::run(c).await,
        Command::Watch(a) => events::watch(a).await,
        Command::Export(a) => events::export(a).await,
        Command::Tokens(c) => tokens::run(c).await,
        Command::People(c) => people::run(c).await,
        Command::Audit(a) => audit::run(a).await,
        Command::Catalog(c) => catalog::run(c).await,
        Command::Policy(c) => policy::run(c).await,
        Command::Registers(c) => registers::run(c).await,
    }
}

fn main() -> ExitCode {
    // `completions SHELL`, `man DIR`: what the packages install (runtime/src/docs.rs).
    if let Some(code) = commscan_runtime::docs::generate_if_asked::<Cli>() {
        return code;
    }
    let cli = Cli::parse();
    Main {
        name: "commscanctl",
        default_log: "warn",
        threads: Threads::Current,
        log_format: commscan_runtime::bootstrap::LogFormat::from_env(),
    }
    .run(run(cli))
}
