//! Aggregates: `summary` (one organisation, with its daily trend), `fleet` (one row per
//! organisation, enterprises' included on a ministry collector) and `products`.

use super::{Conn, colour};
use clap::Args;
use commscan_ctl::output;
use commscan_proto::v1;
use commscan_runtime::out;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct SummaryArgs {
    #[command(flatten)]
    conn: Conn,
    /// Organisation.
    #[arg(long, default_value = "default")]
    org: String,
    /// Days of trend to show.
    #[arg(long, default_value_t = 14)]
    days: u32,
}

#[derive(Args)]
pub(crate) struct FleetArgs {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub(crate) struct ProductsArgs {
    #[command(flatten)]
    conn: Conn,
}

pub(crate) async fn summary(args: SummaryArgs) -> anyhow::Result<ExitCode> {
    let SummaryArgs { conn, org, days } = args;
    let s = conn
        .connection()?
        .query()
        .await?
        .organisation_summary(v1::OrganisationSummaryRequest {
            organisation: org,
            trend_days: days,
        })
        .await?
        .into_inner();
    out!(
        "{}",
        output::summary(&output::summary_out(&s), conn.output, colour())
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn fleet(args: FleetArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn;
    let r = conn
        .connection()?
        .query()
        .await?
        .fleet_summary(v1::FleetSummaryRequest {})
        .await?
        .into_inner();
    out!("{}", output::fleet(&r, conn.output, colour()))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn products(args: ProductsArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn;
    let r = conn
        .connection()?
        .query()
        .await?
        .product_findings(v1::ProductFindingsRequest {})
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = r
        .products
        .iter()
        .map(|p| {
            vec![
                p.product.clone(),
                p.devices.to_string(),
                p.violating.to_string(),
            ]
        })
        .collect();
    out!(
        "{}",
        output::rows(&["PRODUCT", "DEVICES", "VIOLATING"], &rows, conn.output)
    )?;
    Ok(ExitCode::SUCCESS)
}
