//! The shipped HAProxy example (`deploy/haproxy/haproxy.cfg`) in front of two collectors on
//! one PostgreSQL database, with a real `haproxy`: an agent that knows only the balancer's
//! address enrols and reports through it (TLS passthrough: the collectors' certificate, valid
//! for `127.0.0.1`, is what the agent verifies, and the collector reads the device from the
//! client certificate); the collector holding its stream stops; the agent reconnects through
//! the balancer to the other collector and its next change arrives there.
//!
//! The test runs the file as shipped, changing only the addresses of its `bind` line and its
//! `server` lines ([`render`]), so the example cannot rot unnoticed; `haproxy -c` must accept
//! it first.
//!
//! Skips (prints `SKIPPED` and passes) without `haproxy` unless `COMMSCAN_REQUIRE_HAPROXY=1`,
//! and without PostgreSQL's server binaries unless `COMMSCAN_REQUIRE_POSTGRES=1` (`.ci/run`
//! installs both and sets both).

use commscan_collector::layout::OpenSettings;
use commscan_collector::store::pg_store::PgConfig;
use commscan_core::platform::Platform;
use commscan_runtime::testing::postgres::PgCluster;
use commscan_tests::{
    RunningAgent, StartOptions, TestCollector, converged, install, tree_agent, wait_until, watching,
};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy/haproxy.cfg");

/// `haproxy` on PATH or in Debian's /usr/sbin; `None` after printing `SKIPPED` when missing
/// (a panic with `COMMSCAN_REQUIRE_HAPROXY=1`).
fn find_haproxy(test: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("COMMSCAN_REQUIRE_HAPROXY").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: COMMSCAN_REQUIRE_HAPROXY=1 but haproxy is not installed"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: haproxy is not installed (apt-get install haproxy)"
        );
    }
    found
}

/// The example with `bind` on `listen` and one `server` line per backend, in order; every
/// other line as shipped. Panics if the example's shape changed (another number of servers).
fn render(example: &str, listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut servers = backends.iter();
    let mut out = String::new();
    for line in example.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let line = match words.as_slice() {
            ["bind", addr, ..] => line.replacen(addr, &listen.to_string(), 1),
            ["server", _, addr, ..] => {
                let to = servers
                    .next()
                    .expect("the example has more server lines than the test has collectors");
                line.replacen(addr, &to.to_string(), 1)
            }
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert!(
        servers.next().is_none(),
        "the example has fewer server lines than the test has collectors"
    );
    out
}

/// A running `haproxy -db` (foreground), killed on drop; its output goes to `log`.
struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// Checks the configuration (`haproxy -c`), starts it and waits (at most 10 s) until it
    /// accepts connections on `listen`.
    fn start(bin: &Path, config: &str, dir: &Path, listen: SocketAddr) -> Haproxy {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("write haproxy.cfg");
        let check = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c refuses the example: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).expect("haproxy log");
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start haproxy");
        let mut h = Haproxy { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = h.child.try_wait() {
                panic!("haproxy exited ({status}):\n{}", h.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy not listening on {listen} after 10 s:\n{}",
                h.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        h
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

fn addr_of(c: &TestCollector) -> SocketAddr {
    c.url
        .trim_start_matches("https://")
        .parse()
        .expect("collector address")
}

#[test]
fn the_example_keeps_its_shape_when_rendered() {
    let example = std::fs::read_to_string(EXAMPLE).expect("deploy/haproxy/haproxy.cfg");
    let listen: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let backends: [SocketAddr; 2] = [
        "127.0.0.1:2".parse().unwrap(),
        "127.0.0.1:3".parse().unwrap(),
    ];
    let out = render(&example, listen, &backends);
    assert!(out.contains("bind 127.0.0.1:1\n"), "{out}");
    assert!(out.contains("server collector-1 127.0.0.1:2\n"), "{out}");
    assert!(out.contains("server collector-2 127.0.0.1:3\n"), "{out}");
    // TLS passthrough: no certificate on the balancer, no HTTP mode.
    assert!(
        out.contains("mode tcp") && !out.contains("mode http"),
        "{out}"
    );
    assert!(
        !out.contains(" crt "),
        "the balancer must not terminate TLS: {out}"
    );
    // Only the addresses changed.
    assert_eq!(out.lines().count(), example.lines().count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_through_haproxy_and_fail_over_to_the_other_collector() {
    const TEST: &str = "agents_report_through_haproxy_and_fail_over_to_the_other_collector";
    let Some(haproxy) = find_haproxy(TEST) else {
        return;
    };
    let Some(pg) = tokio::task::spawn_blocking(|| PgCluster::start(TEST).map(Arc::new))
        .await
        .expect("cluster thread")
    else {
        return;
    };
    let a = TestCollector::start_with(StartOptions {
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
    .await;
    let b = a.another_node().await;
    let mut nodes = [a, b];

    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let example = std::fs::read_to_string(EXAMPLE).expect("deploy/haproxy/haproxy.cfg");
    let config = render(&example, listen, &[addr_of(&nodes[0]), addr_of(&nodes[1])]);
    let lb = Haproxy::start(&haproxy, &config, dir.path(), listen);
    // The only address the agent ever gets; the collectors' certificate names 127.0.0.1.
    let lb_url = format!("https://{listen}");

    // Enrolment and reports through the balancer.
    let data = commscan_agent::state::DataDir::new(dir.path().join("agent"));
    commscan_agent::enroll::enroll(
        &lb_url,
        &nodes[0].enrolment_token,
        &nodes[0].ca_pem,
        Platform::Linux,
        None,
        &data,
    )
    .await
    .unwrap_or_else(|e| panic!("enrol through haproxy: {e}\n{}", lb.log_text()));
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let mut cfg = watching(&data);
    cfg.delivery.collectors = vec![lb_url.clone()];
    let running = RunningAgent::start(tree_agent(cfg, root.path()));
    let first = converged(&nodes[0], &id, &["zoom"], Duration::from_secs(30)).await;

    // The node holding the agent's stream stops; the agent comes back through the balancer
    // to the other one, and its next change arrives.
    let connected = |c: &TestCollector| c.domain().connections().connected();
    let holder = wait_until(
        Duration::from_secs(10),
        "one stream on one node",
        || async {
            match (connected(&nodes[0]), connected(&nodes[1])) {
                (1, 0) => Some(0),
                (0, 1) => Some(1),
                _ => None,
            }
        },
    )
    .await;
    let other = 1 - holder;
    nodes[holder].stop().await;
    install(root.path(), &["zoom", "telegram-desktop"]);
    let after = converged(
        &nodes[other],
        &id,
        &["telegram", "zoom"],
        Duration::from_secs(40),
    )
    .await;
    assert!(after > first, "sequence {after} after {first}");
    assert_eq!(
        connected(&nodes[other]),
        1,
        "the agent's stream is not on the remaining node:\n{}",
        lb.log_text()
    );
    running.shutdown().await;
    // Shown with --nocapture: the sessions, the health checks, the node marked down.
    eprintln!("--- haproxy log ---\n{}", lb.log_text());
    drop(lb);
}
