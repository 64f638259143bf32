//! The collector's Prometheus endpoint as an operator uses it: after an enrolment, a report, a
//! query and a refused call, `/metrics` counts them and shows the organisation's devices by
//! status; `promtool check metrics` (Debian's prometheus package) accepts the output; and a
//! real Prometheus server scrapes it and answers a query with the figure.
//!
//! Without promtool and prometheus the checks that need them print `SKIPPED` and pass,
//! unless `COMMSCAN_REQUIRE_PROMETHEUS=1` (set by `.ci/run`).

use commscan_proto::v1;
use commscan_tests::{TestCollector, dpkg_fixture, reporter, wait_until};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A plain HTTP GET on loopback; the body.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("COMMSCAN_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "{tool} is required (COMMSCAN_REQUIRE_PROMETHEUS=1) but missing"
        );
        println!("SKIPPED: {tool} is not installed (apt-get install prometheus)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_prometheus_scrapes_them() {
    let c = TestCollector::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(commscan_collector::metrics::serve(
        c.domain().clone(),
        listener,
        tokio_util::sync::CancellationToken::new(),
    ));

    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let data = c.enroll_agent("pc").await;
    let id = data.identity().unwrap().device_id;
    reporter(data, root.path())
        .session(
            Duration::from_secs(3600),
            true,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    c.query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = c
        .query_as("not-a-token")
        .await
        .fleet_summary(v1::FleetSummaryRequest::default())
        .await;
    assert!(refused.is_err());

    let a = addr.clone();
    let text = tokio::task::spawn_blocking(move || get(&a, "/metrics"))
        .await
        .unwrap()
        .expect("GET /metrics");
    for line in [
        "commscan_reports_acknowledged_total 1",
        "commscan_enrolments_total 1",
        "commscan_organisation_devices{organisation=\"acme\",status=\"noncompliant\"} 1",
        "commscan_calls_total{method=\"GetDevice\",code=\"Ok\"} 1",
        "commscan_calls_total{method=\"FleetSummary\",code=\"Unauthenticated\"} 1",
        "commscan_refusals_total{action=\"authenticate\"} 1",
        "commscan_report_duration_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(text.contains("commscan_store_size_bytes "), "{text}");
    assert!(text.contains("commscan_connected_agents "), "{text}");
    assert!(
        !text.contains("# EOF"),
        "the classic text format has no EOF marker"
    );

    if !have("promtool") {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    if !have("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: commscan\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = "/api/v1/query?query=commscan_reports_acknowledged_total";
    let answer = wait_until(
        Duration::from_secs(30),
        "Prometheus to scrape the collector",
        || {
            let web = web.clone();
            async move {
                tokio::task::spawn_blocking(move || get(&web, query))
                    .await
                    .unwrap()
                    .filter(|b| b.contains("\"job\":\"commscan\""))
            }
        },
    )
    .await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(answer.contains("\"1\"]"), "the scraped value: {answer}");
}
