//! A Windows disk as an auditor mounts it, built by code: machine and per-user Uninstall
//! entries in real hive files, Store packages, per-user AppData installs, look-alikes and a
//! corrupt hive. Scanned with the real `Scanner` and the embedded catalog.

#[path = "support/hive_writer.rs"]
mod hive_writer;

use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_core::scan::{Finding, ScanReport, SourceOutcome};
use hive_writer::HiveKey;
use std::path::Path;

const UNINSTALL: &str = r"Microsoft\Windows\CurrentVersion\Uninstall";
const WHATSAPP: &str = "5319275A.WhatsAppDesktop_cv1g1gvanyjgm";
const NEW_TEAMS: &str = "MSTeams_8wekyb3d8bbwe";

/// An Uninstall subkey with a DisplayName and, when given, a version and a publisher.
fn uninstall(
    hive: &mut HiveKey,
    base: &str,
    key: &str,
    name: &str,
    version: &str,
    publisher: &str,
) {
    let k = hive.key(&format!(r"{base}\{key}"));
    k.sz("DisplayName", name);
    if !version.is_empty() {
        k.sz("DisplayVersion", version);
    }
    if !publisher.is_empty() {
        k.sz("Publisher", publisher);
    }
}

fn file(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn dir(root: &Path, rel: &str) {
    std::fs::create_dir_all(root.join(rel)).unwrap();
}

/// The machine's SOFTWARE hive: Zoom's MSI (64-bit), Skype (32-bit), and look-alikes.
fn software_hive() -> Vec<u8> {
    let mut sw = HiveKey::new("ROOT");
    let zoom_inc = "Zoom Video Communications, Inc.";
    uninstall(
        &mut sw,
        UNINSTALL,
        "{A0398F1C-6A1F-4C5E-9A1E-01F2F7D2C1A1}",
        "Zoom(64bit)",
        "5.17.11",
        zoom_inc,
    );
    uninstall(
        &mut sw,
        UNINSTALL,
        "{6E9D4F2B-0D5C-4B9B-8E61-2C1D6D7E0B11}",
        "Zoom Outlook Plugin",
        "5.17.1",
        zoom_inc,
    );
    uninstall(
        &mut sw,
        UNINSTALL,
        "TeamSpeak 3 Client",
        "TeamSpeak 3 Client",
        "3.6.2",
        "TeamSpeak Systems GmbH",
    );
    uninstall(
        &mut sw,
        UNINSTALL,
        "{0F3C7A8E-52B4-4C1A-9B3A-5E2D8F7A9C10}",
        "Signal Hound Spike",
        "3.9.4",
        "Signal Hound",
    );
    let wow = format!(r"WOW6432Node\{UNINSTALL}");
    uninstall(
        &mut sw,
        &wow,
        "Skype_is1",
        "Skype version 8.99",
        "8.99.0.202",
        "Skype Technologies S.A.",
    );
    sw.to_hive()
}

/// olga: Zoom and Slack installed per user (she is not logged on: only her hive file says so).
fn olga_hive() -> Vec<u8> {
    let mut nt = HiveKey::new("ROOT");
    let base = format!(r"Software\{UNINSTALL}");
    uninstall(
        &mut nt,
        &base,
        "ZoomUMX",
        "Zoom",
        "6.1.0",
        "Zoom Video Communications, Inc.",
    );
    uninstall(
        &mut nt,
        &base,
        "slack",
        "Slack",
        "4.41.105",
        "Slack Technologies Inc.",
    );
    nt.to_hive()
}

/// An office PC: the hives above, Store apps for petr and on the machine, Discord in petr's
/// AppData.
fn office_pc(software: &[u8]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    dir(r, "Windows/System32/drivers");
    file(r, "Windows/System32/config/SOFTWARE", software);
    file(r, "Users/olga/NTUSER.DAT", &olga_hive());
    file(r, "Users/petr/NTUSER.DAT", &HiveKey::new("ROOT").to_hive());
    dir(
        r,
        &format!("Users/petr/AppData/Local/Packages/{WHATSAPP}/LocalState"),
    );
    dir(
        r,
        &format!("Users/petr/AppData/Local/Packages/{NEW_TEAMS}/LocalCache"),
    );
    dir(
        r,
        "Users/petr/AppData/Local/Packages/Microsoft.WindowsCalculator_8wekyb3d8bbwe",
    );
    dir(
        r,
        "Program Files/WindowsApps/MSTeams_25153.1010.3727.5483_x64__8wekyb3d8bbwe",
    );
    dir(r, "Program Files/WindowsApps/Deleted");
    file(
        r,
        "Users/petr/AppData/Local/Discord/app-1.0.9194/Discord.exe",
        b"MZ",
    );
    dir(r, "Users/Public/Desktop");
    t
}

fn scan(root: &Path) -> ScanReport {
    Scanner::new(&Catalog::embedded()).scan(&ScanTarget::tree(root, Platform::Windows))
}

fn finding<'a>(report: &'a ScanReport, product: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.product == product)
        .unwrap_or_else(|| panic!("{product} not found: {:#?}", report.findings))
}

