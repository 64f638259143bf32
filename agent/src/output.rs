//! Output of `commscan-agent scan`: a table for people, JSON for scripts and `policy test`.

use commscan_core::scan::ScanReport;
use commscan_core::text::terminal_safe;
use std::fmt::Write;

/// Renders a scan as an aligned text table followed by source outcomes.
pub fn table(report: &ScanReport) -> String {
    let mut s = String::new();
    if report.findings.is_empty() {
        let _ = writeln!(s, "no catalogued communication software found");
    } else {
        let w = report
            .findings
            .iter()
            .map(|f| f.product.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let _ = writeln!(
            s,
            "{:<w$}  {:<9}  {:<7}  {:<14}  EVIDENCE",
            "PRODUCT", "INSTALLED", "RUNNING", "VERSION"
        );
        for f in &report.findings {
            let evidence: Vec<String> = f
                .evidence
                .iter()
                .map(|e| format!("{}: {}", e.source, e.detail))
                .collect();
            let _ = writeln!(
                s,
                "{:<w$}  {:<9}  {:<7}  {:<14}  {}",
                f.product,
                if f.installed { "yes" } else { "no" },
                if f.running { "yes" } else { "no" },
                f.version.as_deref().unwrap_or("-"),
                evidence.join("; ")
            );
        }
    }
    if !report.unclassified.is_empty() {
        let _ = writeln!(s, "\nunclassified communication-like software:");
        for u in &report.unclassified {
            // Names come from the scanned machine: neutralised like everything on a terminal.
            let _ = write!(
                s,
                "  {} ({}: {})",
                terminal_safe(&u.name),
                terminal_safe(&u.source),
                terminal_safe(&u.detail)
            );
            if let Some(p) = &u.looks_like {
                let _ = write!(s, " looks like {}", terminal_safe(p));
            }
            let _ = writeln!(s);
        }
    }
    let sources: Vec<String> = report
        .stats
        .sources
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        s,
        "\n{} platform, {} items seen in {} ms; sources: {}",
        report.platform,
        report.stats.items_seen,
        report.stats.duration_ms,
        sources.join(", ")
    );
    s
}

/// Renders a scan as pretty JSON (the documented, stable shape).
pub fn json(report: &ScanReport) -> String {
    serde_json::to_string_pretty(report).expect("scan reports always serialise")
}
