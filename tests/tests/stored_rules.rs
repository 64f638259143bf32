//! Rules kept in the store, as an administrator and an officer use them: `commscanctl policy
//! apply|history|text|rollback` (and `catalog apply`) against a running collector. An applied
//! policy is validated with everything else in force, stored with who and when, shown as a
//! diff, re-judges devices at once, is announced to connected agents, stays in force across a
//! restart, and can be rolled back; every change is audited; officers change only their own
//! organisation's policy. On PostgreSQL, a change applied on one collector reaches the agents
//! and watchers of another.

use commscan_collector::layout::OpenSettings;
use commscan_collector::store::pg_store::PgConfig;
use commscan_proto::v1;
use commscan_runtime::testing::postgres::PgCluster;
use commscan_tests::{
    StartOptions, TestCollector, dpkg_fixture, open_stream, reporter, wait_until, workspace_binary,
};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn policy_path(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

/// Runs `commscanctl` against `c` with `token`; (success, stdout, stderr).
fn ctl(c: &TestCollector, token: &str, args: &[&str]) -> (bool, String, String) {
    let ca = c.dir.path().join("ca-for-cli.crt");
    std::fs::write(&ca, &c.ca_pem).unwrap();
    let out = std::process::Command::new(workspace_binary("commscanctl"))
        .args(args)
        .env("COMMSCAN_COLLECTOR", &c.url)
        .env("COMMSCAN_CA", &ca)
        .env("COMMSCAN_TOKEN", token)
        .env_remove("COMMSCAN_TOKEN_FILE")
        .output()
        .expect("run commscanctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn status(c: &TestCollector, id: &str) -> i32 {
    c.query()
        .await
        .get_device(v1::GetDeviceRequest {
            device_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap()
        .status
}

/// An enrolled device of `acme` that reported Zoom (denied by the embedded default policy,
/// allowed by `government-device-ban`).
async fn zoom_device(c: &TestCollector, name: &str) -> String {
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let data = c.enroll_agent(name).await;
    let id = data.identity().unwrap().device_id;
    reporter(data, root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(status(c, &id).await, v1::DeviceStatus::Noncompliant as i32);
    id
}

async fn officer_of(c: &TestCollector, org: &str) -> String {
    c.admin_as(&c.admin_token)
        .await
        .create_access_token(v1::CreateAccessTokenRequest {
            name: format!("officer-{org}"),
            grants: vec![v1::Grant {
                role: v1::Role::Officer as i32,
                organisation: org.into(),
            }],
            expires_in_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applied_with_the_cli_is_stored_rejudged_announced_kept_and_rolled_back() {
    let mut c = TestCollector::start().await;
    let id = zoom_device(&c, "pc").await;
    let (_agent, mut stream) = open_stream(&c, "listening").await;
    let admin = c.admin_token.clone();
    let ban = policy_path("government-device-ban.toml");
    let letter = policy_path("ministry-letter.toml");

    let (ok, out, err) = ctl(&c, &admin, &["policy", "apply", ban.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("default policy: version 1 stored by admin"),
        "{out}"
    );
    assert!(out.contains("re-judged, 1 changed status"), "{out}");
    assert!(
        out.contains("+id = \"government-device-ban\"")
            && out.contains("-id = \"ministry-letter\""),
        "the diff against what was in force: {out}"
    );
    assert_eq!(status(&c, &id).await, v1::DeviceStatus::Compliant as i32);
    let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("announced within 10 s")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&m.kind, Some(v1::collector_message::Kind::PolicyChanged(p)) if p.policy_id == "government-device-ban"),
        "{m:?}"
    );

    // The same text again stores nothing.
    let (ok, out, _) = ctl(&c, &admin, &["policy", "apply", ban.to_str().unwrap()]);
    assert!(ok && out.contains("unchanged"), "{out}");

    // A broken file is refused with every problem, and nothing is stored.
    let broken = c.dir.path().join("broken.toml");
    std::fs::write(&broken, "version = 1\nid = \"x\"\nname = \"X\"\n[[rule]]\nid = \"r\"\naction = \"deny\"\nproducts = [\"no-such-product\"]\n").unwrap();
    let (ok, _, err) = ctl(&c, &admin, &["policy", "apply", broken.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("broken.toml:7: rule[0].products: unknown product id 'no-such-product'"),
        "{err}"
    );

    // A catalog that strands a product the rules in force name is refused, naming it.
    let catalog =
        commscan_core::catalog::EMBEDDED_CATALOG.replace("id = \"zoom\"", "id = \"zoom-renamed\"");
    let catalog_file = c.dir.path().join("catalog.toml");
    std::fs::write(&catalog_file, catalog).unwrap();
    let (ok, _, err) = ctl(
        &c,
        &admin,
        &["catalog", "apply", catalog_file.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(
        err.contains("<embedded registers>") && err.contains("unknown product id 'zoom'"),
        "{err}"
    );

    let (ok, out, _) = ctl(&c, &admin, &["policy", "apply", letter.to_str().unwrap()]);
    assert!(ok && out.contains("version 2 stored"), "{out}");
    assert_eq!(status(&c, &id).await, v1::DeviceStatus::Noncompliant as i32);
    let (ok, out, _) = ctl(&c, &admin, &["policy", "rollback", "1"]);
    assert!(ok && out.contains("version 3 stored"), "{out}");
    assert_eq!(status(&c, &id).await, v1::DeviceStatus::Compliant as i32);

    let (ok, out, _) = ctl(&c, &admin, &["policy", "history"]);
    assert!(ok, "{out}");
    let versions: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(versions, ["3", "2", "1"], "{out}");
    assert!(
        out.contains("rollback to version 1") && out.contains("government-device-ban.toml"),
        "{out}"
    );
    let (ok, out, _) = ctl(&c, &admin, &["policy", "text", "--version", "2"]);
    assert!(ok && out.contains("id = \"ministry-letter\""), "{out}");
    let actions: Vec<String> = c
        .audit()
        .into_iter()
        .filter(|e| e.action.starts_with("policy.") || e.action.starts_with("catalog."))
        .map(|e| format!("{} {}", e.action, e.allowed))
        .collect();
    assert_eq!(
        actions,
        [
            "policy.apply true",
            "policy.apply true",
            "policy.rollback true"
        ],
        "refused texts never reach the audit log as changes"
    );

    // Kept across a restart: the stored version judges, not the embedded default.
    c.restart().await;
    assert_eq!(c.domain().rules().policy.id, "government-device-ban");
    let (ok, out, _) = ctl(&c, &admin, &["policy", "text"]);
    assert!(
        ok && out.contains("id = \"government-device-ban\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_changes_only_the_policy_of_an_organisation_granted_to_them() {
    let c = TestCollector::start().await;
    let id = zoom_device(&c, "pc").await;
    let officer = officer_of(&c, "acme").await;
    let ban = policy_path("government-device-ban.toml");
    let ban = ban.to_str().unwrap();

    let (ok, _, err) = ctl(&c, &officer, &["policy", "apply", ban]);
    assert!(!ok);
    assert!(
        err.contains("may not apply the default policy")
            && err.contains("a grant on every organisation"),
        "{err}"
    );
    let (ok, _, err) = ctl(&c, &officer, &["policy", "apply", ban, "--org", "other"]);
    assert!(
        !ok && err.contains("may not change rules in organisation 'other'"),
        "{err}"
    );
    let (ok, _, err) = ctl(&c, &officer, &["catalog", "history"]);
    assert!(!ok && err.contains("catalog"), "{err}");

    let (ok, out, err) = ctl(&c, &officer, &["policy", "apply", ban, "--org", "acme"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("policy of acme: version 1 stored by officer-acme"),
        "{out}"
    );
    assert_eq!(status(&c, &id).await, v1::DeviceStatus::Compliant as i32);
    assert_eq!(
        c.domain().rules().policy.id,
        "ministry-letter",
        "the default is untouched"
    );
    let (ok, out, _) = ctl(
        &c,
        &officer,
        &["policy", "history", "--org", "acme", "--output", "json"],
    );
    assert!(ok && out.contains("officer-acme"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applied_on_one_collector_reaches_agents_and_watchers_on_another() {
    let Some(pg) = tokio::task::spawn_blocking(|| {
        PgCluster::start("a_policy_applied_on_one_collector_reaches_agents_and_watchers_on_another")
    })
    .await
    .unwrap() else {
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
    // The device reports to B and keeps a stream open there; a watcher follows B.
    let id = zoom_device(&b, "pc").await;
    let (_agent, mut stream) = open_stream(&b, "listening").await;
    let mut events = b
        .query()
        .await
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let (ok, out, err) = ctl(
        &a,
        &a.admin_token,
        &[
            "policy",
            "apply",
            policy_path("government-device-ban.toml").to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("version 1 stored"), "{out}{err}");

    let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("announced by the other collector within 10 s")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&m.kind, Some(v1::collector_message::Kind::PolicyChanged(p)) if p.policy_id == "government-device-ban"),
        "{m:?}"
    );
    assert_eq!(b.domain().rules().policy.id, "government-device-ban");
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("the verdict change reaches a watcher on the other collector")
        .unwrap()
        .unwrap();
    assert_eq!(event.device_id, id);
    assert_eq!(event.to, v1::DeviceStatus::Compliant as i32);
    wait_until(
        Duration::from_secs(5),
        "B reads the new verdict",
        || async { (status(&b, &id).await == v1::DeviceStatus::Compliant as i32).then_some(()) },
    )
    .await;
}
