//! Three collector processes on one PostgreSQL database, six agents spread over them, every
//! device changing all the time: one collector is SIGKILLed mid-stream and its agents fail
//! over to the others, then the database itself is crash-restarted (`pg_ctl restart -m
//! immediate`) mid-stream. At the end the database holds every device's last scan, and the
//! delivery oracle ([`commscan_tests::oracle`]) over what each agent sent and saw
//! acknowledged and what all collectors recorded finds nothing lost, nothing unexpected and
//! nothing recorded twice.
//!
//! How:
//! - One throw-away cluster ([`PgCluster`], fsync and synchronous commit on); `commscan-collector
//!   init --store postgres://…` once; three node data directories holding copies of its PKI
//!   (one CA, one server identity: an agent enrolled by one node is served by every node),
//!   each `commscan-collector serve --store postgres://…` as a child process on its own
//!   loopback port ([`CollectorProcess`]), all logging into one [`CollectorLog`].
//! - Agent `i` (in-process, its own data directory and fixture tree) is enrolled by node
//!   `i % 3` and lists the three nodes starting with that one, so each node is some agents'
//!   first choice; a task per agent changes its device every 0.25–0.75 s (about the collector's
//!   per-device report budget; a report over it is throttled and sent again, also covered).
//! - Once every node has applied reports, a policy is applied through node 1's API: every
//!   agent, on whichever node, hears of it (`PolicyChanged`), the other nodes having heard of
//!   it from the database ([`commscan_collector::cluster`]).
//! - Node 0 is SIGKILLed once every node has applied reports, at a moment one of its agents
//!   has a report in flight; the agents it served are then seen reporting to the others. It
//!   is started again a little later, as a supervisor would:
//!   a node must rejoin a database that moved on without it, and it is one more place for
//!   sessions to land while the database is down (an agent whose reports are refused moves
//!   along its list), so a device's reports cross nodes more than once.
//! - The database is crash-restarted under load: sessions end with UNAVAILABLE, reports wait
//!   in the spools, and every agent reports again once it is back.
//! - Changes stop; within a bound, each device's rows equal its agent's last scan and its
//!   spool holds nothing unacknowledged.
//!
//! What "twice" means across nodes: two `report applied` lines (each logged after a commit)
//! for one device and sequence, from any processes. A node that committed and died before
//! acknowledging is not that: the agent's resend to another node is found stored (`report
//! already stored`), or that node's welcome tells the agent the database is past the
//! report and it sends a snapshot under a new sequence.
//!
//! Also checked: every node still runs after the database restart, every node answers an
//! officer query for every device with the same state, each device's stored history ends in its
//! final state without a repeated transition, and the organisation's aggregate row (kept
//! incrementally by all three nodes) equals a count over the findings rows.
//!
//! Without PostgreSQL's server binaries the test prints `SKIPPED` and passes, unless
//! `COMMSCAN_REQUIRE_POSTGRES=1`.

use commscan_agent::delivery::Agent;
use commscan_collector::layout::Layout;
use commscan_core::platform::Platform;
use commscan_ctl::connection::Connection;
use commscan_proto::v1;
use commscan_runtime::testing::postgres::PgCluster;
use commscan_tests::collector_process::{CollectorProcess, init_deployment};
use commscan_tests::oracle::{
    AgentRecorder, ChangingDevice, CollectorLog, ProductHistory, Recorded, check,
};
use commscan_tests::{copy_deployment, tree_agent, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NODES: usize = 3;
const AGENTS: usize = 6;
/// The node that is SIGKILLed.
const VICTIM: usize = 0;

/// One in-process agent, its changing device, and what it sent.
struct Member {
    device_id: String,
    agent: Arc<Agent>,
    recorder: AgentRecorder,
    stop: CancellationToken,
    run: JoinHandle<()>,
    changer: JoinHandle<ChangingDevice>,
}

/// Runs `sql` as the collectors' role; blocking psql off the runtime's workers.
async fn sql(pg: &Arc<PgCluster>, q: &str) -> Result<String, String> {
    let (pg, q) = (pg.clone(), q.to_owned());
    tokio::task::spawn_blocking(move || pg.psql(&pg.url(), &q))
        .await
        .expect("psql thread")
}

/// Device → its stored products, from the typed tables.
async fn stored_products(pg: &Arc<PgCluster>) -> Result<BTreeMap<String, Vec<String>>, String> {
    let out = sql(
        pg,
        "SELECT d.device_id, coalesce(string_agg(f.product, ',' ORDER BY f.product), '')
         FROM devices d LEFT JOIN findings f USING (device_id) GROUP BY d.device_id",
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(d, p)| {
            let products = p.split(',').filter(|s| !s.is_empty()).map(str::to_owned);
            (d.to_owned(), products.collect())
        })
        .collect())
}

