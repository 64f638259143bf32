//! `commscan-agent` as a service: configuration validation with exit code 64, SIGTERM that
//! flushes and exits 0, and `status` read from the data directory alone.

use std::path::Path;
use std::process::Command;
// The SIGTERM test is Unix-only; so is what only it uses.
#[cfg(unix)]
use commscan_agent::spool::{LogSpool, Spool};
#[cfg(unix)]
use commscan_core::identity::DeviceIdentity;
#[cfg(unix)]
use commscan_core::pki::{Authority, DEVICE_VALIDITY, device_key_and_csr};
#[cfg(unix)]
use std::process::Stdio;
#[cfg(unix)]
use std::time::{Duration, Instant};

fn agent(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_commscan-agent"))
        .args(args)
        .output()
        .expect("run agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_names_every_bad_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "full_scan_interval = \"often\"\nspool_cap = \"1KiB\"\nkeepalive_timeout = \"0s\"\n",
    )
    .unwrap();
    let (code, _, stderr) = agent(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{stderr}");
    for key in ["full_scan_interval", "spool_cap", "keepalive_timeout"] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
    std::fs::write(&cfg, "spool_kap = \"4MiB\"\n").unwrap();
    let (code, _, stderr) = agent(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("spool_kap"), "{stderr}");
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.toml");
    let (code, stdout, stderr) = agent(&["validate", "--config", example.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("configuration ok"), "{stdout}");
}

#[test]
fn run_without_enrolment_exits_64_so_systemd_does_not_restart_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = agent(&["run", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("commscan-agent enroll"), "{stderr}");
}

/// A data directory enrolled with a CA made here, pointing at a collector that is not there.
#[cfg(unix)]
fn fake_enrolment(data: &Path) {
    let (ca, ca_pem) = Authority::generate("test.local").unwrap();
    let (key, csr) = device_key_and_csr().unwrap();
    let id = DeviceIdentity {
        trust_domain: "test.local".into(),
        organisation: "acme".into(),
        device_id: "6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b".into(),
    };
    let (cert, _) = ca.sign_device_csr(&csr, &id, DEVICE_VALIDITY).unwrap();
    commscan_agent::state::DataDir::new(data)
        .store_enrolment(
            &commscan_agent::state::Identity {
                device_id: id.device_id.clone(),
                organisation: "acme".into(),
                collector: "https://127.0.0.1:9".into(),
            },
            &key,
            &cert,
            &ca_pem.cert,
        )
        .unwrap();
}

#[cfg(unix)]
#[test]
fn sigterm_flushes_the_spool_and_exits_zero_and_status_tells_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    fake_enrolment(&data);
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: zoom\nStatus: install ok installed\nVersion: 6.1.0\n\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_commscan-agent"))
        .args([
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until the first scan is in the status file.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scanned = std::fs::read_to_string(data.join("status.json"))
            .map(|s| s.contains("\"last_scan\": {"))
            .unwrap_or(false);
        if scanned {
            break;
        }
        assert!(Instant::now() < deadline, "no scan within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("exited {:?} after SIGTERM", sent.elapsed());
    assert_eq!(status.code(), Some(0));

    // What was observed is in the spool, waiting for the collector.
    let spool = LogSpool::open(&data.join("spool.log"), 1 << 22).unwrap();
    let view = spool.view();
    assert!(view.current.findings.contains_key("zoom"));
    assert!(view.sendable(), "the unsent report survives the restart");
    drop(spool);

    let (code, stdout, stderr) = agent(&["status", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        "device:           6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b (organisation acme)",
        "certificate:      expires",
        "agent:            stopped",
        "last scan:        full",
        "last ack:         none yet",
        "last error:       cannot reach collector at https://127.0.0.1:9",
        "snapshot next",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}
