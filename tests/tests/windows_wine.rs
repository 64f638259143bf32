//! The Windows agent, end to end under Wine: the `commscan-agent.exe` that `.ci/windows.sh build`
//! cross-builds (debug, `x86_64-pc-windows-gnu`) runs under `wine64` in a throw-away
//! WINEPREFIX, against the live registry that `wine reg add` filled, and against a real
//! collector on loopback.
//!
//! What is tested (one prefix per test; `wineboot` is most of a test's time):
//! - `windows_registry`, live: machine (64-bit view), machine 32-bit (`WOW6432Node`) and
//!   per-user (HKCU) Uninstall entries added with `wine reg add` are found, with their
//!   evidence. In the same prefix, the offline source agrees: the three Uninstall keys are
//!   exported with `wine reg export`, turned into a `SOFTWARE` hive and an `NTUSER.DAT`
//!   (`commscan_agent::test_support::reg_export`, the code behind the test-only
//!   `commscan-hive-from-reg`), and the library's `Scanner` scans that tree offline (as a
//!   `--root` scan would) with the same `windows_registry` findings: product, version,
//!   evidence.
//! - `process`: a stand-in `Telegram.exe` (tests/wine/sleeper.c, built with MinGW, in
//!   `C:\commscan\bin`, where no install-path signature looks) running in the prefix is
//!   reported running, from the `process` source only; it is killed when the test ends,
//!   whatever happened.
//! - `install_path`, live: directories made on the Linux side under the Wine user's profile
//!   (`AppData\Roaming`, `AppData\Local`, found through `%USERPROFILE%`) and under
//!   `Program Files` and `Program Files (x86)` are reported per-user and machine.
//! - Enrolment, the `%ProgramData%` defaults, and a report to a Linux collector.
//!
//! Wine takes a path that starts with `/` for a Unix path (`/Program Files` is `Z:\Program
//! Files`, on the Linux file system): the agent's live scans are rooted at `%SystemDrive%\`
//! (`scanner::host_root`), not at `/`, or the `install_path` checks here would find nothing.
//!
//! Prerequisites: `wine64` (on PATH or `/usr/lib/wine/wine64`, Debian's place), MinGW's
//! `x86_64-w64-mingw32-gcc` (for the test shim and the stand-in process), and the built agent,
//! whose path is given by `COMMSCAN_WINDOWS_AGENT`. Where one is missing each test prints
//! `SKIPPED: ...` and passes, unless `COMMSCAN_REQUIRE_WINE=1` (set by `.ci/run` after it
//! built the agent), which turns the skip into a failure.
//!
//! These tests live in commscan-tests, not in agent/tests, because they need a real collector
//! ([`TestCollector`]) and its query API, which the agent crate does not depend on.
//!
//! What Wine cannot show: a real Windows kernel (ACLs, services under the real SCM, file
//! locking of loaded hives: the live source's skipping of a logged-on user's locked
//! `NTUSER.DAT` never happens under Wine, whose registry is not hive files), real installers,
//! Store (AppX) packages, several user profiles (a Wine prefix has one user, and `HKEY_USERS`
//! holds only its hive), and hives written by Windows itself: Wine's `reg save` writes Wine's
//! text format, so the offline comparison goes through `.reg` exports and the test's own hive
//! writer, not through hive files Windows made. Process names come from Wine's process table
//! (`NtQuerySystemInformation`), not from a real kernel's.

use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_agent::test_support::reg_export::{self, RegExport};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_core::scan::ScanReport;
use commscan_tests::wine::{APP, Prefix, enrolled_device_id, prerequisites, text};
use commscan_tests::{TestCollector, wait_until};
use std::time::{Duration, Instant};

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

/// The `windows_registry` part of a scan: (product, version, evidence detail, signature),
/// sorted.
fn registry_findings(report: &ScanReport) -> Vec<(String, Option<String>, String, String)> {
    let mut out: Vec<_> = report
        .findings
        .iter()
        .flat_map(|f| {
            f.evidence
                .iter()
                .filter(|e| e.source == "windows_registry")
                .map(|e| {
                    (
                        f.product.clone(),
                        f.version.clone(),
                        e.detail.clone(),
                        e.signature.clone(),
                    )
                })
        })
        .collect();
    out.sort();
    out
}

