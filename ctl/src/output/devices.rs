//! Device listings and device details.

use super::{Format, csv_field, paint, status_text, table, text, time_text};
use commscan_proto::convert;
use commscan_proto::v1;
use serde::Serialize;
use std::fmt::Write;

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

/// Converts a wire row.
pub fn device_out(r: &v1::DeviceRow) -> DeviceOut {
    DeviceOut {
        device_id: r.device_id.clone(),
        organisation: r.organisation.clone(),
        hostname: r.hostname.clone(),
        platform: convert::platform_from_wire(r.platform)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        // A revoked device is out of service: its last verdict is history.
        status: if r.revoked {
            "revoked".into()
        } else {
            status_text(r.status)
        },
        products: r.products.clone(),
        last_report: time_text(r.last_report.as_ref()),
        agent_version: r.agent_version.clone(),
    }
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
            let _ = writeln!(s, "device    {}", text(&d.device.device_id));
            let _ = writeln!(
                s,
                "host      {} ({}, {})",
                text(&d.device.hostname),
                text(&d.device.platform),
                text(&d.os_version)
            );
            let _ = writeln!(s, "org       {}", text(&d.device.organisation));
            let _ = writeln!(
                s,
                "status    {}  (policy {})",
                paint(&text(&d.device.status), colour),
                if d.policy.is_empty() {
                    "-".into()
                } else {
                    text(&d.policy)
                }
            );
            let _ = writeln!(
                s,
                "reported  {}",
                text(d.device.last_report.as_deref().unwrap_or("never"))
            );
            if d.revoked {
                let _ = writeln!(s, "REVOKED   refused at its next connection; history kept");
            }
            if let Some(why) = &d.duplicate {
                let _ = writeln!(
                    s,
                    "DUPLICATE {}: revoke it and re-enrol each machine",
                    text(why)
                );
            }
            if !d.reasons.is_empty() {
                let _ = writeln!(s, "\nreasons:");
                for r in &d.reasons {
                    let _ = writeln!(s, "  [{}] {}", text(&r.kind), text(&r.text));
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
                    let _ = write!(
                        s,
                        "  {} ({}: {})",
                        text(&u.name),
                        text(&u.source),
                        text(&u.detail)
                    );
                    if let Some(p) = &u.looks_like {
                        let _ = write!(s, " looks like {}", text(p));
                    }
                    let _ = writeln!(s);
                }
            }
            if !d.waivers.is_empty() {
                let _ = writeln!(s, "\nwaivers:");
                for w in &d.waivers {
                    let _ = writeln!(
                        s,
                        "  {} ({}): {} — approved by {}, {} {}",
                        text(&w.product),
                        text(&w.scope),
                        text(&w.reason),
                        text(&w.approver),
                        if w.expired { "expired" } else { "until" },
                        text(&w.expires)
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
                    let _ = writeln!(
                        s,
                        "  {}  {:<16} {}",
                        text(&h.at),
                        text(&h.kind),
                        text(&what)
                    );
                }
            }
            let sources: Vec<String> = d
                .sources
                .iter()
                .map(|(k, v)| format!("{}={}", text(k), text(v)))
                .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that sent terminal escapes and a spreadsheet formula where text belongs.
    fn hostile() -> v1::GetDeviceResponse {
        v1::GetDeviceResponse {
            device: Some(v1::DeviceRow {
                device_id: "d-1".into(),
                organisation: "acme".into(),
                hostname: "=HYPERLINK(\"http://evil\",\"pc\")".into(),
                ..Default::default()
            }),
            os_version: "Linux\x1b]0;pwned\x07".into(),
            stats: Some(v1::ScanStats {
                sources: vec![v1::SourceStatus {
                    source: "dpkg\x1b[2J\x1b[1A".into(),
                    message: "ok\u{202E}".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_devices_escapes_are_shown_not_run_on_the_officers_terminal() {
        let d = device_detail_out(&hostile());
        let table = device_detail(&d, Format::Table, false);
        assert!(!table.contains('\x1b'), "{table:?}");
        assert!(
            !table.contains('\x07') && !table.contains('\u{202E}'),
            "{table:?}"
        );
        assert!(table.contains("dpkg\\u{1b}[2J"), "{table}");
        let rows = devices(std::slice::from_ref(&d.device), Format::Table, false);
        assert!(!rows.contains('\x1b'));
    }

    #[test]
    fn a_devices_near_miss_shows_what_it_looks_like() {
        let mut r = hostile();
        r.unclassified = vec![v1::Unclassified {
            name: "WhatsApp\x1b[2J".into(),
            source: "macos_app".into(),
            detail: "app WhatsApp.app com.example.wa 2.2 (system)".into(),
            looks_like: "whatsapp".into(),
        }];
        let table = device_detail(&device_detail_out(&r), Format::Table, false);
        assert!(
            table.contains("WhatsApp\\u{1b}[2J (macos_app: app WhatsApp.app com.example.wa 2.2 (system)) looks like whatsapp"),
            "{table}"
        );
    }

    #[test]
    fn a_hostname_formula_is_defused_in_csv() {
        let d = device_detail_out(&hostile());
        let csv = devices(&[d.device], Format::Csv, false);
        assert!(csv.contains("\"'=HYPERLINK("), "{csv}");
    }
}
