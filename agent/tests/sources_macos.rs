//! A Mac's Applications folders as an auditor mounts them, built by code: Info.plist files with
//! real bundle ids (issue 16), a near miss under an unknown bundle id, and apps whose names
//! merely contain a product's name. Scanned with the real `Scanner` and the embedded catalog.

use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_core::scan::ScanReport;
use std::path::Path;

/// Writes `<root>/<rel>/Contents/Info.plist` (XML) with a bundle id, a display name and a
/// version, and an empty executable folder.
fn app(root: &Path, rel: &str, bundle_id: &str, name: &str) {
    let contents = root.join(rel).join("Contents");
    std::fs::create_dir_all(contents.join("MacOS")).unwrap();
    let plist = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>CFBundleIdentifier</key><string>{bundle_id}</string>
  <key>CFBundleName</key><string>{name}</string>
  <key>CFBundleExecutable</key><string>{name}</string>
  <key>CFBundleShortVersionString</key><string>2.2</string>
</dict>
</plist>
"#
    );
    std::fs::write(contents.join("Info.plist"), plist).unwrap();
}

/// A Mac with WhatsApp's old Electron client in /Applications, a WhatsApp wrapper under an
/// unknown bundle id in olga's ~/Applications, and look-alikes.
fn mac() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("System/Library/CoreServices")).unwrap();
    // (path, bundle id, CFBundleName)
    let apps = [
        ("Applications/WhatsApp.app", "desktop.WhatsApp", "WhatsApp"),
        (
            "Users/olga/Applications/WhatsApp.app",
            "com.example.whatsapp-wrapper",
            "WhatsApp",
        ),
        (
            "Applications/Zoom Player.app",
            "com.example.zoomplayer",
            "Zoom Player",
        ),
        (
            "Applications/Signal Analyzer.app",
            "com.example.signalanalyzer",
            "Signal Analyzer",
        ),
        (
            "Applications/TeamSpeak.app",
            "com.example.ts-fork",
            "TeamSpeak",
        ),
        (
            "Applications/Calculator.app",
            "com.apple.calculator",
            "Calculator",
        ),
    ];
    for (path, id, name) in apps {
        app(r, path, id, name);
    }
    t
}

fn scan(root: &Path) -> ScanReport {
    Scanner::new(&Catalog::embedded()).scan(&ScanTarget::tree(root, Platform::Macos))
}

#[test]
fn whatsapps_electron_client_is_found_by_its_bundle_id() {
    let t = mac();
    let report = scan(t.path());
    let whatsapp = report
        .findings
        .iter()
        .find(|f| f.product == "whatsapp")
        .unwrap_or_else(|| panic!("{report:#?}"));
    assert!(
        whatsapp.evidence.iter().any(|e| e.signature == "bundle_id"
            && e.detail == "app WhatsApp.app desktop.WhatsApp 2.2 (system)"),
        "{whatsapp:#?}"
    );
}

#[test]
fn an_unknown_bundle_named_like_a_product_is_a_near_miss_and_decoys_stay_decoys() {
    let t = mac();
    let report = scan(t.path());
    // (candidate name, the product it looks like); every other name yields no candidate.
    let expected = [
        ("WhatsApp", Some("whatsapp")),
        // TeamSpeak under an unknown id looks like TeamSpeak, never like Microsoft Teams.
        ("TeamSpeak", Some("teamspeak")),
        ("Zoom Player", None),
        ("Signal Analyzer", None),
        ("Calculator", None),
    ];
    for (name, looks_like) in expected {
        let found: Vec<_> = report
            .unclassified
            .iter()
            .filter(|u| u.name == name)
            .collect();
        match looks_like {
            Some(p) => {
                assert_eq!(found.len(), 1, "{name}: {:#?}", report.unclassified);
                assert_eq!(found[0].looks_like.as_deref(), Some(p));
                assert_eq!(found[0].source, "macos_app");
            }
            None => assert!(found.is_empty(), "{name}: {:#?}", report.unclassified),
        }
    }
    // The near miss keeps its evidence line, so an officer sees which bundle id it was.
    let near = report
        .unclassified
        .iter()
        .find(|u| u.name == "WhatsApp")
        .unwrap();
    assert!(
        near.detail.contains("com.example.whatsapp-wrapper"),
        "{near:?}"
    );
    // The near miss is not a finding, and decoys never become one.
    for f in &report.findings {
        assert!(
            f.evidence
                .iter()
                .all(|e| !e.detail.contains("whatsapp-wrapper")
                    && !e.detail.contains("Zoom Player")
                    && !e.detail.contains("Signal Analyzer")),
            "{f:#?}"
        );
    }
}
