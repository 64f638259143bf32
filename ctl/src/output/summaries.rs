//! Organisation and fleet summaries, and verdict-change events.

use super::{Format, csv_field, paint, rows, status_text, table, text, time_text};
use commscan_core::verdict::Status;
use commscan_proto::v1;
use serde::Serialize;
use std::fmt::Write;

/// An organisation summary as printed in JSON.
#[derive(Debug, Serialize)]
pub struct SummaryOut {
    /// Organisation.
    pub organisation: String,
    /// Devices.
    pub devices: u64,
    /// Percent compliant.
    pub percent_compliant: f64,
    /// Devices per status.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Per product: devices and violating devices.
    pub by_product: Vec<ProductOut>,
}

/// Per product counts.
#[derive(Debug, Serialize)]
pub struct ProductOut {
    /// Product.
    pub product: String,
    /// Devices.
    pub devices: u64,
    /// Violating devices.
    pub violating: u64,
}

/// Converts a summary response.
pub fn summary_out(r: &v1::OrganisationSummaryResponse) -> SummaryOut {
    SummaryOut {
        organisation: r.organisation.clone(),
        devices: r.devices,
        percent_compliant: (r.percent_compliant * 10.0).round() / 10.0,
        by_status: r
            .by_status
            .iter()
            .map(|s| (status_text(s.status), s.devices))
            .collect(),
        by_product: r
            .by_product
            .iter()
            .map(|p| ProductOut {
                product: p.product.clone(),
                devices: p.devices,
                violating: p.violating,
            })
            .collect(),
    }
}

/// Renders a summary.
pub fn summary(s: &SummaryOut, format: Format, colour: bool) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(s).expect("serialises") + "\n",
        Format::Csv => {
            let mut out = String::from("organisation,kind,key,devices,violating\n");
            for (k, v) in &s.by_status {
                let _ = writeln!(out, "{},status,{},{},", csv_field(&s.organisation), k, v);
            }
            for p in &s.by_product {
                let _ = writeln!(
                    out,
                    "{},product,{},{},{}",
                    csv_field(&s.organisation),
                    p.product,
                    p.devices,
                    p.violating
                );
            }
            out
        }
        Format::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "organisation {}: {} devices, {:.1}% compliant\n",
                text(&s.organisation),
                s.devices,
                s.percent_compliant
            );
            let rows: Vec<Vec<String>> = s
                .by_status
                .iter()
                .map(|(k, v)| vec![k.clone(), v.to_string()])
                .collect();
            out.push_str(&table(&["STATUS", "DEVICES"], &rows, Some(0), colour));
            if !s.by_product.is_empty() {
                out.push('\n');
                let rows: Vec<Vec<String>> = s
                    .by_product
                    .iter()
                    .map(|p| {
                        vec![
                            p.product.clone(),
                            p.devices.to_string(),
                            p.violating.to_string(),
                        ]
                    })
                    .collect();
                out.push_str(&table(
                    &["PRODUCT", "DEVICES", "VIOLATING"],
                    &rows,
                    None,
                    false,
                ));
            }
            out
        }
    }
}

/// Renders a fleet summary.
pub fn fleet(r: &v1::FleetSummaryResponse, format: Format, colour: bool) -> String {
    let count = |list: &[v1::StatusCount], s: Status| {
        list.iter()
            .find(|c| c.status == commscan_proto::convert::status_to_wire(s))
            .map(|c| c.devices)
            .unwrap_or(0)
    };
    let body: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                if row.enterprise.is_empty() {
                    "-".into()
                } else {
                    row.enterprise.clone()
                },
                row.organisation.clone(),
                row.devices.to_string(),
                format!("{:.1}", row.percent_compliant),
                count(&row.by_status, Status::Noncompliant).to_string(),
                // A stale federated row's devices all count as stale, as in the totals.
                if row.stale {
                    row.devices
                } else {
                    count(&row.by_status, Status::Stale)
                }
                .to_string(),
                row.updated_at
                    .as_ref()
                    .and_then(|t| {
                        time_text(Some(&prost_types::Timestamp {
                            seconds: t.seconds,
                            nanos: 0,
                        }))
                    })
                    .unwrap_or_else(|| "live".into()),
                if row.stale {
                    "stale".into()
                } else {
                    "fresh".into()
                },
            ]
        })
        .collect();
    let header = [
        "ENTERPRISE",
        "ORG",
        "DEVICES",
        "% COMPLIANT",
        "NONCOMPLIANT",
        "STALE DEVICES",
        "UPDATED",
        "FRESHNESS",
    ];
    match format {
        Format::Table => {
            let mut s = table(&header, &body, None, colour);
            let _ = write!(
                s,
                "\n{} organisations, {} devices, {:.1}% compliant",
                r.rows.len(),
                r.total_devices,
                r.percent_compliant
            );
            let stale_rows = r.rows.iter().filter(|row| row.stale).count();
            if stale_rows > 0 {
                let _ = write!(
                    s,
                    "; {stale_rows} organisations stale (their enterprise missed its reporting window), {} devices counted as stale",
                    count(&r.total_by_status, Status::Stale)
                );
            }
            s.push('\n');
            s
        }
        _ => rows(&header, &body, format),
    }
}

/// Renders one verdict-change event as a line.
pub fn event(e: &v1::Event, format: Format, colour: bool) -> String {
    let at = time_text(e.at.as_ref()).unwrap_or_default();
    match format {
        Format::Json => {
            serde_json::json!({
                "at": at, "device_id": e.device_id, "organisation": e.organisation, "hostname": e.hostname,
                "from": status_text(e.from), "to": status_text(e.to), "products": e.products,
            })
            .to_string()
                + "\n"
        }
        Format::Csv => format!(
            "{},{},{},{},{},{},{}\n",
            at,
            csv_field(&e.device_id),
            csv_field(&e.organisation),
            csv_field(&e.hostname),
            status_text(e.from),
            status_text(e.to),
            csv_field(&e.products.join(" "))
        ),
        Format::Table => format!(
            "{at}  {}  {} ({})  {} -> {}  {}\n",
            text(&e.organisation),
            text(&e.hostname),
            text(&e.device_id),
            status_text(e.from),
            paint(&status_text(e.to), colour),
            text(&e.products.join(", "))
        ),
    }
}
