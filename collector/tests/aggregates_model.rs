//! A model test of the compliance store: random sequences of reports, policy changes,
//! waivers, staleness ticks and device removals. After every step, the aggregates the store
//! maintained incrementally must equal aggregates recomputed from scratch from the devices.

mod support;

use commscan_collector::compliance::RulesConfig;
use commscan_collector::store::OrgAggregate;
use commscan_collector::store::pg_store::PgConfig;
use commscan_runtime::testing::postgres::PgCluster;
use proptest::prelude::*;
use std::collections::BTreeMap;
use support::Harness;

const PRODUCTS: [&str; 6] = [
    "zoom",
    "telegram",
    "yandex-telemost",
    "wechat",
    "slack",
    "skype",
];
const ORGS: [&str; 3] = ["acme", "globex", "initech"];

#[derive(Debug, Clone)]
enum Op {
    Report {
        device: usize,
        products: Vec<usize>,
        candidates: Vec<usize>,
    },
    Policy(usize),
    Waiver {
        device: usize,
        product: usize,
    },
    Tick {
        hours: i64,
    },
    Remove {
        device: usize,
    },
    /// As `devices revoke` does: out of the figures, kept in the store.
    Revoke {
        device: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..8usize, prop::collection::vec(0..PRODUCTS.len(), 0..4), prop::collection::vec(0..3usize, 0..2))
            .prop_map(|(device, products, candidates)| Op::Report { device, products, candidates }),
        1 => (0..3usize).prop_map(Op::Policy),
        1 => (0..8usize, 0..PRODUCTS.len()).prop_map(|(device, product)| Op::Waiver { device, product }),
        1 => (1..8i64).prop_map(|hours| Op::Tick { hours }),
        1 => (0..8usize).prop_map(|device| Op::Remove { device }),
        1 => (0..8usize).prop_map(|device| Op::Revoke { device }),
    ]
}

fn recomputed(h: &Harness) -> BTreeMap<String, OrgAggregate> {
    let mut out: BTreeMap<String, OrgAggregate> = BTreeMap::new();
    for id in h.collector.store().device_ids().unwrap() {
        let d = h.collector.store().device(&id).unwrap().unwrap();
        out.entry(d.organisation.clone())
            .or_default()
            .apply(&d.contribution(), true);
    }
    // An organisation whose every device is revoked has nothing counted, as maintained.
    out.retain(|_, a| a.devices > 0);
    out
}

fn maintained(h: &Harness) -> BTreeMap<String, OrgAggregate> {
    h.collector
        .store()
        .org_aggregates()
        .unwrap()
        .into_iter()
        .filter(|(_, a)| a.devices > 0)
        .collect()
}

