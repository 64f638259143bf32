//! Every Linux source at once over a fixture tree built by code, matched against the embedded
//! catalog: what a scan of a real disk would report, decoys and damage included.

// Linux only: the rpm database fixture is written with rusqlite, a Linux-only dependency.
#![cfg(target_os = "linux")]

use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_agent::sources::rpm::package_header;
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_core::scan::{ScanReport, SourceOutcome};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

fn write(root: &Path, rel: &str, text: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn mkdir(root: &Path, rel: &str) {
    std::fs::create_dir_all(root.join(rel)).unwrap();
}

fn desktop(name: &str, exec: &str, categories: &str) -> String {
    format!(
        "[Desktop Entry]\nType=Application\nName={name}\nExec={exec}\nCategories={categories}\n"
    )
}

fn rpmdb(path: &Path, blobs: &[Vec<u8>]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
    )
    .unwrap();
    for b in blobs {
        conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [b])
            .unwrap();
    }
}

/// A workstation with software from every channel. `dana` exists only in `/etc/passwd`, with
/// her home outside `/home`: she is logged off and her per-user installs still count.
fn workstation(root: &Path) {
    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
         alice:x:1000:1000:Alice:/home/alice:/bin/bash\n\
         dana:x:1001:1001:Dana:/srv/staff/dana:/bin/bash\n",
    );
    write(root, "etc/os-release", "ID=fedora\n");
    write(
        root,
        "var/lib/dpkg/status",
        "Package: skypeforlinux\nStatus: install ok installed\nVersion: 8.110.76.107\n\n",
    );
    rpmdb(
        &root.join("usr/lib/sysimage/rpm/rpmdb.sqlite"),
        &[
            package_header("slack", "4.41.105", "0.1.el8"),
            package_header("libsignal-protocol", "2.3.3", "4.fc40"),
            package_header("bash", "5.2.26", "3.fc40"),
        ],
    );
    symlink("../../usr/lib/sysimage/rpm", root.join("var/lib/rpm")).unwrap();
    // Snaps: telegram-desktop mounted with a version, teamspeak3 only as a file.
    write(
        root,
        "var/lib/snapd/snaps/telegram-desktop_6000.snap",
        "hsqs",
    );
    write(root, "var/lib/snapd/snaps/teamspeak3_12.snap", "hsqs");
    write(
        root,
        "snap/telegram-desktop/6000/meta/snap.yaml",
        "name: telegram-desktop\nversion: 5.2.3\n",
    );
    symlink("6000", root.join("snap/telegram-desktop/current")).unwrap();
    // Flatpak: Discord system-wide, Viber for dana only.
    mkdir(
        root,
        "var/lib/flatpak/app/com.discordapp.Discord/x86_64/stable/1a2b/files",
    );
    symlink(
        "x86_64/stable",
        root.join("var/lib/flatpak/app/com.discordapp.Discord/current"),
    )
    .unwrap();
    symlink(
        "1a2b",
        root.join("var/lib/flatpak/app/com.discordapp.Discord/x86_64/stable/active"),
    )
    .unwrap();
    mkdir(
        root,
        "srv/staff/dana/.local/share/flatpak/app/com.viber.Viber",
    );
    // Desktop entries: a catalogued chat app, an unknown one, a decoy and a launcher.
    write(
        root,
        "usr/share/applications/org.telegram.desktop.desktop",
        desktop(
            "Telegram",
            "telegram-desktop -- %u",
            "Chat;Network;InstantMessaging;",
        ),
    );
    write(
        root,
        "usr/share/applications/teamspeak3.desktop",
        desktop(
            "TeamSpeak 3",
            "/opt/teamspeak3/ts3client_runscript.sh",
            "Network;",
        ),
    );
    write(
        root,
        "var/lib/flatpak/exports/share/applications/com.discordapp.Discord.desktop",
        desktop(
            "Discord",
            "/usr/bin/flatpak run --branch=stable --arch=x86_64 --command=discord com.discordapp.Discord",
            "Network;InstantMessaging;",
        ),
    );
    write(
        root,
        "home/alice/.local/share/applications/kde/obscurechat.desktop",
        desktop(
            "Obscure Chat",
            "env QT_SCALE=2 /home/alice/apps/obscurechat %U",
            "Network;InstantMessaging;",
        ),
    );
    write(
        root,
        "usr/share/applications/gimp.desktop",
        desktop("GIMP", "gimp-2.10 %U", "Graphics;"),
    );
    // AppImages: a decoy for alice, Kontur.Tolk for dana.
    write(root, "home/alice/Downloads/zoomer.AppImage", "ELF");
    write(root, "srv/staff/dana/Applications/ktalk.AppImage", "ELF");
    // A vendor tarball install.
    mkdir(root, "opt/Webex/bin");
    // Symlink loops in alice's home must cost nothing.
    symlink("/home/alice", root.join("home/alice/loop")).unwrap();
    symlink(".", root.join("home/alice/Downloads/self")).unwrap();
    symlink("b", root.join("home/alice/a")).unwrap();
    symlink("a", root.join("home/alice/b")).unwrap();
    symlink(
        "/home/alice/.local/share/applications",
        root.join("home/alice/.local/share/applications/again"),
    )
    .unwrap();
}

