//! `commscan-collector` as a user runs it.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .args(args)
        // Not this machine's /etc/commscan/collector.toml.
        .env("COMMSCAN_CONFIG", "/dev/null")
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

#[test]
fn validate_reports_every_problem_of_the_configuration_file_at_its_line_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    assert!(collector(&["init", "--data-dir", data.to_str().unwrap()]).0);
    let file = dir.path().join("collector.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nlisten = \"nowhere\"\n[limits]\nshutdown_grace = \"40s\"\nmax_connections = -1\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_commscan-collector"))
        .args(["validate", "--config", file.to_str().unwrap()])
        .env_remove("COMMSCAN_DATA_DIR")
        .env_remove("COMMSCAN_LISTEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    let name = file.display().to_string();
    for want in [
        format!("{name}:2: listen: 'nowhere'"),
        format!("{name}:4: limits.shutdown_grace: 40s is outside 1s..=25s"),
        format!("{name}:5: limits.max_connections: -1 is outside"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }

    // A flag overrides the file's value; the file's other values stay.
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nlisten = \"nowhere\"\nweb_listen = \"off\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = collector(&[
        "validate",
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ready to serve"), "{stdout}");

    // An unknown key is refused by name; a named file that is missing is an error.
    std::fs::write(&file, "[store]\nconections = 4\n").unwrap();
    let (ok, _, stderr) = collector(&["validate", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{name}:2:")) && stderr.contains("conections"),
        "{stderr}"
    );
    let (ok, _, stderr) = collector(&["validate", "--config", "/nonexistent/collector.toml"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/collector.toml"), "{stderr}");
}
