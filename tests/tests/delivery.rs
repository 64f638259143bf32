//! Delivery under faults, with a real collector on loopback and the agent in-process: the
//! collector down at start, a week offline under a paused clock, network cuts through a TCP
//! proxy, a restored collector backup, a lost delta, a corrupt spool, and how fast a watched
//! install reaches the collector. Every wait is bounded.

use commscan_agent::delivery::{Agent, AgentEvent};
use commscan_agent::scanner::Inventory;
use commscan_core::platform::Platform;
use commscan_core::scan::{Evidence, Finding, ScanReport, ScanStats};
use commscan_tests::{
    Fault, RunningAgent, TcpProxy, TestCollector, converged, device_state, install, test_config,
    tree_agent, watching,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Waits for an event matching `pred`, at most `timeout` (real time).
async fn event(
    rx: &mut broadcast::Receiver<AgentEvent>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&AgentEvent) -> bool,
) -> AgentEvent {
    tokio::time::timeout(timeout, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("agent gone"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn products(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn collector_down_when_the_agent_starts_converges_once_it_is_up() {
    let mut c = TestCollector::start().await;
    let data = c.enroll_agent("early-bird").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom", "slack-desktop"]);
    c.stop().await;

    let agent = tree_agent(test_config(&data), root.path());
    let mut events = agent.events();
    let running = RunningAgent::start(agent);
    for _ in 0..2 {
        event(
            &mut events,
            Duration::from_secs(20),
            "a failed connection",
            |e| matches!(e, AgentEvent::Disconnected { .. }),
        )
        .await;
    }
    c.restart().await;
    converged(&c, &id, &["zoom", "slack"], Duration::from_secs(30)).await;
    running.shutdown().await;
}

#[tokio::test]
async fn an_install_in_a_watched_directory_reaches_the_collector_within_seconds() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("watched").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    // The production debounce (2 s); full scans hourly, so only the watch can notice.
    let mut cfg = test_config(&data);
    cfg.triggers.watch = true;
    cfg.triggers.watch_debounce = commscan_agent::config::Triggers::default().watch_debounce;
    let running = RunningAgent::start(tree_agent(cfg, root.path()));
    converged(&c, &id, &["zoom"], Duration::from_secs(30)).await;

    let t0 = Instant::now();
    install(root.path(), &["zoom", "telegram-desktop"]);
    converged(&c, &id, &["zoom", "telegram"], Duration::from_secs(30)).await;
    let took = t0.elapsed();
    println!("install → collector: {took:?} (debounce 2 s; target under 5 s)");
    running.shutdown().await;
}

/// An agent reporting through a proxy to a new collector, converged on `zoom`, idle.
struct Proxied {
    c: TestCollector,
    proxy: TcpProxy,
    id: String,
    root: tempfile::TempDir,
    events: broadcast::Receiver<AgentEvent>,
    running: RunningAgent,
}

async fn proxied(
    name: &str,
    cfg: impl FnOnce(&mut commscan_agent::config::AgentConfig),
) -> Proxied {
    let c = TestCollector::start().await;
    let data = c.enroll_agent(name).await;
    let mut identity = data.identity().unwrap();
    let id = identity.device_id.clone();
    let upstream = c.url.trim_start_matches("https://").parse().unwrap();
    let proxy = TcpProxy::start(upstream).await;
    identity.collector = format!("https://{}", proxy.addr);
    std::fs::write(
        data.file("identity.json"),
        serde_json::to_vec(&identity).unwrap(),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let mut config = watching(&data);
    cfg(&mut config);
    let agent = tree_agent(config, root.path());
    let events = agent.events();
    let running = RunningAgent::start(agent);
    converged(&c, &id, &["zoom"], Duration::from_secs(30)).await;
    Proxied {
        c,
        proxy,
        id,
        root,
        events,
        running,
    }
}

/// Cuts an idle agent's link with `fault`, then makes a change: the report the agent cannot
/// deliver must make it notice the dead link within its acknowledgement deadline (plus the
/// watch's 100 ms debounce and the scan: 2 s allowed), although its idle ping interval is an
/// hour, and the change must arrive over a new connection.
async fn a_cut_link_with_a_pending_report_is_noticed_within_the_ack_deadline(fault: Fault) {
    let ack = Duration::from_secs(4);
    let mut p = proxied(&format!("cut-{fault:?}"), |cfg| {
        cfg.delivery.keepalive_interval = Duration::from_secs(3600);
        cfg.delivery.ack_timeout = ack;
    })
    .await;

    let t0 = Instant::now();
    p.proxy.cut(fault);
    install(p.root.path(), &["zoom", "skypeforlinux"]);
    event(
        &mut p.events,
        ack * 2 + Duration::from_secs(10),
        "the cut to be noticed",
        |e| matches!(e, AgentEvent::Disconnected { .. }),
    )
    .await;
    let noticed = t0.elapsed();
    let bound = ack + Duration::from_secs(2);
    println!("{fault:?}: noticed after {noticed:?} (ack deadline {ack:?})");
    assert!(
        noticed <= bound,
        "{fault:?} noticed after {noticed:?}, more than the ack deadline {ack:?} + 2 s"
    );
    converged(&p.c, &p.id, &["zoom", "skype"], Duration::from_secs(30)).await;
    p.running.shutdown().await;
}

#[tokio::test]
async fn a_dropped_link_is_noticed_and_delivery_resumes() {
    a_cut_link_with_a_pending_report_is_noticed_within_the_ack_deadline(Fault::Drop).await;
}

#[tokio::test]
async fn a_stalled_half_open_link_with_a_pending_report_is_noticed_and_delivery_resumes() {
    a_cut_link_with_a_pending_report_is_noticed_within_the_ack_deadline(Fault::Stall).await;
}

#[tokio::test]
async fn a_reset_link_is_noticed_and_delivery_resumes() {
    a_cut_link_with_a_pending_report_is_noticed_within_the_ack_deadline(Fault::Reset).await;
}

/// An idle agent's half-open link, with nothing to send: noticed by its keepalive ping within
/// twice (interval + timeout), and a later change is delivered over a new connection.
#[tokio::test]
async fn an_idle_stalled_link_is_noticed_by_keepalive_and_delivery_resumes() {
    let (interval, timeout) = (Duration::from_secs(2), Duration::from_secs(2));
    let mut p = proxied("idle-stall", |cfg| {
        cfg.delivery.keepalive_interval = interval;
        cfg.delivery.keepalive_interval_min = Duration::from_secs(1);
        cfg.delivery.keepalive_timeout = timeout;
    })
    .await;
    let keepalive = interval + timeout;

    let t0 = Instant::now();
    p.proxy.cut(Fault::Stall);
    event(
        &mut p.events,
        keepalive * 2 + Duration::from_secs(10),
        "the idle cut to be noticed",
        |e| matches!(e, AgentEvent::Disconnected { .. }),
    )
    .await;
    let noticed = t0.elapsed();
    println!("idle stall: noticed after {noticed:?} (keepalive {keepalive:?})");
    assert!(
        noticed <= keepalive * 2,
        "idle stall noticed after {noticed:?}, more than twice the keepalive {keepalive:?}"
    );
    install(p.root.path(), &["zoom", "skypeforlinux"]);
    converged(&p.c, &p.id, &["zoom", "skype"], Duration::from_secs(30)).await;
    p.running.shutdown().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_restored_collector_backup_heals_on_the_next_connection() {
    let mut c = TestCollector::start().await;
    let data = c.enroll_agent("restored").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let agent = tree_agent(watching(&data), root.path());
    let mut events = agent.events();
    let running = RunningAgent::start(agent);
    converged(&c, &id, &["zoom"], Duration::from_secs(30)).await;

    c.stop().await;
    let store = c.layout.path("");
    let backup: PathBuf = c.dir.path().join("backup");
    copy_dir(&store, &backup);
    c.restart().await;
    install(root.path(), &["zoom", "slack-desktop"]);
    converged(&c, &id, &["zoom", "slack"], Duration::from_secs(30)).await;

    // The collector's disk is replaced by the older backup: it no longer knows slack.
    c.stop().await;
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(&backup, &store);
    while events.try_recv().is_ok() {}
    c.restart().await;
    event(
        &mut events,
        Duration::from_secs(30),
        "a reconnection asking for a snapshot",
        |e| {
            matches!(
                e,
                AgentEvent::Connected {
                    want_snapshot: true,
                    ..
                }
            )
        },
    )
    .await;
    converged(&c, &id, &["zoom", "slack"], Duration::from_secs(30)).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_delta_the_collector_lost_heals_on_the_next_connection() {
    let mut c = TestCollector::start().await;
    let data = c.enroll_agent("forgotten").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom", "teams"]);
    let running = RunningAgent::start(tree_agent(watching(&data), root.path()));
    converged(
        &c,
        &id,
        &["zoom", "microsoft-teams"],
        Duration::from_secs(30),
    )
    .await;

    // The store loses the teams finding behind both sides' backs.
    c.stop().await;
    {
        let (collector, _) = c
            .layout
            .open(&commscan_collector::compliance::RulesConfig::default())
            .unwrap();
        let mut d = collector.store().device(&id).unwrap().unwrap();
        d.findings.retain(|f| f.product != "microsoft-teams");
        d.state_digest.clear();
        collector
            .store()
            .put_device(&d, time::OffsetDateTime::now_utc())
            .unwrap();
        collector.store().flush().unwrap();
    }
    c.restart().await;
    converged(
        &c,
        &id,
        &["zoom", "microsoft-teams"],
        Duration::from_secs(30),
    )
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_spool_is_quarantined_and_reported_to_the_collector_and_in_status() {
    let c = TestCollector::start().await;
    let data = c.enroll_agent("corrupt").await;
    let id = data.identity().unwrap().device_id;
    {
        let db = sled::open(data.file("spool")).unwrap();
        let t = db.open_tree("spool").unwrap();
        t.insert(b"m", b"{\"version\": ".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let agent = tree_agent(test_config(&data), root.path());
    let seq = agent
        .report_once(&tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(seq, 1);
    let d = c
        .query()
        .await
        .get_device(commscan_proto::v1::GetDeviceRequest {
            device_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let spool = d
        .stats
        .unwrap()
        .sources
        .into_iter()
        .find(|s| s.source == "spool")
        .expect("a spool entry in the stats");
    assert_eq!(spool.state, commscan_proto::v1::SourceState::Failed as i32);
    assert!(spool.message.contains("quarantined"), "{}", spool.message);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let status = commscan_agent::status::StatusReport::gather(&data, now);
    assert_eq!(status.quarantined.len(), 1);
    let text = status.render(now);
    assert!(text.contains("QUARANTINED"), "{text}");
    assert!(text.contains("last ack:         sequence 1"), "{text}");
}

/// A device whose state changes every minute: product `i` is present while bit `i` of the
/// Gray code of the minute (modulo 32) is set, so exactly one product appears or disappears
/// per minute.
struct Minutely {
    minute: Arc<AtomicU64>,
}

const MINUTELY: [&str; 5] = ["zoom", "skype", "slack", "telegram", "microsoft-teams"];

fn minutely_products(minute: u64) -> Vec<&'static str> {
    let m = minute % 32;
    let gray = m ^ (m >> 1);
    (0..MINUTELY.len())
        .filter(|i| gray >> i & 1 == 1)
        .map(|i| MINUTELY[i])
        .collect()
}

impl Inventory for Minutely {
    fn full(&self) -> ScanReport {
        let findings = minutely_products(self.minute.load(Ordering::SeqCst))
            .into_iter()
            .map(|p| Finding {
                product: p.into(),
                installed: true,
                running: false,
                version: Some("1.0".into()),
                evidence: vec![Evidence {
                    source: "dpkg".into(),
                    detail: format!("package {p} 1.0"),
                    signature: "dpkg".into(),
                }],
            })
            .collect();
        ScanReport {
            platform: Platform::Linux,
            findings,
            unclassified: Vec::new(),
            stats: ScanStats::default(),
        }
    }
    fn sample(&self) -> Option<ScanReport> {
        Some(self.full())
    }
    fn watch_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn platform(&self) -> Platform {
        Platform::Linux
    }
}

#[tokio::test]
async fn a_week_offline_with_a_change_every_minute_stays_under_the_cap_and_converges() {
    let mut c = TestCollector::start().await;
    // A week is ten thousand flushed spool writes: keep them in memory where there is a tmpfs,
    // so the test measures the agent, not the disk.
    let shm = std::path::Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let data = commscan_agent::state::DataDir::new(tmp.path().join("agent"));
    commscan_agent::enroll::enroll(
        &c.url,
        &c.enrolment_token,
        &c.ca_pem,
        Platform::Linux,
        None,
        &data,
    )
    .await
    .unwrap();
    let id = data.identity().unwrap().device_id;
    let minute = Arc::new(AtomicU64::new(0));
    let mut cfg = test_config(&data);
    cfg.triggers.process_sample_interval = Some(Duration::from_secs(30));
    cfg.delivery.backoff_max = Duration::from_secs(300);
    let cap = cfg.spool_cap;
    let agent = Agent::open(
        cfg,
        Arc::new(Minutely {
            minute: minute.clone(),
        }),
    )
    .unwrap();
    let mut events = agent.events();
    let running = RunningAgent::start(agent);
    event(&mut events, Duration::from_secs(30), "the first ack", |e| {
        matches!(e, AgentEvent::Acked { .. })
    })
    .await;
    let (_, before) = device_state(&c, &id).await.unwrap();
    c.stop().await;

    let real = Instant::now();
    tokio::time::pause();
    let week = 7 * 24 * 60;
    let (mut max_bytes, mut max_pending) = (0, 0);
    for m in 1..=week + 5 {
        minute.store(m, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let v = running.agent.spool().view();
        max_bytes = max_bytes.max(v.bytes);
        max_pending = max_pending.max(v.pending.len());
    }
    let v = running.agent.spool().view();
    println!(
        "a week offline in {:?} of real time: {} changes observed, at most {} pending changes in {} bytes (cap {}), {} fallbacks",
        real.elapsed(),
        v.meta.observed_changes,
        max_pending,
        max_bytes,
        cap,
        v.meta.fallbacks
    );
    assert!(
        v.meta.observed_changes >= week,
        "a change every minute was observed"
    );
    assert!(max_bytes <= cap, "{max_bytes} bytes over the cap {cap}");
    assert_eq!(v.meta.fallbacks, 0, "coalescing keeps a week under the cap");
    assert!(
        max_pending <= MINUTELY.len(),
        "one pending change per product"
    );

    tokio::time::resume();
    c.restart().await;
    // The agent sits in a backoff of up to five (simulated) minutes; end it as a network
    // change would.
    running.agent.reconnect_now();
    let after = converged(
        &c,
        &id,
        &minutely_products(week + 5),
        Duration::from_secs(60),
    )
    .await;
    println!(
        "after reconnecting: the collector holds the final state after {} report(s)",
        after - before
    );
    assert!(after > before, "the final state arrived after the week");
    assert!(
        after - before <= 3,
        "the week arrives coalesced, not replayed"
    );
    // History: before the week the device had nothing; after it, one appearance per product
    // of the final state, recorded once.
    let history = c
        .query()
        .await
        .get_device(commscan_proto::v1::GetDeviceRequest {
            device_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .history;
    let mut seen: Vec<String> = history
        .iter()
        .filter(|e| e.kind == "product_seen")
        .map(|e| e.product.clone())
        .collect();
    seen.sort();
    assert_eq!(seen, products(&minutely_products(week + 5)), "{history:?}");
    assert!(
        !history.iter().any(|e| e.kind == "product_removed"),
        "{history:?}"
    );
    running.shutdown().await;
}
