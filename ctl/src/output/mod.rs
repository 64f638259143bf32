//! Rendering query results as a table (default; statuses coloured on a terminal), JSON or
//! CSV. JSON and CSV field names are stable for scripts.
//!
//! This module holds the shared pieces (formats, tables, colours, CSV quoting, generic rows);
//! [`devices`] renders device listings and details, [`summaries`] organisation and fleet
//! summaries and events.

mod devices;
mod summaries;

pub use devices::*;
pub use summaries::*;

use commscan_core::verdict::Status;
use commscan_proto::convert;
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

/// A timestamp as RFC 3339 to the second (`2027-01-15T08:00:00Z`): what tables, JSON and CSV
/// all show.
pub fn time_text(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.and_then(|t| convert::from_timestamp(t).ok())
        .map(|t| t.replace_nanosecond(0).unwrap_or(t))
        .and_then(|t| t.format(&Rfc3339).ok())
}

pub(crate) fn status_text(v: i32) -> String {
    convert::status_from_wire(v)
        .ok()
        .flatten()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into())
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

pub use commscan_core::text::csv_field;

/// Text from the collector (and so from devices) made safe for a terminal: the one function
/// every table cell and every free-form line goes through.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    commscan_core::text::terminal_safe(s)
}

/// Aligns rows into columns, every cell made terminal-safe first. `widths` are computed from
/// visible text; `paint_col` is coloured after padding so escape codes do not break alignment.
pub fn table(
    header: &[&str],
    rows: &[Vec<String>],
    paint_col: Option<usize>,
    colour: bool,
) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| text(c).into_owned()).collect())
        .collect();
    let rows = &rows;
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

/// A column of [`records`]: its table header and its stable snake_case key in JSON and CSV.
pub type Column = (&'static str, &'static str);

/// Renders typed rows: a table under the headers; JSON objects keyed by the columns' keys with
/// numbers as numbers (the keys are the documented contract for scripts); CSV under the keys.
pub fn records(columns: &[Column], rows: &[Vec<serde_json::Value>], format: Format) -> String {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    match format {
        Format::Json => {
            let v: Vec<serde_json::Map<String, serde_json::Value>> = rows
                .iter()
                .map(|r| {
                    columns
                        .iter()
                        .map(|(_, k)| k.to_string())
                        .zip(r.iter().cloned())
                        .collect()
                })
                .collect();
            serde_json::to_string_pretty(&v).expect("serialises") + "\n"
        }
        Format::Csv => {
            let mut s = columns
                .iter()
                .map(|(_, k)| *k)
                .collect::<Vec<_>>()
                .join(",")
                + "\n";
            for r in rows {
                let line: Vec<String> = r
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::Null => String::new(),
                        v => csv_field(&cell(v)),
                    })
                    .collect();
                s.push_str(&line.join(","));
                s.push('\n');
            }
            s
        }
        Format::Table => {
            if rows.is_empty() {
                return "nothing to show\n".into();
            }
            let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
            let body: Vec<Vec<String>> =
                rows.iter().map(|r| r.iter().map(cell).collect()).collect();
            table(&header, &body, None, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_proto::v1;

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
            t.contains("e2          acme  3        0.0          0             0       3              2027-01-15T08:00:00Z  stale"),
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