/// `wine reg export KEY C:\commscan\FILE /y`, parsed.
fn export(p: &Prefix, key: &str, file: &str) -> RegExport {
    let out = p.wine(&["reg", "export", key, &format!(r"{APP}\{file}"), "/y"]);
    assert!(out.status.success(), "reg export {key}: {}", text(&out));
    let bytes = std::fs::read(p.app_dir().join(file)).expect("the export");
    reg_export::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A Windows tree for an offline scan, made from the prefix's registry: HKLM's two Uninstall
/// keys in `Windows/System32/config/SOFTWARE` (the hive whose root is `HKLM\SOFTWARE`), HKCU's
/// in `Users/<the Wine user>/NTUSER.DAT` (root `HKCU`), where the offline source looks
/// (`util/users.rs`: every folder under `Users` but the shared ones).
fn offline_tree(p: &Prefix) -> tempfile::TempDir {
    let machine = [
        export(p, &format!(r"HKLM\{UNINSTALL}"), "machine.reg"),
        export(
            p,
            r"HKLM\Software\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
            "machine32.reg",
        ),
    ];
    let user = [export(p, &format!(r"HKCU\{UNINSTALL}"), "user.reg")];
    let (_, name) = p.user_profile();
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("Windows/System32/config");
    let profile = root.path().join("Users").join(name);
    std::fs::create_dir_all(&config).expect("config");
    std::fs::create_dir_all(&profile).expect("profile");
    let hive = |exports: &[RegExport], hive_root: &str| {
        reg_export::to_hive_key(exports, hive_root)
            .unwrap_or_else(|e| panic!("{hive_root}: {e}"))
            .to_hive()
    };
    std::fs::write(
        config.join("SOFTWARE"),
        hive(&machine, r"HKEY_LOCAL_MACHINE\SOFTWARE"),
    )
    .expect("SOFTWARE");
    std::fs::write(profile.join("NTUSER.DAT"), hive(&user, "HKEY_CURRENT_USER"))
        .expect("NTUSER.DAT");
    root
}

/// The live registry source under Wine, and then, in the same prefix, the offline source on
/// hives made from `wine reg export` of the same keys: both give the same findings.
#[test]
fn live_registry_entries_found_and_offline_hives_of_them_agree() {
    let Some(wine) = prerequisites("live_registry_entries_found_and_offline_hives_of_them_agree")
    else {
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

    let live: ScanReport = serde_json::from_value(report).expect("a scan report");
    let tree = offline_tree(&p);
    let offline =
        Scanner::new(&Catalog::embedded()).scan(&ScanTarget::tree(tree.path(), Platform::Windows));
    assert_eq!(
        offline
            .stats
            .sources
            .get("windows_registry")
            .map(ToString::to_string),
        Some("ok".to_owned()),
        "{offline:#?}"
    );
    let (live, offline) = (registry_findings(&live), registry_findings(&offline));
    assert_eq!(live.len(), 3, "{live:#?}");
    assert_eq!(offline, live, "offline hives vs the live registry");
}

/// `process` and `install_path` against the live system: a stand-in `Telegram.exe` running in
/// the prefix, and install directories of Zoom, Discord and Pidgin per user and machine-wide.
#[test]
fn running_process_and_install_paths_found_live() {
    let Some(wine) = prerequisites("running_process_and_install_paths_found_live") else {
        return;
    };
    let p = Prefix::new(&wine);
    // Where no `win_path` of the catalog looks, so only `process` can report it.
    let exe = format!(r"{APP}\bin\Telegram.exe");
    p.compile("sleeper.c", &p.unix_path(&exe));
    let (profile, _) = p.user_profile();
    let drive_c = p.dir.path().join("drive_c");
    for dir in [
        profile.join("AppData/Roaming/Zoom/bin"),
        profile.join("AppData/Local/Discord/app-1.0.9194"),
        drive_c.join("Program Files/Zoom/bin"),
        drive_c.join("Program Files (x86)/Pidgin"),
    ] {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    // Killed on drop, before the prefix is, even when an assertion below fails.
    let _telegram = p.spawn(&[&exe, "60"]);
    // Wine takes a moment to start it: scan until it shows, for at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (report, scans) = (1..)
        .find_map(|scan| {
            let out = p.agent(&["scan", "--output", "json"]);
            assert!(out.status.success(), "scan: {}", text(&out));
            let report: ScanReport = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("json: {e}\n{}", text(&out)));
            let running = report
                .findings
                .iter()
                .any(|f| f.product == "telegram" && f.running);
            if running {
                return Some((report, scan));
            }
            assert!(
                Instant::now() < deadline,
                "Telegram.exe not reported running after {scan} scans: {report:#?}"
            );
            std::thread::sleep(Duration::from_millis(300));
            None
        })
        .expect("an endless range");
    eprintln!("Telegram.exe reported running at scan {scans}");
    assert_eq!(report.platform, Platform::Windows);
    let evidence = |product: &str| -> Vec<(String, String)> {
        report
            .findings
            .iter()
            .filter(|f| f.product == product)
            .flat_map(|f| &f.evidence)
            .map(|e| (e.source.clone(), e.detail.clone()))
            .collect()
    };
    let telegram = report
        .findings
        .iter()
        .find(|f| f.product == "telegram")
        .expect("telegram");
    assert!(telegram.running && !telegram.installed, "{telegram:#?}");
    assert_eq!(
        evidence("telegram"),
        [("process".to_owned(), "process Telegram.exe".to_owned())]
    );
    for (product, details) in [
        (
            "zoom",
            &[
                r"install path %APPDATA%\Zoom\bin (per-user)",
                r"install path %ProgramFiles%\Zoom\bin (machine)",
            ][..],
        ),
        (
            "discord",
            &[r"install path %LOCALAPPDATA%\Discord (per-user)"][..],
        ),
        (
            "pidgin",
            &[r"install path %ProgramFiles(x86)%\Pidgin (machine)"][..],
        ),
    ] {
        let mut got: Vec<String> = evidence(product)
            .into_iter()
            .filter(|(source, _)| source == "install_path")
            .map(|(_, detail)| detail)
            .collect();
        got.sort();
        assert_eq!(got, details, "{product}: {report:#?}");
    }
    for source in ["process", "install_path"] {
        assert_eq!(
            report.stats.sources.get(source).map(ToString::to_string),
            Some("ok".to_owned()),
            "{source}: {report:#?}"
        );
    }
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
    let device_id = enrolled_device_id(&enrolled);
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
                    .get_device(commscan_proto::v1::GetDeviceRequest {
                        device_id: id,
                        ..Default::default()
                    })
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