fn scan(root: &Path) -> ScanReport {
    let started = Instant::now();
    let report = Scanner::new(&Catalog::embedded()).scan(&ScanTarget::tree(root, Platform::Linux));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "scan took {:?}",
        started.elapsed()
    );
    report
}

fn products(report: &ScanReport) -> Vec<&str> {
    report.findings.iter().map(|f| f.product.as_str()).collect()
}

fn evidence_sources(report: &ScanReport, product: &str) -> Vec<String> {
    let f = report
        .findings
        .iter()
        .find(|f| f.product == product)
        .unwrap_or_else(|| panic!("no finding for {product}"));
    f.evidence
        .iter()
        .map(|e| format!("{}: {}", e.source, e.detail))
        .collect()
}

#[test]
fn every_linux_channel_is_found_including_a_logged_off_users_installs() {
    let dir = tempfile::tempdir().unwrap();
    workstation(dir.path());
    let report = scan(dir.path());

    assert_eq!(
        products(&report),
        vec![
            "discord",
            "kontur-tolk",
            "skype",
            "slack",
            "telegram",
            "viber",
            "webex"
        ],
        "{report:#?}"
    );
    assert_eq!(
        report.stats.sources.get("rpm"),
        Some(&SourceOutcome::OkFrom("sqlite".into())),
        "{:?}",
        report.stats.sources
    );
    for source in [
        "dpkg",
        "snap",
        "flatpak",
        "desktop",
        "appimage",
        "install_path",
    ] {
        assert_eq!(
            report.stats.sources.get(source),
            Some(&SourceOutcome::Ok),
            "{source}: {:?}",
            report.stats.sources
        );
    }
    assert_eq!(
        report.stats.sources.get("process"),
        Some(&SourceOutcome::Skipped)
    );

    let slack = report
        .findings
        .iter()
        .find(|f| f.product == "slack")
        .unwrap();
    assert_eq!(slack.version.as_deref(), Some("4.41.105-0.1.el8"));
    assert_eq!(
        evidence_sources(&report, "slack"),
        vec!["rpm: package slack 4.41.105-0.1.el8"]
    );
    let telegram = evidence_sources(&report, "telegram");
    assert!(
        telegram.contains(&"snap: snap telegram-desktop 5.2.3 (revision 6000)".to_owned()),
        "{telegram:?}"
    );
    assert!(
        telegram.contains(
            &"desktop: desktop entry org.telegram.desktop.desktop in /usr/share/applications"
                .to_owned()
        ),
        "{telegram:?}"
    );
    assert_eq!(
        evidence_sources(&report, "discord"),
        vec![
            "flatpak: flatpak app com.discordapp.Discord (system)",
            "desktop: desktop entry com.discordapp.Discord.desktop in /var/lib/flatpak/exports/share/applications"
        ]
    );
    assert_eq!(
        evidence_sources(&report, "viber"),
        vec!["flatpak: flatpak app com.viber.Viber (per-user)"]
    );
    assert_eq!(
        evidence_sources(&report, "kontur-tolk"),
        vec!["appimage: AppImage ktalk.AppImage (per-user)"]
    );
    assert_eq!(
        evidence_sources(&report, "webex"),
        vec!["install_path: directory /opt/Webex"]
    );
    assert_eq!(
        evidence_sources(&report, "skype"),
        vec!["dpkg: package skypeforlinux 8.110.76.107"]
    );
}

#[test]
fn decoys_with_similar_names_are_not_findings() {
    let dir = tempfile::tempdir().unwrap();
    workstation(dir.path());
    let report = scan(dir.path());
    let found = products(&report);
    // teamspeak3 (snap and desktop entry) is not Microsoft Teams, libsignal-protocol is not
    // Signal, zoomer.AppImage is not Zoom.
    for decoy in ["microsoft-teams", "signal", "zoom"] {
        assert!(!found.contains(&decoy), "{decoy} in {found:?}");
    }
}

#[test]
fn unknown_chat_app_is_unclassified_and_catalogued_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    workstation(dir.path());
    let report = scan(dir.path());
    let names: Vec<(&str, &str, &str)> = report
        .unclassified
        .iter()
        .map(|u| (u.name.as_str(), u.source.as_str(), u.detail.as_str()))
        .collect();
    // Telegram and Discord carry InstantMessaging too, but the catalog knows them.
    assert_eq!(
        names,
        vec![(
            "Obscure Chat",
            "desktop",
            "Categories=Network;InstantMessaging;"
        )]
    );
}

#[test]
fn corrupt_rpm_database_fails_rpm_alone() {
    let dir = tempfile::tempdir().unwrap();
    workstation(dir.path());
    let db = dir.path().join("usr/lib/sysimage/rpm/rpmdb.sqlite");
    let garbage: Vec<u8> = (0..16_384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, garbage).unwrap();
    let report = scan(dir.path());
    match report.stats.sources.get("rpm") {
        Some(SourceOutcome::Failed(why)) => assert!(why.contains("rpmdb.sqlite"), "{why}"),
        other => panic!("rpm outcome {other:?}"),
    }
    let found = products(&report);
    assert!(!found.contains(&"slack"), "{found:?}");
    for still in ["discord", "skype", "telegram", "viber", "webex"] {
        assert!(found.contains(&still), "{still} missing from {found:?}");
    }
}