/// The node (`node-N`) of a log tag (`node-N#life`).
fn node_of(tag: &str) -> &str {
    tag.split('#').next().unwrap_or(tag)
}

/// Device → the node of its latest applied or already-stored report in `lines`.
fn last_node(lines: &[(String, String)]) -> BTreeMap<String, String> {
    let mut at = BTreeMap::new();
    for (tag, l) in lines {
        let reported = l.contains("report applied") || l.contains("report already stored");
        if let Some(d) = commscan_tests::oracle::field(l, "device").filter(|_| reported) {
            at.insert(d.to_owned(), node_of(tag).to_owned());
        }
    }
    at
}

/// Devices with a `report applied` line in `lines`, with the nodes that applied them.
fn applied_by(lines: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((device, _), applied) in Recorded::parse(lines).applied {
        by.entry(device)
            .or_default()
            .extend(applied.iter().map(|(tag, _)| node_of(tag).to_owned()));
    }
    by
}

/// Keeps going for `d` while the agents change their devices.
async fn meanwhile(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_on_one_database_lose_nothing_through_a_kill_and_a_crash() {
    let test = "three_collectors_on_one_database_lose_nothing_through_a_kill_and_a_crash";
    let Some(pg) = tokio::task::spawn_blocking(move || PgCluster::start(test).map(Arc::new))
        .await
        .expect("cluster thread")
    else {
        return;
    };
    commscan_tests::init_crypto();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();

    // One deployment in the database; three nodes serving it.
    let init_dir = dir.path().join("init");
    let store_args = [
        "--store".to_owned(),
        pg.url(),
        "--store-password-file".to_owned(),
        pg.password_file().display().to_string(),
        "--store-connections".to_owned(),
        "8".to_owned(),
    ];
    let token = init_deployment(&init_dir, &store_args[..4]);
    let ca_path = init_dir.join("pki/ca.crt");
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let admin_token = std::fs::read_to_string(init_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let log = CollectorLog::default();
    let mut nodes: Vec<CollectorProcess> = (0..NODES)
        .map(|n| {
            let data = dir.path().join(format!("node-{n}"));
            copy_deployment(&Layout::new(&init_dir), &data);
            let mut p = CollectorProcess::new(&format!("node-{n}"), &data, log.clone());
            p.args = store_args.to_vec();
            p
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let urls: Vec<String> = nodes.iter().map(CollectorProcess::url).collect();

    // Six agents, enrolled round the nodes, each listing all three from its own node on, each
    // changing its device until `changing` is cancelled.
    let changing = CancellationToken::new();
    let mut fleet = Vec::new();
    for i in 0..AGENTS {
        let data = commscan_agent::state::DataDir::new(dir.path().join(format!("agent-{i}")));
        let identity = commscan_agent::enroll::enroll(
            &urls[i % NODES],
            &token,
            &ca,
            Platform::Linux,
            None,
            &data,
        )
        .await
        .unwrap_or_else(|e| panic!("agent {i} enrols with node-{}: {e}", i % NODES));
        let mut device = ChangingDevice::new(
            &dir.path().join(format!("device-{i}")),
            1 << (i % 5),
            0x5EED_0000 + i as u64,
        );
        let mut cfg = commscan_tests::test_config(&data);
        cfg.triggers.watch = true;
        cfg.triggers.watch_debounce = Duration::from_millis(30);
        cfg.delivery.backoff_initial = Duration::from_millis(50);
        cfg.delivery.backoff_max = Duration::from_millis(500);
        cfg.delivery.collectors = (0..NODES).map(|k| urls[(i + k) % NODES].clone()).collect();
        let agent = Arc::new(tree_agent(cfg, &device.root));
        let recorder = AgentRecorder::start(&agent);
        let stop = CancellationToken::new();
        let run = {
            let (agent, stop) = (agent.clone(), stop.clone());
            tokio::spawn(async move { agent.run(stop).await })
        };
        let changer = {
            let changing = changing.clone();
            tokio::spawn(async move {
                loop {
                    let pause = Duration::from_millis(250 + device.random() % 500);
                    tokio::select! {
                        _ = changing.cancelled() => return device,
                        _ = tokio::time::sleep(pause) => device.change(),
                    }
                }
            })
        };
        fleet.push(Member {
            device_id: identity.device_id,
            agent,
            recorder,
            stop,
            run,
            changer,
        });
    }

    // Every node applies reports: the agents are spread over the three.
    let by_node = wait_until(
        Duration::from_secs(30),
        "every node to apply reports",
        || async {
            let mut nodes_seen = BTreeMap::<String, usize>::new();
            for (_, ns) in applied_by(&log.lines()) {
                for n in ns {
                    *nodes_seen.entry(n).or_default() += 1;
                }
            }
            (nodes_seen.len() == NODES).then_some(nodes_seen)
        },
    )
    .await;

    // A policy applied on one node reaches the agents of all three.
    let applied = Connection {
        collector: urls[1].clone(),
        ca: ca_path.clone(),
        token: admin_token.clone(),
    }
    .admin()
    .await
    .expect("admin client")
    .apply_rules(v1::ApplyRulesRequest {
        kind: v1::RulesKind::Policy as i32,
        organisation: String::new(),
        text: std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/government-device-ban.toml"),
        )
        .unwrap(),
        note: "government-device-ban.toml".into(),
    })
    .await
    .expect("policy applied on node-1")
    .into_inner();
    assert_eq!(applied.version.map(|v| v.version), Some(1));
    wait_until(
        Duration::from_secs(20),
        "every agent to hear of the new policy",
        || async {
            fleet
                .iter()
                .all(|m| {
                    m.recorder
                        .sent()
                        .policy_changes
                        .iter()
                        .any(|p| p == "government-device-ban")
                })
                .then_some(())
        },
    )
    .await;
    println!(
        "policy applied on node-1 heard by all {AGENTS} agents at {:?}",
        started.elapsed()
    );
    meanwhile(Duration::from_secs(2)).await;

    // SIGKILL node 0 while its agents report to it.
    let victim = format!("node-{VICTIM}");
    let on_victim: Vec<String> = last_node(&log.lines())
        .into_iter()
        .filter(|(_, n)| *n == victim)
        .map(|(d, _)| d)
        .collect();
    assert!(
        !on_victim.is_empty(),
        "no agent reports to {victim} (devices per node: {by_node:?})"
    );
    // Mid-stream: when one of its agents has a report in flight (sent, perhaps committed, not
    // acknowledged), or after a bounded wait if none is caught.
    let victims: Vec<&Member> = fleet
        .iter()
        .filter(|m| on_victim.contains(&m.device_id))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let caught = loop {
        let caught = victims
            .iter()
            .find_map(|m| Some((m.device_id.clone(), m.recorder.in_flight()?)));
        if caught.is_some() || Instant::now() > deadline {
            break caught;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mark = log.len();
    nodes[VICTIM].kill();
    let killed_at = started.elapsed();
    match &caught {
        Some((d, seq)) => println!("{victim} SIGKILLed with report {seq} of {d} in flight"),
        None => println!("{victim} SIGKILLed between reports"),
    }
    // Its agents fail over: their next reports are applied by the other nodes.
    wait_until(
        Duration::from_secs(30),
        &format!("the agents of {victim} ({on_victim:?}) to report to another node"),
        || async {
            let after = applied_by(&log.since(mark));
            on_victim
                .iter()
                .all(|d| {
                    after
                        .get(d)
                        .is_some_and(|ns| ns.iter().any(|n| *n != victim))
                })
                .then_some(())
        },
    )
    .await;
    meanwhile(Duration::from_secs(2)).await;
    nodes[VICTIM].start();
    meanwhile(Duration::from_secs(2)).await;

    // Crash-restart the database under load; every agent reports again once it is back.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.restart_immediate())
        .await
        .expect("restart thread");
    let restarted_at = started.elapsed();
    let mark = log.len();
    wait_until(
        Duration::from_secs(40),
        "every agent to report after the database restart",
        || async {
            let after = applied_by(&log.since(mark));
            fleet
                .iter()
                .all(|m| after.contains_key(&m.device_id))
                .then_some(())
        },
    )
    .await;
    meanwhile(Duration::from_secs(2)).await;

    // Stop changing; the database converges to every agent's last scan.
    changing.cancel();
    let mut last_scans = BTreeMap::new();
    for m in &mut fleet {
        let device = (&mut m.changer).await.expect("changer");
        last_scans.insert(m.device_id.clone(), device.products());
    }
    let stored = wait_until(
        Duration::from_secs(60),
        "the database to hold every agent's last scan, and the spools to drain",
        || async {
            let stored = stored_products(&pg).await.ok()?;
            let drained = fleet.iter().all(|m| {
                let v = m.agent.spool().view();
                v.outbox.is_empty() && v.pending.is_empty()
            });
            let same = last_scans
                .iter()
                .all(|(d, want)| stored.get(d) == Some(want));
            (drained && same).then_some(stored)
        },
    )
    .await;
    let converged_at = started.elapsed();
    // Let the last acknowledgements reach the recorders, then stop the agents.
    wait_until(
        Duration::from_secs(10),
        "the last acknowledgements to reach the recorders",
        || async {
            fleet
                .iter()
                .all(|m| m.recorder.in_flight().is_none())
                .then_some(())
        },
    )
    .await;
    for m in &fleet {
        let agent_state: Vec<String> = m
            .agent
            .spool()
            .view()
            .current
            .findings
            .into_keys()
            .collect();
        assert_eq!(
            stored.get(&m.device_id),
            Some(&agent_state),
            "{}: the database holds the agent's last scan",
            m.device_id
        );
    }
    assert_eq!(stored.len(), AGENTS, "devices in the database: {stored:?}");
    for m in &mut fleet {
        m.stop.cancel();
        (&mut m.run).await.expect("agent task");
    }

    // No node died of the outage; each answers for every device with the same state.
    for n in &mut nodes {
        let exited = n.exited();
        assert!(
            n.is_running(),
            "{} is not running ({exited:?}) after the database restart; its log:\n{}",
            n.name,
            n.log_tail()
        );
    }
    for n in &nodes {
        let conn = commscan_ctl::Connection {
            collector: n.url(),
            ca: ca_path.clone(),
            token: admin_token.clone(),
        };
        let mut query = conn.query().await.expect("query client");
        for m in &fleet {
            let d = query
                .get_device(commscan_proto::v1::GetDeviceRequest {
                    device_id: m.device_id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{} answers for {}: {e}", n.name, m.device_id))
                .into_inner();
            let mut products: Vec<String> = d.findings.into_iter().map(|f| f.product).collect();
            products.sort();
            assert_eq!(
                Some(&products),
                last_scans.get(&m.device_id),
                "{} serves {}'s last scan",
                n.name,
                m.device_id
            );
        }
    }

    // The oracle, over the logs of every node and life.
    let lines = log.lines();
    let recorded = Recorded::parse(&lines);
    let verdicts: Vec<_> = fleet
        .iter()
        .map(|m| check(&m.device_id, &m.recorder.sent(), &recorded))
        .collect();
    let mut per_node = BTreeMap::<&str, usize>::new();
    for applied in recorded.applied.values() {
        for (tag, _) in applied {
            *per_node.entry(node_of(tag)).or_default() += 1;
        }
    }
    println!(
        "{NODES} nodes, {AGENTS} agents: {victim} SIGKILLed at {killed_at:?}, database restarted at {restarted_at:?}, converged at {converged_at:?}; reports applied per node {per_node:?}"
    );
    for v in &verdicts {
        println!("{v}");
    }

    // Each device's history (every node's writes, in commit order) ends in its last scan.
    let history = sql(
        &pg,
        "SELECT device_id, kind, coalesce(record->>'product', '') FROM history ORDER BY position",
    )
    .await
    .expect("history");
    let mut events: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for l in history.lines() {
        let f: Vec<&str> = l.splitn(3, '|').collect();
        if let [device, kind, product] = f[..] {
            events.entry(device).or_default().push((kind, product));
        }
    }
    for (device, want) in &last_scans {
        let h = ProductHistory::of(events.get(device.as_str()).cloned().unwrap_or_default());
        assert!(
            h.repeated.is_empty(),
            "{device}: transitions recorded twice: {:?}",
            h.repeated
        );
        assert_eq!(
            &h.present, want,
            "{device}: the history ends in the last scan"
        );
    }

    // The aggregate row, kept incrementally by three writers through a crash, equals a count.
    let aggregate = sql(
        &pg,
        "SELECT key || '=' || (value->>'devices') || '/' || (value->>'violating')
         FROM org_aggregates, jsonb_each(aggregate->'by_product')
         WHERE organisation = 'acme' AND (value->>'devices')::bigint > 0 ORDER BY key",
    )
    .await
    .expect("aggregate");
    let counted = sql(
        &pg,
        "SELECT product || '=' || devices || '/' || violating FROM bi_devices_per_product
         WHERE organisation = 'acme' ORDER BY product",
    )
    .await
    .expect("count");
    assert_eq!(
        aggregate, counted,
        "aggregate by product against the findings rows"
    );
    let devices = sql(
        &pg,
        "SELECT devices FROM org_aggregates WHERE organisation = 'acme'",
    )
    .await
    .expect("aggregate devices");
    assert_eq!(devices, AGENTS.to_string(), "devices in the aggregate");

    for v in &verdicts {
        if !(v.lost.is_empty() && v.unexpected.is_empty() && v.twice.is_empty()) {
            // What the nodes said about this device, to see where its reports went.
            for (tag, l) in lines.iter().filter(|(_, l)| l.contains(&v.device)) {
                println!("[{tag}] {l}");
            }
        }
        v.assert_clean();
    }
    for n in &mut nodes {
        n.kill();
    }
}
