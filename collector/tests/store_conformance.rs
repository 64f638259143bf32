//! The store conformance suite: one scenario over every store trait (enrolment consuming
//! tokens, device writes moving aggregates, trends and history, listings with every filter and
//! cursor paging, the staleness index, removals, classifications, tokens and people, audit and
//! its retention, federated rows, versions of rules) run on the embedded sled store and on the PostgreSQL store
//! (a throw-away cluster of its own); every observation must be the same on both, and the
//! scenario asserts what a user would notice on its own as well.
//!
//! Without PostgreSQL's server binaries the PostgreSQL half prints `SKIPPED` and passes, unless
//! `COMMSCAN_REQUIRE_POSTGRES=1` (set by `.ci/run`).

use commscan_collector::store::migrate;
use commscan_collector::store::pg_store::{PgConfig, PgStore};
use commscan_collector::store::sled_store::SledStore;
use commscan_collector::store::{
    AuditRecord, AuditStore, Classification, DeviceFilter, DeviceRecord, DeviceStore,
    FederatedRecord, Notice, OrgAggregate, PersonRecord, RulesKind, RulesStore, Store, StoreError,
    TokenRecord,
};
use commscan_core::platform::Platform;
use commscan_core::scan::Finding;
use commscan_core::verdict::{Reason, ReasonKind, Status, Verdict};
use commscan_runtime::testing::postgres::PgCluster;
use std::collections::BTreeSet;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-11-20 09:00 UTC);

fn device(
    id: &str,
    org: &str,
    products: &[&str],
    deny: &[&str],
    at: OffsetDateTime,
) -> DeviceRecord {
    let mut d = DeviceRecord::enrolled(
        id.into(),
        org.into(),
        format!("host-{id}"),
        Some(Platform::Linux),
        "Debian 12".into(),
        "0.1.0".into(),
        T0,
    );
    d.findings = products
        .iter()
        .map(|p| Finding {
            product: (*p).into(),
            installed: true,
            running: false,
            version: Some("1.0".into()),
            evidence: Vec::new(),
        })
        .collect();
    d.verdict = Verdict {
        status: if deny.is_empty() {
            Status::Compliant
        } else {
            Status::Noncompliant
        },
        reasons: deny
            .iter()
            .map(|p| Reason {
                product: (*p).into(),
                rule: "r".into(),
                kind: ReasonKind::Violation,
                text: format!("{p} is denied"),
            })
            .collect(),
    };
    d.last_report = Some(at);
    d.last_sequence = 1;
    d
}

fn token(org: &str, uses: Option<u64>) -> TokenRecord {
    TokenRecord {
        organisation: org.into(),
        created_at: T0,
        expires_at: Some(T0 + Duration::days(7)),
        uses_left: uses,
        revoked: false,
    }
}

fn ids(page: &[DeviceRecord]) -> Vec<&str> {
    page.iter().map(|d| d.device_id.as_str()).collect()
}

fn federated(devices: u64, at: OffsetDateTime) -> FederatedRecord {
    FederatedRecord {
        aggregate: OrgAggregate {
            devices,
            ..Default::default()
        },
        generated_at: at,
        received_at: at,
    }
}

