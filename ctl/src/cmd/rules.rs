//! `policy|catalog|registers apply|history|text|rollback`: the rules kept in the collector's
//! store. One set of subcommands, shared by the three groups, differing only in the kind of
//! rules they name. Text from the collector (diffs, names, authors) is made terminal-safe
//! line by line before it is printed.

use super::{Conn, time_text};
use anyhow::Context;
use clap::Subcommand;
use commscan_ctl::output::{self, Format};
use commscan_proto::v1;
use commscan_runtime::{out, outln};
use std::path::PathBuf;
use std::process::ExitCode;

/// The subcommands on the collector's stored rules.
#[derive(Subcommand)]
pub(crate) enum Stored {
    /// Validate a file on the collector against everything else in force, store it as a new
    /// version, put it in force on every collector and re-judge devices; prints the diff.
    Apply {
        #[command(flatten)]
        conn: Conn,
        /// The file.
        file: PathBuf,
        /// For a policy: the organisation whose own policy this is (default: the default
        /// policy, which judges every organisation without one).
        #[arg(long)]
        org: Option<String>,
    },
    /// Stored versions, newest first: who applied each and when.
    History {
        #[command(flatten)]
        conn: Conn,
        /// For a policy: the organisation.
        #[arg(long)]
        org: Option<String>,
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print the text in force, or a stored version's.
    Text {
        #[command(flatten)]
        conn: Conn,
        /// For a policy: the organisation.
        #[arg(long)]
        org: Option<String>,
        /// A stored version (default: what is in force).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Apply a stored version's text again, as a new version.
    Rollback {
        #[command(flatten)]
        conn: Conn,
        /// The version to go back to (from `history`).
        version: u64,
        /// For a policy: the organisation.
        #[arg(long)]
        org: Option<String>,
    },
}

fn scope(kind: v1::RulesKind, org: &str) -> String {
    match (kind, org) {
        (v1::RulesKind::Policy, "") => "default policy".into(),
        (v1::RulesKind::Policy, org) => format!("policy of {}", output::text(org)),
        (v1::RulesKind::Catalog, _) => "catalog".into(),
        _ => "registers".into(),
    }
}

fn print_applied(
    kind: v1::RulesKind,
    org: &str,
    r: &v1::ApplyRulesResponse,
    format: Format,
) -> std::io::Result<()> {
    let what = scope(kind, org);
    if let Format::Json = format {
        outln!(
            "{}",
            serde_json::json!({
                "rules": what,
                "version": r.version.as_ref().map(|v| v.version),
                "unchanged": r.version.is_none(),
                "lines_added": r.lines_added,
                "lines_removed": r.lines_removed,
                "devices": r.devices,
                "changed": r.changed,
                "diff": r.diff,
            })
        )?;
        return Ok(());
    }
    let Some(v) = &r.version else {
        outln!("{what}: unchanged (the text is what is in force); nothing stored")?;
        return Ok(());
    };
    outln!(
        "{what}: version {} stored by {} at {} (+{} -{} lines); {} devices re-judged, {} changed status",
        v.version,
        output::text(&v.author),
        time_text(v.at.as_ref()),
        r.lines_added,
        r.lines_removed,
        r.devices,
        r.changed
    )?;
    for line in r.diff.lines() {
        outln!("{}", output::text(line))?;
    }
    Ok(())
}

pub(crate) async fn run(kind: v1::RulesKind, command: Stored) -> anyhow::Result<ExitCode> {
    match command {
        Stored::Apply { conn, file, org } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            let org = org.unwrap_or_default();
            let r = conn
                .connection()?
                .admin()
                .await?
                .apply_rules(v1::ApplyRulesRequest {
                    kind: kind as i32,
                    organisation: org.clone(),
                    text,
                    note: file.display().to_string(),
                })
                .await?
                .into_inner();
            print_applied(kind, &org, &r, conn.output)?;
        }
        Stored::Rollback { conn, version, org } => {
            let org = org.unwrap_or_default();
            let r = conn
                .connection()?
                .admin()
                .await?
                .rollback_rules(v1::RollbackRulesRequest {
                    kind: kind as i32,
                    organisation: org.clone(),
                    version,
                })
                .await?
                .into_inner();
            print_applied(kind, &org, &r, conn.output)?;
        }
        Stored::History { conn, org, limit } => {
            let org = org.unwrap_or_default();
            let r = conn
                .connection()?
                .admin()
                .await?
                .rules_history(v1::RulesHistoryRequest {
                    kind: kind as i32,
                    organisation: org.clone(),
                    limit,
                })
                .await?
                .into_inner();
            if r.versions.is_empty() && !matches!(conn.output, Format::Json) {
                outln!(
                    "{}: no stored versions (the collector's files are in force)",
                    scope(kind, &org)
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = r
                .versions
                .iter()
                .map(|v| {
                    vec![
                        v.version.to_string(),
                        time_text(v.at.as_ref()),
                        v.author.clone(),
                        v.note.clone(),
                        v.sha256.chars().take(16).collect(),
                    ]
                })
                .collect();
            let header = ["VERSION", "AT", "BY", "NOTE", "SHA256"];
            out!("{}", output::rows(&header, &rows, conn.output))?;
        }
        Stored::Text { conn, org, version } => {
            let r = conn
                .connection()?
                .admin()
                .await?
                .get_rules(v1::GetRulesRequest {
                    kind: kind as i32,
                    organisation: org.unwrap_or_default(),
                    version: version.unwrap_or(0),
                })
                .await?
                .into_inner();
            match conn.output {
                Format::Json => outln!(
                    "{}",
                    serde_json::json!({
                        "name": r.name,
                        "version": r.version.as_ref().map(|v| v.version),
                        "text": r.text,
                    })
                )?,
                _ => {
                    for line in r.text.lines() {
                        outln!("{}", output::text(line))?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
