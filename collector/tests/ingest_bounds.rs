//! What a hostile or broken device can send, and what the collector keeps of it: bounded
//! strings, catalog products only, clean stats, bounded sequences, a bounded record
//! (ARCHITECTURE.md, "Bounds on what devices and enrolling peers send").

mod support;

use commscan_collector::error::Code;
use commscan_collector::ingest::{HelloInfo, IncomingReport, MAX_DEVICE_RECORD_BYTES, ReportBody};
use commscan_core::identity::DeviceIdentity;
use commscan_core::report::{MAX_SEQUENCE_STEP, SEQUENCE_CEILING};
use commscan_core::scan::{Evidence, Finding, ScanStats, SourceOutcome, Unclassified};
use commscan_core::text::{MAX_SIGNATURE, MAX_SOURCE, MAX_TEXT};
use std::sync::atomic::Ordering;
use support::Harness;

fn finding(product: &str, evidence: Vec<Evidence>) -> Finding {
    Finding {
        product: product.into(),
        installed: true,
        running: false,
        version: None,
        evidence,
    }
}

fn evidence(detail: &str, signature: &str) -> Evidence {
    Evidence {
        source: "dpkg".into(),
        detail: detail.into(),
        signature: signature.into(),
    }
}

fn apply(
    h: &Harness,
    who: &DeviceIdentity,
    sequence: u64,
    body: ReportBody,
    stats: ScanStats,
) -> Result<u64, commscan_collector::error::CollectorError> {
    h.collector
        .apply_report(
            who,
            &HelloInfo::default(),
            IncomingReport {
                sequence,
                body,
                stats,
                state_digest: Vec::new(),
            },
        )
        .map(|a| a.sequence)
}

fn delta(upserted: Vec<Finding>) -> ReportBody {
    ReportBody::Delta {
        upserted,
        removed: vec![],
        unclassified: None,
    }
}

fn record_bytes(h: &Harness, id: &str) -> usize {
    serde_json::to_vec(&h.collector.store().device(id).unwrap().unwrap())
        .unwrap()
        .len()
}

/// The attack of issue 12: twenty deltas each adding a finding with a 3.5 MB signature.
#[test]
fn huge_signatures_are_cut_and_the_record_stays_small() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    let huge = "s".repeat(3_500_000);
    let products = h.collector.rules().catalog.products().to_vec();
    for (i, p) in products.iter().take(20).enumerate() {
        let f = finding(&p.id, vec![evidence("x", &huge)]);
        apply(&h, &who, i as u64 + 1, delta(vec![f]), ScanStats::default()).unwrap();
    }
    let d = h.collector.store().device(&who.device_id).unwrap().unwrap();
    assert_eq!(d.findings.len(), 20);
    for f in &d.findings {
        assert_eq!(f.evidence[0].signature.len(), MAX_SIGNATURE);
    }
    assert!(record_bytes(&h, &who.device_id) < 64 * 1024);
    assert_eq!(h.collector.bound_counters().cut.load(Ordering::Relaxed), 20);
}

/// Every finding at its largest: no device can grow its record past the maximum, however
/// many deltas it sends, and a report that would is refused without changing what is stored.
#[test]
fn no_sequence_of_reports_grows_a_record_past_its_maximum() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    let other = h.enroll("acme", 2);
    h.report(&other, &["zoom"], &[]);
    let detail = "я".repeat(10_000);
    let products = h.collector.rules().catalog.products().to_vec();
    let mut refused = 0;
    let mut seq = 0;
    for p in &products {
        let f = finding(&p.id, (0..64).map(|_| evidence(&detail, &detail)).collect());
        seq += 1;
        match apply(&h, &who, seq, delta(vec![f]), ScanStats::default()) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument);
                assert!(e.to_string().contains("device record would be"), "{e}");
                refused += 1;
            }
        }
        assert!(record_bytes(&h, &who.device_id) <= MAX_DEVICE_RECORD_BYTES);
    }
    assert!(
        refused > 0,
        "the catalog is large enough to reach the maximum"
    );
    // The other device is untouched, and the hostile one still reports small changes.
    let d = h
        .collector
        .store()
        .device(&other.device_id)
        .unwrap()
        .unwrap();
    assert_eq!(d.findings.len(), 1);
    let stored = h.collector.store().device(&who.device_id).unwrap().unwrap();
    let small = ReportBody::Snapshot {
        findings: vec![finding("zoom", vec![evidence("package zoom", "dpkg")])],
        unclassified: vec![],
    };
    apply(
        &h,
        &who,
        stored.last_sequence + 1,
        small,
        ScanStats::default(),
    )
    .unwrap();
    assert!(record_bytes(&h, &who.device_id) < 16 * 1024);
}

#[test]
fn products_absent_from_the_catalog_are_neither_stored_nor_counted() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    let body = ReportBody::Snapshot {
        findings: vec![
            finding("zoom", vec![evidence("package zoom", "dpkg")]),
            finding("not-a-real-product", vec![evidence("x", "dpkg")]),
            finding("another-fake", vec![evidence("x", "dpkg")]),
        ],
        unclassified: vec![],
    };
    apply(&h, &who, 1, body, ScanStats::default()).unwrap();
    let d = h.collector.store().device(&who.device_id).unwrap().unwrap();
    let products: Vec<&str> = d.findings.iter().map(|f| f.product.as_str()).collect();
    assert_eq!(products, ["zoom"]);
    assert!(!d.first_seen.contains_key("not-a-real-product"));
    assert_eq!(
        h.collector
            .bound_counters()
            .unknown_products
            .load(Ordering::Relaxed),
        2
    );
    // A delta upserting one is dropped too.
    apply(
        &h,
        &who,
        2,
        delta(vec![finding("fake-again", vec![])]),
        ScanStats::default(),
    )
    .unwrap();
    let d = h.collector.store().device(&who.device_id).unwrap().unwrap();
    assert_eq!(d.findings.len(), 1);
}