fn has_evidence(f: &Finding, source: &str, detail: &str) -> bool {
    f.evidence
        .iter()
        .any(|e| e.source == source && e.detail == detail)
}

#[test]
fn machine_and_wow6432node_uninstall_entries_are_found() {
    let pc = office_pc(&software_hive());
    let report = scan(pc.path());
    let zoom = finding(&report, "zoom");
    assert!(zoom.installed && !zoom.running);
    assert!(
        has_evidence(
            zoom,
            "windows_registry",
            "uninstall entry \"Zoom(64bit)\" 5.17.11 (machine)"
        ),
        "{zoom:#?}"
    );
    let skype = finding(&report, "skype");
    assert!(has_evidence(
        skype,
        "windows_registry",
        "uninstall entry \"Skype version 8.99\" 8.99.0.202 (machine 32-bit)"
    ));
    assert_eq!(skype.version.as_deref(), Some("8.99.0.202"));
}

#[test]
fn per_user_installs_of_a_logged_off_user_are_found_in_her_ntuser_dat() {
    let pc = office_pc(&software_hive());
    let report = scan(pc.path());
    let zoom = finding(&report, "zoom");
    let per_user = zoom
        .evidence
        .iter()
        .find(|e| e.detail == "uninstall entry \"Zoom\" 6.1.0 (per-user)")
        .expect("ZoomUMX from olga's hive");
    assert_eq!(per_user.signature, "win_uninstall_key");
    let slack = finding(&report, "slack");
    assert!(has_evidence(
        slack,
        "windows_registry",
        "uninstall entry \"Slack\" 4.41.105 (per-user)"
    ));
}

#[test]
fn look_alikes_are_not_the_products_they_resemble() {
    let pc = office_pc(&software_hive());
    let report = scan(pc.path());
    // TeamSpeak is TeamSpeak (the catalog knows it), never Microsoft Teams.
    let teamspeak = finding(&report, "teamspeak");
    assert!(has_evidence(
        teamspeak,
        "windows_registry",
        "uninstall entry \"TeamSpeak 3 Client\" 3.6.2 (machine)"
    ));
    let teams = finding(&report, "microsoft-teams");
    assert!(
        teams
            .evidence
            .iter()
            .all(|e| !e.detail.contains("TeamSpeak")),
        "{teams:#?}"
    );
    // Signal Hound's spectrum-analyser software is not the Signal messenger.
    assert!(
        report.findings.iter().all(|f| f.product != "signal"),
        "{:#?}",
        report.findings
    );
    // Zoom's Outlook plugin is not the Zoom client: the catalog's Zoom names are exact
    // ("Zoom(64bit)") or "Zoom Workplace*", and the shared publisher only corroborates.
    assert!(
        report
            .findings
            .iter()
            .flat_map(|f| &f.evidence)
            .all(|e| !e.detail.contains("Outlook Plugin")),
        "{:#?}",
        report.findings
    );
}

#[test]
fn the_zoom_outlook_plugin_alone_is_not_zoom() {
    let mut sw = HiveKey::new("ROOT");
    uninstall(
        &mut sw,
        UNINSTALL,
        "{6E9D4F2B-0D5C-4B9B-8E61-2C1D6D7E0B11}",
        "Zoom Outlook Plugin",
        "5.17.1",
        "Zoom Video Communications, Inc.",
    );
    let t = tempfile::tempdir().unwrap();
    file(t.path(), "Windows/System32/config/SOFTWARE", &sw.to_hive());
    let report = scan(t.path());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.stats.sources["windows_registry"], SourceOutcome::Ok);
}

