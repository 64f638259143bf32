//! The collector on its PostgreSQL store (`serve --store postgres://…`), end to end, against a
//! throw-away cluster of its own ([`PgCluster`]): `init` puts the first secrets in the
//! database, agents enrol and report over mutual TLS, officers query, and a database outage
//! loses nothing: reports wait in the agents' spools (the collector answers UNAVAILABLE, and
//! acknowledges a report only after its transaction committed), queries fail naming the
//! database, and once it is back every change arrives, once.
//!
//! Without PostgreSQL's server binaries each test prints `SKIPPED` and passes, unless
//! `COMMSCAN_REQUIRE_POSTGRES=1` (set by `.ci/run`).

use commscan_collector::layout::OpenSettings;
use commscan_collector::store::pg_store::PgConfig;
use commscan_runtime::testing::postgres::PgCluster;
use commscan_tests::{
    RunningAgent, StartOptions, TestCollector, converged, device_state, install, tree_agent,
    watching,
};
use std::sync::Arc;
use std::time::Duration;

async fn cluster(test: &'static str) -> Option<Arc<PgCluster>> {
    tokio::task::spawn_blocking(move || PgCluster::start(test).map(Arc::new))
        .await
        .expect("cluster thread")
}

async fn collector_on(pg: &PgCluster) -> TestCollector {
    TestCollector::start_with(StartOptions {
        settings: OpenSettings {
            postgres: Some(PgConfig {
                url: pg.url(),
                password: Some(pg.password().to_owned()),
                max_connections: 8,
            }),
            ..OpenSettings::default()
        },
        ..StartOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_out_a_database_outage_and_arrive_once() {
    let Some(pg) = cluster("reports_wait_out_a_database_outage_and_arrive_once").await else {
        return;
    };
    let c = collector_on(&pg).await;
    let data = c.enroll_agent("pg-1").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let cfg = watching(&data);
    let running = RunningAgent::start(tree_agent(cfg, root.path()));
    let first = converged(&c, &id, &["zoom"], Duration::from_secs(30)).await;

    // The database goes away: queries fail saying so, and a change waits in the agent.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    let refused = c
        .query()
        .await
        .get_device(commscan_proto::v1::GetDeviceRequest {
            device_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a query without its database");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("database"), "{refused:?}");
    install(root.path(), &["zoom", "slack-desktop"]);
    // Long enough for the watch to fire and the report to be refused at least once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = running.agent.spool().view();
    assert!(
        !pending.pending.is_empty() || !pending.outbox.is_empty(),
        "the change is not waiting in the spool: {pending:?}"
    );

    // Back: the change arrives, as exactly the next report.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_again())
        .await
        .unwrap();
    let after = converged(&c, &id, &["slack", "zoom"], Duration::from_secs(40)).await;
    assert!(after > first, "sequence {after} after {first}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restarted_database_keeps_every_acknowledged_report() {
    let Some(pg) = cluster("a_crash_restarted_database_keeps_every_acknowledged_report").await
    else {
        return;
    };
    let c = collector_on(&pg).await;
    let mut devices = Vec::new();
    for n in 0..3 {
        let data = c.enroll_agent(&format!("pg-crash-{n}")).await;
        let id = data.identity().unwrap().device_id;
        let root = tempfile::tempdir().unwrap();
        install(root.path(), &["telegram-desktop"]);
        let running = RunningAgent::start(tree_agent(watching(&data), root.path()));
        devices.push((id, root, running));
    }
    for (id, _, _) in &devices {
        converged(&c, id, &["telegram"], Duration::from_secs(30)).await;
    }
    // Changes in flight while the server is killed (-m immediate) and restarts.
    for (_, root, _) in &devices {
        install(root.path(), &["telegram-desktop", "zoom"]);
    }
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.restart_immediate())
        .await
        .unwrap();
    for (id, _, _) in &devices {
        converged(&c, id, &["telegram", "zoom"], Duration::from_secs(40)).await;
    }
    // The aggregate counts each device once.
    let summary = c
        .query()
        .await
        .organisation_summary(commscan_proto::v1::OrganisationSummaryRequest {
            organisation: "acme".into(),
            trend_days: 0,
        })
        .await
        .expect("summary")
        .into_inner();
    assert_eq!(summary.devices, 3, "{summary:?}");
    let zoom = summary.by_product.iter().find(|p| p.product == "zoom");
    assert_eq!(zoom.map(|p| p.devices), Some(3), "{summary:?}");
    for (_, _, running) in devices {
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_one_database_serve_one_fleet_and_agents_fail_over() {
    let Some(pg) =
        cluster("two_collectors_on_one_database_serve_one_fleet_and_agents_fail_over").await
    else {
        return;
    };
    let mut a = collector_on(&pg).await;
    let b = a.another_node().await;
    // Enrolled on one node, visible on the other: one database.
    let data = a.enroll_agent("pg-two-nodes").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let mut cfg = watching(&data);
    cfg.delivery.collectors = vec![a.url.clone(), b.url.clone()];
    let running = RunningAgent::start(tree_agent(cfg, root.path()));
    let first = converged(&b, &id, &["zoom"], Duration::from_secs(30)).await;

    // Node A goes away: the agent moves to B and its next change arrives there.
    a.stop().await;
    install(root.path(), &["zoom", "telegram-desktop"]);
    let after = converged(&b, &id, &["telegram", "zoom"], Duration::from_secs(40)).await;
    assert!(after > first, "sequence {after} after {first}");
    // A comes back and reads the same state from the database.
    a.restart().await;
    assert_eq!(
        device_state(&a, &id).await.map(|(p, _)| p),
        Some(vec!["telegram".to_owned(), "zoom".to_owned()])
    );
    running.shutdown().await;
}

/// Points a copy of an agent's identity at another collector.
fn clone_identity_to(
    original: &commscan_agent::state::DataDir,
    dir: &std::path::Path,
    collector: &str,
) -> commscan_agent::state::DataDir {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["identity.json", "device.key", "device.crt", "ca.crt"] {
        std::fs::copy(original.file(f), dir.join(f)).unwrap();
    }
    let path = dir.join("identity.json");
    let mut identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    identity["collector"] = collector.into();
    std::fs::write(&path, identity.to_string()).unwrap();
    commscan_agent::state::DataDir::new(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_identity_on_two_collectors_is_flagged_as_on_one() {
    let Some(pg) = cluster("a_cloned_identity_on_two_collectors_is_flagged_as_on_one").await else {
        return;
    };
    let a = collector_on(&pg).await;
    let b = a.another_node().await;
    let original = a.enroll_agent("original").await;
    let id = original.identity().unwrap().device_id;
    // A byte-for-byte copy of the identity, reporting to the other collector.
    let clone = clone_identity_to(&original, &a.dir.path().join("agents/clone"), &b.url);
    let root = commscan_tests::dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for data in [original, clone] {
        let r = commscan_tests::reporter(data, root.path());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                if stop.is_cancelled() {
                    break;
                }
                let _ = r.session(Duration::from_secs(3600), false, &stop).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    commscan_tests::wait_until(Duration::from_secs(30), "the duplicate flag", || async {
        let store = a.domain().store().clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || store.device(&id).unwrap().and_then(|d| d.duplicate))
            .await
            .unwrap()
    })
    .await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    // Refused on both collectors from now on.
    for c in [&a, &b] {
        let d = c
            .query()
            .await
            .get_device(commscan_proto::v1::GetDeviceRequest {
                device_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!d.duplicate.is_empty(), "{}", c.url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_mapped_on_one_collector_reaches_an_agent_connected_to_another() {
    let Some(pg) =
        cluster("a_candidate_mapped_on_one_collector_reaches_an_agent_connected_to_another").await
    else {
        return;
    };
    let a = collector_on(&pg).await;
    let b = a.another_node().await;
    let data = a.enroll_agent("pg-mapped").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let apps = root.path().join("usr/share/applications");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(
        apps.join("obscure.desktop"),
        "[Desktop Entry]\nType=Application\nName=Obscure Chat\nExec=obscure\nCategories=Network;InstantMessaging;\n",
    )
    .unwrap();
    let mut cfg = watching(&data);
    cfg.delivery.collectors = vec![b.url.clone()];
    let agent = tree_agent(cfg, root.path());
    let mut events = agent.events();
    let running = RunningAgent::start(agent);
    converged(&b, &id, &["zoom"], Duration::from_secs(30)).await;
    commscan_tests::wait_until(Duration::from_secs(30), "the candidate stored", || async {
        let store = a.domain().store().clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || store.device(&id).unwrap())
            .await
            .unwrap()
            .filter(|d| d.unclassified.iter().any(|u| u.name == "Obscure Chat"))
    })
    .await;

    // Mapped through collector A; the agent's stream is on B, which hears of it by the
    // database's notification (well before its 30-second backstop).
    let started = std::time::Instant::now();
    a.query()
        .await
        .classify_candidate(commscan_proto::v1::ClassifyCandidateRequest {
            organisation: "acme".into(),
            name: "Obscure Chat".into(),
            product: "telegram".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let accepted = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(commscan_agent::delivery::AgentEvent::MappingsAccepted { decisions: 1 }) =
                events.recv().await
            {
                return;
            }
        }
    })
    .await;
    assert!(
        accepted.is_ok(),
        "the agent on collector B was not sent the mapping made on A"
    );
    eprintln!(
        "mapping on A reached the agent on B after {:?}",
        started.elapsed()
    );
    converged(&b, &id, &["telegram", "zoom"], Duration::from_secs(30)).await;
    running.shutdown().await;
}
