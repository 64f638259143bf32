//! Policy changes re-judge every device without a rescan; a broken policy is refused and the
//! previous one stays in force; a reload is announced to every connected agent.

use commscan_agent::delivery::SessionEnd;
use commscan_collector::compliance::RulesConfig;
use commscan_collector::layout::Layout;
use commscan_proto::v1;
use commscan_tests::{TestCollector, dpkg_fixture, open_stream, reporter};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn policy_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

async fn status(c: &TestCollector, id: &str) -> i32 {
    c.query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap()
        .status
}

#[tokio::test]
async fn a_policy_change_rejudges_devices_and_summaries_without_a_rescan() {
    let mut c = TestCollector::start().await;
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let data = c.enroll_agent("pc").await;
    let id = data.identity().unwrap().device_id;
    let end = reporter(data, root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(end, SessionEnd::Acked(1));
    assert_eq!(status(&c, &id).await, v1::DeviceStatus::Noncompliant as i32);

    // Open the same store directly (the server is stopped) and reload another policy.
    c.stop().await;
    let layout = Layout::new(c.layout.root.clone());
    let (collector, _) = layout.open(&Default::default()).unwrap();
    let broken = c.dir.path().join("broken.toml");
    std::fs::write(&broken, "version = 1\nid = \"x\"\nname = \"X\"\n[[rule]]\nid = \"r\"\naction = \"deny\"\nproducts = [\"no-such-product\"]\n").unwrap();
    let err = collector
        .reload(&RulesConfig::with_policy(Some(&broken)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("previous policy stays in force")
            && err.contains("unknown product id 'no-such-product'"),
        "{err}"
    );
    assert_eq!(collector.rules().policy.id, "ministry-letter");

    let r = collector
        .reload(&RulesConfig::with_policy(Some(&policy_path(
            "government-device-ban.toml",
        ))))
        .unwrap();
    assert_eq!((r.devices, r.changed), (1, 1));
    let agg = collector.store().org_aggregate("acme").unwrap().unwrap();
    assert_eq!(
        agg.percent_compliant(),
        100.0,
        "aggregates follow the re-judged device"
    );
    drop(collector);

    c.restart().await;
    // The restarted server uses the embedded default again, so the device is re-judged when
    // it next reports; the stored verdict is the one the reload wrote.
    assert_eq!(status(&c, &id).await, v1::DeviceStatus::Compliant as i32);
}

#[tokio::test]
async fn an_organisation_with_its_own_policy_is_judged_by_it() {
    let c = TestCollector::start().await;
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let data = c.enroll_agent("org-pc").await;
    let id = data.identity().unwrap().device_id;
    reporter(data, root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(status(&c, &id).await, v1::DeviceStatus::Noncompliant as i32);

    let mut config = RulesConfig::with_policy(Some(&policy_path("ministry-letter.toml")));
    config
        .org_policies
        .push(("acme".into(), c.dir.path().join("missing.toml")));
    let err = c.domain().reload(&config).unwrap_err().to_string();
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );

    config.org_policies = vec![("acme".into(), policy_path("government-device-ban.toml"))];
    c.domain().reload(&config).unwrap();
    let d = c
        .query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.device.unwrap().status, v1::DeviceStatus::Compliant as i32);
    assert_eq!(d.verdict.unwrap().policy, "government-device-ban");
}

#[tokio::test]
async fn a_policy_reload_is_announced_to_every_connected_agent() {
    let c = TestCollector::start().await;
    let mut streams = Vec::new();
    for name in ["a", "b", "c"] {
        streams.push(open_stream(&c, name).await);
    }
    let collector = c.domain().clone();
    let r = tokio::task::spawn_blocking(move || {
        collector.reload(&RulesConfig::with_policy(Some(&policy_path(
            "government-device-ban.toml",
        ))))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.devices, 3);
    for (_tx, stream) in &mut streams {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("announced within 10 s")
            .unwrap()
            .unwrap();
        match m.kind {
            Some(v1::collector_message::Kind::PolicyChanged(p)) => {
                assert_eq!(p.policy_id, "government-device-ban")
            }
            other => panic!("expected a policy change, got {other:?}"),
        }
    }
    // The stream still serves reports after the announcement.
    let (tx, stream) = &mut streams[0];
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Report(v1::Report {
            sequence: 1,
            body: Some(v1::report::Body::Snapshot(v1::Snapshot::default())),
            stats: None,
            scanned_at: None,
            state_digest: Vec::new(),
        })),
    })
    .await
    .unwrap();
    let m = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(
            m.kind,
            Some(v1::collector_message::Kind::Ack(v1::Ack { sequence: 1 }))
        ),
        "{m:?}"
    );
}