/// Runs the scenario; returns every observation, in order, for the comparison.
fn scenario(s: &dyn Store) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut note = |what: &str, v: String| seen.push(format!("{what}: {v}"));

    // Enrolment consumes the token's one use, atomically; another organisation's token fails.
    s.put_token("h-acme", &token("acme", Some(1))).unwrap();
    s.put_token("h-globex", &token("globex", None)).unwrap();
    let d1 = device("d1", "acme", &[], &[], T0);
    s.enroll(
        &DeviceRecord {
            last_report: None,
            ..d1.clone()
        },
        "h-acme",
        T0,
    )
    .unwrap();
    let twice = s.enroll(&device("d2", "acme", &[], &[], T0), "h-acme", T0);
    assert!(
        matches!(twice, Err(StoreError::TokenRefused(_))),
        "{twice:?}"
    );
    note("second use", format!("{twice:?}"));
    let other = s.enroll(&device("d2", "acme", &[], &[], T0), "h-globex", T0);
    assert!(
        matches!(other, Err(StoreError::TokenRefused(_))),
        "{other:?}"
    );
    note("other org's token", format!("{other:?}"));
    let unknown = s.enroll(&device("d2", "acme", &[], &[], T0), "nope", T0);
    note("unknown token", format!("{unknown:?}"));
    note("tokens", format!("{:?}", s.tokens().unwrap()));

    // Reports: aggregates, trend points and history move with every write.
    let t1 = T0 + Duration::hours(1);
    s.put_device(
        &device("d1", "acme", &["zoom", "telegram"], &["zoom"], t1),
        t1,
    )
    .unwrap();
    let mut d3 = device("d3", "globex", &["zoom"], &[], t1);
    d3.platform = Some(Platform::Windows);
    s.put_device(&d3, t1).unwrap();
    s.put_device(&device("d4", "acme", &["telegram"], &[], t1), t1)
        .unwrap();
    let acme = s.org_aggregate("acme").unwrap().expect("acme aggregate");
    assert_eq!(acme.devices, 2);
    assert_eq!(acme.by_status.get(&Status::Noncompliant), Some(&1));
    assert_eq!(acme.by_product["zoom"].violating, 1);
    note("acme", format!("{acme:?}"));
    let t2 = T0 + Duration::days(1);
    s.put_device(
        &device("d4", "acme", &["telegram", "zoom"], &["zoom"], t2),
        t2,
    )
    .unwrap();
    let trend = s.daily("acme", 10).unwrap();
    assert_eq!(trend.len(), 2, "one point per day: {trend:?}");
    assert_eq!(trend[0].0, "2026-11-20");
    note("trend", format!("{trend:?}"));
    let history = s.history("d4", None, 10).unwrap();
    assert!(history.len() >= 2, "{history:?}");
    note("history d4", format!("{history:?}"));
    note(
        "history d4 last 1",
        format!("{:?}", s.history("d4", None, 1).unwrap()),
    );
    let last_at = history.last().unwrap().at;
    let before_last = s.history("d4", Some(last_at), 10).unwrap();
    assert!(
        before_last.iter().all(|h| h.at < last_at),
        "{before_last:?}"
    );
    assert!(before_last.len() < history.len(), "{before_last:?}");
    note("history d4 before its last", format!("{before_last:?}"));

    // Listings: every filter, and paging by cursor through everything once.
    let all = s.list_devices(&DeviceFilter::default(), None, 100).unwrap();
    assert_eq!(
        ids(&all.devices),
        ["d1", "d4", "d3"],
        "organisation, then id"
    );
    assert!(all.next.is_none());
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s
            .list_devices(&DeviceFilter::default(), cursor.as_deref(), 1)
            .unwrap();
        paged.extend(page.devices.iter().map(|d| d.device_id.clone()));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, ["d1", "d4", "d3"]);
    let filters = [
        DeviceFilter {
            organisation: Some("acme".into()),
            ..Default::default()
        },
        DeviceFilter {
            status: Some(Status::Noncompliant),
            ..Default::default()
        },
        DeviceFilter {
            product: Some("zoom".into()),
            ..Default::default()
        },
        DeviceFilter {
            platform: Some(Platform::Windows),
            ..Default::default()
        },
        DeviceFilter {
            allowed_orgs: Some(BTreeSet::from(["globex".to_owned()])),
            ..Default::default()
        },
        DeviceFilter {
            organisation: Some("acme".into()),
            product: Some("telegram".into()),
            status: Some(Status::Compliant),
            ..Default::default()
        },
    ];
    for f in &filters {
        let page = s.list_devices(f, None, 100).unwrap();
        note(&format!("list {f:?}"), format!("{:?}", ids(&page.devices)));
    }
    let zoom = s.list_devices(&filters[2], None, 100).unwrap();
    assert_eq!(ids(&zoom.devices), ["d1", "d4", "d3"]);

    // The staleness index: reported before the cut-off, not stale yet.
    let stale = s.stale_candidates(T0 + Duration::hours(2), 10).unwrap();
    assert_eq!(stale, ["d1", "d3"]);
    let mut gone_stale = device("d1", "acme", &[], &[], t1);
    gone_stale.verdict.status = Status::Stale;
    s.put_device(&gone_stale, t2).unwrap();
    assert_eq!(
        s.stale_candidates(T0 + Duration::hours(2), 10).unwrap(),
        ["d3"]
    );

    // A device that moves organisation leaves one aggregate and enters the other.
    let mut moved = device("d4", "globex", &["zoom"], &["zoom"], t2);
    moved.enrolled_at = T0;
    s.put_device(&moved, t2).unwrap();
    note(
        "aggregates after move",
        format!("{:?}", s.org_aggregates().unwrap()),
    );
    assert_eq!(s.org_aggregate("globex").unwrap().unwrap().devices, 2);

    // Removal takes the device out of the aggregates and drops its history.
    assert!(s.remove_device("d3", t2).unwrap());
    assert!(!s.remove_device("d3", t2).unwrap());
    assert!(s.device("d3").unwrap().is_none());
    assert!(s.history("d3", None, 10).unwrap().is_empty());
    note("device ids", format!("{:?}", s.device_ids().unwrap()));
    note(
        "globex after removal",
        format!("{:?}", s.org_aggregate("globex").unwrap()),
    );

    // Classifications, people.
    s.put_classification("acme", "Element", &Classification::Dismissed)
        .unwrap();
    s.put_classification(
        "acme",
        "Jami",
        &Classification::Product {
            product: "jami".into(),
        },
    )
    .unwrap();
    s.put_classification("acme", "Jami", &Classification::Dismissed)
        .unwrap();
    s.put_classification("globex", "Jami", &Classification::Dismissed)
        .unwrap();
    note(
        "classifications",
        format!("{:?}", s.classifications("acme").unwrap()),
    );
    let mut alice = PersonRecord::new("alice".into(), Vec::new());
    s.put_person("p1", &alice).unwrap();
    alice.revoked = true;
    s.put_person("p1", &alice).unwrap();
    note("person", format!("{:?}", s.person("p1").unwrap()));
    note("people", format!("{:?}", s.people().unwrap()));
    assert!(s.person("p2").unwrap().is_none());

    // Audit: positions in order, reads after a position, retention by age and by size.
    for i in 0..5 {
        s.append_audit(&AuditRecord {
            at: T0 + Duration::hours(i),
            actor: "alice".into(),
            action: format!("action-{i}"),
            organisation: Some("acme".into()),
            allowed: true,
            detail: "x".repeat(10),
        })
        .unwrap();
    }
    let entries = s.audit(0, 100).unwrap();
    assert_eq!(entries.len(), 5);
    let first = entries[0].0;
    // Positions are opaque (sled's come from a generator shared with history): compare the
    // entries, and that positions grow.
    let after = s.audit(first, 2).unwrap();
    assert!(after.iter().all(|(p, _)| *p > first), "{after:?}");
    note(
        "audit after the first, 2",
        format!("{:?}", after.iter().map(|(_, e)| e).collect::<Vec<_>>()),
    );
    // Backwards: the newest two, newest first; then the two before those.
    let newest = s.audit_before(u64::MAX, 2).unwrap();
    let actions =
        |v: &[(u64, AuditRecord)]| v.iter().map(|(_, e)| e.action.clone()).collect::<Vec<_>>();
    assert_eq!(actions(&newest), ["action-4", "action-3"]);
    let before = s.audit_before(newest[1].0, 2).unwrap();
    assert_eq!(actions(&before), ["action-2", "action-1"]);
    assert_eq!(
        actions(&s.audit_before(first, 10).unwrap()),
        Vec::<String>::new()
    );
    let pruned = s.prune_audit(T0 + Duration::hours(2), u64::MAX).unwrap();
    assert_eq!(pruned, 2, "the two entries older than the cut");
    let budget: u64 = 2 * (8 + serde_json::to_vec(&entries[4].1).unwrap().len() as u64);
    let pruned = s.prune_audit(T0, budget).unwrap();
    assert_eq!(pruned, 1, "the oldest beyond two entries' bytes");
    note(
        "audit left",
        format!(
            "{:?}",
            s.audit(0, 100)
                .unwrap()
                .iter()
                .map(|(_, e)| &e.action)
                .collect::<Vec<_>>()
        ),
    );

    // Federated rows: a push replaces its enterprise's rows only.
    s.replace_federated(
        "e1",
        &[
            ("o1".into(), federated(3, t1)),
            ("o2".into(), federated(4, t1)),
        ],
    )
    .unwrap();
    s.replace_federated("e2", &[("o1".into(), federated(5, t1))])
        .unwrap();
    s.replace_federated("e1", &[("o2".into(), federated(6, t2))])
        .unwrap();
    let rows = s.federated().unwrap();
    assert_eq!(
        rows.iter()
            .map(|(e, o, r)| (e.as_str(), o.as_str(), r.aggregate.devices))
            .collect::<Vec<_>>(),
        [("e1", "o2", 6), ("e2", "o1", 5)]
    );
    note("federated", format!("{rows:?}"));

    // Rules versions: numbered per kind and organisation, read newest first, never rewritten.
    let p1 = s
        .append_rules(RulesKind::Policy, None, "one", "alice", "p.toml", t1)
        .unwrap();
    let p2 = s
        .append_rules(RulesKind::Policy, None, "two", "bob", "p2.toml", t2)
        .unwrap();
    let o1 = s
        .append_rules(RulesKind::Policy, Some("o1"), "org", "alice", "", t2)
        .unwrap();
    let c1 = s
        .append_rules(RulesKind::Catalog, None, "cat", "alice", "c.toml", t2)
        .unwrap();
    assert_eq!(
        (p1.version, p2.version, o1.version, c1.version),
        (1, 2, 1, 1)
    );
    assert_eq!(p2.author, "bob");
    let history = s.rules_history(RulesKind::Policy, None, 10).unwrap();
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        s.rules_history(RulesKind::Policy, None, 1).unwrap(),
        std::slice::from_ref(&p2)
    );
    assert_eq!(
        s.rules_version(RulesKind::Policy, None, Some(1)).unwrap(),
        Some(p1.clone())
    );
    assert_eq!(
        s.rules_version(RulesKind::Policy, None, None).unwrap(),
        Some(p2.clone())
    );
    assert_eq!(
        s.rules_version(RulesKind::Policy, None, Some(9)).unwrap(),
        None
    );
    assert_eq!(
        s.rules_version(RulesKind::Registers, None, None).unwrap(),
        None
    );
    let mut current = s.current_rules().unwrap();
    current.sort_by(|a, b| (a.kind, &a.organisation).cmp(&(b.kind, &b.organisation)));
    assert_eq!(current, [c1, p2, o1]);
    note("rules", format!("{current:?} {history:?}"));
    seen
}

