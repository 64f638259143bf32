//! The compliance store at fleet size: 100,000 devices in 50 organisations. Run with
//! `cargo bench -p commscan-collector --bench store` (set `COMMSCAN_BENCH_DEVICES` for another
//! size). Prints figures; asserts nothing.
//!
//! Measures: loading (one transaction per device, as ingest does), applying one device's
//! report end to end (judge, aggregate update, history, flush), an organisation summary, the
//! fleet summary, the first page of noncompliant devices, and a full CSV export.

use commscan_collector::compliance::RulesConfig;
use commscan_collector::grpc::query::{CSV_HEADER, csv_line};
use commscan_collector::ingest::{HelloInfo, IncomingReport, ReportBody};
use commscan_collector::layout::{InitOptions, Layout};
use commscan_collector::store::{DeviceFilter, DeviceRecord};
use commscan_core::identity::DeviceIdentity;
use commscan_core::platform::Platform;
use commscan_core::scan::{Evidence, Finding, ScanStats, SourceOutcome};
use commscan_core::verdict::Status;
use std::time::{Duration, Instant};

const ORGS: usize = 50;
const PRODUCTS: [&str; 8] = [
    "zoom",
    "telegram",
    "yandex-telemost",
    "slack",
    "trueconf",
    "skype",
    "vk-teams",
    "discord",
];

fn finding(p: &str) -> Finding {
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_it<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f());
        v.push(t.elapsed());
    }
    let p = median(v.clone());
    v.sort();
    (p, v[v.len() * 99 / 100])
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("COMMSCAN_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("c"));
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
    let admin = collector
        .authenticate(
            Some(
                std::fs::read_to_string(layout.path("admin.token"))
                    .unwrap()
                    .trim(),
            ),
            Default::default(),
        )
        .unwrap();
    let rules = collector.rules();
    let now = time::OffsetDateTime::now_utc();

    // Load: one device per transaction, judged, every third one with a denied product.
    let t = Instant::now();
    for i in 0..n {
        let org = format!("org-{}", i % ORGS);
        let mut d = DeviceRecord::enrolled(
            format!("00000000-0000-4000-8000-{i:012}"),
            org,
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
        rules.judge(&mut d, now, collector.stale_after());
        collector.store().put_device(&d, now).unwrap();
    }
    collector.store().flush().unwrap();
    let load = t.elapsed();
    let disk: u64 = walk_size(&layout.path("store"));
    println!(
        "store: {n} devices in {ORGS} organisations loaded in {:.1} s ({:.0} devices/s), {:.0} MiB on disk, RSS {:.0} MiB",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64(),
        disk as f64 / 1048576.0,
        rss_mib()
    );

    // Apply one device's report end to end (validate, judge, transaction, flush).
    let mut seq = 1;
    let who = DeviceIdentity {
        trust_domain: "bench".into(),
        organisation: "org-7".into(),
        device_id: format!("00000000-0000-4000-8000-{:012}", 7),
    };
    let (p50, p99) = time_it(200, || {
        seq += 1;
        let findings = if seq % 2 == 0 {
            vec![finding("zoom")]
        } else {
            vec![finding("yandex-telemost")]
        };
        collector
            .apply_report(
                &who,
                &HelloInfo::default(),
                IncomingReport {
                    sequence: seq,
                    body: ReportBody::Snapshot {
                        findings,
                        unclassified: vec![],
                    },
                    stats: ScanStats::default(),
                    state_digest: Vec::new(),
                },
            )
            .unwrap();
    });
    println!(
        "apply one report (judge + aggregates + history + flush): median {:.2} ms, p99 {:.2} ms",
        ms(p50),
        ms(p99)
    );

    let (p50, p99) = time_it(1000, || {
        collector.organisation_summary(&admin, "org-3").unwrap()
    });
    println!(
        "organisation summary: median {:.1} µs, p99 {:.1} µs",
        us(p50),
        us(p99)
    );
    let (p50, p99) = time_it(200, || collector.fleet_summary(&admin).unwrap());
    println!(
        "fleet summary ({ORGS} rows): median {:.1} µs, p99 {:.1} µs",
        us(p50),
        us(p99)
    );
    let filter = DeviceFilter {
        status: Some(Status::Noncompliant),
        ..DeviceFilter::default()
    };
    let (p50, p99) = time_it(200, || {
        collector.list_devices(&admin, &filter, None, 100).unwrap()
    });
    println!(
        "first page (100) of noncompliant devices: median {:.2} ms, p99 {:.2} ms",
        ms(p50),
        ms(p99)
    );
    let org_filter = DeviceFilter {
        organisation: Some("org-11".into()),
        status: Some(Status::Noncompliant),
        ..DeviceFilter::default()
    };
    let (p50, _) = time_it(200, || {
        collector
            .list_devices(&admin, &org_filter, None, 100)
            .unwrap()
    });
    println!(
        "first page (100) of one organisation's noncompliant devices: median {:.2} ms",
        ms(p50)
    );

    let mut exports = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut out = String::from(CSV_HEADER);
        let mut cursor: Option<String> = None;
        let all = DeviceFilter::default();
        loop {
            let page = collector
                .store()
                .list_devices(&all, cursor.as_deref(), 2000)
                .unwrap();
            for d in &page.devices {
                out.push_str(&csv_line(d));
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        bytes = out.len();
        exports.push(t.elapsed());
    }
    println!(
        "full CSV export of {n} devices: median {:.2} s ({:.1} MiB)",
        median(exports).as_secs_f64(),
        bytes as f64 / 1048576.0
    );
    println!("RSS after the run: {:.0} MiB", rss_mib());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn walk_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
