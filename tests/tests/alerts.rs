//! Alert hooks end to end: the collector binary with an `[alerts]` section in its configuration
//! file (`--config`), real agents whose
//! first reports change their devices' verdicts, a local webhook receiver checking every
//! signature, and Debian's rsyslog parsing the syslog messages.
//!
//! The collector is SIGKILLed while alerts wait in its outbox (the receiver failing) and
//! again while a delivery is in flight (the receiver slow), then started again: every verdict
//! change must reach the receiver at least once, and deduplicated by `Idempotency-Key`, the
//! receiver must hold exactly one alert per change, none unexpected.

use commscan_agent::state::DataDir;
use commscan_core::platform::Platform;
use commscan_tests::alert_sinks::{
    Mode, Rsyslog, WebhookReceiver, parse_structured_data, rsyslogd,
};
use commscan_tests::collector_process::{CollectorProcess, init_deployment};
use commscan_tests::oracle::CollectorLog;
use commscan_tests::{install, reporter, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "a-webhook-secret-of-the-test-0123";

/// Enrols an agent named `name` and has it report once a device holding `packages`; returns
/// the device id and the status the collector will have judged (zoom is denied by the
/// default policy).
async fn report_device(
    dir: &Path,
    url: &str,
    token: &str,
    ca: &str,
    name: &str,
    packages: &[&str],
) -> String {
    let data = DataDir::new(dir.join("agents").join(name));
    commscan_agent::enroll::enroll(url, token, ca, Platform::Linux, None, &data)
        .await
        .expect("enrol");
    let root = dir.join("roots").join(name);
    install(&root, packages);
    tokio::time::timeout(
        Duration::from_secs(60),
        reporter(data.clone(), &root).session(
            Duration::from_secs(3600),
            true,
            &CancellationToken::new(),
        ),
    )
    .await
    .expect("a report within 60 s")
    .expect("report acknowledged");
    data.identity().unwrap().device_id
}

fn expected_status(packages: &[&str]) -> &'static str {
    if packages.contains(&"zoom") {
        "noncompliant"
    } else {
        "compliant"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_delivery_delivers_every_verdict_change_at_least_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let token = init_deployment(&data, &[]);
    let receiver = WebhookReceiver::start(SECRET.as_bytes(), Mode::Fail).await;
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[alerts.webhook]]
name = "receiver"
url = "http://127.0.0.1:{}/hooks/commscan"
secret_file = "{}"
organisations = ["acme"]
retry_initial = "1s"
retry_max = "2s"
timeout = "5s"
"#,
            receiver.port,
            secret.display()
        ),
    )
    .unwrap();
    let log = CollectorLog::default();
    let mut collector = CollectorProcess::new("collector", &data, log.clone());
    collector.args = vec!["--config".into(), config.display().to_string()];
    collector.start();
    let url = collector.url();
    let ca = std::fs::read_to_string(data.join("pki/ca.crt")).unwrap();

    // device id → the status its verdict change goes to.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let devices: [(&str, &[&str]); 12] = [
        ("a0", &["zoom"]),
        ("a1", &[]),
        ("a2", &["zoom", "slack-desktop"]),
        ("a3", &["telegram-desktop"]),
        ("b0", &["zoom"]),
        ("b1", &[]),
        ("b2", &["zoom"]),
        ("b3", &["teams"]),
        ("c0", &["zoom"]),
        ("c1", &[]),
        ("c2", &["slack-desktop"]),
        ("c3", &["zoom"]),
    ];
    let report_batch = |prefix: char| {
        devices
            .iter()
            .filter(move |(n, _)| n.starts_with(prefix))
            .copied()
    };

    // 1. The receiver fails: the first four alerts wait in the outbox, retried.
    for (name, packages) in report_batch('a') {
        let id = report_device(dir.path(), &url, &token, &ca, name, packages).await;
        expected.insert(id, expected_status(packages).to_owned());
    }
    wait_until(Duration::from_secs(30), "failed attempts", || async {
        (receiver.attempts() >= 3).then_some(())
    })
    .await;
    // 2. Killed with alerts only in its outbox.
    collector.kill();
    collector.start();
    for (name, packages) in report_batch('b') {
        let id = report_device(dir.path(), &url, &token, &ca, name, packages).await;
        expected.insert(id, expected_status(packages).to_owned());
    }
    // 3. The receiver accepts, slowly; killed while a delivery is in flight (a request the
    //    receiver has read and not yet answered).
    receiver.set_mode(Mode::Slow);
    let in_flight = wait_until(
        Duration::from_secs(60),
        "an accepted delivery and another in flight",
        || async {
            let d = receiver.deliveries();
            let accepted = d.iter().filter(|d| d.accepted).count();
            let last = d.last().filter(|d| !d.accepted && accepted >= 2)?;
            Some(last.key.clone())
        },
    )
    .await;
    collector.kill();
    receiver.set_mode(Mode::Accept);
    collector.start();
    for (name, packages) in report_batch('c') {
        let id = report_device(dir.path(), &url, &token, &ca, name, packages).await;
        expected.insert(id, expected_status(packages).to_owned());
    }
    assert_eq!(expected.len(), devices.len());

    // Every change arrives.
    let delivered = wait_until(
        Duration::from_secs(90),
        "every verdict change at the receiver",
        || async {
            let got: BTreeSet<String> = receiver
                .deliveries()
                .iter()
                .filter_map(|d| Some(d.body["device"]["device_id"].as_str()?.to_owned()))
                .collect();
            let want: BTreeSet<String> = expected.keys().cloned().collect();
            want.is_subset(&got).then(|| receiver.deliveries())
        },
    )
    .await;
    // Let a late duplicate show up, if there is one to come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = receiver.deliveries();
    assert!(all.len() >= delivered.len());

    // Every request was signed, with a fresh timestamp, and keyed by the body's id.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for d in &all {
        assert!(d.signed, "bad signature on {}", d.raw);
        assert!(
            (now - d.timestamp).abs() < 300,
            "stale timestamp {}",
            d.timestamp
        );
        assert_eq!(d.body["id"].as_str(), Some(d.key.as_str()), "{}", d.raw);
    }
    // Deduplicated by key: exactly one alert per change, nothing else; a key always carries
    // the same body.
    let mut by_key: BTreeMap<&str, &str> = BTreeMap::new();
    for d in &all {
        let first = by_key.entry(&d.key).or_insert(&d.raw);
        assert_eq!(*first, d.raw, "one key, two bodies");
    }
    let received: BTreeMap<String, String> = by_key
        .values()
        .map(|raw| {
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            assert_eq!(v["kind"], "verdict_changed");
            assert_eq!(v["organisations"], serde_json::json!(["acme"]));
            assert_eq!(v["device"]["from"], "unknown");
            (
                v["device"]["device_id"].as_str().unwrap().to_owned(),
                v["device"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by_key.len(),
        expected.len(),
        "one alert per change: {by_key:#?}"
    );
    assert_eq!(received, expected);
    let accepted = all.iter().filter(|d| d.accepted).count();
    let accepted_keys: BTreeSet<&str> = all
        .iter()
        .filter(|d| d.accepted)
        .map(|d| d.key.as_str())
        .collect();
    let read_keys: BTreeSet<&str> = all.iter().map(|d| d.key.as_str()).collect();
    let duplicates = all.len() - all.iter().filter(|d| !d.accepted).count() - accepted_keys.len();
    eprintln!(
        "alerts: {} verdict changes, {} requests read by the receiver ({} answered 2xx, {} refused or cut by a kill), {} distinct keys, {} keys accepted, {} duplicate accepted deliveries, collector lives {}",
        expected.len(),
        all.len(),
        accepted,
        all.len() - accepted,
        read_keys.len(),
        accepted_keys.len(),
        duplicates,
        collector.lives
    );
    assert_eq!(
        accepted_keys.len(),
        expected.len(),
        "every alert accepted once at least"
    );
    let resent = all.iter().filter(|d| d.key == in_flight).count();
    assert!(
        resent >= 2,
        "the alert in flight at the kill ({in_flight}) was sent again by the next life"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_rfc_5424_alerts_that_waited_out_its_absence_and_a_kill() {
    let Some(rsyslogd) = rsyslogd("rsyslog_receives_rfc_5424_alerts") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let token = init_deployment(&data, &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[alerts.syslog]]
name = "rsyslog"
address = "127.0.0.1:{port}"
facility = "local4"
hostname = "collector-test"
retry_initial = "1s"
retry_max = "2s"
timeout = "5s"
"#
        ),
    )
    .unwrap();
    let log = CollectorLog::default();
    let mut collector = CollectorProcess::new("collector", &data, log.clone());
    collector.args = vec!["--config".into(), config.display().to_string()];
    collector.start();
    let url = collector.url();
    let ca = std::fs::read_to_string(data.join("pki/ca.crt")).unwrap();

    // rsyslog is not there yet: the alerts wait in the outbox, across a kill.
    let mut expected = BTreeMap::new();
    for (name, packages) in [
        ("s0", &["zoom"][..]),
        ("s1", &[][..]),
        ("s2", &["zoom"][..]),
    ] {
        let id = report_device(dir.path(), &url, &token, &ca, name, packages).await;
        expected.insert(id, expected_status(packages).to_owned());
    }
    collector.kill();
    collector.start();
    let rsyslog = Rsyslog::start(&rsyslogd, &dir.path().join("rsyslog"), port);
    let lines = wait_until(
        Duration::from_secs(60),
        "every alert in rsyslog's file",
        || async {
            let lines = rsyslog.lines();
            let ids: BTreeSet<String> = lines
                .iter()
                .filter_map(|l| l.split('\t').nth(3))
                .filter_map(parse_structured_data)
                .flat_map(|sd| sd.into_iter().flat_map(|(_, p)| p))
                .filter(|(k, _)| k == "device_id")
                .map(|(_, v)| v)
                .collect();
            expected.keys().all(|k| ids.contains(k)).then_some(lines)
        },
    )
    .await;
    let mut received = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for line in &lines {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        assert_eq!(f.len(), 5, "{line}");
        let (msgid, app, host, sd, msg) = (f[0], f[1], f[2], f[3], f[4]);
        assert_eq!(msgid, "verdict_changed", "rsyslog read MSGID: {line}");
        assert_eq!(app, "commscan", "{line}");
        assert_eq!(host, "collector-test", "{line}");
        let sd = parse_structured_data(sd).unwrap_or_else(|| panic!("malformed SD: {line}"));
        assert_eq!(sd.len(), 1, "{line}");
        assert_eq!(sd[0].0, "commscan@32473");
        let p: BTreeMap<&str, &str> = sd[0]
            .1
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(p["organisation"], "acme");
        assert_eq!(p["from"], "unknown");
        assert!(msg.contains("unknown -> "), "{line}");
        ids.insert(p["id"].to_owned());
        received.insert(p["device_id"].to_owned(), p["to"].to_owned());
    }
    assert_eq!(received, expected);
    assert_eq!(ids.len(), expected.len(), "one id per change");
    eprintln!(
        "syslog: {} verdict changes, {} messages in rsyslog's file, {} distinct ids",
        expected.len(),
        lines.len(),
        ids.len()
    );
}