#[test]
fn a_near_miss_hint_is_stored_only_when_it_is_a_product_of_the_catalog() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    // (hint sent, hint stored)
    let cases = [
        (Some("whatsapp"), Some("whatsapp")),
        // Shaped like a product id, but no product of the collector's catalog.
        (Some("bank-approved-chat"), None),
        (Some("<img src=x onerror=alert(1)>"), None),
        (Some("whatsapp\x1b[2J"), None),
        (None, None),
    ];
    let unclassified: Vec<Unclassified> = cases
        .iter()
        .enumerate()
        .map(|(i, (sent, _))| Unclassified {
            name: format!("WhatsApp {i}"),
            source: "macos_app".into(),
            detail: "app WhatsApp.app".into(),
            looks_like: sent.map(str::to_owned),
        })
        .collect();
    let body = ReportBody::Snapshot {
        findings: vec![],
        unclassified,
    };
    apply(&h, &who, 1, body, ScanStats::default()).unwrap();
    let d = h.collector.store().device(&who.device_id).unwrap().unwrap();
    for (i, (_, stored)) in cases.iter().enumerate() {
        let u = d
            .unclassified
            .iter()
            .find(|u| u.name == format!("WhatsApp {i}"))
            .unwrap();
        assert_eq!(u.looks_like.as_deref(), *stored, "{u:?}");
    }
    // The organisation's candidate list carries the hint for the officer.
    let agg = h.collector.store().org_aggregate("acme").unwrap().unwrap();
    assert_eq!(agg.unclassified["WhatsApp 0"].looks_like, "whatsapp");
    assert_eq!(agg.unclassified["WhatsApp 1"].looks_like, "");
}

#[test]
fn stats_sources_are_stored_without_control_characters_and_bounded() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    let mut stats = ScanStats::default();
    stats.sources.insert(
        "dpkg\x1b[2J\x1b]0;owned\x07".into(),
        SourceOutcome::Failed(format!("\x1b[1A\x1b[2Kforged line{}", "m".repeat(100_000))),
    );
    for i in 0..500 {
        stats
            .sources
            .insert(format!("{}{i}", "n".repeat(1000)), SourceOutcome::Ok);
    }
    apply(
        &h,
        &who,
        1,
        ReportBody::Snapshot {
            findings: vec![],
            unclassified: vec![],
        },
        stats,
    )
    .unwrap();
    let d = h.collector.store().device(&who.device_id).unwrap().unwrap();
    assert!(d.stats.sources.len() <= commscan_core::text::MAX_SOURCES);
    for (name, outcome) in &d.stats.sources {
        assert!(!name.chars().any(char::is_control), "{name:?}");
        assert!(name.chars().count() <= MAX_SOURCE);
        if let SourceOutcome::Failed(m) = outcome {
            assert!(!m.chars().any(char::is_control), "{m:?}");
            assert!(m.chars().count() <= MAX_TEXT);
        }
    }
    assert!(d.stats.sources.contains_key("dpkg[2J]0;owned"));
}

#[test]
fn a_sequence_far_ahead_of_the_stored_one_is_refused() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    let empty = || ReportBody::Snapshot {
        findings: vec![],
        unclassified: vec![],
    };
    let e = apply(&h, &who, u64::MAX, empty(), ScanStats::default()).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("report.sequence"), "{e}");
    let e = apply(
        &h,
        &who,
        MAX_SEQUENCE_STEP + 1,
        empty(),
        ScanStats::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("ahead of the stored sequence 0"),
        "{e}"
    );
    assert_eq!(
        h.collector
            .store()
            .device(&who.device_id)
            .unwrap()
            .unwrap()
            .last_sequence,
        0
    );
    // Within the step: stored; counting on from there works.
    assert_eq!(
        apply(&h, &who, MAX_SEQUENCE_STEP, empty(), ScanStats::default()).unwrap(),
        MAX_SEQUENCE_STEP
    );
    assert_eq!(
        apply(
            &h,
            &who,
            MAX_SEQUENCE_STEP + 1,
            empty(),
            ScanStats::default()
        )
        .unwrap(),
        MAX_SEQUENCE_STEP + 1
    );
    let e = apply(&h, &who, SEQUENCE_CEILING, empty(), ScanStats::default()).unwrap_err();
    assert!(e.to_string().contains("ceiling"), "{e}");
}

#[test]
fn oversized_lists_and_malformed_digests_are_refused_naming_the_field() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    let body = ReportBody::Delta {
        upserted: vec![],
        removed: (0..5000).map(|i| format!("p{i}")).collect(),
        unclassified: None,
    };
    let e = apply(&h, &who, 1, body, ScanStats::default()).unwrap_err();
    assert!(e.to_string().contains("report.delta.removed"), "{e}");
    let e = h
        .collector
        .apply_report(
            &who,
            &HelloInfo::default(),
            IncomingReport {
                sequence: 1,
                body: delta(vec![]),
                stats: ScanStats::default(),
                state_digest: vec![0; 4096],
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("report.state_digest"), "{e}");
}
