//! The collector killed with SIGKILL mid-stream, again and again, while an agent (in-process)
//! reports a changing device: the collector ends with the agent's last scan, and a set
//! checker over what the agent sent and what the collector recorded finds nothing lost,
//! nothing unexpected and nothing recorded twice.
//!
//! The collector logs `report applied` (sequence, resulting state digest) after its store
//! flushed and before it acknowledges, and `report already stored` for a resend it had; the
//! agent announces each record it sends and each acknowledgement. So:
//! - *lost*: a record the agent saw acknowledged that the collector never recorded;
//! - *unexpected*: a recorded sequence the agent never sent, or with another state digest;
//! - *twice*: a sequence recorded by two collector lives (a flushed write lost).
//!
//! The collector's device history is checked too: per product, appearances and removals
//! alternate and end in the final state.

use commscan_agent::delivery::{Agent, AgentEvent};
use commscan_agent::scanner::{HostInventory, ScanTarget, Scanner};
use commscan_agent::state::DataDir;
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_tests::workspace_binary;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PACKAGES: [(&str, &str); 5] = [
    ("zoom", "zoom"),
    ("skypeforlinux", "skype"),
    ("slack-desktop", "slack"),
    ("telegram-desktop", "telegram"),
    ("teams", "microsoft-teams"),
];

fn install(root: &Path, mask: u64) {
    let mut text = String::new();
    for (i, (p, _)) in PACKAGES.iter().enumerate() {
        if mask >> i & 1 == 1 {
            text.push_str(&format!(
                "Package: {p}\nStatus: install ok installed\nVersion: 1.0\n\n"
            ));
        }
    }
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), text).unwrap();
}

fn products(mask: u64) -> Vec<String> {
    let mut v: Vec<String> = (0..PACKAGES.len())
        .filter(|i| mask >> i & 1 == 1)
        .map(|i| PACKAGES[i].1.to_owned())
        .collect();
    v.sort();
    v
}