#[test]
fn store_only_apps_are_found_per_user_and_provisioned() {
    let pc = office_pc(&software_hive());
    let report = scan(pc.path());
    let whatsapp = finding(&report, "whatsapp");
    assert!(whatsapp.installed);
    assert!(has_evidence(
        whatsapp,
        "appx",
        &format!("appx package {WHATSAPP} (per-user)")
    ));
    let teams = finding(&report, "microsoft-teams");
    assert!(has_evidence(
        teams,
        "appx",
        &format!("appx package {NEW_TEAMS} 25153.1010.3727.5483 (provisioned)")
    ));
    assert!(has_evidence(
        teams,
        "appx",
        &format!("appx package {NEW_TEAMS} 25153.1010.3727.5483 (per-user)")
    ));
    assert_eq!(teams.version.as_deref(), Some("25153.1010.3727.5483"));
}

#[test]
fn a_per_user_appdata_install_is_found_by_its_install_path() {
    let pc = office_pc(&software_hive());
    let report = scan(pc.path());
    let discord = finding(&report, "discord");
    assert!(discord.installed);
    assert!(has_evidence(
        discord,
        "install_path",
        r"install path %LOCALAPPDATA%\Discord (per-user)"
    ));
}

#[test]
fn a_malformed_machine_hive_fails_its_source_and_the_scan_carries_on() {
    let good = software_hive();
    for (what, bad) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"\0\0\0\0garbage, not a hive".repeat(300)),
    ] {
        let pc = office_pc(&bad);
        let report = scan(pc.path());
        let SourceOutcome::Failed(why) = &report.stats.sources["windows_registry"] else {
            panic!("{what}: {:?}", report.stats.sources)
        };
        assert!(why.contains("SOFTWARE: "), "{what}: {why}");
        assert_eq!(report.stats.sources["appx"], SourceOutcome::Ok, "{what}");
        assert!(has_evidence(
            finding(&report, "whatsapp"),
            "appx",
            &format!("appx package {WHATSAPP} (per-user)")
        ));
        // olga's hive is intact: her per-user Zoom is still reported.
        assert!(has_evidence(
            finding(&report, "zoom"),
            "windows_registry",
            "uninstall entry \"Zoom\" 6.1.0 (per-user)"
        ));
        assert!(
            report.findings.iter().all(|f| f.product != "skype"),
            "{what}"
        );
    }
}

#[test]
fn every_windows_source_reports_and_no_evidence_names_a_user() {
    let pc = office_pc(&software_hive());
    let report = scan(pc.path());
    let sources: Vec<(&str, String)> = report
        .stats
        .sources
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    assert_eq!(
        sources,
        vec![
            ("appx", "ok".to_owned()),
            ("install_path", "ok".to_owned()),
            ("process", "skipped".to_owned()),
            ("pwa", "absent".to_owned()),
            ("windows_registry", "ok".to_owned()),
        ]
    );
    let text = serde_json::to_string(&report.findings).unwrap();
    assert!(!text.contains("olga") && !text.contains("petr"), "{text}");
}

#[test]
fn the_cli_detects_a_windows_tree_and_prints_its_findings() {
    let pc = office_pc(&software_hive());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_commscan-agent"))
        .args([
            "scan",
            "--root",
            pc.path().to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["platform"], "windows");
    let products: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["product"].as_str().unwrap())
        .collect();
    assert_eq!(
        products,
        vec![
            "discord",
            "microsoft-teams",
            "skype",
            "slack",
            "teamspeak",
            "whatsapp",
            "zoom"
        ]
    );
}

