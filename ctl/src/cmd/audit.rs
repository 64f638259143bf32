//! `audit`: the audit log, oldest first from a position.

use super::{Conn, colour, time_text};
use clap::Args;
use commscan_ctl::output;
use commscan_proto::v1;
use commscan_runtime::out;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    conn: Conn,
    /// Entries after this position.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let AuditArgs { conn, after, limit } = args;
    let r = conn
        .connection()?
        .admin()
        .await?
        .list_audit(v1::ListAuditRequest { after, limit })
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = r
        .entries
        .iter()
        .map(|e| {
            vec![
                e.position.to_string(),
                time_text(e.at.as_ref()),
                e.actor.clone(),
                e.action.clone(),
                if e.organisation.is_empty() {
                    "-".into()
                } else {
                    e.organisation.clone()
                },
                if e.allowed {
                    "allowed".into()
                } else {
                    "denied".into()
                },
                e.detail.clone(),
            ]
        })
        .collect();
    let header = [
        "POSITION",
        "AT",
        "ACTOR",
        "ACTION",
        "ORGANISATION",
        "OUTCOME",
        "DETAIL",
    ];
    out!(
        "{}",
        output::rows_painted(&header, &rows, conn.output, Some(5), colour())
    )?;
    Ok(ExitCode::SUCCESS)
}