fn rand(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The collector as a child process on a fixed port, its log collected across lives.
struct Collector {
    data: PathBuf,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start(&mut self) {
        let mut child = Command::new(workspace_binary("commscan-collector"))
            .args([
                "serve",
                "--data-dir",
                self.data.to_str().unwrap(),
                "--listen",
            ])
            .arg(format!("127.0.0.1:{}", self.port))
            .env("COMMSCAN_LOG", "warn,commscan_collector=info")
            .env("NO_COLOR", "1")
            .env_remove("COMMSCAN_POLICY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = self.log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(strip_ansi(&l));
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "collector did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The line without terminal colour sequences.
fn strip_ansi(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split([' ', '\n']).next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_stream_loses_nothing_and_records_every_report_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let out = Command::new(workspace_binary("commscan-collector"))
        .args([
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--org",
            "acme",
        ])
        .args(["--trust-domain", "test.local", "--server-name", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cse_"))
        .expect("an enrolment token")
        .to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut collector = Collector {
        data: data.clone(),
        port,
        child: None,
        log: Arc::default(),
    };
    collector.start();
    let url = format!("https://127.0.0.1:{port}");
    let ca_path = data.join("pki/ca.crt");
    let ca = std::fs::read_to_string(&ca_path).unwrap();

    let agent_data = DataDir::new(dir.path().join("agent"));
    let identity =
        commscan_agent::enroll::enroll(&url, &token, &ca, Platform::Linux, None, &agent_data)
            .await
            .unwrap();
    let root = dir.path().join("root");
    let mut mask = 0b1;
    install(&root, mask);
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
        ScanTarget::tree(&root, Platform::Linux),
    ));
    let agent = Arc::new(Agent::open(cfg, inventory).unwrap());

    // What the agent sent (sequence → digest) and which records it saw acknowledged.
    let sent: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut events = agent.events();
    let (s, a) = (sent.clone(), acked.clone());
    let recorder = tokio::spawn(async move {
        let mut in_flight = None;
        while let Ok(e) = events.recv().await {
            match e {
                AgentEvent::Sent {
                    sequence,
                    state_digest,
                    ..
                } => {
                    s.lock().unwrap().insert(sequence, state_digest);
                    in_flight = Some(sequence);
                }
                AgentEvent::Acked { .. } => {
                    if let Some(seq) = in_flight.take() {
                        a.lock().unwrap().insert(seq);
                    }
                }
                _ => {}
            }
        }
    });
    let stop = CancellationToken::new();
    let run = {
        let (agent, stop) = (agent.clone(), stop.clone());
        tokio::spawn(async move { agent.run(stop).await })
    };

    // Change the device 60 times; kill the collector at random moments, restart it after a
    // random pause.
    let mut x = 0xC0FF_EE11_u64;
    let (mut kills, started) = (0, Instant::now());
    for step in 0..60 {
        let next = loop {
            let m = rand(&mut x) % 32;
            if m != mask {
                break m;
            }
        };
        mask = next;
        install(&root, mask);
        tokio::time::sleep(Duration::from_millis(20 + rand(&mut x) % 120)).await;
        if step % 6 == 5 {
            collector.kill();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rand(&mut x) % 300)).await;
            collector.start();
        }
    }

    // Converge: the collector holds the agent's last scan.
    let want = products(mask);
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
        })
        .await
        .unwrap()
        .into_inner()
        .history;

    stop.cancel();
    run.await.unwrap();
    collector.kill();
    recorder.abort();

    // The set checker.
    let log = collector.log.lock().unwrap().clone();
    let mut applied: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut already: BTreeSet<u64> = BTreeSet::new();
    for l in &log {
        let Some(seq) = field(l, "sequence").and_then(|s| s.parse().ok()) else {
            continue;
        };
        if l.contains("report applied") {
            let digest = field(l, "digest").unwrap_or_default().to_owned();
            applied.entry(seq).or_default().push(digest);
        } else if l.contains("report already stored") {
            already.insert(seq);
        }
    }
    let sent = sent.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|s| !applied.contains_key(s) && !already.contains(s))
        .copied()
        .collect();
    let unexpected: Vec<u64> = applied
        .iter()
        .filter(|(s, d)| sent.get(s).is_none_or(|want| d.iter().any(|d| d != want)))
        .map(|(s, _)| *s)
        .collect();
    let twice: Vec<u64> = applied
        .iter()
        .filter(|(_, d)| d.len() > 1)
        .map(|(s, _)| *s)
        .collect();
    println!(
        "{kills} SIGKILLs in {:?}: {} reports sent, {} acknowledged, {} recorded, {} resends already stored; lost {}, unexpected {}, recorded twice {}",
        started.elapsed(),
        sent.len(),
        acked.len(),
        applied.len(),
        already.len(),
        lost.len(),
        unexpected.len(),
        twice.len()
    );
    // The collector's own history of the device: per product, appearances and removals
    // alternate (a transition recorded twice would repeat one), and the last event of each
    // product is the final state (a lost transition would leave another).
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut repeated = Vec::new();
    for e in &history {
        if e.kind == "product_seen" || e.kind == "product_removed" {
            if last.get(&e.product) == Some(&e.kind) {
                repeated.push(format!("{} {}", e.kind, e.product));
            }
            last.insert(e.product.clone(), e.kind.clone());
        }
    }
    let present: Vec<String> = last
        .iter()
        .filter(|(_, k)| *k == "product_seen")
        .map(|(p, _)| p.clone())
        .collect();
    println!(
        "history: {} events, {} product transitions",
        history.len(),
        history
            .iter()
            .filter(|e| e.kind.starts_with("product_"))
            .count()
    );
    assert!(
        repeated.is_empty(),
        "transitions recorded twice: {repeated:?}"
    );
    if history.len() < 200 {
        assert_eq!(present, want, "the history ends in the final state");
    }
    assert!(kills >= 10);
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(unexpected.is_empty(), "unexpected: {unexpected:?}");
    assert!(twice.is_empty(), "recorded twice: {twice:?}");
    assert!(!applied.is_empty());
}
