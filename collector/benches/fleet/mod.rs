//! A fleet for benchmarks: a fresh collector data directory with `n` judged devices in
//! [`ORGS`] organisations, three findings each (every third device with a denied product),
//! written one transaction per device as ingest writes them. Shared by the benches, each of
//! which uses part of it.
#![allow(dead_code)]

use commscan_collector::collector::Collector;
use commscan_collector::compliance::{Rules, RulesConfig};
use commscan_collector::layout::{InitOptions, Layout};
use commscan_collector::store::DeviceRecord;
use commscan_core::platform::Platform;
use commscan_core::scan::{Evidence, Finding, SourceOutcome};
use std::sync::Arc;

/// Organisations the devices are spread over.
pub const ORGS: usize = 50;
pub const PRODUCTS: [&str; 8] = [
    "zoom",
    "telegram",
    "yandex-telemost",
    "slack",
    "trueconf",
    "skype",
    "vk-teams",
    "discord",
];

/// The id of device `i`.
pub fn device_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// A catalogued product found by dpkg, version 1.2.3.
pub fn finding(p: &str) -> Finding {
    Finding {
        product: p.into(),
        installed: true,
        running: false,
        version: Some("1.2.3".into()),
        evidence: vec![Evidence {
            source: "dpkg".into(),
            detail: format!("package {p} 1.2.3"),
            signature: "dpkg".into(),
        }],
    }
}

/// Device `i`, reported `now` and judged by `rules`.
pub fn device(
    i: usize,
    rules: &Rules,
    now: time::OffsetDateTime,
    stale: std::time::Duration,
) -> DeviceRecord {
    let mut d = DeviceRecord::enrolled(
        device_id(i),
        format!("org-{}", i % ORGS),
        format!("host-{i}"),
        Some(Platform::Linux),
        "Debian 12".into(),
        "0.1.0".into(),
        now,
    );
    d.findings = (0..3)
        .map(|k| finding(PRODUCTS[(i + k * 3) % PRODUCTS.len()]))
        .collect();
    d.findings.sort_by(|a, b| a.product.cmp(&b.product));
    d.findings.dedup_by(|a, b| a.product == b.product);
    d.stats.sources.insert("dpkg".into(), SourceOutcome::Ok);
    d.last_report = Some(now);
    d.last_sequence = 1;
    rules.judge(&mut d, now, stale);
    d
}

/// Initialises a deployment in `dir`, opens it and loads `n` devices; the collector and the
/// admin's bearer token.
pub fn load(dir: &std::path::Path, n: usize) -> (Arc<Collector>, String, Layout) {
    let layout = Layout::new(dir.join("c"));
    layout
        .init(&InitOptions {
            trust_domain: "bench".into(),
            server_names: vec!["localhost".into()],
            organisation: "org-0".into(),
            import_ca: None,
            import_server: None,
        })
        .unwrap();
    let (collector, _) = layout.open(&RulesConfig::default()).unwrap();
    let token = std::fs::read_to_string(layout.path("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let rules = collector.rules();
    let now = time::OffsetDateTime::now_utc();
    for i in 0..n {
        let d = device(i, &rules, now, collector.stale_after());
        collector.store().put_device(&d, now).unwrap();
    }
    collector.store().flush().unwrap();
    (collector, token, layout)
}
