//! A collector for domain tests: a fresh data directory, a clock the test moves, and helpers
//! to enrol devices and report findings without any network.

#![allow(dead_code)]

use commscan_collector::collector::Collector;
use commscan_collector::compliance::RulesConfig;
use commscan_collector::ingest::{HelloInfo, IncomingReport, ReportBody};
use commscan_collector::layout::{InitOptions, Layout, OpenSettings};
use commscan_collector::store::DeviceRecord;
use commscan_collector::store::pg_store::PgConfig;
use commscan_core::identity::DeviceIdentity;
use commscan_core::platform::Platform;
use commscan_core::scan::{Evidence, Finding, ScanStats, Unclassified};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// A collector whose clock the test controls.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub collector: Arc<Collector>,
    pub now: Arc<Mutex<OffsetDateTime>>,
    sequences: Mutex<std::collections::HashMap<String, u64>>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::on(None)
    }

    /// A harness whose collector keeps its data in `postgres` (`None`: sled).
    pub fn on(postgres: Option<PgConfig>) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("c"));
        layout
            .init_with(
                &InitOptions {
                    trust_domain: "t".into(),
                    server_names: vec!["localhost".into()],
                    organisation: "acme".into(),
                    import_ca: None,
                    import_server: None,
                },
                postgres.as_ref(),
            )
            .unwrap();
        let settings = OpenSettings {
            postgres,
            ..OpenSettings::default()
        };
        let (mut collector, _) = layout
            .open_with(&RulesConfig::default(), &settings)
            .unwrap();
        let now = Arc::new(Mutex::new(time::macros::datetime!(2026-11-20 09:00 UTC)));
        let clock = now.clone();
        Arc::get_mut(&mut collector)
            .expect("unique")
            .set_clock(Arc::new(move || *clock.lock().unwrap()));
        Harness {
            dir,
            collector,
            now,
            sequences: Mutex::default(),
        }
    }

    pub fn advance(&self, d: time::Duration) {
        *self.now.lock().unwrap() += d;
    }

    pub fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap()
    }

    /// Enrols a device (without PKI) and returns its identity.
    pub fn enroll(&self, org: &str, n: usize) -> DeviceIdentity {
        let id = DeviceIdentity {
            trust_domain: "t".into(),
            organisation: org.into(),
            device_id: format!("00000000-0000-4000-8000-{n:012}"),
        };
        let record = DeviceRecord::enrolled(
            id.device_id.clone(),
            org.into(),
            format!("pc-{n}"),
            Some(Platform::Linux),
            String::new(),
            "0".into(),
            self.now(),
        );
        self.collector
            .store()
            .put_device(&record, self.now())
            .unwrap();
        id
    }

    /// Reports a snapshot with these products installed and these unclassified names.
    pub fn report(&self, who: &DeviceIdentity, products: &[&str], unclassified: &[&str]) -> u64 {
        let seq = {
            let mut s = self.sequences.lock().unwrap();
            let e = s.entry(who.device_id.clone()).or_insert(0);
            *e += 1;
            *e
        };
        let findings = products
            .iter()
            .map(|p| Finding {
                product: (*p).into(),
                installed: true,
                running: false,
                version: None,
                evidence: vec![Evidence {
                    source: "dpkg".into(),
                    detail: format!("package {p}"),
                    signature: "dpkg".into(),
                }],
            })
            .collect();
        let unclassified = unclassified
            .iter()
            .map(|n| Unclassified {
                name: (*n).into(),
                source: "desktop".into(),
                detail: "Categories=Network;InstantMessaging;".into(),
                looks_like: None,
            })
            .collect();
        self.collector
            .apply_report(
                who,
                &HelloInfo::default(),
                IncomingReport {
                    sequence: seq,
                    body: ReportBody::Snapshot {
                        findings,
                        unclassified,
                    },
                    stats: ScanStats::default(),
                    state_digest: Vec::new(),
                },
            )
            .unwrap()
            .sequence
    }
}
