//! A collector stopped with SIGTERM (systemd's stop) while it holds everything a real one
//! holds open: three agents' reporting streams, an officer's `commscanctl watch`, and an
//! export whose reader has stopped reading halfway.
//!
//! What a sysadmin and an officer would notice, checked here:
//! - the process exits 0 within [`BOUND`], below systemd's 30 s stop timeout (the server's
//!   own bound is `SHUTDOWN_GRACE`, 10 s, after which open connections are closed), and says
//!   `stopped`;
//! - `commscanctl watch` ends by itself, non-zero, naming the shutdown;
//! - the export ends in an error, never in an OK end: a truncated export cannot be taken for a
//!   complete one;
//! - nothing stored is lost, and after a restart the same agents (never restarted) report
//!   again on their own.

use commscan_collector::compliance::RulesConfig;
use commscan_collector::layout::Layout;
use commscan_collector::store::DeviceRecord;
use commscan_core::platform::Platform;
use commscan_core::scan::{Evidence, Finding, SourceOutcome};
use commscan_tests::collector_process::{CollectorProcess, admin_connection, init_deployment};
use commscan_tests::oracle::CollectorLog;
use commscan_tests::{
    RunningAgent, install, stored_products, tree_agent, watching, workspace_binary,
};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the collector may take from SIGTERM to its exit.
const BOUND: Duration = Duration::from_secs(20);
/// Devices seeded before the start, so that the export is far larger than what HTTP/2 windows
/// and the server's channel buffer (several MiB): its sender is still mid-export when the
/// signal comes.
const SEEDED: usize = 15_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watches_exports_and_agent_streams_flushes_and_exits_zero() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let token = init_deployment(&data, &[]);
    seed(&data, SEEDED);

    let log = CollectorLog::default();
    let mut collector = CollectorProcess::new("collector", &data, log.clone());
    collector.start();
    let url = collector.url();
    let ca_path = data.join("pki/ca.crt");
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let admin_token = data.join("admin.token");
    let conn = admin_connection(&data, &url);

    // An officer's watch, as a process.
    let mut watch = Command::new(workspace_binary("commscanctl"))
        .args(["watch", "--collector", &url])
        .arg("--ca")
        .arg(&ca_path)
        .arg("--token-file")
        .arg(&admin_token)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn commscanctl watch");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let watch_out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(watch_out).lines().map_while(Result::ok) {
            let _ = lines_tx.send(l);
        }
    });
    // Let the watch subscribe before the agents' first reports make events.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Three agents, each with Zoom installed.
    let (mut agents, mut roots, mut device_ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..3 {
        let agent_data = commscan_agent::state::DataDir::new(dir.path().join(format!("agent-{i}")));
        let identity =
            commscan_agent::enroll::enroll(&url, &token, &ca, Platform::Linux, None, &agent_data)
                .await
                .unwrap();
        device_ids.push(identity.device_id);
        let root = dir.path().join(format!("root-{i}"));
        install(&root, &["zoom"]);
        agents.push(RunningAgent::start(tree_agent(
            watching(&agent_data),
            &root,
        )));
        roots.push(root);
    }
    // The watch saw the three devices arrive: it is live.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!(
                "the watch printed {seen:?} in 30 s, not three events; collector log:\n{}",
                collector.log_tail()
            ),
        }
    }

    // An export of every device, read one chunk at a time and then not at all.
    let mut export = conn
        .query()
        .await
        .unwrap()
        .export_devices(commscan_proto::v1::ExportDevicesRequest {
            format: "json".into(),
            organisation: String::new(),
            status: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = export
        .message()
        .await
        .unwrap()
        .expect("a first chunk")
        .data
        .len();

    // Stop, as systemd does.
    let (status, took) =
        tokio::task::block_in_place(|| collector.terminate(BOUND)).unwrap_or_else(|| {
            panic!(
                "still running {BOUND:?} after SIGTERM; its log:\n{}",
                collector.log_tail()
            )
        });
    println!("SIGTERM → exit {status} in {took:?}");
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        collector.log_tail()
    );
    assert!(
        log.lines().iter().any(|(_, l)| l.contains("stopped")),
        "no `stopped` line:\n{}",
        collector.log_tail()
    );

    // The watch ended by itself, naming why.
    let ended = Instant::now();
    let watch_status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(10),
            "the watch is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut watch_err = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut watch_err).unwrap();
    assert!(!watch_status.success(), "the watch ended as if complete");
    assert!(
        watch_err.contains("shutting down"),
        "the watch's message does not name the shutdown: {watch_err}"
    );

    // The export's reader comes back: what is left ends in an error, never as complete.
    let end = loop {
        match export.message().await {
            Ok(Some(chunk)) => exported += chunk.data.len(),
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let status = end.unwrap_or_else(|| {
        panic!("the export ended OK after {exported} bytes although the collector stopped")
    });
    println!(
        "export: {exported} bytes, then {:?}: {}",
        status.code(),
        status.message()
    );
    // The collector said why (a connection merely cut at the end of the grace would not).
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");

    // Restart: nothing lost, and the same agents report again by themselves.
    collector.start();
    for root in &roots {
        install(root, &["zoom", "telegram-desktop"]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &device_ids {
        loop {
            let products = stored_products(&conn, id).await;
            if products.as_deref() == Some(&["telegram".to_owned(), "zoom".to_owned()][..]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent device {id} holds {products:?} a minute after the restart; log:\n{}",
                collector.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let last_seeded = format!("00000000-0000-4000-8000-{:012}", SEEDED - 1);
    assert_eq!(
        stored_products(&conn, &last_seeded).await.as_deref(),
        Some(&["skype".to_owned(), "telegram".to_owned(), "zoom".to_owned()][..]),
        "a seeded device survived the stop"
    );
    for a in agents {
        a.shutdown().await;
    }
    collector.kill();
}

/// `n` judged devices written into the deployment's store before the collector starts.
fn seed(data: &std::path::Path, n: usize) {
    let (collector, _) = Layout::new(data).open(&RulesConfig::default()).unwrap();
    let rules = collector.rules();
    let now = time::OffsetDateTime::now_utc();
    for i in 0..n {
        let mut d = DeviceRecord::enrolled(
            format!("00000000-0000-4000-8000-{i:012}"),
            "acme".into(),
            format!("seeded-{i}"),
            Some(Platform::Linux),
            "Debian 12".into(),
            "0.1.0".into(),
            now,
        );
        d.findings = ["skype", "telegram", "zoom"]
            .iter()
            .map(|p| Finding {
                product: (*p).into(),
                installed: true,
                running: false,
                version: Some("1.2.3".into()),
                evidence: vec![Evidence {
                    source: "dpkg".into(),
                    detail: format!("package {p} 1.2.3"),
                    signature: "dpkg".into(),
                }],
            })
            .collect();
        d.stats.sources.insert("dpkg".into(), SourceOutcome::Ok);
        d.last_report = Some(now);
        d.last_sequence = 1;
        rules.judge(&mut d, now, collector.stale_after());
        collector.store().put_device(&d, now).unwrap();
    }
    collector.store().flush().unwrap();
}