#[test]
fn sled_and_postgres_stores_behave_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    let on_sled = scenario(&sled);
    let Some(pg) = PgCluster::start("sled_and_postgres_stores_behave_the_same") else {
        return;
    };
    let store = PgStore::open(&PgConfig {
        url: pg.url(),
        password: Some(pg.password().to_owned()),
        max_connections: 4,
    })
    .unwrap();
    let on_pg = scenario(&store);
    for (i, (a, b)) in on_sled.iter().zip(&on_pg).enumerate() {
        assert_eq!(
            a, b,
            "observation {i} differs between sled (left) and PostgreSQL (right)"
        );
    }
    assert_eq!(on_sled.len(), on_pg.len());
}

/// Everything a reader can see in a store, without writing.
fn contents(s: &dyn Store) -> Vec<String> {
    let mut out = Vec::new();
    let aggregates = s.org_aggregates().unwrap();
    out.push(format!("aggregates {aggregates:?}"));
    for (org, _) in &aggregates {
        out.push(format!("daily {org} {:?}", s.daily(org, 100).unwrap()));
        out.push(format!(
            "classifications {org} {:?}",
            s.classifications(org).unwrap()
        ));
    }
    let devices = s
        .list_devices(&DeviceFilter::default(), None, 1000)
        .unwrap();
    for d in &devices.devices {
        out.push(format!("device {d:?}"));
        out.push(format!(
            "history {:?}",
            s.history(&d.device_id, None, 100).unwrap()
        ));
    }
    out.push(format!("tokens {:?}", s.tokens().unwrap()));
    out.push(format!("people {:?}", s.people().unwrap()));
    out.push(format!("audit {:?}", s.audit(0, 1000).unwrap()));
    out.push(format!("federated {:?}", s.federated().unwrap()));
    out
}

