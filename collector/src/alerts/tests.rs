//! The alert outbox with a real (sled) store: routing, atomic enqueue, the bound, stale
//! enterprises raised once, and webhook delivery with retries to a local receiver.

use super::*;
use crate::federation::{OrgSummary, Push};
use crate::layout::{InitOptions, Layout, OpenSettings};
use crate::store::{DeviceRecord, OrgAggregate};
use commscan_core::identity::EnterpriseIdentity;
use commscan_core::verdict::Status;
use std::sync::atomic::AtomicI64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    dir: tempfile::TempDir,
    c: Arc<Collector>,
    offset: Arc<AtomicI64>,
}

const SECRET: &str = "0123456789abcdef-secret";

/// A collector on sled with the sinks of `toml` (`SECRET_FILE` replaced by a secret's path).
fn fixture(toml: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let layout = Layout::new(dir.path().join("c"));
    layout
        .init(&InitOptions {
            trust_domain: "test.local".into(),
            server_names: vec!["localhost".into()],
            organisation: "acme".into(),
            import_ca: None,
            import_server: None,
        })
        .unwrap();
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let settings = OpenSettings {
        clock: Arc::new(move || {
            time::OffsetDateTime::now_utc() + time::Duration::seconds(o.load(Ordering::SeqCst))
        }),
        federation_stale_after: Duration::from_secs(600),
        postgres: None,
        ..OpenSettings::default()
    };
    let (c, _) = layout.open_with(&Default::default(), &settings).unwrap();
    let config: config::AlertsConfig =
        toml::from_str(&toml.replace("SECRET_FILE", &secret.display().to_string())).unwrap();
    assert!(c.set_alerts(Arc::new(Alerts::new(config.validate().unwrap()))));
    Fixture { dir, c, offset }
}

fn device(id: &str, org: &str) -> DeviceRecord {
    DeviceRecord::enrolled(
        id.into(),
        org.into(),
        format!("host-{id}"),
        None,
        String::new(),
        "1".into(),
        time::OffsetDateTime::now_utc(),
    )
}

/// Stores `d` with status `to` (from whatever it had).
fn change(c: &Collector, d: &mut DeviceRecord, to: Status) {
    let before = d.verdict.status;
    d.verdict.status = to;
    c.store_device(d, before, c.now()).unwrap();
}

fn queued(c: &Collector, sink: &str) -> Vec<Alert> {
    c.store()
        .peek_alerts(sink, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, e)| serde_json::from_str(&e.payload).unwrap())
        .collect()
}

#[test]
fn a_verdict_change_enters_the_outbox_of_every_sink_routed_to_it() {
    let f = fixture(
        r#"
        [[webhook]]
        name = "all"
        url = "http://127.0.0.1:9/"
        secret_file = "SECRET_FILE"
        [[webhook]]
        name = "beta-only"
        url = "http://127.0.0.1:9/"
        secret_file = "SECRET_FILE"
        organisations = ["beta"]
        [[syslog]]
        name = "stale-only"
        address = "127.0.0.1:9"
        events = ["device_stale"]
        "#,
    );
    let mut d = device("d1", "acme");
    change(&f.c, &mut d, Status::Noncompliant);
    // Written again without a change: no alert.
    change(&f.c, &mut d, Status::Noncompliant);
    change(&f.c, &mut d, Status::Stale);
    let all = queued(&f.c, "all");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].kind, event::AlertKind::VerdictChanged);
    assert_eq!(all[0].device.as_ref().unwrap().to, Status::Noncompliant);
    assert_eq!(all[1].kind, event::AlertKind::DeviceStale);
    assert!(queued(&f.c, "beta-only").is_empty());
    let stale = queued(&f.c, "stale-only");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].id, all[1].id, "one alert, one id, in every sink");
    let mut b = device("d2", "beta");
    change(&f.c, &mut b, Status::Compliant);
    assert_eq!(queued(&f.c, "beta-only").len(), 1);
}

#[test]
fn the_outbox_and_the_device_survive_a_reopen_together() {
    let f = fixture(
        r#"
        [[webhook]]
        name = "all"
        url = "http://127.0.0.1:9/"
        secret_file = "SECRET_FILE"
        "#,
    );
    let mut d = device("d1", "acme");
    change(&f.c, &mut d, Status::Noncompliant);
    f.c.store().flush().unwrap();
    let data = f.dir.path().join("c");
    drop(f.c);
    let (c, _) = Layout::new(&data)
        .open_with(&Default::default(), &OpenSettings::default())
        .unwrap();
    assert_eq!(
        c.store().device("d1").unwrap().unwrap().verdict.status,
        Status::Noncompliant
    );
    assert_eq!(queued(&c, "all").len(), 1);
}

