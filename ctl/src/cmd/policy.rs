//! `policy check|test`: a policy validated against the catalog (every problem with its line
//! and key), or tried on a saved scan, offline; `policy apply|history|text|rollback`: the
//! policies kept in the collector's store ([`super::rules`]).

use super::colour;
use anyhow::Context;
use clap::Subcommand;
use commscan_core::catalog::Catalog;
use commscan_core::policy::Policy;
use commscan_core::register::Registers;
use commscan_core::scan::ScanReport;
use commscan_core::verdict::Subject;
use commscan_ctl::output;
use commscan_runtime::outln;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
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
    #[command(flatten)]
    Stored(super::rules::Stored),
}

pub(crate) async fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Stored(s) => {
            return super::rules::run(commscan_proto::v1::RulesKind::Policy, s).await;
        }
        PolicyCommand::Check { file } => match load_policy(&file) {
            Ok((_, p)) => {
                outln!(
                    "{}: ok (policy '{}', {} rules, {} waivers)",
                    file.display(),
                    p.id,
                    p.rules.len(),
                    p.waivers.len()
                )?;
                for w in p.warnings() {
                    eprintln!("{}: warning: {w}", file.display());
                }
            }
            Err(e) => {
                eprintln!("{e:#}");
                return Ok(ExitCode::from(2));
            }
        },
        PolicyCommand::Test { file, scan } => {
            let (_, policy) = load_policy(&file)?;
            let text = std::fs::read_to_string(&scan)
                .with_context(|| format!("{}: cannot read", scan.display()))?;
            let report: ScanReport = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not a `commscan-agent scan --output json` result",
                    scan.display()
                )
            })?;
            let first_seen = BTreeMap::new();
            let verdict = policy.judge(
                Subject {
                    device_id: "",
                    organisation: "",
                    first_seen: &first_seen,
                },
                &report.findings,
                time::OffsetDateTime::now_utc(),
            );
            outln!(
                "{} under policy '{}': {}",
                scan.display(),
                policy.id,
                output::paint(verdict.status.as_str(), colour())
            )?;
            for r in &verdict.reasons {
                outln!(
                    "  [{}] {}",
                    serde_json::to_value(r.kind)?.as_str().unwrap_or(""),
                    r.text
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_policy(file: &std::path::Path) -> anyhow::Result<(Catalog, Policy)> {
    let catalog = Catalog::embedded();
    let registers = Registers::embedded(&catalog)?;
    let policy = Policy::from_file(file, &catalog, &registers)?;
    Ok((catalog, policy))
}