fn pg_store(url: String, pg: &PgCluster) -> PgStore {
    PgStore::open(&PgConfig {
        url,
        password: Some(pg.password().to_owned()),
        max_connections: 4,
    })
    .unwrap()
}

#[test]
fn migrate_copies_a_sled_store_that_then_reads_the_same_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    scenario(&sled);
    let Some(pg) =
        PgCluster::start("migrate_copies_a_sled_store_that_then_reads_the_same_on_postgres")
    else {
        return;
    };
    let target = pg_store(pg.create_database("migrated"), &pg);
    let (read, written) = migrate::copy(&sled, &target).unwrap();
    for (table, n) in &read {
        assert_eq!(
            written.get(table),
            Some(n),
            "{table}: {read:?} vs {written:?}"
        );
    }
    assert_eq!(read["devices"], 2);
    assert_eq!(read["audit"], 2);
    assert_eq!(contents(&sled), contents(&target));
    // New audit entries continue after the copied positions.
    let last = target.audit(0, 100).unwrap().last().unwrap().0;
    let next = target
        .append_audit(&AuditRecord {
            at: T0,
            actor: "bob".into(),
            action: "after-migrate".into(),
            organisation: None,
            allowed: true,
            detail: String::new(),
        })
        .unwrap();
    assert!(next > last, "{next} after {last}");
    // A second copy into the same (now busy) database is refused, naming what it holds.
    let again = migrate::copy(&sled, &target).expect_err("not into a busy database");
    assert!(
        again.to_string().contains("already holds devices (2)"),
        "{again}"
    );
}

