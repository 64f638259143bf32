//! The throw-away PostgreSQL cluster (`commscan_runtime::testing::postgres`) against the real
//! server: password logins, a crash-restart that keeps what was committed, stop and start on
//! the same port, and two clusters side by side. Skipped (saying why) where the server
//! binaries are missing, unless `COMMSCAN_REQUIRE_POSTGRES=1`.

#![cfg(all(unix, feature = "test-support"))]

use std::time::Instant;

use commscan_runtime::testing::postgres::PgCluster;

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    eprintln!("{what}: {} ms", t0.elapsed().as_millis());
    r
}

/// `psql` over TCP as `commscan`, the password from the cluster's file through PGPASSWORD, as
/// a client outside the harness would.
fn psql_with_password_file(pg: &PgCluster, url: &str, sql: &str) -> Result<String, String> {
    let password = std::fs::read_to_string(pg.password_file()).unwrap();
    psql_as(url, &password, sql)
}

fn psql_as(url: &str, password: &str, sql: &str) -> Result<String, String> {
    let psql = ["/usr/lib/postgresql", "/usr/local/pgsql"]
        .iter()
        .flat_map(std::fs::read_dir)
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "psql".into());
    let out = std::process::Command::new(psql)
        .env_remove("PGPASSFILE")
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_committed_row_survives_a_crash_restart_and_a_stop_and_start() {
    let test = "a_committed_row_survives_a_crash_restart_and_a_stop_and_start";
    let Some(pg) = timed("start", || PgCluster::start(test)) else {
        return;
    };
    let url = pg.url();
    assert_eq!(
        url,
        format!("postgres://commscan@127.0.0.1:{}/commscan", pg.port())
    );
    assert!(!url.contains(pg.password()), "no password in the URL");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(pg.password_file()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(pg.password_file()).unwrap(),
        pg.password()
    );

    // Password auth: the right one logs in, a wrong one and none are refused.
    psql_with_password_file(
        &pg,
        &url,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'kept')",
    )
    .unwrap();
    let refused = psql_as(&url, "wrong", "SELECT 1").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    let refused = psql_as(&url, "", "SELECT 1").unwrap_err();
    assert!(refused.contains("password"), "{refused}");
    // `commscan` is not a superuser, and owns its database.
    assert_eq!(
        pg.psql(
            &url,
            "SELECT rolsuper, pg_get_userbyid(datdba) FROM pg_roles, pg_database \
             WHERE rolname = current_user AND datname = current_database()"
        )
        .unwrap(),
        "f|commscan"
    );
    assert_eq!(pg.psql(&url, "SHOW fsync").unwrap(), "on");
    // TCP only: no Unix socket, neither in a shared directory nor in the data directory.
    let data = pg.log_file().parent().unwrap().to_owned();
    let socket = format!(".s.PGSQL.{}", pg.port());
    for dir in [
        std::path::Path::new("/tmp"),
        "/var/run/postgresql".as_ref(),
        &data,
    ] {
        assert!(!dir.join(&socket).exists(), "{}", dir.display());
    }
    assert_eq!(pg.psql(&url, "SHOW listen_addresses").unwrap(), "127.0.0.1");

    timed("restart_immediate", || pg.restart_immediate());
    assert_eq!(
        psql_with_password_file(&pg, &url, "SELECT v FROM t WHERE id = 1").unwrap(),
        "kept"
    );

    timed("stop", || pg.stop());
    assert!(pg.psql(&url, "SELECT 1").is_err(), "stopped");
    timed("start_again", || pg.start_again());
    assert_eq!(pg.url(), url, "same port");
    pg.psql(&url, "INSERT INTO t VALUES (2, 'after')").unwrap();
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM t").unwrap(), "2");

    // Another database owned by `commscan`.
    let other = timed("create_database", || pg.create_database("commscan_other"));
    assert_eq!(
        other,
        format!("postgres://commscan@127.0.0.1:{}/commscan_other", pg.port())
    );
    psql_with_password_file(
        &pg,
        &other,
        "CREATE TABLE u (x int); INSERT INTO u VALUES (7)",
    )
    .unwrap();
    assert_eq!(pg.psql(&other, "SELECT x FROM u").unwrap(), "7");

    timed("drop", || drop(pg));
    assert!(!data.exists(), "the directory is deleted on drop");
}

#[test]
fn two_clusters_run_side_by_side_and_share_nothing() {
    let test = "two_clusters_run_side_by_side_and_share_nothing";
    let t0 = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| timed("start a", || PgCluster::start(test)));
        let b = s.spawn(|| timed("start b", || PgCluster::start(test)));
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!(
        "two clusters started in parallel: {} ms",
        t0.elapsed().as_millis()
    );
    let (Some(a), Some(b)) = (a, b) else {
        return;
    };
    assert_ne!(a.port(), b.port());
    assert_ne!(a.password(), b.password());
    a.psql(&a.url(), "CREATE TABLE only_in_a (x int)").unwrap();
    let missing = b.psql(&b.url(), "SELECT * FROM only_in_a").unwrap_err();
    assert!(missing.contains("does not exist"), "{missing}");
    // Each role's password is its cluster's own.
    assert!(psql_as(&b.url(), a.password(), "SELECT 1").is_err());

    // A crash-restart of one leaves the other serving.
    a.restart_immediate();
    assert_eq!(b.psql(&b.url(), "SELECT 1").unwrap(), "1");
    assert_eq!(
        a.psql(&a.url(), "SELECT count(*) FROM only_in_a").unwrap(),
        "0"
    );
}

/// From a tokio test: the methods block, so they go through `spawn_blocking` while the
/// runtime must keep serving (here: a timer ticking on the current-thread runtime).
#[tokio::test]
async fn usable_from_a_tokio_test() {
    let test = "usable_from_a_tokio_test";
    let Some(pg) = tokio::task::spawn_blocking(move || PgCluster::start(test))
        .await
        .unwrap()
    else {
        return;
    };
    let pg = std::sync::Arc::new(pg);
    let ticks = tokio::spawn(async {
        let mut n = 0u32;
        let mut i = tokio::time::interval(std::time::Duration::from_millis(10));
        loop {
            i.tick().await;
            n += 1;
            if n == 5 {
                return n;
            }
        }
    });
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.restart_immediate())
        .await
        .unwrap();
    assert_eq!(ticks.await.unwrap(), 5);
    assert_eq!(pg.psql(&pg.url(), "SELECT 1").unwrap(), "1");
}

/// A start that fails panics with the server log's tail, within its bounds; the cluster is
/// still cleaned up on drop.
#[test]
fn a_start_on_a_taken_port_panics_with_the_log_tail() {
    let test = "a_start_on_a_taken_port_panics_with_the_log_tail";
    let Some(pg) = PgCluster::start(test) else {
        return;
    };
    pg.stop();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", pg.port())).unwrap();
    let t0 = Instant::now();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pg.start_again()))
        .expect_err("the port is taken");
    eprintln!(
        "start_again on a taken port gave up after {} ms",
        t0.elapsed().as_millis()
    );
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("pg_ctl start failed"), "{message}");
    assert!(message.contains("Address already in use"), "{message}");
    drop(squatter);
    let dir = pg.log_file().parent().unwrap().to_owned();
    drop(pg);
    assert!(!dir.exists());
}
