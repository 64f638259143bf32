//! The officer's command line after a first week (issue 17), run as a person runs it: the
//! real `commscanctl` and `commscan-agent` binaries against a real collector. Output piped to
//! a reader that goes away ends quietly; a secret is never lost to `| head -1`; typos are
//! refused with a suggestion instead of creating, matching or dismissing nothing; device ids
//! may be abbreviated as long as they are unambiguous; `enroll` never silently replaces an
//! identity.

use commscan_proto::v1;
use commscan_tests::{TestCollector, dpkg_fixture, reporter, workspace_binary};
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `commscanctl` set up to reach `c` as `token`.
fn ctl_command(c: &TestCollector, token: &str, args: &[&str]) -> Command {
    let ca = c.dir.path().join("ca-for-cli.crt");
    std::fs::write(&ca, &c.ca_pem).unwrap();
    let mut cmd = Command::new(workspace_binary("commscanctl"));
    cmd.args(args)
        .env("COMMSCAN_COLLECTOR", &c.url)
        .env("COMMSCAN_CA", &ca)
        .env("COMMSCAN_TOKEN", token)
        .env_remove("COMMSCAN_TOKEN_FILE");
    cmd
}

/// Runs `commscanctl` against `c` with `token`; (success, stdout, stderr).
fn ctl(c: &TestCollector, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = ctl_command(c, token, args)
        .output()
        .expect("run commscanctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` with its standard output a pipe whose reader reads `lines` lines and goes away
/// (`| head -N`; 0: the reader is gone before anything is written). Returns the exit status,
/// the lines read and stderr.
fn piped_to_head(mut cmd: Command, lines: usize) -> (ExitStatus, Vec<String>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    let child = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Only the child holds the write end now.
    drop(cmd);
    let mut read = Vec::new();
    if lines > 0 {
        let mut reader = BufReader::new(reader);
        for _ in 0..lines {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            read.push(line.trim_end().to_owned());
        }
    } else {
        drop(reader);
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        read,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A person made by `c`'s administrator with one grant (`org` empty: every organisation):
/// (secret, person id).
async fn person(c: &TestCollector, name: &str, role: v1::Role, org: &str) -> (String, String) {
    let r = c
        .admin_as(&c.admin_token)
        .await
        .create_access_token(v1::CreateAccessTokenRequest {
            name: name.into(),
            grants: vec![v1::Grant {
                role: role as i32,
                organisation: org.into(),
            }],
            expires_in_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    (r.secret, r.person_id)
}

/// An enrolled device of `acme` that reported Zoom; its id.
async fn zoom_device(c: &TestCollector, name: &str) -> String {
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let data = c.enroll_agent(name).await;
    let id = data.identity().unwrap().device_id;
    reporter(data, root.path())
        .session(Duration::from_secs(3600), true, &CancellationToken::new())
        .await
        .unwrap();
    id
}

fn quiet(status: ExitStatus, stderr: &str, what: &str) {
    assert_eq!(status.code(), Some(0), "{what}: {status:?} {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_ends_quietly_when_its_reader_goes_away_and_a_secret_comes_first() {
    let c = TestCollector::start().await;
    for i in 0..3 {
        zoom_device(&c, &format!("pc{i}")).await;
    }
    let admin = c.admin_token.clone();
    for args in [
        &["catalog", "list", "--output", "json"][..],
        &["catalog", "list"],
        &["devices", "--output", "json"],
        &["devices"],
        &["fleet", "--output", "csv"],
        &["audit"],
    ] {
        for lines in [0, 1] {
            let (status, _, stderr) = piped_to_head(ctl_command(&c, &admin, args), lines);
            quiet(status, &stderr, &format!("{args:?} | head -{lines}"));
        }
    }

    // The agent's `scan` and the collector's `init`, the other binaries that print results.
    let root = dpkg_fixture(&[("zoom", "install ok installed", "6.1.0")]);
    let mut scan = Command::new(workspace_binary("commscan-agent"));
    scan.args(["scan", "--no-processes", "--root"])
        .arg(root.path());
    let (status, _, stderr) = piped_to_head(scan, 0);
    quiet(status, &stderr, "commscan-agent scan | head -0");
    let dir = tempfile::tempdir().unwrap();
    let mut init = Command::new(workspace_binary("commscan-collector"));
    init.args(["init", "--data-dir"]).arg(dir.path().join("c"));
    let (status, _, stderr) = piped_to_head(init, 0);
    quiet(status, &stderr, "commscan-collector init | head -0");

    // `tokens create | head -1`: the first line is the secret, and it works.
    let (status, lines, stderr) = piped_to_head(
        ctl_command(&c, &admin, &["tokens", "create", "--org", "acme"]),
        1,
    );
    quiet(status, &stderr, "tokens create | head -1");
    let secret = lines[0].clone();
    let data = c.enroll_agent_with("from-head", &secret).await;
    assert_eq!(data.identity().unwrap().organisation, "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typos_are_refused_with_a_suggestion_instead_of_passing_silently() {
    let c = TestCollector::start().await;
    zoom_device(&c, "pc").await;
    let admin = c.admin_token.clone();

    // (args, text on stderr)
    let cases = [
        (
            &["tokens", "create", "--org", "acmee"][..],
            "unknown organisation 'acmee'; did you mean 'acme'?; give --new-org to create it",
        ),
        (
            &["devices", "--product", "telegramm"],
            "unknown product 'telegramm'; did you mean 'telegram'?",
        ),
        (
            &["candidates", "dismiss", "--org", "acme", "NotThere"],
            "unknown candidate 'NotThere' in 'acme'",
        ),
        (
            &[
                "candidates",
                "map",
                "--org",
                "acme",
                "NotThere",
                "--product",
                "zooom",
            ],
            "unknown product 'zooom'; did you mean 'zoom'?",
        ),
    ];
    for (args, expected) in cases {
        let (ok, stdout, stderr) = ctl(&c, &admin, args);
        assert!(!ok, "{args:?} succeeded: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Nothing was created for the typo.
    let tokens = c
        .admin_as(&admin)
        .await
        .list_enrollment_tokens(v1::ListEnrollmentTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens.iter().all(|t| t.organisation != "acmee"));

    // A new organisation is one flag away, and from then on it is known.
    let (ok, _, stderr) = ctl(
        &c,
        &admin,
        &["tokens", "create", "--org", "globex", "--new-org"],
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = ctl(&c, &admin, &["tokens", "create", "--org", "globex"]);
    assert!(ok, "{stderr}");
    // A product spelled right that nobody has is an empty answer, not an error.
    let (ok, stdout, stderr) = ctl(&c, &admin, &["devices", "--product", "telegram"]);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("zoom"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_ids_may_be_abbreviated_when_unambiguous() {
    let c = TestCollector::start().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(zoom_device(&c, &format!("pc{i}")).await);
    }
    let admin = c.admin_token.clone();
    // The shortest prefix that names exactly one device, as git abbreviates.
    let unique = |id: &str| -> String {
        (1..=id.len())
            .map(|n| id[..n].to_owned())
            .find(|p| ids.iter().filter(|o| o.starts_with(p.as_str())).count() == 1)
            .unwrap()
    };
    let short = unique(&ids[0]);
    let (ok, stdout, stderr) = ctl(&c, &admin, &["device", &short]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&ids[0]), "{stdout}");

    // Six random ids share their first hex digit with another at least sometimes; build an
    // ambiguous prefix from the longest common prefix of two of them.
    let (a, b) = ids
        .iter()
        .flat_map(|a| ids.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .max_by_key(|(a, b)| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count())
        .unwrap();
    let common: String = a
        .chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    if !common.is_empty() {
        let (ok, _, stderr) = ctl(&c, &admin, &["device", &common]);
        assert!(!ok);
        assert!(stderr.contains("is ambiguous"), "{stderr}");
        assert!(
            stderr.contains(a.as_str()) && stderr.contains(b.as_str()),
            "{stderr}"
        );
    }
    // History in a time window (`--since`, `--until`).
    let (ok, stdout, _) = ctl(&c, &admin, &["device", &short, "--since", "1h"]);
    assert!(ok);
    assert!(
        stdout.contains("history:") && stdout.contains("enrolled"),
        "{stdout}"
    );
    let (ok, stdout, _) = ctl(&c, &admin, &["device", &short, "--until", "2000-01-01"]);
    assert!(ok);
    assert!(!stdout.contains("history:"), "{stdout}");

    let (ok, _, stderr) = ctl(&c, &admin, &["device", "zz"]);
    assert!(!ok);
    assert!(stderr.contains("no device id starts with 'zz'"), "{stderr}");

    // An irreversible change wants 8 characters at least, however unique a shorter prefix is.
    let short_revoke = &ids[1][..unique(&ids[1]).len().min(7)];
    let (ok, _, stderr) = ctl(&c, &admin, &["devices", "revoke", short_revoke]);
    assert!(!ok, "revoked by {short_revoke}");
    assert!(stderr.contains("at least 8 characters"), "{stderr}");
    // Revoking by a long enough prefix revokes that device.
    let (ok, stdout, stderr) = ctl(&c, &admin, &["devices", "revoke", &ids[1][..8]]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&ids[1]), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_refuses_to_replace_an_identity_without_force() {
    let c = TestCollector::start().await;
    let ca = c.dir.path().join("ca-for-agent.crt");
    std::fs::write(&ca, &c.ca_pem).unwrap();
    let data = c.dir.path().join("agent-data");
    let enroll = |extra: &[&str]| {
        let out = Command::new(workspace_binary("commscan-agent"))
            .arg("enroll")
            .args(extra)
            .arg("--data-dir")
            .arg(&data)
            .arg("--ca")
            .arg(&ca)
            .env("COMMSCAN_COLLECTOR", &c.url)
            .env("COMMSCAN_ENROLL_TOKEN", &c.enrolment_token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let id = || {
        commscan_agent::state::DataDir::new(&data)
            .identity()
            .unwrap()
            .device_id
    };
    let (ok, _, stderr) = enroll(&[]);
    assert!(ok, "{stderr}");
    let first = id();

    let (ok, _, stderr) = enroll(&[]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("already holds the identity of device {first}")),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(id(), first, "the identity is untouched");

    let (ok, _, stderr) = enroll(&["--force"]);
    assert!(ok, "{stderr}");
    assert_ne!(id(), first, "--force enrols as a new device");
}

/// Enrols an agent of `acme` that reports `unclassified` in one snapshot over a raw stream;
/// its device id once acknowledged.
async fn report_candidates(c: &TestCollector, name: &str, unclassified: &[&str]) -> String {
    let data = c.enroll_agent(name).await;
    let (ca, cert, key) = data.credentials().unwrap();
    let channel = commscan_runtime::transport::channel(&c.url, &ca, Some((&cert, &key)))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Hello(v1::Hello {
            hostname: name.into(),
            platform: v1::Platform::Linux as i32,
            agent_version: "test".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = v1::reporting_client::ReportingClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    inbound.message().await.unwrap().unwrap();
    tx.send(v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Report(v1::Report {
            sequence: 1,
            body: Some(v1::report::Body::Snapshot(v1::Snapshot {
                findings: Vec::new(),
                unclassified: unclassified
                    .iter()
                    .map(|n| v1::Unclassified {
                        name: (*n).into(),
                        source: "desktop".into(),
                        detail: "Categories=Network;InstantMessaging".into(),
                        looks_like: String::new(),
                    })
                    .collect(),
            })),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an acknowledgement in time")
        .unwrap()
        .unwrap();
    assert!(matches!(
        ack.kind,
        Some(v1::collector_message::Kind::Ack(_))
    ));
    data.identity().unwrap().device_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_candidate_can_be_unmapped_and_a_mistyped_one_is_refused() {
    let c = TestCollector::start().await;
    let id = report_candidates(&c, "pc", &["Gossip Chat"]).await;
    let admin = c.admin_token.clone();
    let device = |args: &[&str]| ctl(&c, &admin, args);

    // A typo in the name is refused with the name it resembles; nothing is decided.
    let (ok, _, stderr) = device(&["candidates", "dismiss", "--org", "acme", "Gossip Chta"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown candidate 'Gossip Chta'; did you mean 'Gossip Chat'?"),
        "{stderr}"
    );
    let (ok, _, stderr) = device(&["candidates", "unmap", "--org", "acme", "Gossip Chat"]);
    assert!(!ok, "nothing to undo yet");
    assert!(
        stderr.contains("unknown decision 'Gossip Chat'"),
        "{stderr}"
    );

    // Mapped to Zoom (denied by the default policy): noncompliant, no longer a candidate.
    let (ok, _, stderr) = device(&[
        "candidates",
        "map",
        "--org",
        "acme",
        "Gossip Chat",
        "--product",
        "zoom",
    ]);
    assert!(ok, "{stderr}");
    let (_, shown, _) = device(&["device", &id]);
    assert!(shown.contains("noncompliant"), "{shown}");
    let (_, listed, _) = device(&["candidates", "list", "--org", "acme"]);
    assert!(!listed.contains("Gossip Chat"), "{listed}");

    // Unmapped: compliant again, listed again, and audited.
    let (ok, stdout, stderr) = device(&["candidates", "unmap", "--org", "acme", "Gossip Chat"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("unmapped"), "{stdout}");
    let (_, shown, _) = device(&["device", &id]);
    let now = shown.split("history:").next().unwrap();
    assert!(now.contains("status    compliant"), "{shown}");
    assert!(!now.contains("zoom"), "{shown}");
    assert!(now.contains("Gossip Chat (desktop"), "{shown}");
    let (_, listed, _) = device(&["candidates", "list", "--org", "acme"]);
    assert!(listed.contains("Gossip Chat"), "{listed}");
    assert!(
        c.audit()
            .iter()
            .any(|e| e.action == "candidates.unmap" && e.allowed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_shows_the_trend_and_every_organisation_and_json_numbers_are_numbers() {
    let c = TestCollector::start().await;
    zoom_device(&c, "pc").await;
    let admin = c.admin_token.clone();

    // Without --org: every organisation the caller sees (here acme), not `default`.
    let (ok, stdout, stderr) = ctl(&c, &admin, &["summary"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("organisation acme: 1 devices"), "{stdout}");

    // --days: the daily trend as a table (the sparkline is for terminals only).
    let (ok, stdout, stderr) = ctl(&c, &admin, &["summary", "--org", "acme", "--days", "14"]);
    assert!(ok, "{stderr}");
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        stdout.contains("DAY         DEVICES  % COMPLIANT  NONCOMPLIANT  WAIVED  STALE"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{today}  1        0.0          1")),
        "{stdout}"
    );
    assert!(
        !stdout.contains('▁'),
        "no sparkline off a terminal: {stdout}"
    );
    let (ok, stdout, _) = ctl(
        &c,
        &admin,
        &[
            "summary", "--org", "acme", "--days", "14", "--output", "json",
        ],
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["trend"][0]["day"], today.as_str());
    assert_eq!(v["trend"][0]["devices"], 1);

    // fleet: a waived column; JSON numbers as numbers under stable snake_case keys.
    let (ok, stdout, _) = ctl(&c, &admin, &["fleet"]);
    assert!(ok);
    assert!(stdout.contains("NONCOMPLIANT  WAIVED"), "{stdout}");
    let (ok, stdout, _) = ctl(&c, &admin, &["fleet", "--output", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = &v[0];
    assert_eq!(row["organisation"], "acme");
    assert_eq!(row["devices"], 1);
    assert_eq!(row["percent_compliant"], 0.0);
    assert_eq!(row["noncompliant"], 1);
    assert_eq!(row["waived"], 0);
    assert!(row.get("%_compliant").is_none(), "{stdout}");
    let (ok, stdout, _) = ctl(&c, &admin, &["fleet", "--output", "csv"]);
    assert!(ok);
    assert!(
        stdout.starts_with("enterprise,organisation,devices,percent_compliant,noncompliant,waived,stale_devices,updated_at,freshness\n"),
        "{stdout}"
    );

    // products: per organisation, numbers as numbers; a mistyped organisation is refused.
    let (ok, stdout, stderr) = ctl(
        &c,
        &admin,
        &["products", "--org", "acme", "--output", "json"],
    );
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v[0]["product"], "zoom");
    assert_eq!(v[0]["devices"], 1);
    assert_eq!(v[0]["violating"], 1);
    let (ok, _, stderr) = ctl(&c, &admin, &["products", "--org", "acmee"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown organisation 'acmee'; did you mean 'acme'?"),
        "{stderr}"
    );

    // Tables show times to the second.
    let (ok, stdout, _) = ctl(&c, &admin, &["devices"]);
    assert!(ok);
    let seconds = regex_lite_seconds(&stdout);
    assert!(seconds, "{stdout}");
}

/// Whether `text` holds an RFC 3339 time to the second (`…T08:00:00Z`) and none with a
/// fraction of a second.
fn regex_lite_seconds(text: &str) -> bool {
    let times: Vec<&str> = text
        .split_whitespace()
        .filter(|w| w.len() >= 20 && w.as_bytes()[10] == b'T' && w.ends_with('Z'))
        .collect();
    !times.is_empty() && times.iter().all(|t| t.len() == 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ministry_analyst_summarises_an_enterprise_s_organisation() {
    let ministry = TestCollector::start().await;
    let out = ministry.dir.path().join("issued").join("e1");
    ministry
        .layout
        .issue_enterprise("e1", &["acme".to_owned()], &out)
        .expect("issue");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let mut upstream = commscan_collector::federation::upstream::Upstream::from_pem(
        &ministry.url,
        &read("ministry-ca.crt"),
        &read("enterprise.crt"),
        &read("enterprise.key"),
        Duration::from_secs(600),
    )
    .expect("upstream");
    upstream.change_poll = Duration::from_millis(200);
    let e1 = TestCollector::start_with(commscan_tests::StartOptions {
        trust_domain: "e1.test".into(),
        upstream: Some(upstream),
        ..Default::default()
    })
    .await;
    zoom_device(&e1, "pc").await;
    let (analyst, _) = person(&ministry, "analyst", v1::Role::Analyst, "").await;
    commscan_tests::wait_until(Duration::from_secs(60), "acme reaches the ministry", || {
        let (ok, stdout, _) = ctl(&ministry, &analyst, &["summary", "--org", "acme"]);
        async move { (ok && stdout.contains("1 devices")).then_some(()) }
    })
    .await;
    let (ok, stdout, stderr) = ctl(&ministry, &analyst, &["summary", "--org", "acme"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("organisation acme (enterprise e1): 1 devices, 0.0% compliant"),
        "{stdout}"
    );
    // And without --org, the enterprise's organisation is among those shown.
    let (ok, stdout, stderr) = ctl(&ministry, &analyst, &["summary"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("organisation acme (enterprise e1)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_devices_are_listed_as_revoked_not_as_noncompliant() {
    let mut c = TestCollector::start().await;
    let kept = zoom_device(&c, "kept").await;
    let gone = zoom_device(&c, "gone").await;
    let admin = c.admin_token.clone();
    let summary = |c: &TestCollector| {
        let (ok, stdout, stderr) = ctl(c, &admin, &["summary", "--org", "acme"]);
        assert!(ok, "{stderr}");
        stdout
    };
    assert!(summary(&c).contains("acme: 2 devices"), "{}", summary(&c));
    let (ok, _, stderr) = ctl(&c, &admin, &["devices", "revoke", &gone]);
    assert!(ok, "{stderr}");
    // Out of the organisation's figures, and still out after a restart (re-judging at start
    // must not count it again).
    assert!(summary(&c).contains("acme: 1 devices"), "{}", summary(&c));
    let (ok, stdout, stderr) = ctl(
        &c,
        &admin,
        &["products", "--org", "acme", "--output", "json"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"devices\": 1"), "{stdout}");
    c.restart().await;
    assert!(summary(&c).contains("acme: 1 devices"), "{}", summary(&c));

    let (ok, stdout, stderr) = ctl(&c, &admin, &["devices", "--status", "noncompliant"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&kept) && !stdout.contains(&gone),
        "{stdout}"
    );
    let (ok, stdout, stderr) = ctl(&c, &admin, &["devices", "--status", "revoked"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&gone) && !stdout.contains(&kept),
        "{stdout}"
    );
    let (ok, stdout, _) = ctl(&c, &admin, &["devices", "--output", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let status = |id: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|d| d["device_id"] == id)
            .map(|d| d["status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(status(&gone), "revoked");
    assert_eq!(status(&kept), "noncompliant");
    // The export under a status filter leaves it out too; without one it is there.
    let (ok, stdout, stderr) = ctl(&c, &admin, &["export", "--status", "noncompliant"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&kept) && !stdout.contains(&gone),
        "{stdout}"
    );
    let (ok, stdout, stderr) = ctl(&c, &admin, &["export"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&kept) && stdout.contains(&gone), "{stdout}");
    let (ok, _, stderr) = ctl(&c, &admin, &["devices", "--status", "revokd"]);
    assert!(!ok);
    assert!(stderr.contains("did you mean 'revoked'?"), "{stderr}");
}

/// The audit table's rows as (position, actor, action).
fn audit_rows(stdout: &str) -> Vec<(u64, String, String)> {
    stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split("  ").map(str::trim).filter(|c| !c.is_empty());
            let position = cols.next()?.parse().ok()?;
            let _at = cols.next()?;
            Some((position, cols.next()?.to_owned(), cols.next()?.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_is_newest_first_contiguous_and_filtered_by_person_action_and_time() {
    let c = TestCollector::start().await;
    let admin = c.admin_token.clone();
    // Two people called alice, each refused once.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (secret, id) = person(&c, "alice", v1::Role::Auditor, "").await;
        // An auditor may not list enrolment tokens: the refusal is audited under their name.
        let (ok, _, _) = ctl(&c, &secret, &["tokens", "list"]);
        assert!(!ok);
        ids.push(id);
    }
    for _ in 0..3 {
        let (ok, _, stderr) = ctl(&c, &admin, &["tokens", "create", "--org", "acme"]);
        assert!(ok, "{stderr}");
    }

    // Newest first, positions contiguous.
    let (ok, stdout, stderr) = ctl(&c, &admin, &["audit", "--limit", "4"]);
    assert!(ok, "{stderr}");
    let rows = audit_rows(&stdout);
    assert_eq!(rows.len(), 4, "{stdout}");
    let positions: Vec<u64> = rows.iter().map(|r| r.0).collect();
    let newest = positions[0];
    assert_eq!(
        positions,
        (newest - 3..=newest).rev().collect::<Vec<_>>(),
        "{stdout}"
    );
    // --reverse pages forward; --after means after that position.
    let (ok, stdout, _) = ctl(
        &c,
        &admin,
        &["audit", "--reverse", "--after", "2", "--limit", "2"],
    );
    assert!(ok);
    let positions: Vec<u64> = audit_rows(&stdout).iter().map(|r| r.0).collect();
    assert_eq!(positions, vec![3, 4], "{stdout}");

    // By person: a name finds both alices, told apart by id; an id prefix finds one.
    let (ok, stdout, _) = ctl(&c, &admin, &["audit", "--person", "alice"]);
    assert!(ok);
    let actors: std::collections::BTreeSet<String> =
        audit_rows(&stdout).into_iter().map(|r| r.1).collect();
    let want: std::collections::BTreeSet<String> =
        ids.iter().map(|id| format!("alice [{id}]")).collect();
    assert_eq!(actors, want, "{stdout}");
    let (ok, stdout, _) = ctl(&c, &admin, &["audit", "--person", &ids[0][..6]]);
    assert!(ok);
    let rows = audit_rows(&stdout);
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.1 == format!("alice [{}]", ids[0])),
        "{stdout}"
    );

    // By action group and by time.
    let (ok, stdout, _) = ctl(&c, &admin, &["audit", "--action", "tokens"]);
    assert!(ok);
    let rows = audit_rows(&stdout);
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.2.starts_with("tokens.")),
        "{stdout}"
    );
    let (ok, stdout, _) = ctl(&c, &admin, &["audit", "--since", "1h", "--limit", "1000"]);
    assert!(ok);
    assert!(audit_rows(&stdout).len() >= 5, "{stdout}");
    // Details give times as RFC 3339 to the second too.
    assert!(stdout.contains("uses=unlimited expires=20"), "{stdout}");
    assert!(!stdout.contains("+00:00:00"), "{stdout}");
    let (ok, stdout, _) = ctl(&c, &admin, &["audit", "--until", "2000-01-01"]);
    assert!(ok);
    assert_eq!(stdout, "nothing to show\n");
    // JSON: the position is a number, keys are snake_case.
    let (ok, stdout, _) = ctl(&c, &admin, &["audit", "--limit", "1", "--output", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v[0]["position"].is_u64(), "{stdout}");
    assert_eq!(v[0]["outcome"], "allowed");
    let (ok, _, stderr) = ctl(&c, &admin, &["audit", "--since", "yesterday"]);
    assert!(!ok);
    assert!(stderr.contains("is not a time"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_people_json_give_numbers_lists_and_nulls_not_strings() {
    let c = TestCollector::start().await;
    let admin = c.admin_token.clone();
    let (ok, _, stderr) = ctl(
        &c,
        &admin,
        &["tokens", "create", "--org", "acme", "--uses", "3"],
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = ctl(&c, &admin, &["tokens", "list", "--output", "json"]);
    assert!(ok, "{stderr}");
    let tokens: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let uses: Vec<&serde_json::Value> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["uses_left"])
        .collect();
    assert!(uses.contains(&&serde_json::json!(3)), "{stdout}");
    // The enrolment token `init` made has no use limit: null, not "unlimited".
    assert!(uses.contains(&&serde_json::Value::Null), "{stdout}");
    person(&c, "olga", v1::Role::Officer, "acme").await;
    let (ok, stdout, stderr) = ctl(&c, &admin, &["people", "list", "--output", "json"]);
    assert!(ok, "{stderr}");
    let people: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let olga = people
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "olga")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        olga["grants"],
        serde_json::json!([{"role": "officer", "organisation": "acme"}])
    );
    assert_eq!(olga["expires"], serde_json::Value::Null, "{stdout}");
    assert_eq!(olga["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_person_refuses_a_prefix_that_starts_several_ids() {
    let c = TestCollector::start().await;
    let admin = c.admin_token.clone();
    // 17 people and the administrator: two ids share a first hex digit (pigeonhole).
    let mut ids = Vec::new();
    for n in 0..17 {
        ids.push(person(&c, &format!("p{n}"), v1::Role::Auditor, "").await.1);
    }
    let shared = (0..ids.len())
        .find_map(|i| {
            let first = &ids[i][..1];
            ids[i + 1..]
                .iter()
                .any(|o| o.starts_with(first))
                .then(|| first.to_owned())
        })
        .expect("two of 17 ids share a first digit");
    let (ok, _, stderr) = ctl(&c, &admin, &["audit", "--person", &shared]);
    assert!(!ok, "an ambiguous prefix was taken");
    assert!(stderr.contains("give more of the id"), "{stderr}");
    // A whole id and a name still select.
    for person in [ids[0].as_str(), "p3"] {
        let (ok, _, stderr) = ctl(&c, &admin, &["audit", "--person", person]);
        assert!(ok, "{person}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_itself_refuses_a_token_for_an_unknown_organisation() {
    let c = TestCollector::start().await;
    let create = |org: &str, new_organisation: bool| v1::CreateEnrollmentTokenRequest {
        organisation: org.into(),
        uses: 0,
        expires_in_seconds: 0,
        new_organisation,
    };
    // Any API client (not only commscanctl, which checks first): a typo makes no organisation.
    let err = c
        .admin_as(&c.admin_token)
        .await
        .create_enrollment_token(create("acmee", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("did you mean 'acme'?"),
        "{}",
        err.message()
    );
    assert!(
        c.domain()
            .store()
            .tokens()
            .unwrap()
            .iter()
            .all(|(_, t)| t.organisation != "acmee")
    );
    // Asked for, it is created; then known.
    for new in [true, false] {
        c.admin_as(&c.admin_token)
            .await
            .create_enrollment_token(create("initech", new))
            .await
            .unwrap();
    }
}