#[test]
fn one_collector_at_a_time_runs_a_task_on_a_shared_database() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    let (one, two) = (
        sled.try_exclusive("sweep").unwrap(),
        sled.try_exclusive("sweep").unwrap(),
    );
    assert!(
        one.is_some() && two.is_some(),
        "a store one process owns always grants it"
    );
    let Some(pg) = PgCluster::start("one_collector_at_a_time_runs_a_task_on_a_shared_database")
    else {
        return;
    };
    // Two collectors' stores on one database.
    let (a, b) = (pg_store(pg.url(), &pg), pg_store(pg.url(), &pg));
    let held = a
        .try_exclusive("staleness sweep")
        .unwrap()
        .expect("free at first");
    assert!(
        b.try_exclusive("staleness sweep").unwrap().is_none(),
        "held by the other"
    );
    assert!(
        b.try_exclusive("audit retention").unwrap().is_some(),
        "another task is another lock"
    );
    drop(held);
    // The unlock runs on the store's runtime as the guard drops: moments later it is free.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if b.try_exclusive("staleness sweep").unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never released");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A device held by one collector waits out the other's hold.
    let device = a.lock_device("d1").unwrap();
    let waiter = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let _l = b.lock_device("d1").unwrap();
        t0.elapsed()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(device);
    let waited = waiter.join().unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(250),
        "{waited:?}"
    );
}

