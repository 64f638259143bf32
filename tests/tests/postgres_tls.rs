//! TLS between the collector and PostgreSQL, against real servers with `ssl = on`
//! ([`PgCluster::start_with_tls`]) and certificates issued here by a throw-away CA: a collector
//! whose store URL says `sslmode=require&sslrootcert=CA` stores a device over a connection the
//! server itself reports as TLS (`pg_stat_ssl`); a server certificate from another CA, or one
//! for another host name, is refused even under the default `sslmode=prefer`, naming the
//! certificate; `require` against a server without TLS fails saying so.
//!
//! Without PostgreSQL's server binaries each test prints `SKIPPED` and passes, unless
//! `COMMSCAN_REQUIRE_POSTGRES=1` (set by `.ci/run`).

use commscan_collector::layout::OpenSettings;
use commscan_collector::store::pg_store::PgConfig;
use commscan_core::pki::Authority;
use commscan_runtime::testing::postgres::{PgCluster, ServerTls};
use commscan_tests::{RunningAgent, StartOptions, TestCollector, converged, install, tree_agent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A fresh CA named after `domain`: its certificate PEM, and a server certificate it issued
/// for `names`.
fn ca_and_server(domain: &str, names: &[&str]) -> (String, ServerTls) {
    let (ca, pem) = Authority::generate(domain).expect("CA");
    let server = ca
        .issue_server(&names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .expect("server certificate");
    (
        pem.cert,
        ServerTls {
            cert_pem: server.cert,
            key_pem: server.key,
        },
    )
}

async fn tls_cluster(test: &'static str, tls: ServerTls) -> Option<Arc<PgCluster>> {
    tokio::task::spawn_blocking(move || PgCluster::start_with_tls(test, &tls).map(Arc::new))
        .await
        .expect("cluster thread")
}

fn write_ca(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("write CA");
    p
}

fn config(pg: &PgCluster, query: &str) -> PgConfig {
    PgConfig {
        url: format!("{}?{query}", pg.url()),
        password: Some(pg.password().to_owned()),
        max_connections: 8,
    }
}

fn settings(pg: PgConfig) -> OpenSettings {
    OpenSettings {
        postgres: Some(pg),
        ..OpenSettings::default()
    }
}

/// Opens the collector of `c`'s data directory with another store configuration, as
/// `serve` would; the error, when it refuses.
fn open_error(c: &TestCollector, pg: PgConfig) -> String {
    match c.layout.open_with(&Default::default(), &settings(pg)) {
        Ok(_) => panic!("the collector opened its store"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_requiring_tls_stores_devices_over_a_verified_connection() {
    let (ca, server) = ca_and_server("db.test", &["localhost", "127.0.0.1"]);
    let Some(pg) = tls_cluster(
        "a_collector_requiring_tls_stores_devices_over_a_verified_connection",
        server,
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), "db-ca.pem", &ca);
    let c = TestCollector::start_with(StartOptions {
        settings: settings(config(
            &pg,
            &format!("sslmode=require&sslrootcert={}", ca.display()),
        )),
        ..StartOptions::default()
    })
    .await;
    let data = c.enroll_agent("tls-1").await;
    let id = data.identity().unwrap().device_id;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    let running = RunningAgent::start(tree_agent(commscan_tests::test_config(&data), root.path()));
    converged(&c, &id, &["zoom"], Duration::from_secs(30)).await;

    // The server's view: every connection of the collector is TLS, none is plain.
    let p = pg.clone();
    let seen = tokio::task::spawn_blocking(move || {
        p.psql(
            &p.url(),
            "SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'commscan-collector'",
        )
    })
    .await
    .unwrap()
    .expect("pg_stat_ssl");
    let (tls, plain) = seen.split_once(' ').expect("two counts");
    assert!(
        tls.parse::<u32>().unwrap() > 0,
        "no TLS connection of the collector: {seen}"
    );
    assert_eq!(plain, "0", "plain connections of the collector: {seen}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_certificate_from_another_ca_is_refused_naming_the_certificate() {
    let (ca, server) = ca_and_server("db.test", &["localhost", "127.0.0.1"]);
    // Another CA of another name (one of the same name would fail as BadSignature).
    let (other_ca, _) = ca_and_server("other.test", &["127.0.0.1"]);
    let Some(pg) = tls_cluster(
        "a_database_certificate_from_another_ca_is_refused_naming_the_certificate",
        server,
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), "db-ca.pem", &ca);
    let other = write_ca(dir.path(), "other-ca.pem", &other_ca);
    let c = TestCollector::start_with(StartOptions {
        settings: settings(config(
            &pg,
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        )),
        ..StartOptions::default()
    })
    .await;
    // `require` and the default `prefer` alike: TLS is never used unverified.
    for query in [
        format!("sslmode=require&sslrootcert={}", other.display()),
        format!("sslrootcert={}", other.display()),
    ] {
        let e = open_error(&c, config(&pg, &query));
        assert!(
            e.contains("database certificate not trusted")
                && e.contains("UnknownIssuer")
                && e.contains(&format!("sslrootcert {}", other.display())),
            "{query}: {e}"
        );
    }
    // Nor with the system's roots, which do not hold the test CA.
    let e = open_error(&c, config(&pg, "sslmode=require"));
    assert!(
        e.contains("database certificate not trusted") && e.contains("the system's trust store"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_certificate_for_another_host_is_refused() {
    // Issued by the trusted CA, but for a name the collector does not dial.
    let (ca, server) = ca_and_server("db.test", &["db.example.org"]);
    let Some(pg) = tls_cluster("a_database_certificate_for_another_host_is_refused", server).await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), "db-ca.pem", &ca);
    let layout = commscan_collector::layout::Layout::new(dir.path().join("collector"));
    let pg_config = config(&pg, &format!("sslrootcert={}", ca.display()));
    let e = layout
        .init_with(
            &commscan_collector::layout::InitOptions {
                trust_domain: "test.local".into(),
                server_names: vec!["localhost".into()],
                organisation: "acme".into(),
                import_ca: None,
                import_server: None,
            },
            Some(&pg_config),
        )
        .expect_err("a certificate for another host")
        .to_string();
    assert!(
        e.contains("database certificate not trusted")
            && e.contains("not valid for name \"127.0.0.1\"")
            && e.contains("db.example.org"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiring_tls_from_a_server_without_it_fails_clearly() {
    let Some(pg) = tokio::task::spawn_blocking(|| {
        PgCluster::start("requiring_tls_from_a_server_without_it_fails_clearly").map(Arc::new)
    })
    .await
    .unwrap() else {
        return;
    };
    let (ca, _) = ca_and_server("db.test", &["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), "db-ca.pem", &ca);
    // Without TLS in the server, the default (`prefer`) connects in plain TCP…
    let c = TestCollector::start_with(StartOptions {
        settings: settings(config(&pg, &format!("sslrootcert={}", ca.display()))),
        ..StartOptions::default()
    })
    .await;
    // …and `require` refuses, saying why.
    let e = open_error(
        &c,
        config(
            &pg,
            &format!("sslmode=require&sslrootcert={}", ca.display()),
        ),
    );
    assert!(e.contains("database does not offer TLS"), "{e}");
}
