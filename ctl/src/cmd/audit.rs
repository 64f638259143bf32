//! `audit`: the audit log, newest first (or `--reverse`, oldest first), filtered by person,
//! action and time. Positions are the log's own: stable, and contiguous as entries are added.

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
    /// Only entries after this position.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many entries (the newest; with --reverse, the oldest).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Oldest first: page forward with `--after` the last position shown.
    #[arg(long)]
    reverse: bool,
    /// Only this person: a name (every person of that name), a person id or a prefix of one.
    #[arg(long)]
    person: Option<String>,
    /// Only this action (`tokens.create`) or group of actions (`tokens`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries at or after this time: RFC 3339, a date (YYYY-MM-DD, UTC) or an age (2h, 7d).
    #[arg(long, value_parser = super::parse_when)]
    since: Option<time::OffsetDateTime>,
    /// Only entries before this time (same forms as --since).
    #[arg(long, value_parser = super::parse_when)]
    until: Option<time::OffsetDateTime>,
}

pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let AuditArgs {
        conn,
        after,
        limit,
        reverse,
        person,
        action,
        since,
        until,
    } = args;
    let r = conn
        .connection()?
        .admin()
        .await?
        .list_audit(v1::ListAuditRequest {
            after,
            limit,
            newest_first: !reverse,
            person: person.unwrap_or_default(),
            action: action.unwrap_or_default(),
            since: since.map(commscan_proto::convert::timestamp),
            until: until.map(commscan_proto::convert::timestamp),
        })
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
    let text = match conn.output {
        output::Format::Table => {
            output::rows_painted(&header, &rows, conn.output, Some(5), colour())
        }
        // Scripts get the position as a number and no organisation as null.
        format => {
            let typed: Vec<Vec<serde_json::Value>> = r
                .entries
                .iter()
                .zip(&rows)
                .map(|(e, row)| {
                    let mut v: Vec<serde_json::Value> =
                        row.iter().map(|c| c.clone().into()).collect();
                    v[0] = e.position.into();
                    if e.organisation.is_empty() {
                        v[4] = serde_json::Value::Null;
                    }
                    v
                })
                .collect();
            let columns = [
                ("POSITION", "position"),
                ("AT", "at"),
                ("ACTOR", "actor"),
                ("ACTION", "action"),
                ("ORGANISATION", "organisation"),
                ("OUTCOME", "outcome"),
                ("DETAIL", "detail"),
            ];
            output::records(&columns, &typed, format)
        }
    };
    out!("{text}")?;
    Ok(ExitCode::SUCCESS)
}
