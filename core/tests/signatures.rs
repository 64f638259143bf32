//! Table-driven tests of the real catalog: for each platform, identifiers a device really shows
//! and the product they must (or must not) become. Look-alikes are the point.

use commscan_core::catalog::{Catalog, SignatureKind as K};
use commscan_core::inventory::InventoryItem;
use commscan_core::matcher::Matcher;

fn matcher() -> Matcher {
    Matcher::new(&Catalog::embedded())
}

/// The product ids one identifier matches.
fn products(m: &Matcher, kind: K, value: &str) -> Vec<String> {
    let c = Catalog::embedded();
    let item = InventoryItem::installed("test", kind, value, value);
    m.match_item(&item)
        .into_iter()
        .map(|(i, _)| c.products()[i].id.clone())
        .collect()
}

fn check(table: &[(K, &str, Option<&str>)]) {
    let m = matcher();
    let mut failures = Vec::new();
    for (kind, value, expected) in table {
        let got = products(&m, *kind, value);
        let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        if got != want {
            failures.push(format!("{kind} {value:?}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn linux_identifiers() {
    check(&[
        (K::Dpkg, "zoom", Some("zoom")),
        (K::Dpkg, "skypeforlinux", Some("skype")),
        (K::Dpkg, "telegram-desktop", Some("telegram")),
        (K::Dpkg, "slack-desktop", Some("slack")),
        (K::Dpkg, "signal-desktop", Some("signal")),
        (K::Dpkg, "teams", Some("microsoft-teams")),
        (K::Dpkg, "teams-for-linux", Some("microsoft-teams")),
        (K::Dpkg, "vkteams", Some("vk-teams")),
        (K::Dpkg, "ktalk", Some("kontur-tolk")),
        (K::Dpkg, "yandex-telemost", Some("yandex-telemost")),
        (K::Flatpak, "us.zoom.Zoom", Some("zoom")),
        (K::Flatpak, "org.telegram.desktop", Some("telegram")),
        (K::Flatpak, "com.slack.Slack", Some("slack")),
        (K::Snap, "skype", Some("skype")),
        (K::Desktop, "us.zoom.Zoom", Some("zoom")),
        (K::LinuxExe, "zoom", Some("zoom")),
        (K::LinuxPath, "/opt/zoom", Some("zoom")),
        (
            K::Appimage,
            "ktalk-2.5.0-x86_64.AppImage",
            Some("kontur-tolk"),
        ),
        (K::Appimage, "Telegram-4.16.AppImage", Some("telegram")),
        // Look-alikes.
        (K::Dpkg, "zoomer", None),
        (K::Dpkg, "libsignal-protocol-c2.3v5", None),
        (K::Dpkg, "libsignal-protocol-java", None),
        (K::Dpkg, "teamspeak3-client", None),
        (K::Dpkg, "slack", None), // Debian's unrelated "slack" package
        (K::Snap, "teamspeak3", None),
        (K::Appimage, "zoomer-1.0.AppImage", None),
        (K::Appimage, "Telegram.AppImage.part", None),
        (K::LinuxExe, "teamspeak3", None),
        // Issue 16: ICQ New's vendor tarball on Linux.
        (K::LinuxExe, "icq", Some("icq")),
        (K::LinuxExe, "icqd", None),
    ]);
}

#[test]
fn macos_identifiers() {
    check(&[
        (K::BundleId, "us.zoom.xos", Some("zoom")),
        (K::BundleId, "com.microsoft.teams2", Some("microsoft-teams")),
        (K::BundleId, "com.tdesktop.Telegram", Some("telegram")),
        (K::BundleId, "ru.keepcoder.Telegram", Some("telegram-macos")),
        (K::BundleId, "net.whatsapp.WhatsApp", Some("whatsapp")),
        // Issue 16: WhatsApp's older Electron client.
        (K::BundleId, "desktop.WhatsApp", Some("whatsapp")),
        (K::BundleId, "desktop.whatsapp.helper", None),
        (K::BundleId, "ru.oneme.desktop", Some("max")),
        (K::BundleId, "com.cycling74.Max", None),
        (K::MacApp, "Max.app", None), // Cycling '74's Max: MAX is matched by bundle id only
        (K::BundleId, "kontur.talk", Some("kontur-tolk")),
        (
            K::BundleId,
            "ru.yandex.desktop.telemost",
            Some("yandex-telemost"),
        ),
        (K::MacApp, "zoom.us.app", Some("zoom")),
        (K::MacApp, "Толк.app", Some("kontur-tolk")),
        (K::MacApp, "МТС Линк.app", Some("mts-link")),
        // Another case; NFD forms are covered by the matcher's unit tests.
        (K::MacApp, "мтс линк.APP", Some("mts-link")),
        // Look-alikes.
        (K::BundleId, "com.teamspeak.TeamSpeak3", Some("teamspeak")),
        (K::BundleId, "com.example.zoomer", None),
        (K::MacApp, "Telegram.app", None), // ambiguous: bundle ids decide
        (K::MacApp, "Zoomer.app", None),
    ]);
}

#[test]
fn windows_identifiers() {
    check(&[
        (K::WinDisplayName, "Zoom(64bit)", Some("zoom")),
        (K::WinDisplayName, "Zoom Workplace (64-bit)", Some("zoom")),
        (K::WinDisplayName, "Skype version 8.129", Some("skype")),
        (
            K::WinDisplayName,
            "Teams Machine-Wide Installer",
            Some("microsoft-teams"),
        ),
        (K::WinDisplayName, "Telegram Desktop", Some("telegram")),
        (K::WinUninstallKey, "ZoomUMX", Some("zoom")),
        (
            K::AppxFamily,
            "MSTeams_8wekyb3d8bbwe",
            Some("microsoft-teams"),
        ),
        (
            K::AppxFamily,
            "5319275A.WhatsAppDesktop_cv1g1gvanyjgm",
            Some("whatsapp"),
        ),
        (
            K::AppxFamily,
            "Microsoft.SkypeApp_kzf8qxf38zg5c",
            Some("skype"),
        ),
        (K::WinExe, "Zoom.exe", Some("zoom")),
        (K::WinExe, "zoom.EXE", Some("zoom")),
        (K::WinExe, "ms-teams.exe", Some("microsoft-teams")),
        // Issue 16: Viber machine-wide (MSI) and per-user, VK Messenger's Inno installer.
        (K::WinDisplayName, "Viber", Some("viber")),
        (K::WinDisplayName, "viber", Some("viber")),
        (K::WinUninstallKey, "Viber", Some("viber")),
        (
            K::WinUninstallKey,
            "{BE9B79EE-D5FA-4427-A8EB-8A2490B1896A}",
            Some("viber"),
        ),
        (K::WinUninstallKey, "VK_is1", Some("vk-messenger")),
        (K::WinExe, "vk-calls.exe", Some("vk-calls")),
        (K::WinDisplayName, "Viber Desktop Cleaner", None),
        (K::WinPublisher, "2010-2024 Viber Media S.a.r.l", None),
        (K::WinUninstallKey, "VKTeams_is1", None),
        // Look-alikes.
        (K::WinDisplayName, "TeamSpeak 3 Client", Some("teamspeak")),
        (K::WinDisplayName, "TeamViewer 15", None),
        (K::WinDisplayName, "Signal Hound Spike", None),
        (K::WinDisplayName, "Zoom Outlook Plugin", None),
        (
            K::WinDisplayName,
            "Microsoft Teams Meeting Add-in for Microsoft Office",
            None,
        ),
        (K::WinPublisher, "Microsoft Corporation", None),
        (K::WinExe, "zoomit.exe", None),
    ]);
}

#[test]
fn web_apps() {
    check(&[
        (
            K::PwaAppId,
            "kjgfgldnnfoeklkmfkjfagphfepbbdan",
            Some("google-meet"),
        ),
        (K::WebOrigin, "https://web.whatsapp.com", Some("whatsapp")),
        (K::WebOrigin, "https://web.tamtam.chat", Some("tamtam")),
        (K::WebOrigin, "https://web.max.ru", Some("max")),
        (K::WebOrigin, "https://pruffme.com", Some("pruffme")),
        (K::PwaAppId, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", None),
        (K::WebOrigin, "https://whatsapp.example.com", None),
    ]);
}

#[test]
fn catalog_meets_its_contract() {
    let c = Catalog::embedded();
    assert!(c.products().len() >= 60, "{} products", c.products().len());
    for id in [
        "zoom",
        "skype",
        "whatsapp",
        "microsoft-teams",
        "telegram",
        "slack",
        "discord",
        "viber",
        "signal",
        "webex",
        "google-meet",
        "wechat",
        "line",
        "element",
        "wire",
        "threema",
        "mattermost",
        "rocket-chat",
        "goto-meeting",
        "jitsi-meet",
        "yandex-messenger",
        "yandex-telemost",
        "trueconf",
        "vk-teams",
        "vk-messenger",
        "vk-calls",
        "max",
        "icq",
        "tamtam",
        "salutejazz",
        "kontur-tolk",
        "express",
        "dion",
        "mts-link",
        "vinteo",
        "iva-connect",
        "videomost",
        "pachca",
    ] {
        assert!(c.contains(id), "required product {id} missing");
    }
    for p in c.products() {
        for s in &p.signatures {
            assert!(
                !s.source.trim().is_empty(),
                "{}: a {} signature has no source",
                p.id,
                s.kind
            );
        }
    }
}
