//! The fleet simulator, small: a few simulated agents with their own certificates hold mTLS
//! streams from several loopback source addresses, get their reports acknowledged, receive a
//! pushed policy change, and stop by themselves. The scale figures come from
//! `commscan-loadgen bench`; this only keeps the simulator honest in CI, on sled and (where the
//! PostgreSQL server binaries are installed) on a copy of the fleet in PostgreSQL.

use commscan_collector::layout::OpenSettings;
use commscan_collector::server::{Limits, serve};
use commscan_loadgen::agent::Target;
use commscan_loadgen::fleet::Fleet;
use commscan_loadgen::pool::{Phase, Pool, Snapshot};
use commscan_loadgen::postgres::PgDeployment;
use commscan_tests::{init_crypto, wait_until};
use std::net::IpAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const AGENTS: usize = 4;

fn sources() -> Vec<IpAddr> {
    if cfg!(target_os = "linux") {
        vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()]
    } else {
        vec!["127.0.0.1".parse().unwrap()]
    }
}

async fn until(pool: &Pool, what: &str, f: impl Fn(&Snapshot) -> bool) -> Snapshot {
    wait_until(Duration::from_secs(20), what, || {
        let s = pool.snapshot();
        let done = f(&s);
        async move { done.then_some(s) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_report_and_receive_a_pushed_policy_change() {
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::prepare(&dir.path().join("cache"), AGENTS, 2).unwrap();
    assert_eq!(fleet.devices.len(), AGENTS);
    let again = Fleet::prepare(&dir.path().join("cache"), AGENTS, 2).unwrap();
    assert_eq!(
        again.devices[0].cert_pem, fleet.devices[0].cert_pem,
        "the cache is reused"
    );

    let layout = fleet.fresh_data_dir(dir.path()).unwrap();
    let (collector, tls) = layout.open(&Default::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        collector.clone(),
        tls.clone(),
        listener,
        Limits::default(),
        stop.clone(),
    ));

    let target = Target {
        addr,
        ca_pem: fleet.ca_pem.clone(),
    };
    let pool = Pool::start(target, fleet.devices, 0, &sources(), 0.0);
    until(
        &pool,
        "every agent connected and its snapshot acknowledged",
        |s| s.connected == AGENTS as i64 && s.acks >= AGENTS as u64,
    )
    .await;
    assert_eq!(collector.connections().connected(), AGENTS);

    pool.reset();
    pool.set_phase(Phase::Closed {
        until: tokio::time::Instant::now() + Duration::from_millis(500),
    });
    let s = until(&pool, "deltas acknowledged", |s| s.acks > AGENTS as u64).await;
    assert!(s.latency.count() > 0, "load-phase latencies are recorded");
    assert_eq!(s.failures, 0, "{}", s.last_failure);

    let c = collector.clone();
    tokio::task::spawn_blocking(move || {
        c.reload(&commscan_collector::compliance::RulesConfig::default())
    })
    .await
    .unwrap()
    .unwrap();
    until(&pool, "every agent told of the policy change", |s| {
        s.policy_changes == AGENTS as u64
    })
    .await;

    // The collector goes away and comes back on the same port: every agent reconnects, and
    // as the real agent's digest spares it, none is asked for a snapshot (the digests each
    // report declared, deltas included, match what the collector stored). Idle first: the
    // closed-loop phase above may not be over yet, and its last reports' acks must arrive
    // (a report applied but not acknowledged rightly costs a snapshot).
    pool.set_phase(Phase::Idle);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    pool.reset();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        collector.clone(),
        tls,
        listener,
        Limits::default(),
        stop.clone(),
    ));
    let s = until(&pool, "every agent back and in sync", |s| {
        s.connected == AGENTS as i64 && s.in_sync >= AGENTS as u64
    })
    .await;
    assert_eq!(
        s.snapshots_asked, 0,
        "a reconnect in sync sends no snapshot"
    );
    assert_eq!(s.acks, 0, "nothing was sent, so nothing acknowledged");

    pool.stop(Duration::from_secs(5)).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// The `ingest-pg` scenarios' path, small: the fleet copied into a throw-away PostgreSQL
/// cluster as `commscan-collector migrate` copies a site, a collector serving it with
/// `--store`, and agents reporting to it. Skipped where the PostgreSQL binaries are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_report_to_a_collector_on_the_fleet_copied_into_postgres() {
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::prepare(&dir.path().join("cache"), AGENTS, 2).unwrap();
    let layout = fleet.fresh_data_dir(dir.path()).unwrap();
    let l = layout.clone();
    let started = tokio::task::spawn_blocking(move || {
        PgDeployment::start(
            "simulated_agents_report_to_a_collector_on_the_fleet_copied_into_postgres",
            &l,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let Some(pg) = started else { return };
    assert_eq!(
        pg.psql("SELECT count(*) FROM devices").unwrap(),
        AGENTS.to_string(),
        "every enrolled device was copied"
    );

    let settings = OpenSettings {
        postgres: Some(pg.config(4)),
        ..OpenSettings::default()
    };
    let (collector, tls) = layout.open_with(&Default::default(), &settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        collector.clone(),
        tls,
        listener,
        Limits::default(),
        stop.clone(),
    ));
    let target = Target {
        addr,
        ca_pem: fleet.ca_pem.clone(),
    };
    let pool = Pool::start(target, fleet.devices, 0, &sources(), 0.0);
    let s = until(
        &pool,
        "every agent connected and its snapshot acknowledged",
        |s| s.connected == AGENTS as i64 && s.acks >= AGENTS as u64,
    )
    .await;
    assert_eq!(s.failures, 0, "{}", s.last_failure);
    assert_eq!(
        pg.psql("SELECT count(*) FROM devices WHERE last_report IS NOT NULL")
            .unwrap(),
        AGENTS.to_string(),
        "every acknowledged snapshot is in the database"
    );
    assert!(pg.cpu_seconds().is_finite(), "the server's CPU is readable");

    pool.stop(Duration::from_secs(5)).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    drop(collector);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}