#[test]
fn a_full_outbox_drops_new_alerts_for_that_sink_only_and_counts_them() {
    let f = fixture(
        r#"
        [[webhook]]
        name = "small"
        url = "http://127.0.0.1:9/"
        secret_file = "SECRET_FILE"
        max_outbox = 2
        [[webhook]]
        name = "big"
        url = "http://127.0.0.1:9/"
        secret_file = "SECRET_FILE"
        "#,
    );
    for i in 0..3 {
        let mut d = device(&format!("d{i}"), "acme");
        change(&f.c, &mut d, Status::Compliant);
    }
    assert_eq!(f.c.store().alert_depth("small").unwrap(), 2);
    assert_eq!(f.c.store().alert_depth("big").unwrap(), 3);
    let text = f.c.render_metrics();
    assert!(
        text.contains(
            r#"commscan_alerts_dropped_total{sink_kind="webhook",reason="outbox_full"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"commscan_alert_outbox_depth{sink="small"} 2"#),
        "{text}"
    );
}

#[test]
fn a_stale_enterprise_is_raised_once_per_missed_push() {
    let f = fixture(
        r#"
        [[webhook]]
        name = "ministry"
        url = "http://127.0.0.1:9/"
        secret_file = "SECRET_FILE"
        events = ["enterprise_stale"]
        "#,
    );
    let bank = EnterpriseIdentity {
        trust_domain: "test.local".into(),
        enterprise: "bank".into(),
        organisations: vec!["hq".into()],
    };
    let push = || Push {
        generated_at: time::OffsetDateTime::now_utc(),
        organisations: vec![OrgSummary::of("hq".into(), OrgAggregate::default())],
    };
    f.c.ministry().accept_push(&bank, push()).unwrap();
    assert_eq!(f.c.raise_stale_enterprises().unwrap(), 0);
    f.offset.store(601, Ordering::SeqCst);
    assert_eq!(f.c.raise_stale_enterprises().unwrap(), 1);
    assert_eq!(f.c.raise_stale_enterprises().unwrap(), 0, "raised once");
    let q = queued(&f.c, "ministry");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].organisations, ["hq"]);
    assert_eq!(q[0].enterprise.as_ref().unwrap().enterprise, "bank");
    // It pushes again, then goes silent again: a new episode, a new alert.
    f.c.ministry().accept_push(&bank, push()).unwrap();
    assert_eq!(f.c.raise_stale_enterprises().unwrap(), 0);
    f.offset.store(1300, Ordering::SeqCst);
    assert_eq!(f.c.raise_stale_enterprises().unwrap(), 1);
    assert_eq!(queued(&f.c, "ministry").len(), 2);
}

/// A request as the receiver saw it.
#[derive(Debug)]
struct Seen {
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

/// Reads one HTTP/1.1 request (headers, then a Content-Length body).
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        headers,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_twice_gets_the_same_signed_alert_a_third_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = fixture(&format!(
        r#"
        [[webhook]]
        name = "soc"
        url = "http://127.0.0.1:{port}/hook"
        secret_file = "SECRET_FILE"
        retry_initial = "1s"
        retry_max = "1s"
        "#
    ));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let receiver = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let Some(seen) = read_request(&mut s).await else {
                continue;
            };
            n += 1;
            let status = if n <= 2 {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            let _ = tx.send(seen);
        }
    });
    let shutdown = CancellationToken::new();
    let tasks = spawn(f.c.clone(), shutdown.clone());
    let c = f.c.clone();
    tokio::task::spawn_blocking(move || {
        let mut d = device("d1", "acme");
        d.hostname = "pc\"1</hostname>\u{1b}[31m".into();
        change(&c, &mut d, Status::Noncompliant);
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let s = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an attempt within 20 s")
            .unwrap();
        seen.push(s);
    }
    let id = seen[0].header("Idempotency-Key").to_owned();
    for s in &seen {
        assert_eq!(s.header("Idempotency-Key"), id);
        assert_eq!(s.header("X-Commscan-Event"), "verdict_changed");
        assert_eq!(s.header("Content-Type"), "application/json");
        let ts: i64 = s.header("X-Commscan-Timestamp").parse().unwrap();
        assert!((time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 60);
        assert_eq!(
            s.header("X-Commscan-Signature"),
            webhook::signature(SECRET.as_bytes(), ts, s.body.as_bytes())
        );
        let alert: Alert = serde_json::from_str(&s.body).unwrap();
        assert_eq!(alert.id, id);
        assert_eq!(
            alert.device.as_ref().unwrap().hostname,
            "pc\"1</hostname>\u{1b}[31m",
            "JSON carries the hostile string escaped and intact"
        );
    }
    // Delivered: the outbox empties.
    let c = f.c.clone();
    let mut empty = false;
    for _ in 0..100 {
        let c = c.clone();
        if tokio::task::spawn_blocking(move || c.store().alert_depth("soc").unwrap())
            .await
            .unwrap()
            == 0
        {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(empty, "the delivered alert left the outbox");
    let text = f.c.render_metrics();
    assert!(
        text.contains(r#"commscan_alerts_delivered_total{sink_kind="webhook"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"commscan_alerts_failed_total{sink_kind="webhook"} 2"#),
        "{text}"
    );
    shutdown.cancel();
    tasks.wait().await;
    receiver.abort();
}
