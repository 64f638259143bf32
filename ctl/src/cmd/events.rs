//! Streams: `watch` (verdict changes as they happen) and `export` (every visible device as
//! CSV or JSON lines, written as the collector sends it, never held whole).

use super::{Conn, colour};
use clap::Args;
use commscan_core::verdict::Status;
use commscan_ctl::output::{self, Format};
use commscan_proto::{convert, v1};
use commscan_runtime::out;
use std::io::Write;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only this organisation.
    #[arg(long)]
    org: Option<String>,
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only this organisation.
    #[arg(long)]
    org: Option<String>,
    /// Only this status.
    #[arg(long)]
    status: Option<Status>,
}

pub(crate) async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let WatchArgs { conn, org } = args;
    let mut stream = conn
        .connection()?
        .query()
        .await?
        .watch_events(v1::WatchEventsRequest {
            organisation: org.unwrap_or_default(),
        })
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        let line = output::event(&e, conn.output, colour());
        out!("{line}")?;
        std::io::stdout().flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let ExportArgs { conn, org, status } = args;
    let format = match conn.output {
        Format::Json => "json",
        _ => "csv",
    };
    let mut stream = conn
        .connection()?
        .query()
        .await?
        .export_devices(v1::ExportDevicesRequest {
            format: format.into(),
            organisation: org.unwrap_or_default(),
            status: status.map(convert::status_to_wire).unwrap_or_default(),
        })
        .await?
        .into_inner();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