fn write_policy(h: &Harness, which: usize, waivers: &[(String, &str)]) -> std::path::PathBuf {
    let base = match which {
        0 => "version = 1\nid = \"p0\"\nname = \"deny zoom\"\n[[rule]]\nid = \"r\"\naction = \"deny\"\nproducts = [\"zoom\", \"skype\"]\n".to_owned(),
        1 => "version = 1\nid = \"p1\"\nname = \"warn foreign\"\n[[rule]]\nid = \"r\"\naction = \"deny\"\ncategories = [\"messenger\"]\nexcept_countries = [\"RU\"]\nenforcement = \"warn\"\ngrace = \"1d\"\n".to_owned(),
        _ => "version = 1\nid = \"p2\"\nname = \"allow all\"\ndefault_action = \"allow\"\n[[rule]]\nid = \"r\"\naction = \"allow\"\nproducts = [\"zoom\"]\n".to_owned(),
    };
    let mut text = base;
    for (device, product) in waivers {
        text.push_str(&format!(
            "[[waiver]]\nscope = \"device\"\ndevice = \"{device}\"\nproduct = \"{product}\"\nreason = \"r\"\napprover = \"a\"\nexpires = 2027-01-01\n"
        ));
    }
    let path = h
        .dir
        .path()
        .join(format!("policy-{which}-{}.toml", waivers.len()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Applies `ops` to `h`, checking after each that the maintained aggregates equal the
/// recomputed ones.
fn run_model(h: &Harness, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut devices = Vec::new();
    for n in 0..8 {
        devices.push(Some(h.enroll(ORGS[n % ORGS.len()], n)));
    }
    let mut policy = 0;
    let mut waivers: Vec<(String, &str)> = Vec::new();
    for op in ops {
        match op {
            Op::Report {
                device,
                products,
                candidates,
            } => {
                if let Some(who) = &devices[device] {
                    let p: Vec<&str> = products.iter().map(|i| PRODUCTS[*i]).collect();
                    let c: Vec<String> = candidates.iter().map(|i| format!("Chat {i}")).collect();
                    let c: Vec<&str> = c.iter().map(String::as_str).collect();
                    h.report(who, &p, &c);
                }
            }
            Op::Policy(which) => {
                policy = which;
                h.collector
                    .reload(&RulesConfig::with_policy(Some(&write_policy(
                        h, policy, &waivers,
                    ))))
                    .unwrap();
            }
            Op::Waiver { device, product } => {
                if let Some(who) = &devices[device] {
                    waivers.push((who.device_id.clone(), PRODUCTS[product]));
                    h.collector
                        .reload(&RulesConfig::with_policy(Some(&write_policy(
                            h, policy, &waivers,
                        ))))
                        .unwrap();
                }
            }
            Op::Tick { hours } => {
                h.advance(time::Duration::hours(hours));
                h.collector.sweep_stale().unwrap();
            }
            Op::Remove { device } => {
                if let Some(who) = devices[device].take() {
                    h.collector
                        .store()
                        .remove_device(&who.device_id, h.now())
                        .unwrap();
                }
            }
            Op::Revoke { device } => {
                if let Some(who) = devices[device].take() {
                    let store = h.collector.store();
                    let mut d = store.device(&who.device_id).unwrap().unwrap();
                    d.revoked = true;
                    d.uncounted = true;
                    store.put_device(&d, h.now()).unwrap();
                }
            }
        }
        prop_assert_eq!(maintained(h), recomputed(h));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn maintained_aggregates_equal_recomputed_ones(ops in prop::collection::vec(op(), 1..40)) {
        run_model(&Harness::new(), ops)?;
    }
}

/// The same model on the PostgreSQL store: a throw-away cluster, a fresh database per case
/// (fewer cases: each costs a database and its migrations).
#[test]
fn maintained_aggregates_equal_recomputed_ones_on_postgres() {
    let Some(pg) = PgCluster::start("maintained_aggregates_equal_recomputed_ones_on_postgres")
    else {
        return;
    };
    let case = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        // No regression file: this runner has no source file to put one beside.
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let url = pg.create_database(&format!("model{n}"));
            run_model(
                &Harness::on(Some(PgConfig {
                    url,
                    password: Some(pg.password().to_owned()),
                    max_connections: 4,
                })),
                ops,
            )
        })
        .unwrap();
}

#[test]
fn a_device_that_misses_its_window_turns_stale_and_never_counts_as_compliant() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    h.report(&who, &["yandex-telemost"], &[]);
    let agg = |h: &Harness| h.collector.store().org_aggregate("acme").unwrap().unwrap();
    assert_eq!(agg(&h).percent_compliant(), 100.0);
    h.advance(time::Duration::hours(2));
    assert_eq!(h.collector.sweep_stale().unwrap(), 0, "within the window");
    h.advance(time::Duration::hours(2));
    assert_eq!(h.collector.sweep_stale().unwrap(), 1);
    let d = h.collector.store().device(&who.device_id).unwrap().unwrap();
    assert_eq!(d.verdict.status, commscan_core::verdict::Status::Stale);
    assert_eq!(agg(&h).percent_compliant(), 0.0);
    assert_eq!(
        h.collector.sweep_stale().unwrap(),
        0,
        "a stale device is not swept again"
    );
    // Its next report brings it back.
    h.report(&who, &["yandex-telemost"], &[]);
    assert_eq!(agg(&h).percent_compliant(), 100.0);
    let kinds: Vec<String> = h
        .collector
        .store()
        .history(&who.device_id, None, 50)
        .unwrap()
        .iter()
        .map(|e| format!("{:?}", e.kind))
        .collect();
    assert!(kinds.iter().any(|k| k.contains("to: Stale")), "{kinds:?}");
}

#[test]
fn history_records_first_seen_removal_and_verdict_changes_for_time_to_remediate() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    h.report(&who, &["zoom"], &[]);
    let seen = h.now();
    h.advance(time::Duration::days(3));
    h.report(&who, &[], &[]);
    let history = h
        .collector
        .store()
        .history(&who.device_id, None, 50)
        .unwrap();
    let seen_at = history.iter().find(|e| matches!(&e.kind, commscan_collector::store::HistoryKind::ProductSeen { product } if product == "zoom")).unwrap().at;
    let removed_at = history.iter().find(|e| matches!(&e.kind, commscan_collector::store::HistoryKind::ProductRemoved { product } if product == "zoom")).unwrap().at;
    assert_eq!(seen_at, seen);
    assert_eq!(
        removed_at - seen_at,
        time::Duration::days(3),
        "time to remediate"
    );
    assert!(history.iter().any(|e| matches!(
        e.kind,
        commscan_collector::store::HistoryKind::StatusChanged { .. }
    )));
}

