//! Rendering query results as a table (default; statuses coloured on a terminal), JSON or
//! CSV. JSON and CSV field names are stable for scripts.

use commscan_core::verdict::Status;
use commscan_proto::convert;
use commscan_proto::v1;
use serde::Serialize;
use std::fmt::Write;
use time::format_description::well_known::Rfc3339;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
    /// CSV for spreadsheets.
    Csv,
}

/// A device row as printed.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceOut {
    /// Device id.
    pub device_id: String,
    /// Organisation.
    pub organisation: String,
    /// Host name.
    pub hostname: String,
    /// Platform.
    pub platform: String,
    /// Status.
    pub status: String,
    /// Products behind the status.
    pub products: Vec<String>,
    /// Last report, RFC 3339.
    pub last_report: Option<String>,
    /// Agent version.
    pub agent_version: String,
}

fn time_text(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.and_then(|t| convert::from_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
}

fn status_text(v: i32) -> String {
    convert::status_from_wire(v)
        .ok()
        .flatten()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Converts a wire row.
pub fn device_out(r: &v1::DeviceRow) -> DeviceOut {
    DeviceOut {
        device_id: r.device_id.clone(),
        organisation: r.organisation.clone(),
        hostname: r.hostname.clone(),
        platform: convert::platform_from_wire(r.platform)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        status: status_text(r.status),
        products: r.products.clone(),
        last_report: time_text(r.last_report.as_ref()),
        agent_version: r.agent_version.clone(),
    }
}

/// Colours a status (or an audit outcome, allowed/denied) for a terminal.
pub fn paint(status: &str, colour: bool) -> String {
    if !colour {
        return status.to_owned();
    }
    let code = match (status, status.parse::<Status>()) {
        (_, Ok(Status::Compliant)) | ("allowed", _) => "32",
        (_, Ok(Status::Noncompliant)) | ("denied", _) => "31",
        (_, Ok(Status::Waived)) => "36",
        (_, Ok(Status::Stale)) | (_, Ok(Status::Unknown)) => "33",
        _ => return status.to_owned(),
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

/// Quotes a CSV field when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Aligns rows into columns. `widths` are computed from visible text; `paint_col` is coloured
/// after padding so escape codes do not break alignment.
pub fn table(
    header: &[&str],
    rows: &[Vec<String>],
    paint_col: Option<usize>,
    colour: bool,
) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: Vec<String>, s: &mut String, paint_it: bool| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            let text = if paint_it && Some(i) == paint_col {
                paint(&c, colour)
            } else {
                c
            };
            if i + 1 == n {
                let _ = write!(s, "{text}");
            } else {
                let _ = write!(s, "{text}{}  ", " ".repeat(pad));
            }
        }
        s.push('\n');
    };
    line(
        header.iter().map(|h| h.to_string()).collect(),
        &mut s,
        false,
    );
    for r in rows {
        line(r.clone(), &mut s, true);
    }
    s
}

/// Renders device rows.
pub fn devices(rows: &[DeviceOut], format: Format, colour: bool) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(rows).expect("serialises") + "\n",
        Format::Csv => {
            let mut s = String::from(
                "device_id,organisation,hostname,platform,status,products,last_report,agent_version\n",
            );
            for r in rows {
                let fields = [
                    r.device_id.clone(),
                    r.organisation.clone(),
                    r.hostname.clone(),
                    r.platform.clone(),
                    r.status.clone(),
                    r.products.join(" "),
                    r.last_report.clone().unwrap_or_default(),
                    r.agent_version.clone(),
                ];
                let _ = writeln!(
                    s,
                    "{}",
                    fields
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            s
        }
        Format::Table => {
            if rows.is_empty() {
                return "no devices match\n".into();
            }
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.device_id.clone(),
                        r.organisation.clone(),
                        r.hostname.clone(),
                        r.platform.clone(),
                        r.status.clone(),
                        if r.products.is_empty() {
                            "-".into()
                        } else {
                            r.products.join(", ")
                        },
                        r.last_report.clone().unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            table(
                &[
                    "DEVICE",
                    "ORG",
                    "HOST",
                    "PLATFORM",
                    "STATUS",
                    "PRODUCTS",
                    "LAST REPORT",
                ],
                &body,
                Some(4),
                colour,
            )
        }
    }
}

/// A device's detail as printed in JSON.
#[derive(Debug, Serialize)]
pub struct DeviceDetailOut {
    /// Row.
    #[serde(flatten)]
    pub device: DeviceOut,
    /// OS.
    pub os_version: String,
    /// Enrolled at.
    pub enrolled_at: Option<String>,
    /// Policy that judged.
    pub policy: String,
    /// Reasons.
    pub reasons: Vec<ReasonOut>,
    /// Findings.
    pub findings: Vec<commscan_core::scan::Finding>,
    /// Unclassified.
    pub unclassified: Vec<commscan_core::scan::Unclassified>,
    /// Source outcomes of the last scan.
    pub sources: std::collections::BTreeMap<String, String>,
    /// Revoked.
    pub revoked: bool,
    /// Why the device is flagged as a duplicate enrolment, if it is.
    pub duplicate: Option<String>,
    /// Recent history, oldest first.
    pub history: Vec<HistoryOut>,
    /// Waivers covering the device.
    pub waivers: Vec<WaiverOut>,
}

/// One history event as printed.
#[derive(Debug, Serialize)]
pub struct HistoryOut {
    /// When.
    pub at: String,
    /// What.
    pub kind: String,
    /// Product, for product events.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub product: String,
    /// Status change, for status events: "from -> to".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub change: String,
}

/// A waiver as printed.
#[derive(Debug, Serialize)]
pub struct WaiverOut {
    /// device or organisation.
    pub scope: String,
    /// Product.
    pub product: String,
    /// Why.
    pub reason: String,
    /// Who approved.
    pub approver: String,
    /// Expiry.
    pub expires: String,
    /// Whether it has expired.
    pub expired: bool,
}

/// One reason as printed.
#[derive(Debug, Serialize)]
pub struct ReasonOut {
    /// Product.
    pub product: String,
    /// Rule.
    pub rule: String,
    /// violation, waived or notice.
    pub kind: String,
    /// Sentence.
    pub text: String,
}

/// Converts a device detail response.
pub fn device_detail_out(d: &v1::GetDeviceResponse) -> DeviceDetailOut {
    let verdict = d.verdict.clone().unwrap_or_default();
    let domain = convert::verdict_from_wire(&verdict);
    DeviceDetailOut {
        device: device_out(&d.device.clone().unwrap_or_default()),
        os_version: d.os_version.clone(),
        enrolled_at: time_text(d.enrolled_at.as_ref()),
        policy: verdict.policy.clone(),
        reasons: domain
            .reasons
            .iter()
            .map(|r| ReasonOut {
                product: r.product.clone(),
                rule: r.rule.clone(),
                kind: serde_json::to_value(r.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                text: r.text.clone(),
            })
            .collect(),
        findings: d
            .findings
            .iter()
            .cloned()
            .filter_map(|f| convert::finding_from_wire(f).ok())
            .collect(),
        unclassified: d
            .unclassified
            .iter()
            .cloned()
            .map(convert::unclassified_from_wire)
            .collect(),
        sources: convert::stats_from_wire(d.stats.clone().unwrap_or_default())
            .sources
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
        revoked: d.revoked,
        duplicate: Some(d.duplicate.clone()).filter(|s| !s.is_empty()),
        history: d
            .history
            .iter()
            .map(|h| HistoryOut {
                at: time_text(h.at.as_ref()).unwrap_or_default(),
                kind: h.kind.clone(),
                product: h.product.clone(),
                change: if h.kind == "status_changed" || h.kind == "stale" {
                    format!("{} -> {}", status_text(h.from), status_text(h.to))
                } else {
                    String::new()
                },
            })
            .collect(),
        waivers: d
            .waivers
            .iter()
            .map(|w| WaiverOut {
                scope: w.scope.clone(),
                product: w.product.clone(),
                reason: w.reason.clone(),
                approver: w.approver.clone(),
                expires: time_text(w.expires.as_ref()).unwrap_or_default(),
                expired: w.expired,
            })
            .collect(),
    }
}

/// Renders a device's detail.
pub fn device_detail(d: &DeviceDetailOut, format: Format, colour: bool) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(d).expect("serialises") + "\n",
        Format::Csv => {
            let mut s =
                String::from("device_id,product,installed,running,version,verdict_reason\n");
            for f in &d.findings {
                let reason = d
                    .reasons
                    .iter()
                    .find(|r| r.product == f.product)
                    .map(|r| r.text.as_str())
                    .unwrap_or("");
                let fields = [
                    d.device.device_id.clone(),
                    f.product.clone(),
                    f.installed.to_string(),
                    f.running.to_string(),
                    f.version.clone().unwrap_or_default(),
                    reason.to_owned(),
                ];
                let _ = writeln!(
                    s,
                    "{}",
                    fields
                        .iter()
                        .map(|x| csv_field(x))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            s
        }
        Format::Table => {
            let mut s = String::new();
            let _ = writeln!(s, "device    {}", d.device.device_id);
            let _ = writeln!(
                s,
                "host      {} ({}, {})",
                d.device.hostname, d.device.platform, d.os_version
            );
            let _ = writeln!(s, "org       {}", d.device.organisation);
            let _ = writeln!(
                s,
                "status    {}  (policy {})",
                paint(&d.device.status, colour),
                if d.policy.is_empty() { "-" } else { &d.policy }
            );
            let _ = writeln!(
                s,
                "reported  {}",
                d.device
                    .last_report
                    .clone()
                    .unwrap_or_else(|| "never".into())
            );
            if d.revoked {
                let _ = writeln!(s, "REVOKED   refused at its next connection; history kept");
            }
            if let Some(why) = &d.duplicate {
                let _ = writeln!(s, "DUPLICATE {why}: revoke it and re-enrol each machine");
            }
            if !d.reasons.is_empty() {
                let _ = writeln!(s, "\nreasons:");
                for r in &d.reasons {
                    let _ = writeln!(s, "  [{}] {}", r.kind, r.text);
                }
            }
            if !d.findings.is_empty() {
                let _ = writeln!(s, "\nfindings:");
                let rows: Vec<Vec<String>> = d
                    .findings
                    .iter()
                    .map(|f| {
                        vec![
                            f.product.clone(),
                            if f.installed {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            if f.running { "yes".into() } else { "no".into() },
                            f.version.clone().unwrap_or_else(|| "-".into()),
                            f.evidence
                                .iter()
                                .map(|e| format!("{}: {}", e.source, e.detail))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ]
                    })
                    .collect();
                for l in table(
                    &["PRODUCT", "INSTALLED", "RUNNING", "VERSION", "EVIDENCE"],
                    &rows,
                    None,
                    false,
                )
                .lines()
                {
                    let _ = writeln!(s, "  {l}");
                }
            } else {
                let _ = writeln!(s, "\nno catalogued communication software found");
            }
            if !d.unclassified.is_empty() {
                let _ = writeln!(s, "\nunclassified candidates:");
                for u in &d.unclassified {
                    let _ = writeln!(s, "  {} ({}: {})", u.name, u.source, u.detail);
                }
            }
            if !d.waivers.is_empty() {
                let _ = writeln!(s, "\nwaivers:");
                for w in &d.waivers {
                    let _ = writeln!(
                        s,
                        "  {} ({}): {} — approved by {}, {} {}",
                        w.product,
                        w.scope,
                        w.reason,
                        w.approver,
                        if w.expired { "expired" } else { "until" },
                        w.expires
                    );
                }
            }
            if !d.history.is_empty() {
                let _ = writeln!(s, "\nhistory:");
                for h in &d.history {
                    let what = if h.product.is_empty() {
                        h.change.clone()
                    } else {
                        h.product.clone()
                    };
                    let _ = writeln!(s, "  {}  {:<16} {}", h.at, h.kind, what);
                }
            }
            let sources: Vec<String> = d.sources.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                s,
                "\nsources: {}",
                if sources.is_empty() {
                    "-".into()
                } else {
                    sources.join(", ")
                }
            );
            s
        }
    }
}

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
                s.organisation, s.devices, s.percent_compliant
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

/// Renders generic rows as a table, JSON (objects keyed by lowercased headers) or CSV.
pub fn rows(header: &[&str], rows: &[Vec<String>], format: Format) -> String {
    rows_painted(header, rows, format, None, false)
}

/// [`rows`], with one column's statuses coloured in tables on a terminal.
pub fn rows_painted(
    header: &[&str],
    rows: &[Vec<String>],
    format: Format,
    paint_col: Option<usize>,
    colour: bool,
) -> String {
    let keys: Vec<String> = header
        .iter()
        .map(|h| h.to_lowercase().replace(' ', "_"))
        .collect();
    match format {
        Format::Table => {
            if rows.is_empty() {
                return "nothing to show\n".into();
            }
            table(header, rows, paint_col, colour)
        }
        Format::Json => {
            let v: Vec<serde_json::Map<String, serde_json::Value>> = rows
                .iter()
                .map(|r| {
                    keys.iter()
                        .cloned()
                        .zip(r.iter().map(|c| serde_json::Value::String(c.clone())))
                        .collect()
                })
                .collect();
            serde_json::to_string_pretty(&v).expect("serialises") + "\n"
        }
        Format::Csv => {
            let mut s = keys.join(",") + "\n";
            for r in rows {
                s.push_str(&r.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
                s.push('\n');
            }
            s
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
            e.organisation,
            e.hostname,
            e.device_id,
            status_text(e.from),
            paint(&status_text(e.to), colour),
            e.products.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn a_stale_enterprise_row_counts_its_devices_as_stale_and_says_so() {
        let at = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 123,
        };
        let r = v1::FleetSummaryResponse {
            rows: vec![v1::FleetRow {
                enterprise: "e2".into(),
                organisation: "acme".into(),
                devices: 3,
                by_status: vec![v1::StatusCount {
                    status: convert::status_to_wire(Status::Compliant),
                    devices: 3,
                }],
                percent_compliant: 0.0,
                updated_at: Some(at),
                stale: true,
            }],
            total_devices: 3,
            total_by_status: vec![v1::StatusCount {
                status: convert::status_to_wire(Status::Stale),
                devices: 3,
            }],
            percent_compliant: 0.0,
        };
        let t = fleet(&r, Format::Table, false);
        assert!(
            t.contains("e2          acme  3        0.0          0             3              2027-01-15T08:00:00Z  stale"),
            "{t}"
        );
        assert!(t.contains("1 organisations stale"), "{t}");
    }

    #[test]
    fn colour_does_not_break_alignment() {
        let rows = vec![
            vec!["noncompliant".to_string(), "x".to_string()],
            vec!["ok".to_string(), "y".to_string()],
        ];
        let plain = table(&["STATUS", "V"], &rows, Some(0), false);
        let painted = table(&["STATUS", "V"], &rows, Some(0), true);
        let strip = |s: &str| s.replace("\x1b[31m", "").replace("\x1b[0m", "");
        assert_eq!(strip(&painted), plain);
        assert!(plain.contains("noncompliant  x\n"));
        assert!(plain.contains("ok            y\n"));
    }
}