#[test]
fn collectors_on_one_database_number_rules_apart_and_hear_of_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    assert!(
        sled.notices().is_none(),
        "a store one process owns tells nobody"
    );
    let Some(pg) =
        PgCluster::start("collectors_on_one_database_number_rules_apart_and_hear_of_every_change")
    else {
        return;
    };
    let (a, b) = (pg_store(pg.url(), &pg), pg_store(pg.url(), &pg));
    let mut heard = b.notices().expect("a shared store has notices");
    // The listener connects in the background; wait until a notification gets through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut next = |what: &str| -> Option<Notice> {
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(500), heard.recv())
                .await
                .ok()
                .map(|r| r.unwrap_or_else(|e| panic!("{what}: {e}")))
        })
    };
    loop {
        a.notify(commscan_collector::store::Channel::Verdicts, "ping")
            .unwrap();
        if next("ping").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no notification arrived"
        );
    }
    while next("drain").is_some() {}
    // Two collectors applying at once get distinct, gapless versions.
    std::thread::scope(|s| {
        for store in [&a, &b] {
            s.spawn(move || {
                for i in 0..10 {
                    store
                        .append_rules(RulesKind::Policy, Some("o1"), &format!("{i}"), "x", "", T0)
                        .unwrap();
                }
            });
        }
    });
    let versions: Vec<u64> = a
        .rules_history(RulesKind::Policy, Some("o1"), 100)
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, (1..=20).rev().collect::<Vec<_>>());
    // Each stored version was announced on commit, to the other collector too.
    let mut rules_notices = 0;
    while let Some(n) = next("rules") {
        if matches!(
            n,
            Notice::Message {
                channel: commscan_collector::store::Channel::Rules,
                ..
            }
        ) {
            rules_notices += 1;
        }
    }
    assert_eq!(rules_notices, 20);
    // A payload past the limit is refused rather than cut by the database.
    let big = "x".repeat(commscan_collector::store::MAX_NOTICE_BYTES + 1);
    assert!(
        a.notify(commscan_collector::store::Channel::Verdicts, &big)
            .is_err()
    );
}

#[test]
fn a_stream_taken_over_across_collectors_is_counted_and_its_holder_told() {
    let window = std::time::Duration::from_secs(600);
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    assert_eq!(
        sled.claim_stream("d1", "n1", 1, window).unwrap(),
        None,
        "one process's registry sees every stream"
    );
    let Some(pg) =
        PgCluster::start("a_stream_taken_over_across_collectors_is_counted_and_its_holder_told")
    else {
        return;
    };
    let (a, b) = (pg_store(pg.url(), &pg), pg_store(pg.url(), &pg));
    a.heartbeat("node-a").unwrap();
    b.heartbeat("node-b").unwrap();
    let claim = |s: &PgStore, node: &str, conn: u64| {
        s.claim_stream("d1", node, conn, window).unwrap().unwrap()
    };
    let first = claim(&a, "node-a", 1);
    assert_eq!((first.took_over_from, first.takeovers), (None, 0));
    // The clone connects to the other collector while the first stream is open.
    let second = claim(&b, "node-b", 7);
    assert_eq!(
        (second.took_over_from.as_deref(), second.takeovers),
        (Some("node-a"), 1)
    );
    // The first holder's stream ends after it was taken over: nothing to release.
    a.release_stream("d1", "node-a", 1).unwrap();
    let third = claim(&a, "node-a", 2);
    assert_eq!(
        (third.took_over_from.as_deref(), third.takeovers),
        (Some("node-b"), 2)
    );
    // An ordinary disconnect and reconnect takes nothing over, and keeps the count.
    a.release_stream("d1", "node-a", 2).unwrap();
    let fourth = claim(&b, "node-b", 8);
    assert_eq!((fourth.took_over_from, fourth.takeovers), (None, 2));
    // A stream held by a collector that died (no heartbeat) is not taken over.
    let c = pg_store(pg.url(), &pg);
    c.claim_stream("d2", "dead-node", 1, window).unwrap();
    let fresh = claim_d2(&a, window);
    assert_eq!((fresh.took_over_from, fresh.takeovers), (None, 0));
}

fn claim_d2(s: &PgStore, window: std::time::Duration) -> commscan_collector::store::StreamClaim {
    s.claim_stream("d2", "node-a", 3, window).unwrap().unwrap()
}

fn alert(sink: &str, id: &str) -> commscan_collector::store::OutboxEntry {
    commscan_collector::store::OutboxEntry {
        sink: sink.into(),
        event_id: id.into(),
        payload: format!("{{\"id\":\"{id}\"}}"),
        enqueued_at: T0,
    }
}