#[test]
fn trend_keeps_one_end_of_day_point_per_day() {
    let h = Harness::new();
    let who = h.enroll("acme", 1);
    h.report(&who, &["zoom"], &[]);
    h.advance(time::Duration::days(1));
    h.report(&who, &[], &[]);
    h.advance(time::Duration::hours(1));
    h.report(&who, &[], &[]);
    let days = h.collector.store().daily("acme", 30).unwrap();
    let summary: Vec<(String, f64)> = days
        .iter()
        .map(|(d, a)| (d.clone(), a.percent_compliant()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("2026-11-20".to_string(), 0.0),
            ("2026-11-21".to_string(), 100.0)
        ]
    );
}

#[test]
fn an_officer_maps_a_candidate_to_a_product_and_its_devices_are_rejudged() {
    use commscan_collector::store::Classification;
    let h = Harness::new();
    let a = h.enroll("acme", 1);
    let b = h.enroll("acme", 2);
    h.report(&a, &[], &["Gossip Chat"]);
    h.report(&b, &[], &["Gossip Chat", "Other Thing"]);
    let admin = h
        .collector
        .authenticate(
            Some(
                std::fs::read_to_string(h.dir.path().join("c/admin.token"))
                    .unwrap()
                    .trim(),
            ),
            Default::default(),
        )
        .unwrap();
    let listed = h.collector.list_unclassified(&admin, "acme").unwrap();
    assert_eq!(listed[0].0, "Gossip Chat");
    assert_eq!(listed[0].1.devices, 2);
    let touched = h
        .collector
        .classify_candidate(
            &admin,
            "acme",
            "Gossip Chat",
            Classification::Product {
                product: "zoom".into(),
            },
        )
        .unwrap();
    assert_eq!(touched, 2);
    let d = h.collector.store().device(&a.device_id).unwrap().unwrap();
    assert_eq!(
        d.verdict.status,
        commscan_core::verdict::Status::Noncompliant
    );
    assert!(
        d.findings[0].evidence[0]
            .detail
            .contains("classified as zoom by an officer")
    );
    let listed = h.collector.list_unclassified(&admin, "acme").unwrap();
    assert_eq!(
        listed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vec!["Other Thing"]
    );
    // Later reports keep applying the decision.
    h.report(&a, &[], &["Gossip Chat"]);
    assert_eq!(
        h.collector
            .store()
            .device(&a.device_id)
            .unwrap()
            .unwrap()
            .findings
            .len(),
        1
    );
    h.collector
        .classify_candidate(&admin, "acme", "Other Thing", Classification::Dismissed)
        .unwrap();
    assert!(
        h.collector
            .list_unclassified(&admin, "acme")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn concurrent_reports_sharing_transactions_and_flushes_lose_no_update() {
    // Reports from many threads at once are combined into shared transactions and flushes;
    // every one must land, and the aggregates must still equal the recomputed ones.
    let h = Harness::new();
    let devices: Vec<_> = (0..48).map(|n| h.enroll(ORGS[n % ORGS.len()], n)).collect();
    std::thread::scope(|s| {
        for chunk in devices.chunks(6) {
            let h = &h;
            s.spawn(move || {
                for round in 0..10 {
                    for (k, who) in chunk.iter().enumerate() {
                        let products = [PRODUCTS[(round + k) % PRODUCTS.len()], PRODUCTS[k % 2]];
                        h.report(who, &products, &[]);
                    }
                }
            });
        }
    });
    for who in &devices {
        let d = h.collector.store().device(&who.device_id).unwrap().unwrap();
        assert_eq!(
            d.last_sequence, 10,
            "every report of {} landed",
            who.device_id
        );
    }
    assert_eq!(maintained(&h), recomputed(&h));
}

#[test]
fn a_device_revoked_by_an_older_collector_leaves_the_figures_when_rejudged_at_start() {
    let h = Harness::new();
    let a = h.enroll("acme", 1);
    let b = h.enroll("acme", 2);
    h.report(&a, &["zoom"], &[]);
    h.report(&b, &["zoom"], &[]);
    // An older collector revoked b and kept counting it.
    let store = h.collector.store();
    let mut d = store.device(&b.device_id).unwrap().unwrap();
    d.revoked = true;
    store.put_device(&d, h.now()).unwrap();
    assert_eq!(store.org_aggregate("acme").unwrap().unwrap().devices, 2);
    h.collector.rejudge_all().unwrap();
    let agg = store.org_aggregate("acme").unwrap().unwrap();
    assert_eq!(agg.devices, 1);
    assert_eq!(agg.by_product["zoom"].devices, 1);
    assert_eq!(maintained(&h), recomputed(&h));
    assert!(store.device(&b.device_id).unwrap().unwrap().uncounted);
}
