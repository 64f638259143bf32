//! `devices` (list, filtered), `devices revoke`, `devices remove`, and `device ID` (one
//! device's verdict, reasons and evidence).

use super::{Conn, colour};
use clap::{Args, Subcommand};
use commscan_core::platform::Platform;
use commscan_core::verdict::Status;
use commscan_ctl::output;
use commscan_proto::{convert, v1};
use commscan_runtime::{out, outln};
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct DevicesArgs {
    #[command(subcommand)]
    action: Option<DevicesAction>,
    #[command(flatten)]
    conn: Conn,
    /// Only this organisation.
    #[arg(long)]
    org: Option<String>,
    /// Only this status (compliant, noncompliant, waived, stale, unknown), or `revoked`.
    /// Revoked devices are listed under `revoked` only, never under their last verdict.
    #[arg(long, value_parser = parse_status)]
    status: Option<StatusFilter>,
    /// Only devices with this product.
    #[arg(long)]
    product: Option<String>,
    /// Only devices of this platform (linux, macos, windows).
    #[arg(long)]
    platform: Option<Platform>,
    /// Stop after this many rows (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
}

/// `--status`: a verdict, or revoked (not a verdict: a device taken out of service).
#[derive(Debug, Clone, Copy)]
enum StatusFilter {
    Verdict(Status),
    Revoked,
}

fn parse_status(s: &str) -> Result<StatusFilter, String> {
    if s.eq_ignore_ascii_case("revoked") {
        return Ok(StatusFilter::Revoked);
    }
    s.parse::<Status>().map(StatusFilter::Verdict).map_err(|_| {
        commscan_core::suggest::unknown(
            "status",
            s,
            [
                "compliant",
                "noncompliant",
                "waived",
                "stale",
                "unknown",
                "revoked",
            ],
        )
    })
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Remove a revoked, decommissioned device: its record and history are deleted.
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// Device id, or an unambiguous prefix of one.
        id: String,
    },
    /// Revoke a device: refused from its next connection on; its history stays.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        /// Device id, or an unambiguous prefix of one.
        id: String,
    },
}

#[derive(Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    conn: Conn,
    /// Device id, or an unambiguous prefix of one.
    id: String,
    /// Only history at or after this time: RFC 3339, a date (YYYY-MM-DD, UTC) or an age (2h, 7d).
    #[arg(long, value_parser = super::parse_when)]
    since: Option<time::OffsetDateTime>,
    /// Only history before this time (same forms as --since).
    #[arg(long, value_parser = super::parse_when)]
    until: Option<time::OffsetDateTime>,
}

/// Shortest id prefix accepted for a change that cannot be undone (revoke, remove): a prefix of
/// one or two characters names whichever device happens to start with it.
const MIN_CHANGE_PREFIX: usize = 8;

/// `id`, when long enough to name the device of an irreversible change.
fn changing(id: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        id.chars().count() >= MIN_CHANGE_PREFIX,
        "'{}': give at least {MIN_CHANGE_PREFIX} characters of the device id to revoke or remove it",
        commscan_ctl::output::text(id)
    );
    Ok(id.to_owned())
}

/// Lists devices page by page, or runs the revoke/remove action.
pub(crate) async fn run(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        None => list(args).await?,
        Some(DevicesAction::Remove { conn, id }) => {
            let id = super::resolve_device(&conn, &changing(&id)?).await?;
            conn.connection()?
                .admin()
                .await?
                .remove_device(v1::RemoveDeviceRequest {
                    device_id: id.clone(),
                })
                .await?;
            outln!("device {id} removed with its history")?;
        }
        Some(DevicesAction::Revoke { conn, id }) => {
            let id = super::resolve_device(&conn, &changing(&id)?).await?;
            conn.connection()?
                .admin()
                .await?
                .revoke_device(v1::RevokeDeviceRequest {
                    device_id: id.clone(),
                })
                .await?;
            outln!(
                "device {id} revoked: it is refused from its next connection; its history stays"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: DevicesArgs) -> anyhow::Result<()> {
    let DevicesArgs {
        conn,
        org,
        status,
        product,
        platform,
        limit,
        ..
    } = args;
    let mut client = conn.connection()?.query().await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_devices(v1::ListDevicesRequest {
                organisation: org.clone().unwrap_or_default(),
                status: match status {
                    Some(StatusFilter::Verdict(s)) => convert::status_to_wire(s),
                    _ => 0,
                },
                revoked: matches!(status, Some(StatusFilter::Revoked)),
                product: product.clone().unwrap_or_default(),
                page_size: 1000,
                page_token: token,
                platform: platform.map(convert::platform_to_wire).unwrap_or_default(),
            })
            .await?
            .into_inner();
        rows.extend(page.devices.iter().map(output::device_out));
        token = page.next_page_token;
        if token.is_empty() || (limit > 0 && rows.len() >= limit) {
            break;
        }
    }
    if limit > 0 {
        rows.truncate(limit);
    }
    out!("{}", output::devices(&rows, conn.output, colour()))?;
    Ok(())
}

/// `device ID`: one device in detail.
pub(crate) async fn show(args: DeviceArgs) -> anyhow::Result<ExitCode> {
    let DeviceArgs {
        conn,
        id,
        since,
        until,
    } = args;
    let id = super::resolve_device(&conn, &id).await?;
    // The collector cuts the window (the latest 200 events of it).
    let d = conn
        .connection()?
        .query()
        .await?
        .get_device(v1::GetDeviceRequest {
            device_id: id,
            history_since: since.map(convert::timestamp),
            history_until: until.map(convert::timestamp),
        })
        .await?
        .into_inner();
    out!(
        "{}",
        output::device_detail(&output::device_detail_out(&d), conn.output, colour())
    )?;
    Ok(ExitCode::SUCCESS)
}
