//! Officer and analyst queries over the wire: exports, the event stream, fleet and product
//! summaries, unclassified candidates, device history.

use commscan_proto::v1;
use commscan_tests::{TestCollector, dpkg_fixture, reporter, wait_until, write_dpkg};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn report(
    c: &TestCollector,
    name: &str,
    packages: &[(&str, &str, &str)],
) -> (String, tempfile::TempDir, commscan_agent::state::DataDir) {
    let root = dpkg_fixture(packages);
    let data = c.enroll_agent(name).await;
    reporter(data.clone(), root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    (data.identity().unwrap().device_id, root, data)
}

const ZOOM: (&str, &str, &str) = ("zoom", "install ok installed", "6.1.0");
const TELEMOST: (&str, &str, &str) = ("yandex-telemost", "install ok installed", "1.0");

#[tokio::test]
async fn csv_export_streams_every_visible_device_with_a_header() {
    let c = TestCollector::start().await;
    for i in 0..3 {
        report(
            &c,
            &format!("pc{i}"),
            &[if i == 0 { ZOOM } else { TELEMOST }],
        )
        .await;
    }
    let mut stream = c
        .query()
        .await
        .export_devices(v1::ExportDevicesRequest {
            format: "csv".into(),
            organisation: String::new(),
            status: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        text.extend(chunk.data);
    }
    let text = String::from_utf8(text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "device_id,organisation,hostname,platform,status,products,last_report,agent_version"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(",noncompliant,zoom,"))
            .count(),
        1,
        "{text}"
    );
    let mut json = c
        .query()
        .await
        .export_devices(v1::ExportDevicesRequest {
            format: "json".into(),
            organisation: "acme".into(),
            status: v1::DeviceStatus::Compliant as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(chunk) = json.message().await.unwrap() {
        for line in String::from_utf8(chunk.data).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["status"], "compliant");
            n += 1;
        }
    }
    assert_eq!(n, 2);
}

#[tokio::test]
async fn watchers_see_verdict_changes_as_they_happen() {
    let c = TestCollector::start().await;
    let mut events = c
        .query()
        .await
        .watch_events(v1::WatchEventsRequest {
            organisation: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (id, root, data) = report(&c, "watched", &[TELEMOST]).await;
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(
        (first.device_id.as_str(), first.from, first.to),
        (
            id.as_str(),
            v1::DeviceStatus::Unknown as i32,
            v1::DeviceStatus::Compliant as i32
        )
    );
    write_dpkg(root.path(), &[TELEMOST, ZOOM]);
    reporter(data, root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.to, v1::DeviceStatus::Noncompliant as i32);
    assert_eq!(second.products, vec!["zoom"]);
}

#[tokio::test]
async fn fleet_and_product_summaries_are_aggregates() {
    let c = TestCollector::start().await;
    report(&c, "a", &[ZOOM]).await;
    report(&c, "b", &[TELEMOST]).await;
    let mut q = c.query().await;
    let fleet = q
        .fleet_summary(v1::FleetSummaryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fleet.rows.len(), 1);
    assert_eq!(
        (fleet.rows[0].organisation.as_str(), fleet.rows[0].devices),
        ("acme", 2)
    );
    assert_eq!(fleet.total_devices, 2);
    assert_eq!(fleet.percent_compliant, 50.0);
    let products = q
        .product_findings(v1::ProductFindingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    let zoom = products.iter().find(|p| p.product == "zoom").unwrap();
    assert_eq!((zoom.devices, zoom.violating), (1, 1));
    let summary = q
        .organisation_summary(v1::OrganisationSummaryRequest {
            organisation: "acme".into(),
            trend_days: 7,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.trend.len(), 1, "today's point");
    assert_eq!(summary.trend[0].percent_compliant, 50.0);
}

#[tokio::test]
async fn device_detail_shows_history() {
    let c = TestCollector::start().await;
    let (id, root, data) = report(&c, "h", &[ZOOM]).await;
    write_dpkg(root.path(), &[]);
    reporter(data, root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    let d = wait_until(Duration::from_secs(5), "history", || async {
        let d = c
            .query()
            .await
            .get_device(v1::GetDeviceRequest {
                device_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (d.history.len() >= 4).then_some(d)
    })
    .await;
    let kinds: Vec<String> = d
        .history
        .iter()
        .map(|e| format!("{}:{}", e.kind, e.product))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "enrolled:",
            "product_seen:zoom",
            "status_changed:",
            "product_removed:zoom",
            "status_changed:"
        ]
    );
}