/// The alert outbox: enqueued with a device write, in order per sink, removed one by one,
/// raised once per mark value.
fn outbox_scenario(s: &dyn Store) -> Vec<String> {
    let mut seen = Vec::new();
    let ids = |s: &dyn Store, sink: &str| -> Vec<String> {
        s.peek_alerts(sink, 100)
            .unwrap()
            .into_iter()
            .map(|(_, e)| {
                assert_eq!(e.sink, sink);
                e.event_id
            })
            .collect()
    };
    let d = device("d1", "acme", &["zoom"], &["zoom"], T0);
    s.put_device_alerting(&d, T0, &[alert("a", "e1"), alert("b", "e1")])
        .unwrap();
    assert_eq!(
        s.device("d1").unwrap().unwrap().verdict.status,
        Status::Noncompliant
    );
    s.enqueue_alerts(&[alert("a", "e2"), alert("a", "e3")])
        .unwrap();
    assert_eq!(ids(s, "a"), ["e1", "e2", "e3"]);
    assert_eq!(ids(s, "b"), ["e1"]);
    assert_eq!(s.alert_depth("a").unwrap(), 3);
    assert_eq!(s.alert_depth("nobody").unwrap(), 0);
    let first = s.peek_alerts("a", 1).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, alert("a", "e1"));
    s.remove_alert("a", first[0].0).unwrap();
    assert_eq!(ids(s, "a"), ["e2", "e3"]);
    assert_eq!(
        ids(s, "b"),
        ["e1"],
        "removing from one sink leaves the other"
    );
    assert!(
        s.enqueue_alerts_once("stale/bank", "1", &[alert("a", "e4")])
            .unwrap()
    );
    assert!(
        !s.enqueue_alerts_once("stale/bank", "1", &[alert("a", "e5")])
            .unwrap()
    );
    assert!(
        s.enqueue_alerts_once("stale/bank", "2", &[alert("a", "e6")])
            .unwrap()
    );
    seen.push(format!("{:?} {:?}", ids(s, "a"), ids(s, "b")));
    assert_eq!(ids(s, "a"), ["e2", "e3", "e4", "e6"]);
    s.flush().unwrap();
    seen
}

#[test]
fn the_alert_outbox_behaves_the_same_on_sled_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    let on_sled = outbox_scenario(&sled);
    drop(sled);
    // What was flushed is there after a reopen.
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    assert_eq!(
        commscan_collector::store::AlertStore::alert_depth(&sled, "a").unwrap(),
        4
    );
    let Some(pg) = PgCluster::start("the_alert_outbox_behaves_the_same_on_sled_and_postgres")
    else {
        return;
    };
    let store = pg_store(pg.url(), &pg);
    let on_pg = outbox_scenario(&store);
    assert_eq!(on_sled, on_pg);
    // A second collector on the database sees the same queue.
    let other = pg_store(pg.url(), &pg);
    assert_eq!(
        commscan_collector::store::AlertStore::alert_depth(&other, "a").unwrap(),
        4
    );
    assert!(
        !commscan_collector::store::AlertStore::enqueue_alerts_once(
            &other,
            "stale/bank",
            "2",
            &[alert("a", "e7")]
        )
        .unwrap(),
        "raised once across collectors"
    );
}

/// Writes from `threads` threads at once, each owning its devices (as ingest's device lock
/// guarantees): devices move between organisations, gain and lose products and change verdict,
/// so the aggregates, the day's point, the findings and the history all depend on every write
/// being applied once, in each device's order, whatever batches the store combined them into.
fn concurrent_writes(s: &(dyn Store + Sync), threads: usize) {
    const ORGS: [&str; 3] = ["north", "south", "west"];
    const PRODUCTS: [&str; 4] = ["zoom", "skype", "telemost", "whatsapp"];
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for i in 0..40usize {
                    let k = i % 5;
                    let org = ORGS[(i / 5 + t) % ORGS.len()];
                    let products: Vec<&str> = PRODUCTS
                        .iter()
                        .copied()
                        .filter(|_| true)
                        .take(1 + (i + t) % 4)
                        .collect();
                    let deny: Vec<&str> = products
                        .iter()
                        .copied()
                        .filter(|p| (*p == "zoom") == (i % 3 == 0))
                        .collect();
                    let at = T0 + Duration::seconds(i as i64);
                    let d = device(&format!("d{t:02}-{k}"), org, &products, &deny, at);
                    s.put_device(&d, at).unwrap();
                }
            });
        }
    });
}

