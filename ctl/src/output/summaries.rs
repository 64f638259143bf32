//! Organisation and fleet summaries, and verdict-change events.

use super::{Format, csv_field, paint, status_text, table, text, time_text};
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
    /// End-of-day counts, oldest first (empty for an enterprise's organisation seen from a
    /// ministry: federation carries current counts only).
    pub trend: Vec<DayOut>,
    /// The enterprise collector a federated row came from; absent for local organisations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<String>,
}

/// One day of an organisation's trend.
#[derive(Debug, Serialize)]
pub struct DayOut {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Devices at the end of the day.
    pub devices: u64,
    /// Percent compliant (waived included).
    pub percent_compliant: f64,
    /// Devices per status.
    pub by_status: std::collections::BTreeMap<String, u64>,
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
        trend: r
            .trend
            .iter()
            .map(|d| DayOut {
                day: d.day.clone(),
                devices: d.by_status.iter().map(|s| s.devices).sum(),
                percent_compliant: (d.percent_compliant * 10.0).round() / 10.0,
                by_status: d
                    .by_status
                    .iter()
                    .map(|s| (status_text(s.status), s.devices))
                    .collect(),
            })
            .collect(),
        enterprise: None,
    }
}

/// A fleet row (an enterprise's organisation on a ministry collector) as a summary: counts
/// by status, no products, no trend.
pub fn summary_of_fleet_row(row: &v1::FleetRow) -> SummaryOut {
    SummaryOut {
        organisation: row.organisation.clone(),
        devices: row.devices,
        percent_compliant: (row.percent_compliant * 10.0).round() / 10.0,
        by_status: row
            .by_status
            .iter()
            .map(|s| (status_text(s.status), s.devices))
            .collect(),
        by_product: Vec::new(),
        trend: Vec::new(),
        enterprise: Some(row.enterprise.clone()).filter(|e| !e.is_empty()),
    }
}

/// A one-line sparkline of percentages (0-100): one block a value, low to high.
pub fn sparkline(values: &[f64]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values
        .iter()
        .map(|v| BLOCKS[((v.clamp(0.0, 100.0) / 100.0) * 7.0).round() as usize])
        .collect()
}

/// Several summaries: JSON an array, CSV one header, tables one after another.
pub fn summaries(list: &[SummaryOut], format: Format, terminal: bool) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(list).expect("serialises") + "\n",
        Format::Csv => {
            let mut out = String::new();
            for (i, s) in list.iter().enumerate() {
                let one = summary(s, format, terminal);
                out.push_str(if i == 0 {
                    &one
                } else {
                    one.split_once('\n').map_or("", |(_, rest)| rest)
                });
            }
            out
        }
        Format::Table => list
            .iter()
            .map(|s| summary(s, format, terminal))
            .collect::<Vec<_>>()
            .join("\n"),
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
            // A day's `violating` is its noncompliant devices.
            for d in &s.trend {
                let _ = writeln!(
                    out,
                    "{},trend,{},{},{}",
                    csv_field(&s.organisation),
                    csv_field(&d.day),
                    d.devices,
                    d.by_status.get("noncompliant").copied().unwrap_or(0)
                );
            }
            out
        }
        Format::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "organisation {}{}: {} devices, {:.1}% compliant\n",
                text(&s.organisation),
                s.enterprise
                    .as_deref()
                    .map(|e| format!(" (enterprise {})", text(e)))
                    .unwrap_or_default(),
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
            if !s.trend.is_empty() {
                out.push('\n');
                let rows: Vec<Vec<String>> = s
                    .trend
                    .iter()
                    .map(|d| {
                        let n = |k: &str| d.by_status.get(k).copied().unwrap_or(0).to_string();
                        vec![
                            d.day.clone(),
                            d.devices.to_string(),
                            format!("{:.1}", d.percent_compliant),
                            n("noncompliant"),
                            n("waived"),
                            n("stale"),
                        ]
                    })
                    .collect();
                out.push_str(&table(
                    &[
                        "DAY",
                        "DEVICES",
                        "% COMPLIANT",
                        "NONCOMPLIANT",
                        "WAIVED",
                        "STALE",
                    ],
                    &rows,
                    None,
                    false,
                ));
                // On a terminal, the trend at a glance.
                if colour {
                    let values: Vec<f64> = s.trend.iter().map(|d| d.percent_compliant).collect();
                    let _ = writeln!(
                        out,
                        "\n% compliant  {}  {:.1}% -> {:.1}%",
                        sparkline(&values),
                        values[0],
                        values[values.len() - 1]
                    );
                }
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
    use serde_json::{Value, json};
    let body: Vec<Vec<Value>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                if row.enterprise.is_empty() {
                    Value::Null
                } else {
                    json!(row.enterprise)
                },
                json!(row.organisation),
                json!(row.devices),
                json!((row.percent_compliant * 10.0).round() / 10.0),
                json!(count(&row.by_status, Status::Noncompliant)),
                json!(count(&row.by_status, Status::Waived)),
                // A stale federated row's devices all count as stale, as in the totals.
                json!(if row.stale {
                    row.devices
                } else {
                    count(&row.by_status, Status::Stale)
                }),
                row.updated_at
                    .as_ref()
                    .and_then(|t| time_text(Some(t)))
                    .map(Value::String)
                    .unwrap_or(Value::Null),
                json!(if row.stale { "stale" } else { "fresh" }),
            ]
        })
        .collect();
    let columns: [super::Column; 9] = [
        ("ENTERPRISE", "enterprise"),
        ("ORG", "organisation"),
        ("DEVICES", "devices"),
        ("% COMPLIANT", "percent_compliant"),
        ("NONCOMPLIANT", "noncompliant"),
        ("WAIVED", "waived"),
        ("STALE DEVICES", "stale_devices"),
        ("UPDATED", "updated_at"),
        ("FRESHNESS", "freshness"),
    ];
    match format {
        Format::Table => {
            let _ = colour;
            let mut s = super::records(&columns, &body, format);
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
        _ => super::records(&columns, &body, format),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sparkline_rises_with_compliance() {
        assert_eq!(sparkline(&[0.0, 50.0, 100.0, 140.0]), "▁▅██");
        assert_eq!(sparkline(&[]), "");
    }
}
