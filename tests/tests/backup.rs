//! `commscan-collector backup` while the collector serves, and the restore procedure as
//! deploy/README.md gives it: stop, move the data directory aside, `restore`, start. The
//! restored collector holds the state of the backup, new audit entries and history do not
//! overwrite restored ones, and an agent whose device changed after the backup heals it by
//! itself (its digest differs, it sends a snapshot).

use commscan_agent::state::DataDir;
use commscan_core::platform::Platform;
use commscan_tests::collector_process::{CollectorProcess, admin_connection, init_deployment};
use commscan_tests::oracle::CollectorLog;
use commscan_tests::{
    RunningAgent, install, stored_products, tree_agent, watching, workspace_binary,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn collector_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_binary("commscan-collector"))
        .args(args)
        .env_remove("COMMSCAN_DATA_DIR")
        .env_remove("COMMSCAN_STORE")
        .env("COMMSCAN_CONFIG", "/dev/null")
        .output()
        .expect("run commscan-collector");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn until_products(
    collector: &CollectorProcess,
    conn: &commscan_ctl::Connection,
    id: &str,
    want: &[&str],
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = stored_products(conn, id).await;
        if got.as_ref().is_some_and(|g| g == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the collector holds {got:?}, not {want:?}; its log:\n{}",
            collector.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every audit position and action, oldest first (the admin sees them all).
async fn audit(conn: &commscan_ctl::Connection) -> Vec<(u64, String)> {
    let mut admin = conn.admin().await.unwrap();
    let mut all: Vec<(u64, String)> = Vec::new();
    loop {
        let page = admin
            .list_audit(commscan_proto::v1::ListAuditRequest {
                after: all.last().map_or(0, |(p, _)| *p),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        if page.is_empty() {
            return all;
        }
        all.extend(page.into_iter().map(|e| (e.position, e.action)));
    }
}

/// Creates `n` enrolment tokens for acme: audited actions.
async fn create_tokens(conn: &commscan_ctl::Connection, n: usize) {
    let mut admin = conn.admin().await.unwrap();
    for _ in 0..n {
        admin
            .create_enrollment_token(commscan_proto::v1::CreateEnrollmentTokenRequest {
                organisation: "acme".into(),
                uses: 1,
                expires_in_seconds: 0,
                new_organisation: true,
            })
            .await
            .unwrap();
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_to_its_state_and_agents_heal_the_rest() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let token = init_deployment(&data, &[]);
    let mut collector = CollectorProcess::new("collector", &data, CollectorLog::default());
    collector.start();
    let url = collector.url();
    let ca_path = data.join("pki/ca.crt");
    let conn = admin_connection(&data, &url);

    let agent_data = DataDir::new(dir.path().join("agent"));
    let identity = commscan_agent::enroll::enroll(
        &url,
        &token,
        &std::fs::read_to_string(&ca_path).unwrap(),
        Platform::Linux,
        None,
        &agent_data,
    )
    .await
    .unwrap();
    let id = identity.device_id.clone();
    let root = dir.path().join("root");
    install(&root, &["zoom"]);
    let agent = RunningAgent::start(tree_agent(watching(&agent_data), &root));
    until_products(&collector, &conn, &id, &["zoom"], "first report").await;

    // Online: the collector is serving (and the agent connected) while the copy is made.
    create_tokens(&conn, 3).await;
    let before_backup = audit(&conn).await;
    let backup = dir.path().join("backup");
    let (ok, out) = collector_cli(&[
        "backup",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "backup: {out}\n{}", collector.log_tail());
    println!("{out}");
    assert!(
        out.contains("(online:"),
        "the running collector made the copy: {out}"
    );
    for f in [
        "BACKUP.json",
        "collector.json",
        "pki/ca.crt",
        "pki/ca.key",
        "admin.token",
    ] {
        assert!(backup.join(f).is_file(), "{f} missing from the backup");
    }
    assert_eq!(mode(&backup), 0o700);
    assert_eq!(mode(&backup.join("pki/ca.key")), 0o600);
    assert!(
        !data.join("backups").read_dir().unwrap().any(|_| true),
        "the staged copy was moved out"
    );
    let audited = audit(&conn).await;
    assert!(
        audited.iter().any(|(_, a)| a == "store.backup"),
        "the backup is audited: {audited:?}"
    );
    // A second backup into the same directory is refused; nothing in it is touched.
    let (ok, out) = collector_cli(&[
        "backup",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("not empty"), "{out}");
    assert!(backup.join("BACKUP.json").is_file());
    // Nor into the data directory itself (it would copy itself into itself).
    let inside = data.join("new").join("copy");
    let (ok, out) = collector_cli(&[
        "backup",
        inside.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("inside the data directory"), "{out}");
    assert!(!data.join("new").exists());

    // After the backup the device changes; then the site is lost and restored.
    install(&root, &["zoom", "telegram-desktop"]);
    until_products(
        &collector,
        &conn,
        &id,
        &["telegram", "zoom"],
        "after the backup",
    )
    .await;
    agent.shutdown().await;
    let (status, _) = tokio::task::block_in_place(|| collector.terminate(Duration::from_secs(20)))
        .expect("the collector stops on SIGTERM");
    assert!(status.success());
    std::fs::rename(&data, dir.path().join("c.lost")).unwrap();
    let (ok, out) = collector_cli(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "restore: {out}");
    // A restore never lands on a deployment.
    let (ok, out) = collector_cli(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("holds a deployment"), "{out}");

    collector.start();
    until_products(
        &collector,
        &conn,
        &id,
        &["zoom"],
        "the restored collector holds the backup's state",
    )
    .await;
    // Every audit entry the backup holds is there, none overwritten by the entries written
    // since the restart (a new database's id generator starts again at 0).
    create_tokens(&conn, 3).await;
    let audited = audit(&conn).await;
    let missing: Vec<_> = before_backup
        .iter()
        .filter(|e| !audited.contains(e))
        .collect();
    assert!(
        missing.is_empty(),
        "restored audit entries lost: {missing:?}\nnow: {audited:?}"
    );
    assert!(
        audited.len() > before_backup.len(),
        "entries written since the restart are listed too: {audited:?}"
    );

    // The agent comes back with its newer state and heals the device by itself.
    let agent = RunningAgent::start(tree_agent(watching(&agent_data), &root));
    until_products(
        &collector,
        &conn,
        &id,
        &["telegram", "zoom"],
        "the agent healed its device",
    )
    .await;
    agent.shutdown().await;

    // Offline: with the collector stopped, `backup` copies the store itself.
    let _ = tokio::task::block_in_place(|| collector.terminate(Duration::from_secs(20)));
    let offline = dir.path().join("offline");
    let (ok, out) = collector_cli(&[
        "backup",
        offline.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("(offline:"), "{out}");
}