#[test]
fn concurrent_device_writes_leave_the_same_state_on_sled_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("store")).unwrap();
    concurrent_writes(&sled, 12);
    let on_sled = contents(&sled);
    let total: u64 = sled
        .org_aggregates()
        .unwrap()
        .iter()
        .map(|(_, a)| a.devices)
        .sum();
    assert_eq!(total, 60, "12 threads of 5 devices each, counted once");
    let Some(pg) = PgCluster::start("concurrent_device_writes") else {
        return;
    };
    let store = pg_store(pg.url(), &pg);
    concurrent_writes(&store, 12);
    let on_pg = contents(&store);
    for (i, (a, b)) in on_sled.iter().zip(&on_pg).enumerate() {
        assert_eq!(
            a, b,
            "observation {i} differs between sled (left) and PostgreSQL (right)"
        );
    }
    assert_eq!(on_sled.len(), on_pg.len());
}

#[test]
fn a_write_postgres_refuses_fails_alone_among_concurrent_writes() {
    let Some(pg) = PgCluster::start("a_write_postgres_refuses_fails_alone") else {
        return;
    };
    let store = pg_store(pg.url(), &pg);
    let results: Vec<(String, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let id = format!("d{t:02}");
                    let mut d = device(&id, "north", &["zoom"], &["zoom"], T0);
                    if t == 7 {
                        // PostgreSQL's text cannot hold NUL; sled would store it.
                        d.hostname = "bad\0host".into();
                    }
                    (id, store.put_device(&d, T0).is_ok())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (id, ok) in &results {
        assert_eq!(*ok, id != "d07", "{id}: written {ok}");
        assert_eq!(
            store.device(id).unwrap().is_some(),
            id != "d07",
            "{id} stored"
        );
    }
    let agg = store.org_aggregate("north").unwrap().unwrap();
    assert_eq!(agg.devices, 15, "only the written devices are counted");
}

/// Another collector's attempt to lock `id`: the receiver hears once it got (and let go of)
/// the lock.
fn attempt(store: &std::sync::Arc<PgStore>, id: &str) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (store, id) = (store.clone(), id.to_owned());
    std::thread::spawn(move || {
        drop(store.lock_device(&id).unwrap());
        let _ = tx.send(());
    });
    rx
}

#[test]
fn many_device_locks_share_few_connections_and_hold_against_another_collector() {
    use std::time::Duration;
    let Some(pg) = PgCluster::start("many_device_locks_share_few_connections") else {
        return;
    };
    // Pools of 4 connections: 100 locks at once cannot each have one.
    let a = pg_store(pg.url(), &pg);
    let b = std::sync::Arc::new(pg_store(pg.url(), &pg));
    let ids: Vec<String> = (0..100).map(|i| format!("dev-{i:03}")).collect();
    let held: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| {
                let a = &a;
                s.spawn(move || a.lock_device(id).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let waiting = attempt(&b, "dev-042");
    assert!(
        waiting.recv_timeout(Duration::from_millis(500)).is_err(),
        "the other collector got a held lock"
    );
    drop(held);
    waiting
        .recv_timeout(Duration::from_secs(5))
        .expect("released locks reach the other collector");
    // Let go and taken again at once (its unlock may still be queued, or may have run): the
    // second hold is never undone by the first's unlock.
    for id in ids.iter().take(20) {
        drop(a.lock_device(id).unwrap());
        let again = a.lock_device(id).unwrap();
        let waiting = attempt(&b, id);
        assert!(
            waiting.recv_timeout(Duration::from_millis(300)).is_err(),
            "{id}: a lock taken again was lost to the other collector"
        );
        drop(again);
        waiting
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{id}: never released"));
    }
    // Every lock is released: the other collector takes them all.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let all: Vec<_> = ids.iter().map(|id| b.lock_device(id).unwrap()).collect();
        tx.send(all.len()).unwrap();
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(100),
        "locks never released"
    );
}
