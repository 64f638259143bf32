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
    /// Organisation (default: every organisation you may see; on a ministry collector,
    /// enterprises' organisations too, with their current counts).
    #[arg(long)]
    org: Option<String>,
    /// Days of daily trend to show (a table; on a terminal, a sparkline too).
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
    /// Only this organisation (on a ministry collector, an enterprise's too).
    #[arg(long)]
    org: Option<String>,
}

pub(crate) async fn summary(args: SummaryArgs) -> anyhow::Result<ExitCode> {
    let SummaryArgs { conn, org, days } = args;
    let mut client = conn.connection()?.query().await?;
    let fleet = client
        .fleet_summary(v1::FleetSummaryRequest {})
        .await
        .map(|r| r.into_inner().rows);
    let mut list = Vec::new();
    // Local organisations from their own summaries (with products and trend); an enterprise's
    // organisation on a ministry collector from the fleet row federation delivered.
    let wanted: Vec<v1::FleetRow> = match &org {
        Some(org) => {
            let local = client
                .organisation_summary(v1::OrganisationSummaryRequest {
                    organisation: org.clone(),
                    trend_days: days,
                })
                .await;
            match local {
                Ok(s) => {
                    list.push(output::summary_out(&s.into_inner()));
                    Vec::new()
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    let rows: Vec<v1::FleetRow> = fleet
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| &r.organisation == org && !r.enterprise.is_empty())
                        .collect();
                    if rows.is_empty() {
                        return Err(e.into());
                    }
                    rows
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => fleet?,
    };
    for row in wanted {
        if row.enterprise.is_empty() {
            let s = client
                .organisation_summary(v1::OrganisationSummaryRequest {
                    organisation: row.organisation.clone(),
                    trend_days: days,
                })
                .await?
                .into_inner();
            list.push(output::summary_out(&s));
        } else {
            list.push(output::summary_of_fleet_row(&row));
        }
    }
    let text = match (&org, list.as_slice()) {
        // One organisation asked for by name: one object, as before.
        (Some(_), [one]) => output::summary(one, conn.output, colour()),
        _ => output::summaries(&list, conn.output, colour()),
    };
    out!("{text}")?;
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
        .product_findings(v1::ProductFindingsRequest {
            organisation: args.org.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let rows: Vec<Vec<serde_json::Value>> = r
        .products
        .iter()
        .map(|p| {
            vec![
                p.product.clone().into(),
                p.devices.into(),
                p.violating.into(),
            ]
        })
        .collect();
    let columns = [
        ("PRODUCT", "product"),
        ("DEVICES", "devices"),
        ("VIOLATING", "violating"),
    ];
    out!("{}", output::records(&columns, &rows, conn.output))?;
    Ok(ExitCode::SUCCESS)
}
