//! The collector killed with SIGKILL mid-stream, again and again, while an agent (in-process)
//! reports a changing device: the collector ends with the agent's last scan, and a set
//! checker over what the agent sent and what the collector recorded finds nothing lost,
//! nothing unexpected and nothing recorded twice.
//!
//! The checker is [`commscan_tests::oracle`]: the collector logs `report applied` (sequence,
//! resulting state digest) after its store flushed and before it acknowledges, and `report
//! already stored` for a resend it had; the agent announces each record it sends and each
//! acknowledgement. So:
//! - *lost*: a record the agent saw acknowledged that the collector never recorded;
//! - *unexpected*: a recorded sequence the agent never sent, or with another state digest;
//! - *twice*: a sequence recorded by two collector lives (a flushed write lost).
//!
//! The collector's device history is checked too: per product, appearances and removals
//! alternate and end in the final state.

use commscan_agent::delivery::Agent;
use commscan_agent::scanner::{HostInventory, ScanTarget, Scanner};
use commscan_agent::state::DataDir;
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_tests::collector_process::{CollectorProcess, init_deployment};
use commscan_tests::oracle::{
    AgentRecorder, ChangingDevice, CollectorLog, ProductHistory, Recorded, check,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_stream_loses_nothing_and_records_every_report_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let token = init_deployment(&data, &[]);
    let log = CollectorLog::default();
    let mut collector = CollectorProcess::new("collector", &data, log.clone());
    collector.start();
    let url = collector.url();
    let ca_path = data.join("pki/ca.crt");
    let ca = std::fs::read_to_string(&ca_path).unwrap();

    let agent_data = DataDir::new(dir.path().join("agent"));
    let identity =
        commscan_agent::enroll::enroll(&url, &token, &ca, Platform::Linux, None, &agent_data)
            .await
            .unwrap();
    let mut device = ChangingDevice::new(&dir.path().join("root"), 0b1, 0xC0FF_EE11);
    let mut cfg = commscan_agent::config::AgentConfig {
        data_dir: agent_data.root().to_path_buf(),
        processes: false,
        ..Default::default()
    };
    cfg.triggers.process_sample_interval = None;
    cfg.triggers.watch_debounce = Duration::from_millis(30);
    cfg.delivery.backoff_initial = Duration::from_millis(50);
    cfg.delivery.backoff_max = Duration::from_millis(500);
    cfg.delivery.ack_timeout = Duration::from_secs(10);
    let inventory = Arc::new(HostInventory::new(
        Arc::new(Scanner::new(&Catalog::embedded())),
        ScanTarget::tree(&device.root, Platform::Linux),
    ));
    let agent = Arc::new(Agent::open(cfg, inventory).unwrap());

    // What the agent sent (sequence → digest) and which records it saw acknowledged.
    let recorder = AgentRecorder::start(&agent);
    let stop = CancellationToken::new();
    let run = {
        let (agent, stop) = (agent.clone(), stop.clone());
        tokio::spawn(async move { agent.run(stop).await })
    };

    // Change the device 60 times; kill the collector at random moments, restart it after a
    // random pause.
    let (mut kills, started) = (0, Instant::now());
    for step in 0..60 {
        device.change();
        tokio::time::sleep(Duration::from_millis(20 + device.random() % 120)).await;
        if step % 6 == 5 {
            collector.kill();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(device.random() % 300)).await;
            collector.start();
        }
    }

    // Converge: the collector holds the agent's last scan.
    let want = device.products();
    let conn = commscan_ctl::Connection {
        collector: url.clone(),
        ca: ca_path.clone(),
        token: std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let got = async {
            let d = conn
                .query()
                .await
                .ok()?
                .get_device(commscan_proto::v1::GetDeviceRequest {
                    device_id: identity.device_id.clone(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            let mut p: Vec<String> = d.findings.into_iter().map(|f| f.product).collect();
            p.sort();
            Some(p)
        }
        .await;
        if got.as_ref() == Some(&want) {
            break got.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the collector holds {got:?}, the agent's last scan is {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let agent_state: Vec<String> = agent.spool().view().current.findings.into_keys().collect();
    assert_eq!(
        stored, agent_state,
        "collector state equals the agent's last scan"
    );
    // Let the last acknowledgement reach the recorder, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let history = conn
        .query()
        .await
        .unwrap()
        .get_device(commscan_proto::v1::GetDeviceRequest {
            device_id: identity.device_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .history;

    stop.cancel();
    run.await.unwrap();
    collector.kill();

    // The set checker.
    let verdict = check(
        &identity.device_id,
        &recorder.sent(),
        &Recorded::parse(&log.lines()),
    );
    println!("{kills} SIGKILLs in {:?}: {verdict}", started.elapsed());
    // The collector's own history of the device: per product, appearances and removals
    // alternate (a transition recorded twice would repeat one), and the last event of each
    // product is the final state (a lost transition would leave another).
    let products = ProductHistory::of(
        history
            .iter()
            .map(|e| (e.kind.as_str(), e.product.as_str())),
    );
    println!(
        "history: {} events, {} product transitions",
        history.len(),
        history
            .iter()
            .filter(|e| e.kind.starts_with("product_"))
            .count()
    );
    assert!(
        products.repeated.is_empty(),
        "transitions recorded twice: {:?}",
        products.repeated
    );
    if history.len() < 200 {
        assert_eq!(
            products.present, want,
            "the history ends in the final state"
        );
    }
    assert!(kills >= 10);
    verdict.assert_clean();
}
