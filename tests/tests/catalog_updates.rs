//! Signed catalog updates, as an administrator and a fleet live them: a key made and a catalog
//! signed with `commscan-collector catalog keygen|sign`, published with `commscanctl catalog
//! apply`, pushed by a running collector to running agents over their reporting streams, and
//! used at once: a product added to the catalog is reported without restarting an agent. A
//! catalog whose signature is wrong is refused by the agent, which says so to the collector and
//! keeps scanning with what it had; the collector itself refuses malformed, invalid and
//! oversized envelopes; an older release never replaces a newer one. An officer's mapping of
//! an unclassified candidate reaches the running agent too, which then reports the product
//! itself, keeps the mapping across a restart, and drops it when it is undone.

use commscan_collector::store::DeviceCatalog;
use commscan_core::catalog::EMBEDDED_CATALOG;
use commscan_tests::{
    RunningAgent, TestCollector, converged, install, test_config, tree_agent, wait_until,
    workspace_binary, write_dpkg,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(30);

/// Runs a binary; (success, stdout, stderr).
fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(workspace_binary(binary))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("COMMSCAN_TOKEN_FILE")
        .output()
        .expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `commscanctl catalog apply FILE` as the administrator.
fn apply(c: &TestCollector, file: &Path) -> (bool, String, String) {
    let ca = c.dir.path().join("ca-for-cli.crt");
    std::fs::write(&ca, &c.ca_pem).unwrap();
    run(
        "commscanctl",
        &["catalog", "apply", file.to_str().unwrap()],
        &[
            ("COMMSCAN_COLLECTOR", c.url.as_str()),
            ("COMMSCAN_CA", ca.to_str().unwrap()),
            ("COMMSCAN_TOKEN", c.admin_token.as_str()),
        ],
    )
}

/// `commscanctl catalog versions --output json` as the administrator: the rows.
fn versions(c: &TestCollector) -> Vec<serde_json::Value> {
    let ca = c.dir.path().join("ca-for-cli.crt");
    std::fs::write(&ca, &c.ca_pem).unwrap();
    let (ok, out, err) = run(
        "commscanctl",
        &["catalog", "versions", "--output", "json"],
        &[
            ("COMMSCAN_COLLECTOR", c.url.as_str()),
            ("COMMSCAN_CA", ca.to_str().unwrap()),
            ("COMMSCAN_TOKEN", c.admin_token.as_str()),
        ],
    );
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A new catalog key in `dir`: (key file, public key).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let (ok, out, err) = run(
        "commscan-collector",
        &["catalog", "keygen", "-o", key.to_str().unwrap()],
        &[],
    );
    assert!(ok, "{err}");
    (key, out.trim().to_owned())
}

/// The embedded catalog plus a dpkg product per id in `extra`.
fn catalog_with(extra: &[&str]) -> String {
    let mut text = EMBEDDED_CATALOG.to_owned();
    for id in extra {
        text.push_str(&format!(
            "\n[[product]]\nid = \"{id}\"\nname = \"{id}\"\nvendor = \"test\"\ncountry = \"RU\"\ncategories = [\"messenger\"]\nstatus = \"active\"\n\n[[product.signature]]\nkind = \"dpkg\"\nvalues = [\"{id}\"]\nsource = \"test\"\n"
        ));
    }
    text
}

/// Signs `content` as `release` with `key` into `dir/<name>`.
fn sign(dir: &Path, key: &Path, release: u64, content: &str, name: &str) -> PathBuf {
    let toml = dir.join(format!("{name}.toml"));
    std::fs::write(&toml, content).unwrap();
    let out = dir.join(name);
    let (ok, _, err) = run(
        "commscan-collector",
        &[
            "catalog",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--version",
            &release.to_string(),
            toml.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    out
}

/// The catalog the collector stored for `device`.
fn stored_catalog(c: &TestCollector, device: &str) -> DeviceCatalog {
    c.domain()
        .store()
        .device(device)
        .unwrap()
        .expect("device")
        .catalog
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_added_on_the_collector_is_reported_by_a_running_agent_without_a_restart() {
    let c = TestCollector::start().await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "catalog.key");
    assert!(public.starts_with("ed25519:"), "{public}");

    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    write_dpkg(
        root.path(),
        &[
            ("zoom", "install ok installed", "6.1.0"),
            ("newchat", "install ok installed", "1.0"),
        ],
    );
    let data = c.enroll_agent("laptop").await;
    let id = data.identity().unwrap().device_id;
    let mut config = test_config(&data);
    config.catalog_keys = vec![public.parse().unwrap()];
    let agent = RunningAgent::start(tree_agent(config.clone(), root.path()));
    // The embedded catalog does not know newchat.
    converged(&c, &id, &["zoom"], WITHIN).await;
    assert_eq!(stored_catalog(&c, &id).release, 1);

    let signed = sign(
        work.path(),
        &key,
        2,
        &catalog_with(&["newchat"]),
        "catalog-2.signed",
    );
    let (ok, out, err) = apply(&c, &signed);
    assert!(ok, "{out}{err}");
    let started = std::time::Instant::now();
    converged(&c, &id, &["newchat", "zoom"], WITHIN).await;
    eprintln!("new product reported {:?} after apply", started.elapsed());
    let recorded = wait_until(WITHIN, "release 2 recorded", || async {
        Some(stored_catalog(&c, &id)).filter(|s| s.release == 2)
    })
    .await;
    assert!(recorded.refusal.is_empty(), "{recorded:?}");
    let rows = versions(&c);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["organisation"], "acme");
    assert_eq!(rows[0]["release"], "2");
    assert_eq!(rows[0]["devices"], "1");
    assert_eq!(rows[0]["refusing"], "0");
    assert!(data.root().join("catalog.signed").exists());

    // A restart scans with the stored catalog: nothing needs pushing again.
    agent.shutdown().await;
    install(root.path(), &["newchat"]);
    let restarted = tree_agent(config, root.path());
    let mut events = restarted.events();
    let agent = RunningAgent::start(restarted);
    converged(&c, &id, &["newchat"], WITHIN).await;
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(
                e,
                commscan_agent::delivery::AgentEvent::CatalogAccepted { .. }
            ),
            "the restarted agent was sent the catalog again: {e:?}"
        );
    }
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_older_catalogs_are_refused_and_the_agent_keeps_the_one_it_has() {
    let c = TestCollector::start().await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "catalog.key");
    let (other_key, _) = keygen(work.path(), "stranger.key");

    let root = tempfile::tempdir().unwrap();
    write_dpkg(
        root.path(),
        &[
            ("zoom", "install ok installed", "6.1.0"),
            ("firstchat", "install ok installed", "1.0"),
            ("evilchat", "install ok installed", "1.0"),
        ],
    );
    let data = c.enroll_agent("laptop").await;
    let id = data.identity().unwrap().device_id;
    let mut config = test_config(&data);
    config.catalog_keys = vec![public.parse().unwrap()];
    let agent = RunningAgent::start(tree_agent(config, root.path()));
    converged(&c, &id, &["zoom"], WITHIN).await;

    let good = sign(
        work.path(),
        &key,
        3,
        &catalog_with(&["firstchat"]),
        "good.signed",
    );
    assert!(apply(&c, &good).0);
    converged(&c, &id, &["firstchat", "zoom"], WITHIN).await;

    // Signed by a key the agent does not trust: passed on by the collector (it checks no
    // signatures), refused by the agent, and the refusal reaches the collector.
    let stranger = sign(
        work.path(),
        &other_key,
        4,
        &catalog_with(&["firstchat", "evilchat"]),
        "stranger.signed",
    );
    let (ok, out, err) = apply(&c, &stranger);
    assert!(ok, "{out}{err}");
    let refused = wait_until(WITHIN, "the agent's refusal", || async {
        Some(stored_catalog(&c, &id)).filter(|s| s.refused_release == 4)
    })
    .await;
    assert_eq!(refused.release, 3);
    assert!(refused.refusal.contains("unsigned"), "{refused:?}");
    // The device's own status says so too (`commscan-agent status`).
    let local = commscan_agent::status::StatusFile::read(&data)
        .unwrap()
        .unwrap()
        .catalog
        .unwrap();
    assert_eq!((local.release, local.refused_release), (3, 4), "{local:?}");
    // The officer sees it.
    let rows = versions(&c);
    assert_eq!(rows[0]["release"], "3", "{rows:?}");
    assert_eq!(rows[0]["refusing"], "1", "{rows:?}");
    assert!(
        rows[0]["last_refusal"]
            .as_str()
            .unwrap()
            .contains("unsigned"),
        "{rows:?}"
    );

    // The release number raised after signing: the signature no longer verifies.
    let text = std::fs::read_to_string(&good).unwrap();
    let bumped = work.path().join("bumped.signed");
    std::fs::write(
        &bumped,
        text.replacen("release: 3\n", "release: 5\n", 1)
            .replace("firstchat", "evil-chat"),
    )
    .unwrap();
    // The content changed without its digest: the collector refuses to store it at all.
    let (ok, _, err) = apply(&c, &bumped);
    assert!(!ok && err.contains("digest"), "{err}");
    let mut env = commscan_core::signed_catalog::SignedCatalog::parse(text.as_bytes()).unwrap();
    env.release = 5;
    std::fs::write(&bumped, env.encode()).unwrap();
    assert!(apply(&c, &bumped).0);
    let refused = wait_until(WITHIN, "the bumped release refused", || async {
        Some(stored_catalog(&c, &id)).filter(|s| s.refused_release == 5)
    })
    .await;
    assert!(refused.refusal.contains("bad signature"), "{refused:?}");
    assert_eq!(refused.release, 3);

    // Invalid content (digest recomputed, as a forger would) and oversized envelopes never
    // get past the collector.
    let invalid = work.path().join("invalid.signed");
    let mut forged = commscan_core::signed_catalog::SignedCatalog::parse(text.as_bytes()).unwrap();
    forged.release = 6;
    forged.content = forged
        .content
        .replacen("kind = \"dpkg\"", "kind = \"shell\"", 1);
    forged.digest = commscan_core::signed_catalog::content_digest(&forged.content);
    std::fs::write(&invalid, forged.encode()).unwrap();
    let (ok, _, err) = apply(&c, &invalid);
    assert!(!ok && err.contains("shell"), "{err}");
    let huge = work.path().join("huge.signed");
    let mut big = text.clone();
    big.push_str(&"#".repeat(commscan_core::signed_catalog::MAX_SIGNED_CATALOG_BYTES));
    std::fs::write(&huge, big).unwrap();
    assert!(!apply(&c, &huge).0);

    // An older release, properly signed, is never pushed over a newer one: the agent hears of
    // the rules change and nothing else.
    let mut events = agent.agent.events();
    let older = sign(
        work.path(),
        &key,
        2,
        &catalog_with(&["firstchat"]),
        "older.signed",
    );
    assert!(apply(&c, &older).0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut announced = false;
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        use commscan_agent::delivery::AgentEvent;
        announced |= matches!(e, AgentEvent::PolicyChanged { .. });
        assert!(
            !matches!(
                e,
                AgentEvent::CatalogAccepted { .. } | AgentEvent::CatalogRefused { .. }
            ),
            "{e:?}"
        );
    }
    assert!(announced, "the rules change was not announced");
    assert_eq!(stored_catalog(&c, &id).release, 3);
    let stored = std::fs::read_to_string(data.root().join("catalog.signed")).unwrap();
    assert!(stored.contains("release: 3\n"));
    agent.shutdown().await;
}