/// `commscan-hive-from-reg` (test-only) turns `.reg` exports into hives the offline source
/// reads: the Wine tests build their offline tree this way from the live prefix's registry.
#[test]
fn hives_made_from_reg_exports_are_scanned_offline() {
    let dir = tempfile::tempdir().unwrap();
    let utf16 = |text: &str| -> Vec<u8> {
        [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect()
    };
    let machine = dir.path().join("machine.reg");
    std::fs::write(
        &machine,
        utf16(concat!(
            "Windows Registry Editor Version 5.00\r\n\r\n",
            "[HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\Pidgin]\r\n",
            "\"DisplayName\"=\"Pidgin\"\r\n",
            "\"DisplayVersion\"=\"2.14.12\"\r\n",
            "\"EstimatedSize\"=dword:00001000\r\n",
            "\"DisplayIcon\"=hex(2):43,00,3a,00,00,00\r\n\r\n",
        )),
    )
    .unwrap();
    let user = dir.path().join("user.reg");
    std::fs::write(
        &user,
        utf16(concat!(
            "Windows Registry Editor Version 5.00\r\n\r\n",
            "[HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\ZoomUMX]\r\n",
            "\"DisplayName\"=\"Zoom Workplace\"\r\n",
            "\"DisplayVersion\"=\"6.1.0\"\r\n\r\n",
        )),
    )
    .unwrap();
    let root = dir.path().join("root");
    let config = root.join("Windows/System32/config");
    let profile = root.join("Users/ivan");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&profile).unwrap();
    let convert = |hive_root: &str, out: &Path, input: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_commscan-hive-from-reg"))
            .arg(hive_root)
            .arg(out)
            .arg(input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    convert(r"HKLM\SOFTWARE", &config.join("SOFTWARE"), &machine);
    convert("HKEY_CURRENT_USER", &profile.join("NTUSER.DAT"), &user);
    let report =
        Scanner::new(&Catalog::embedded()).scan(&ScanTarget::tree(&root, Platform::Windows));
    let details: Vec<(&str, &str)> = report
        .findings
        .iter()
        .flat_map(|f| {
            f.evidence
                .iter()
                .map(move |e| (f.product.as_str(), e.detail.as_str()))
        })
        .collect();
    assert_eq!(
        details,
        vec![
            ("pidgin", r#"uninstall entry "Pidgin" 2.14.12 (machine)"#),
            (
                "zoom",
                r#"uninstall entry "Zoom Workplace" 6.1.0 (per-user)"#
            ),
        ]
    );
}

/// Issue 16: a machine-wide Viber MSI, VK Messenger's per-user Inno install, a near miss
/// (an unconfirmed MAX MSI) and decoys named like products.
fn issue16_hive() -> Vec<u8> {
    let mut sw = HiveKey::new("ROOT");
    let wow = format!(r"WOW6432Node\{UNINSTALL}");
    // (base, key, DisplayName, version, publisher)
    let entries = [
        (
            UNINSTALL,
            "{BE9B79EE-D5FA-4427-A8EB-8A2490B1896A}",
            "Viber",
            "24.9.2.0",
            "2010-2024 Viber Media S.a.r.l",
        ),
        (wow.as_str(), "VK_is1", "VK", "6.3.0", "VK"),
        (
            UNINSTALL,
            "{5B1D7E0C-8F7A-4C55-9E1B-3D2A61F0C0DE}",
            "MAX",
            "26.7.0",
            "",
        ),
        (
            UNINSTALL,
            "{7D0C2E1F-4B3A-4E7D-8C9B-1A2B3C4D5E6F}",
            "Zoom Player MAX",
            "17.0",
            "Inmatrix",
        ),
        (
            UNINSTALL,
            "{0F3C7A8E-52B4-4C1A-9B3A-5E2D8F7A9C10}",
            "Signal Analyzer",
            "2.1",
            "Example Instruments",
        ),
    ];
    for (base, key, name, version, publisher) in entries {
        uninstall(&mut sw, base, key, name, version, publisher);
    }
    sw.to_hive()
}

#[test]
fn viber_machine_wide_and_vk_messenger_are_found_and_a_max_msi_is_a_near_miss() {
    let pc = office_pc(&issue16_hive());
    let report = scan(pc.path());
    // (product, evidence detail, signature that matched)
    let found = [
        (
            "viber",
            "uninstall entry \"Viber\" 24.9.2.0 (machine)",
            "win_uninstall_key",
        ),
        (
            "vk-messenger",
            "uninstall entry \"VK\" 6.3.0 (machine 32-bit)",
            "win_uninstall_key",
        ),
    ];
    for (product, detail, signature) in found {
        let f = finding(&report, product);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.detail == detail && e.signature == signature),
            "{f:#?}"
        );
    }
    // (candidate name, the product it looks like)
    let near_misses = [("MAX", Some("max"))];
    for (name, looks_like) in near_misses {
        let u = report
            .unclassified
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("{name}: {:#?}", report.unclassified));
        assert_eq!(u.looks_like.as_deref(), looks_like);
        assert_eq!(u.source, "windows_registry");
    }
    // Names that merely contain a product's name are neither findings nor near misses.
    for decoy in ["Zoom Player MAX", "Signal Analyzer"] {
        assert!(
            report.unclassified.iter().all(|u| u.name != decoy),
            "{decoy}: {:#?}",
            report.unclassified
        );
        assert!(
            report
                .findings
                .iter()
                .flat_map(|f| &f.evidence)
                .all(|e| !e.detail.contains(decoy)),
            "{decoy}: {:#?}",
            report.findings
        );
    }
}
