//! The Windows agent, end to end under Wine: the `commscan-agent.exe` that `.ci/windows.sh build`
//! cross-builds (debug, `x86_64-pc-windows-gnu`) runs under `wine64` in a throw-away
//! WINEPREFIX, against the live registry that `wine reg add` filled, and against a real
//! collector on loopback.
//!
//! Prerequisites: `wine64` (on PATH or `/usr/lib/wine/wine64`, Debian's place), MinGW's
//! `x86_64-w64-mingw32-gcc` (for the test shim below), and the built agent, whose path is
//! given by `COMMSCAN_WINDOWS_AGENT`. Where one is missing each test prints `SKIPPED: ...` and
//! passes, unless `COMMSCAN_REQUIRE_WINE=1` (set by `.ci/run` after it built the agent), which
//! turns the skip into a failure.
//!
//! These tests live in commscan-tests, not in agent/tests, because they need a real collector
//! ([`TestCollector`]) and its query API, which the agent crate does not depend on.
//!
//! What Wine cannot show: a real Windows kernel (ACLs, services under the real SCM, file
//! locking of loaded hives), real installers, Store (AppX) packages.

use commscan_tests::wine::{APP, Prefix, prerequisites, text};
use commscan_tests::{TestCollector, wait_until};
use std::time::Duration;

const UNINSTALL: &str = r"Software\Microsoft\Windows\CurrentVersion\Uninstall";

/// The uninstall entries of the tests: Telegram Desktop machine-wide (64-bit view), Pidgin in
/// the 32-bit view (WOW6432Node), Zoom per-user (HKCU).
fn add_entries(p: &Prefix) {
    p.reg_add(
        &format!(r"HKLM\{UNINSTALL}\{{53F49750-6209-4FBF-9CA8-7A333C87D1ED}}_is1"),
        &[
            ("DisplayName", "REG_SZ", "Telegram Desktop"),
            ("DisplayVersion", "REG_SZ", "5.2.3"),
            ("Publisher", "REG_SZ", "Telegram FZ-LLC"),
        ],
    );
    p.reg_add(
        r"HKLM\Software\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\Pidgin",
        &[
            ("DisplayName", "REG_SZ", "Pidgin"),
            ("DisplayVersion", "REG_SZ", "2.14.12"),
        ],
    );
    p.reg_add(
        &format!(r"HKCU\{UNINSTALL}\ZoomUMX"),
        &[
            ("DisplayName", "REG_SZ", "Zoom Workplace"),
            ("DisplayVersion", "REG_SZ", "6.1.0"),
            ("Publisher", "REG_SZ", "Zoom Video Communications, Inc."),
        ],
    );
}

/// The `windows_registry` evidence details of a finding of `product` in a scan's JSON.
fn registry_evidence(report: &serde_json::Value, product: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["product"] == product)
        .flat_map(|f| f["evidence"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["source"] == "windows_registry")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn live_registry_finds_machine_wow64_and_per_user_entries() {
    let Some(wine) = prerequisites("live_registry_finds_machine_wow64_and_per_user_entries") else {
        return;
    };
    let p = Prefix::new(&wine);
    add_entries(&p);
    let out = p.agent(&["scan", "--no-processes", "--output", "json"]);
    assert!(out.status.success(), "scan: {}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("json: {e}\n{}", text(&out)));
    assert_eq!(report["platform"], "windows", "{report:#}");
    for (product, detail) in [
        (
            "telegram",
            r#"uninstall entry "Telegram Desktop" 5.2.3 (machine)"#,
        ),
        (
            "pidgin",
            r#"uninstall entry "Pidgin" 2.14.12 (machine 32-bit)"#,
        ),
        (
            "zoom",
            r#"uninstall entry "Zoom Workplace" 6.1.0 (per-user)"#,
        ),
    ] {
        let evidence = registry_evidence(&report, product);
        assert!(
            evidence.iter().any(|d| d == detail),
            "{product}: no evidence {detail:?} in {evidence:?}\n{report:#}"
        );
    }
    eprintln!(
        "windows_registry outcome under Wine: {}",
        report["stats"]["sources"]["windows_registry"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_agent_enrols_and_reports_to_a_linux_collector() {
    let Some(wine) = prerequisites("windows_agent_enrols_and_reports_to_a_linux_collector") else {
        return;
    };
    let c = TestCollector::start().await;
    let (p, enrolled, reported) = {
        let url = c.url.clone();
        let token = c.enrolment_token.clone();
        let ca = c.ca_pem.clone();
        tokio::task::spawn_blocking(move || {
            let p = Prefix::new(&wine);
            add_entries(&p);
            std::fs::write(p.app_dir().join("ca.pem"), ca).expect("ca");
            let ca = format!(r"{APP}\ca.pem");
            // No --config or --data-dir: the Windows defaults, under %ProgramData%.
            let validated = p.agent(&["validate"]);
            assert!(
                String::from_utf8_lossy(&validated.stdout)
                    .contains(r"data_dir C:\ProgramData\commscan\agent"),
                "validate: {}",
                text(&validated)
            );
            let enrolled = p.agent(&[
                "enroll",
                "--collector",
                &url,
                "--token",
                &token,
                "--ca",
                &ca,
            ]);
            let reported = if enrolled.status.success() {
                Some(p.agent(&["run", "--once", "--no-processes"]))
            } else {
                None
            };
            assert!(
                p.dir
                    .path()
                    .join("drive_c/ProgramData/commscan/agent")
                    .is_dir(),
                "no data directory under %ProgramData%"
            );
            (p, enrolled, reported)
        })
        .await
        .expect("wine thread")
    };
    assert!(enrolled.status.success(), "enroll: {}", text(&enrolled));
    let reported = reported.expect("ran");
    assert!(reported.status.success(), "run --once: {}", text(&reported));
    let stdout = String::from_utf8_lossy(&enrolled.stdout);
    let device_id = stdout
        .split_whitespace()
        .skip_while(|w| *w != "device")
        .nth(1)
        .unwrap_or_else(|| panic!("no device id in {stdout:?}"))
        .to_owned();
    let d = wait_until(
        Duration::from_secs(20),
        "the Windows device's report",
        || {
            let c = &c;
            let id = device_id.clone();
            async move {
                let d = c
                    .query()
                    .await
                    .get_device(commscan_proto::v1::GetDeviceRequest { device_id: id })
                    .await
                    .ok()?
                    .into_inner();
                (!d.findings.is_empty()).then_some(d)
            }
        },
    )
    .await;
    let row = d.device.expect("device row");
    assert_eq!(
        row.platform,
        commscan_proto::v1::Platform::Windows as i32,
        "{row:?}"
    );
    let mut products: Vec<&str> = d.findings.iter().map(|f| f.product.as_str()).collect();
    products.sort_unstable();
    for want in ["pidgin", "telegram", "zoom"] {
        assert!(products.contains(&want), "{want} not in {products:?}");
    }
    let verdict = d.verdict.expect("verdict");
    eprintln!(
        "Windows device {device_id} at the collector: {products:?}, status {:?}",
        verdict.status
    );
    drop(p);
}
