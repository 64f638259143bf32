//! `commscan-collector` and `commscanctl` as a user runs them.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env_remove("COMMSCAN_TOKEN")
        .env_remove("COMMSCAN_CA")
        .env_remove("COMMSCAN_TOKEN_FILE")
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn collector(args: &[&str]) -> (bool, String, String) {
    run(env!("CARGO_BIN_EXE_commscan-collector"), args)
}

fn ctl(args: &[&str]) -> (bool, String, String) {
    run(env!("CARGO_BIN_EXE_commscanctl"), args)
}

#[test]
fn dev_once_prints_the_verdict_of_a_scanned_tree_and_exits_zero() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.path().join("var/lib/dpkg/status"),
        "Package: zoom\nStatus: install ok installed\nVersion: 6.1.0\n",
    )
    .unwrap();
    let (ok, stdout, stderr) =
        collector(&["dev", "--once", "--root", root.path().to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("status    noncompliant"), "{stdout}");
    assert!(
        stdout.contains(
            "zoom installed (dpkg: package zoom 6.1.0); denied by rule 'named-in-letter'"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("commscanctl"),
        "prints how to query: {stdout}"
    );
}

#[test]
fn dev_once_on_this_machine_exits_zero_with_a_verdict() {
    let (ok, stdout, stderr) = collector(&["dev", "--once"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("status    "), "{stdout}");
    assert!(stdout.contains("sources: "), "{stdout}");
}

#[test]
fn init_refuses_to_overwrite_an_existing_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let (ok, stdout, stderr) = collector(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--org",
        "acme",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("enrolment token for 'acme'"), "{stdout}");
    let ca_before = std::fs::read(data.join("pki/ca.key")).unwrap();
    let (ok, _, stderr) = collector(&["init", "--data-dir", data.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("already holds a deployment"), "{stderr}");
    assert_eq!(
        std::fs::read(data.join("pki/ca.key")).unwrap(),
        ca_before,
        "the CA key must be untouched"
    );
}

#[test]
fn serve_on_an_uninitialised_directory_says_to_run_init() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = collector(&[
        "serve",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("collector.json: missing: not a collector data directory (run `commscan-collector init` first)"), "{stderr}");
}

#[test]
fn serve_with_a_corrupt_server_key_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    assert!(collector(&["init", "--data-dir", data.to_str().unwrap()]).0);
    std::fs::write(data.join("pki/server.key"), "garbage").unwrap();
    let (ok, _, stderr) = collector(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("server.key: not a PEM private key"),
        "{stderr}"
    );
}

#[test]
fn ctl_without_a_ca_says_which_setting_to_give() {
    let (ok, _, stderr) = ctl(&["devices"]);
    assert!(!ok);
    assert!(stderr.contains("set COMMSCAN_CA"), "{stderr}");
}

#[test]
fn ctl_catalog_list_json_has_ids() {
    let (ok, stdout, _) = ctl(&["catalog", "list", "--output", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 60, "{}", ids.len());
    for id in ["zoom", "skype", "whatsapp", "kontur-tolk", "vk-teams"] {
        assert!(ids.contains(&id), "{id}");
    }
}

#[test]
fn ctl_policy_check_reports_every_problem_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "version = 1\nid = \"bad\"\nname = \"Bad\"\n\n[[rule]]\nid = \"r1\"\naction = \"deny\"\nproducts = [\"zoom\", \"zooom\"]\ncountries = [\"USA\"]\n\n[[waiver]]\nscope = \"device\"\ndevice = \"d\"\nproduct = \"zoom\"\nreason = \"x\"\napprover = \"y\"\n").unwrap();
    let (ok, _, stderr) = ctl(&["policy", "check", p.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("bad.toml:8: rule[0].products: unknown product id 'zooom'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:9: rule[0].countries: 'USA' is not an ISO 3166-1 alpha-2 code"),
        "{stderr}"
    );
    assert!(
        stderr.contains("waiver[0].expires: a waiver needs an expiry date"),
        "{stderr}"
    );
}

#[test]
fn ctl_policy_test_judges_a_saved_scan() {
    let dir = tempfile::tempdir().unwrap();
    let scan = dir.path().join("scan.json");
    std::fs::write(&scan, r#"{"platform":"linux","findings":[{"product":"whatsapp","installed":true,"running":false,"evidence":[{"source":"flatpak","detail":"app io.github.whatsapp"}]}]}"#).unwrap();
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/ministry-letter.toml"
    );
    let (ok, stdout, stderr) = ctl(&["policy", "test", policy, scan.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("noncompliant"), "{stdout}");
    assert!(
        stdout.contains(
            "whatsapp installed (flatpak: app io.github.whatsapp); denied by rule 'named-in-letter'"
        ),
        "{stdout}"
    );
    let other = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/government-device-ban.toml"
    );
    let (ok, stdout, _) = ctl(&["policy", "test", other, scan.to_str().unwrap()]);
    assert!(ok);
    assert!(
        stdout.contains(": compliant"),
        "the same scan is fine where only WeChat is banned: {stdout}"
    );
}

#[test]
fn validate_accepts_an_initialised_directory_and_exits_64_on_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let (ok, _, stderr) = collector(&["init", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = collector(&["validate", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ready to serve"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_commscan-collector"))
        .args([
            "validate",
            "--data-dir",
            dir.path().join("nope").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("commscan-collector init"));
}

#[test]
fn federation_issue_writes_an_enterprise_certificate_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ministry");
    let (ok, _, stderr) = collector(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--trust-domain",
        "ministry.gov",
    ]);
    assert!(ok, "{stderr}");
    let out = dir.path().join("bank");
    let issue = |org: &str| {
        collector(&[
            "federation",
            "issue",
            "--data-dir",
            data.to_str().unwrap(),
            "--enterprise",
            "bank",
            "--org",
            org,
            "--org",
            "branches",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let (ok, stdout, stderr) = issue("hq");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("issued enterprise 'bank' for organisations branches, hq"),
        "{stdout}"
    );
    assert!(stdout.contains("--upstream-cert"), "{stdout}");
    for f in ["enterprise.key", "enterprise.crt", "ministry-ca.crt"] {
        assert!(out.join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("enterprise.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        std::fs::read(out.join("ministry-ca.crt")).unwrap(),
        std::fs::read(data.join("pki/ca.crt")).unwrap()
    );
    let key_before = std::fs::read(out.join("enterprise.key")).unwrap();
    let (ok, _, stderr) = issue("hq");
    assert!(!ok);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(
        std::fs::read(out.join("enterprise.key")).unwrap(),
        key_before
    );
}

#[test]
fn serve_with_part_of_the_upstream_flags_names_the_missing_ones_and_exits_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_commscan-collector"))
        .args([
            "serve",
            "--data-dir",
            "/nonexistent/commscan",
            "--upstream",
            "https://ministry.example:7443",
            "--upstream-cert",
            "enterprise.crt",
        ])
        .env_remove("COMMSCAN_UPSTREAM_CA")
        .env_remove("COMMSCAN_UPSTREAM_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--upstream-ca, --upstream-key missing"),
        "{stderr}"
    );
}