/// A raw reporting stream of a new device whose hello states `catalog`; returned after the
/// welcome.
async fn raw_stream(
    c: &TestCollector,
    name: &str,
    catalog: Option<commscan_proto::v1::CatalogState>,
) -> (
    tokio::sync::mpsc::Sender<commscan_proto::v1::AgentMessage>,
    tonic::Streaming<commscan_proto::v1::CollectorMessage>,
) {
    use commscan_proto::v1;
    let data = c.enroll_agent(name).await;
    let (_, cert, key) = data.credentials().unwrap();
    let channel = commscan_runtime::transport::channel(&c.url, &c.ca_pem, Some((&cert, &key)))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            catalog,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = v1::reporting_client::ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.kind,
        Some(v1::collector_message::Kind::Welcome(_))
    ));
    (tx, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_agents_that_state_their_catalog_are_sent_one_and_only_a_newer_one() {
    use commscan_proto::v1::{self, collector_message::Kind};
    let c = TestCollector::start().await;
    let work = tempfile::tempdir().unwrap();
    let (key, _) = keygen(work.path(), "catalog.key");
    assert!(
        apply(
            &c,
            &sign(work.path(), &key, 2, &catalog_with(&["two"]), "2.signed")
        )
        .0
    );

    // An agent stating release 1 gets release 2 right after its welcome, byte for byte.
    let state = |release| v1::CatalogState {
        release,
        ..Default::default()
    };
    let (_a, mut stream) = raw_stream(&c, "current", Some(state(1))).await;
    let next = stream.message().await.unwrap().unwrap().kind;
    let Some(Kind::CatalogUpdate(u)) = next else {
        panic!("expected a catalog update, got {next:?}");
    };
    assert_eq!(u.release, 2);
    assert_eq!(
        u.signed_catalog,
        std::fs::read(work.path().join("2.signed")).unwrap()
    );

    // An agent predating signed catalogs (no catalog in its hello) would take the unknown
    // message for the end of its stream: it is never sent one. An agent already on release 2
    // is not sent it again. Two announcements arrive back to back, with nothing between.
    let (_b, mut old) = raw_stream(&c, "old", None).await;
    let (_d, mut same) = raw_stream(&c, "same", Some(state(2))).await;
    assert!(
        apply(
            &c,
            &sign(work.path(), &key, 3, &catalog_with(&["two"]), "3.signed")
        )
        .0
    );
    let third = stream.message().await.unwrap().unwrap().kind;
    assert!(matches!(third, Some(Kind::PolicyChanged(_))), "{third:?}");
    let third = stream.message().await.unwrap().unwrap().kind;
    assert!(
        matches!(&third, Some(Kind::CatalogUpdate(u)) if u.release == 3),
        "{third:?}"
    );
    let next = same.message().await.unwrap().unwrap().kind;
    assert!(matches!(next, Some(Kind::PolicyChanged(_))), "{next:?}");
    let next = same.message().await.unwrap().unwrap().kind;
    assert!(
        matches!(&next, Some(Kind::CatalogUpdate(u)) if u.release == 3),
        "{next:?}"
    );
    assert!(
        apply(
            &c,
            &sign(work.path(), &key, 4, &catalog_with(&["two"]), "4.signed")
        )
        .0
    );
    for _ in 0..2 {
        let m = old.message().await.unwrap().unwrap().kind;
        assert!(matches!(m, Some(Kind::PolicyChanged(_))), "{m:?}");
    }
}

/// A desktop entry the catalog does not know but that looks like communication software.
fn write_candidate(root: &Path, name: &str) {
    let apps = root.join("usr/share/applications");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(
        apps.join("obscure.desktop"),
        format!(
            "[Desktop Entry]\nType=Application\nName={name}\nExec=obscure\nCategories=Network;InstantMessaging;\n"
        ),
    )
    .unwrap();
}

/// The digest of the state the collector stores for `device`: equal to an agent's only when
/// the agent sees the device as the collector does.
fn stored_state_digest(c: &TestCollector, device: &str) -> String {
    let d = c.domain().store().device(device).unwrap().expect("device");
    commscan_core::digest::hex(&commscan_core::digest::state_digest(
        &d.findings,
        &d.unclassified,
    ))
}

/// Waits for the agent to send a report whose state digest is `want`.
async fn sends_state(
    events: &mut tokio::sync::broadcast::Receiver<commscan_agent::delivery::AgentEvent>,
    want: &str,
) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WITHIN, async {
        loop {
            if let Ok(commscan_agent::delivery::AgentEvent::Sent { state_digest, .. }) =
                events.recv().await
            {
                if state_digest == want {
                    return;
                }
                seen.push(state_digest);
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no report of state {want}; sent {seen:?}");
}

/// An event of `events` that `pick` accepts, within the deadline.
async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<commscan_agent::delivery::AgentEvent>,
    pick: impl Fn(&commscan_agent::delivery::AgentEvent) -> bool,
) {
    tokio::time::timeout(WITHIN, async {
        loop {
            if let Ok(e) = events.recv().await
                && pick(&e)
            {
                return;
            }
        }
    })
    .await
    .expect("the event within the deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officers_mapping_reaches_the_running_agent_which_reports_the_product_itself() {
    use commscan_agent::delivery::AgentEvent;
    use commscan_proto::v1;
    let c = TestCollector::start().await;
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &["zoom"]);
    write_candidate(root.path(), "Obscure Chat");
    let data = c.enroll_agent("laptop").await;
    let id = data.identity().unwrap().device_id;
    let config = test_config(&data);
    let agent = tree_agent(config.clone(), root.path());
    let mut events = agent.events();
    let running = RunningAgent::start(agent);
    converged(&c, &id, &["zoom"], WITHIN).await;
    wait_until(WITHIN, "the candidate stored", || async {
        let d = c.domain().store().device(&id).unwrap()?;
        d.unclassified
            .iter()
            .any(|u| u.name == "Obscure Chat")
            .then_some(())
    })
    .await;
    let status = |data: &commscan_agent::state::DataDir| {
        commscan_agent::status::StatusFile::read(data)
            .unwrap()
            .unwrap()
            .catalog
            .unwrap()
            .candidate_decisions
    };
    assert_eq!(status(&data), 0);

    // The officer maps the candidate: the collector applies it at once, and the agent is sent
    // it, applies it to a rescan, and reports the very state the collector holds.
    let mut q = c.query().await;
    q.classify_candidate(v1::ClassifyCandidateRequest {
        organisation: "acme".into(),
        name: "Obscure Chat".into(),
        product: "telegram".into(),
        dismiss: false,
        unmap: false,
    })
    .await
    .unwrap();
    wait_event(&mut events, |e| {
        matches!(e, AgentEvent::MappingsAccepted { decisions: 1 })
    })
    .await;
    // The collector holds the mapped state; the agent's own state must come to equal it.
    converged(&c, &id, &["telegram", "zoom"], WITHIN).await;
    let mapped = stored_state_digest(&c, &id);
    sends_state(&mut events, &mapped).await;
    assert_eq!(status(&data), 1);
    let kept = std::fs::read_to_string(data.root().join("catalog.mappings")).unwrap();
    assert!(
        kept.contains("Obscure Chat") && kept.contains("telegram"),
        "{kept}"
    );

    // A restart keeps the decisions: the hello states them, nothing is sent again.
    running.shutdown().await;
    let restarted = tree_agent(config, root.path());
    let mut events = restarted.events();
    let running = RunningAgent::start(restarted);
    wait_event(&mut events, |e| matches!(e, AgentEvent::Connected { .. })).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, AgentEvent::MappingsAccepted { .. }),
            "the restarted agent was sent the decisions again: {e:?}"
        );
    }
    assert_eq!(status(&data), 1);

    // Undone: the agent reports the candidate again, as the collector lists it.
    q.classify_candidate(v1::ClassifyCandidateRequest {
        organisation: "acme".into(),
        name: "Obscure Chat".into(),
        product: String::new(),
        dismiss: false,
        unmap: true,
    })
    .await
    .unwrap();
    wait_event(&mut events, |e| {
        matches!(e, AgentEvent::MappingsAccepted { decisions: 0 })
    })
    .await;
    converged(&c, &id, &["zoom"], WITHIN).await;
    let unmapped = stored_state_digest(&c, &id);
    assert_ne!(unmapped, mapped);
    sends_state(&mut events, &unmapped).await;
    assert_eq!(status(&data), 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_an_agent_still_applies_after_it_was_undone_is_not_believed() {
    use commscan_proto::v1;
    let c = TestCollector::start().await;
    let (tx, mut stream) = commscan_tests::open_stream(&c, "stale").await;
    // What an agent that still holds "Obscure Chat → telegram" reports, though the
    // organisation decided nothing (or undid it while the agent was offline).
    let candidate = commscan_core::scan::Unclassified {
        name: "Obscure Chat".into(),
        source: "desktop".into(),
        detail: "Categories=Network;InstantMessaging;".into(),
        looks_like: None,
    };
    let stale = commscan_core::mappings::CandidateMappings::new([(
        candidate.name.clone(),
        commscan_core::mappings::Decision::Product("telegram".into()),
    )])
    .unwrap();
    let (mut findings, mut unclassified) = (Vec::new(), vec![candidate]);
    stale.apply(&mut findings, &mut unclassified);
    assert!(unclassified.is_empty());
    let e = &findings[0].evidence[0];
    let finding = v1::Finding {
        product: "telegram".into(),
        installed: true,
        evidence: vec![v1::Evidence {
            source: e.source.clone(),
            detail: e.detail.clone(),
            signature: e.signature.clone(),
        }],
        ..Default::default()
    };
    commscan_tests::snapshot_acked(&tx, &mut stream, vec![finding], Vec::new(), WITHIN).await;
    let devices = c
        .domain()
        .store()
        .list_devices(&Default::default(), None, 10)
        .unwrap()
        .devices;
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    let names: Vec<&str> = d.unclassified.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["Obscure Chat"]);
    assert_eq!(
        d.unclassified[0].detail,
        "Categories=Network;InstantMessaging;"
    );
}
