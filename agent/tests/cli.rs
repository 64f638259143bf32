//! `commscan-agent` as a user runs it: bad input gets one clear line naming what is wrong,
//! a non-zero exit, and nothing written.

use std::process::Command;

fn agent(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_commscan-agent"))
        .args(args)
        .output()
        .expect("run agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture_with(packages: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(dir.path().join("var/lib/dpkg/status"), packages).unwrap();
    dir
}

#[test]
fn scan_of_a_fixture_root_prints_the_json_contract() {
    let root = fixture_with(
        "Package: zoom\nStatus: install ok installed\nVersion: 6.1.0\n\nPackage: zoomer\nStatus: install ok installed\nVersion: 1\n",
    );
    let (ok, stdout, stderr) = agent(&[
        "scan",
        "--root",
        root.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["platform"], "linux");
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "zoomer must not match zoom: {stdout}");
    assert_eq!(findings[0]["product"], "zoom");
    assert_eq!(findings[0]["installed"], true);
    assert_eq!(findings[0]["running"], false);
    assert_eq!(findings[0]["version"], "6.1.0");
    assert_eq!(findings[0]["evidence"][0]["source"], "dpkg");
    assert_eq!(v["stats"]["sources"]["dpkg"], "ok");
    assert_eq!(
        v["stats"]["sources"]["process"], "skipped",
        "a --root scan never reads this machine's processes"
    );
}

#[test]
fn scan_table_names_the_product_and_its_evidence() {
    let root =
        fixture_with("Package: skypeforlinux\nStatus: install ok installed\nVersion: 8.99\n");
    let (ok, stdout, _) = agent(&["scan", "--root", root.path().to_str().unwrap()]);
    assert!(ok);
    assert!(stdout.contains("skype"), "{stdout}");
    assert!(
        stdout.contains("dpkg: package skypeforlinux 8.99"),
        "{stdout}"
    );
}

#[test]
fn scan_of_a_missing_root_names_it() {
    let (ok, _, stderr) = agent(&["scan", "--root", "/definitely/not/here"]);
    assert!(!ok);
    assert!(
        stderr.contains("--root /definitely/not/here: not a directory"),
        "{stderr}"
    );
}

#[test]
fn enroll_with_unreadable_ca_names_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let (ok, _, stderr) = agent(&[
        "enroll",
        "--collector",
        "https://127.0.0.1:9",
        "--token",
        "t",
        "--ca",
        "/nonexistent/ca.crt",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--ca /nonexistent/ca.crt: cannot read"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert!(!data.exists());
}

#[test]
fn enroll_against_a_collector_that_does_not_answer_names_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let (_, pem) = commscan_core::pki::Authority::generate("t").unwrap();
    std::fs::write(&ca, pem.cert).unwrap();
    // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
    let (ok, _, stderr) = agent(&[
        "enroll",
        "--collector",
        "https://127.0.0.1:9",
        "--token",
        "t",
        "--ca",
        ca.to_str().unwrap(),
        "--data-dir",
        dir.path().join("agent").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot reach collector at https://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!dir.path().join("agent").exists());
}

#[test]
fn run_before_enrolment_says_to_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = agent(&["run", "--once", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("identity.json is missing (run `commscan-agent enroll` first)"),
        "{stderr}"
    );
}

#[test]
fn http_collector_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let (_, pem) = commscan_core::pki::Authority::generate("t").unwrap();
    std::fs::write(&ca, pem.cert).unwrap();
    let (ok, _, stderr) = agent(&[
        "enroll",
        "--collector",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--ca",
        ca.to_str().unwrap(),
        "--data-dir",
        dir.path().join("a").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("must start with https://"), "{stderr}");
}
