//! The demo as a newcomer runs it: `cargo run --release -- dev --once`.

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_commscan-demo"))
        .args(args)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let (ok, stdout, stderr) = demo(&["dev", "--once", "--root", root.path().to_str().unwrap()]);
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
    // Nothing points at the collector that has exited with --once.
    assert!(
        stdout.contains("the collector has stopped (--once)"),
        "{stdout}"
    );
    assert!(!stdout.contains("COMMSCAN_COLLECTOR=https://"), "{stdout}");
}

#[test]
fn dev_once_on_this_machine_exits_zero_with_a_verdict() {
    let (ok, stdout, stderr) = demo(&["dev", "--once"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("status    "), "{stdout}");
    assert!(stdout.contains("sources: "), "{stdout}");
}
