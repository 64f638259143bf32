//! Installed web apps (source `pwa`) in Chromium-family browsers, on every platform.
//!
//! Where: each user's browser user-data folder ([`browsers`] lists them per platform: Google
//! Chrome, Chromium, Microsoft Edge, Yandex Browser; on Linux also the snap Chromium and the
//! Flathub Chrome, Chromium and Edge). Every sub-folder of it is a candidate profile
//! (`Default`, `Profile 2`, ...); users come from [`ScanContext::homes`], so users who are not
//! logged in count too.
//!
//! What is read:
//! - `<profile>/Web Applications/Manifest Resources/<app_id>/`: Chromium's web-app system
//!   keeps one folder of manifest icons per installed app there, named by the 32-letter app
//!   id (letters `a`–`p`). Each such folder yields an item with `(pwa_app_id, app_id)`.
//!   Other names are ignored. The app id is Chromium's hash of the app's manifest id (by
//!   default its start URL): SHA-256 of SHA-256 of the URL, first 128 bits, each hex digit
//!   written as a letter `a`–`p`. It is the same on every machine, so the catalog lists ids
//!   such as Google Meet's `kjgfgldnnfoeklkmfkjfagphfepbbdan` (the tests recompute it).
//! - `<profile>/Preferences` and `<profile>/Secure Preferences` (JSON, read with a 16 MiB cap,
//!   only for profiles that have web apps) for a URL to take the app's origin from. Two places
//!   hold one reliably: `web_apps.extension_ids` (Chromium's map from the install URL of a
//!   preinstalled or policy-installed app to its app id: `{"<url>": {"extension_id": "<id>"}}`,
//!   or `{"<url>": "<id>"}` in the M70 format), and `extensions.settings.<id>.manifest.app.
//!   launch.web_url` (the launch URL of a pre-M89 "bookmark app", which had the same id). When
//!   one is found for an app id, the item also carries `(web_origin, "https://host")`: the
//!   origin only, never path or query.
//!
//! What is not read: current Chromium keeps the web-app registry itself (start URL, name,
//! scope) as protobuf records in a LevelDB database (`<profile>/Sync Data/LevelDB`). Reading
//! it would need a LevelDB and Snappy reader and Chromium's private record format, so a
//! user-installed app's origin is usually unknown and only its id is reported; an id not in
//! the catalog is therefore not an unclassified candidate either. Other Chromium browsers
//! (Brave, Vivaldi, Opera), Firefox and Safari web apps are not read.
//!
//! Detail: `web app <app_id> in <browser> (per-user)`, with the origin after the id when
//! known. A Preferences file that is too large or not JSON, or a folder that exists but
//! cannot be listed, makes the source `failed` naming the file from `~` (never with the
//! user's name); the app ids are still reported. No user-data folder at all is `absent`.

use super::util::fs::read_capped;
use super::util::outcome::{problems_outcome, shown_path};
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::platform::Platform;
use commscan_core::scan::SourceOutcome;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// The installed-web-app source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pwa;

const SOURCE: &str = "pwa";

/// Largest Preferences file read, in bytes.
pub(crate) const MAX_PREFERENCES: u64 = 16 * 1024 * 1024;

/// Most entries listed in one folder (profiles of a browser, apps of a profile).
const MAX_DIR_ENTRIES: usize = 10_000;

/// A Chromium-family browser's user-data folder, relative to a home directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Browser {
    /// Display name used in evidence.
    pub(crate) name: &'static str,
    /// The user-data folder, relative to the home directory, `/`-separated.
    pub(crate) user_data: &'static str,
}

const fn b(name: &'static str, user_data: &'static str) -> Browser {
    Browser { name, user_data }
}

const LINUX: &[Browser] = &[
    b("Google Chrome", ".config/google-chrome"),
    b("Chromium", ".config/chromium"),
    b("Microsoft Edge", ".config/microsoft-edge"),
    b("Yandex Browser", ".config/yandex-browser"),
    b("Chromium", "snap/chromium/common/chromium"),
    b(
        "Google Chrome",
        ".var/app/com.google.Chrome/config/google-chrome",
    ),
    b("Chromium", ".var/app/org.chromium.Chromium/config/chromium"),
    b(
        "Microsoft Edge",
        ".var/app/com.microsoft.Edge/config/microsoft-edge",
    ),
];

const MACOS: &[Browser] = &[
    b("Google Chrome", "Library/Application Support/Google/Chrome"),
    b("Chromium", "Library/Application Support/Chromium"),
    b(
        "Microsoft Edge",
        "Library/Application Support/Microsoft Edge",
    ),
    b(
        "Yandex Browser",
        "Library/Application Support/Yandex/YandexBrowser",
    ),
];

const WINDOWS: &[Browser] = &[
    b("Google Chrome", "AppData/Local/Google/Chrome/User Data"),
    b("Chromium", "AppData/Local/Chromium/User Data"),
    b("Microsoft Edge", "AppData/Local/Microsoft/Edge/User Data"),
    b(
        "Yandex Browser",
        "AppData/Local/Yandex/YandexBrowser/User Data",
    ),
];

/// The browsers read on a platform.
pub(crate) fn browsers(platform: Platform) -> &'static [Browser] {
    match platform {
        Platform::Linux => LINUX,
        Platform::Macos => MACOS,
        Platform::Windows => WINDOWS,
    }
}

/// Whether `s` is a Chromium app id: 32 letters `a`–`p`.
pub(crate) fn is_app_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|c| (b'a'..=b'p').contains(&c))
}

/// The origin (`scheme://host[:port]`, lowercase, default port dropped) of an `http`/`https`
/// URL; `None` for other schemes and anything that does not look like a plain host.
pub(crate) fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = host_port.to_ascii_lowercase();
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return None;
        }
        (format!("[{inside}]"), after.strip_prefix(':'))
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port.as_str(), None),
        };
        let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_';
        if host.is_empty() || !host.bytes().all(ok) {
            return None;
        }
        (host.trim_end_matches('.').to_owned(), port)
    };
    if host.is_empty() {
        return None;
    }
    match port {
        None | Some("") => Some(format!("{scheme}://{host}")),
        Some(p) if p == default_port => Some(format!("{scheme}://{host}")),
        Some(p) if p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) => {
            Some(format!("{scheme}://{host}:{p}"))
        }
        Some(_) => None,
    }
}

/// The parts of a Preferences file we look at; everything else is skipped while parsing.
#[derive(Deserialize)]
struct Prefs {
    #[serde(default)]
    web_apps: serde_json::Value,
    #[serde(default)]
    extensions: serde_json::Value,
}

/// App id → origins, from one Preferences JSON text.
pub(crate) fn origins_from_preferences(
    text: &[u8],
) -> Result<BTreeMap<String, BTreeSet<String>>, serde_json::Error> {
    let prefs: Prefs = serde_json::from_slice(text)?;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |id: &str, url: &str| {
        if is_app_id(id)
            && let Some(o) = origin(url)
        {
            out.entry(id.to_owned()).or_default().insert(o);
        }
    };
    if let Some(map) = prefs
        .web_apps
        .get("extension_ids")
        .and_then(|v| v.as_object())
    {
        for (url, entry) in map {
            let id = entry
                .as_str()
                .or_else(|| entry.get("extension_id").and_then(|v| v.as_str()));
            if let Some(id) = id {
                add(id, url);
            }
        }
    }
    if let Some(settings) = prefs.extensions.get("settings").and_then(|v| v.as_object()) {
        for (id, setting) in settings {
            let url = setting
                .pointer("/manifest/app/launch/web_url")
                .and_then(|v| v.as_str());
            if let Some(url) = url {
                add(id, url);
            }
        }
    }
    Ok(out)
}

/// Sorted sub-folders of `dir` (not symlinks), at most [`MAX_DIR_ENTRIES`] looked at.
fn subdirs(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)?
        .take(MAX_DIR_ENTRIES)
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    Ok(out)
}

/// Origins per app id from a profile's Preferences files; problems are appended, the
/// profile named as `shown`.
fn profile_origins(
    profile: &Path,
    shown: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in ["Preferences", "Secure Preferences"] {
        let path = profile.join(file);
        let parsed = match read_capped(&path, MAX_PREFERENCES) {
            Ok(bytes) => origins_from_preferences(&bytes).map_err(|e| format!("not JSON: {e}")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(map) => {
                for (id, origins) in map {
                    all.entry(id).or_default().extend(origins);
                }
            }
            Err(why) => problems.push(format!("{shown}/{file}: {why}")),
        }
    }
    all
}

impl Source for Pwa {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let mut present = false;
        let mut problems = Vec::new();
        for home in ctx.homes() {
            // Problems name files from `~`, never with the user's name.
            let home_dir = ctx.path(&home.path);
            for browser in browsers(ctx.platform) {
                let user_data = home_dir.join(browser.user_data);
                let profiles = match subdirs(&user_data) {
                    Ok(p) => p,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        problems.push(format!("~/{}: {e}", browser.user_data));
                        continue;
                    }
                };
                present = true;
                for (_, profile) in profiles {
                    let shown = shown_path("~", &home_dir, &profile);
                    let resources = profile.join("Web Applications/Manifest Resources");
                    let apps = match subdirs(&resources) {
                        Ok(a) => a,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            let what = "Web Applications/Manifest Resources";
                            problems.push(format!("{shown}/{what}: {e}"));
                            continue;
                        }
                    };
                    let ids: Vec<String> = apps
                        .into_iter()
                        .map(|(name, _)| name)
                        .filter(|n| is_app_id(n))
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let origins = profile_origins(&profile, &shown, &mut problems);
                    for id in ids {
                        let found = origins.get(&id);
                        let shown = found
                            .map(|o| o.iter().map(String::as_str).collect::<Vec<_>>().join(" "))
                            .map(|o| format!(" {o}"))
                            .unwrap_or_default();
                        let detail = format!("web app {id}{shown} in {} (per-user)", browser.name);
                        let mut item =
                            InventoryItem::installed(SOURCE, SignatureKind::PwaAppId, id, detail);
                        for o in found.into_iter().flatten() {
                            item = item.with_id(SignatureKind::WebOrigin, o.clone());
                        }
                        out.push(item);
                    }
                }
            }
        }
        if !present {
            return SourceOutcome::Absent;
        }
        problems_outcome(&problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::{ScanTarget, Scanner};
    use commscan_core::catalog::Catalog;
    use std::fs;

    const MEET: &str = "kjgfgldnnfoeklkmfkjfagphfepbbdan";
    /// A well-formed id the catalog does not know.
    const UNKNOWN: &str = "abcdefghijklmnopabcdefghijklmnop";

    fn install(root: &Path, profile: &str, id: &str) {
        fs::create_dir_all(
            root.join(profile)
                .join("Web Applications/Manifest Resources")
                .join(id)
                .join("Icons"),
        )
        .unwrap();
    }

    fn scan(root: &Path, platform: Platform) -> commscan_core::scan::ScanReport {
        Scanner::new(&Catalog::embedded())
            .scan_with(&ScanTarget::tree(root, platform), &[Box::new(Pwa)])
    }

    fn collect(root: &Path, platform: Platform) -> (Vec<InventoryItem>, SourceOutcome) {
        let mut out = Vec::new();
        let outcome = Pwa.collect(&ScanContext::new(root, platform, false), &mut out);
        (out, outcome)
    }

    #[test]
    fn meet_in_a_windows_chrome_profile() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        install(
            r,
            "Users/ivan/AppData/Local/Google/Chrome/User Data/Default",
            MEET,
        );
        // Chrome's own folders beside the apps are not app ids.
        install(
            r,
            "Users/ivan/AppData/Local/Google/Chrome/User Data/Default",
            "Temp",
        );
        let (items, outcome) = collect(r, Platform::Windows);
        assert_eq!(outcome, SourceOutcome::Ok);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].ids, vec![(SignatureKind::PwaAppId, MEET.into())]);
        assert_eq!(
            items[0].detail,
            format!("web app {MEET} in Google Chrome (per-user)")
        );
        let report = scan(r, Platform::Windows);
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].product, "google-meet");
        assert!(report.findings[0].installed);
        assert_eq!(report.findings[0].evidence[0].signature, "pwa_app_id");
    }

    #[test]
    fn meet_in_a_linux_chromium_profile_2_with_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("home/olga")).unwrap();
        let profile = "home/olga/.config/chromium/Profile 2";
        install(r, profile, MEET);
        install(r, profile, UNKNOWN);
        let prefs = serde_json::json!({
            "web_apps": { "extension_ids": {
                "https://meet.google.com/landing?lfhs=2": { "extension_id": MEET, "install_source": 1 },
                "https://docs.google.com/document/?usp=installed_webapp": "mpnpojknpmmopombnjdcgaaiekajbnjb"
            }},
            "extensions": { "settings": {
                UNKNOWN: { "manifest": { "app": { "launch": { "web_url": "HTTPS://User:pw@Chat.Example.ORG:443/path?q=1#x" } } } }
            }},
            "browser": { "window_placement": { "top": 0 } }
        });
        fs::write(r.join(profile).join("Preferences"), prefs.to_string()).unwrap();
        let (items, outcome) = collect(r, Platform::Linux);
        assert_eq!(outcome, SourceOutcome::Ok);
        let ids: Vec<_> = items.iter().map(|i| i.ids.clone()).collect();
        assert_eq!(
            ids,
            vec![
                vec![
                    (SignatureKind::PwaAppId, UNKNOWN.to_owned()),
                    (
                        SignatureKind::WebOrigin,
                        "https://chat.example.org".to_owned()
                    ),
                ],
                vec![
                    (SignatureKind::PwaAppId, MEET.to_owned()),
                    (
                        SignatureKind::WebOrigin,
                        "https://meet.google.com".to_owned()
                    ),
                ],
            ]
        );
        assert_eq!(
            items[1].detail,
            format!("web app {MEET} https://meet.google.com in Chromium (per-user)")
        );
        let report = scan(r, Platform::Linux);
        let products: Vec<&str> = report.findings.iter().map(|f| f.product.as_str()).collect();
        assert_eq!(products, vec!["google-meet"]);
    }

    #[test]
    fn a_decoy_app_id_matches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let profile = "Users/anna/Library/Application Support/Google/Chrome/Default";
        install(r, profile, UNKNOWN);
        // One letter off Meet's id, and ids of the wrong length or alphabet.
        install(r, profile, "kjgfgldnnfoeklkmfkjfagphfepbbdao");
        install(r, profile, "kjgfgldnnfoeklkmfkjfagphfepbbda");
        install(r, profile, "kjgfgldnnfoeklkmfkjfagphfepbbdaz");
        let (items, outcome) = collect(r, Platform::Macos);
        assert_eq!(outcome, SourceOutcome::Ok);
        assert_eq!(items.len(), 2);
        let report = scan(r, Platform::Macos);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(report.unclassified.is_empty());
    }

    #[test]
    fn corrupt_preferences_fail_the_source_but_ids_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let profile = "Users/ivan/AppData/Local/Microsoft/Edge/User Data/Profile 1";
        install(r, profile, MEET);
        fs::write(r.join(profile).join("Preferences"), "{\"web_apps\": {").unwrap();
        let (items, outcome) = collect(r, Platform::Windows);
        let SourceOutcome::Failed(why) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            why.starts_with(
                "1 problem: ~/AppData/Local/Microsoft/Edge/User Data/Profile 1/Preferences: not JSON"
            ),
            "{why}"
        );
        assert!(!why.contains("ivan"), "{why}");
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].detail,
            format!("web app {MEET} in Microsoft Edge (per-user)")
        );
    }

    #[test]
    fn no_browser_is_absent_and_a_browser_without_apps_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("home/olga")).unwrap();
        assert_eq!(collect(r, Platform::Linux).1, SourceOutcome::Absent);
        fs::create_dir_all(r.join("home/olga/.config/google-chrome/Default")).unwrap();
        fs::write(
            r.join("home/olga/.config/google-chrome/Default/Preferences"),
            "{}",
        )
        .unwrap();
        assert_eq!(collect(r, Platform::Linux), (vec![], SourceOutcome::Ok));
    }

    #[test]
    fn origins_keep_scheme_host_and_port_only() {
        assert_eq!(
            origin("https://meet.google.com/landing?lfhs=2").as_deref(),
            Some("https://meet.google.com")
        );
        assert_eq!(
            origin("http://Example.com:80/").as_deref(),
            Some("http://example.com")
        );
        assert_eq!(
            origin("https://example.com:8443").as_deref(),
            Some("https://example.com:8443")
        );
        assert_eq!(
            origin("https://a@b.example/x").as_deref(),
            Some("https://b.example")
        );
        assert_eq!(
            origin("https://[::1]:443/").as_deref(),
            Some("https://[::1]")
        );
        assert_eq!(
            origin("https://meet.google.com./").as_deref(),
            Some("https://meet.google.com")
        );
        for bad in [
            "chrome://settings",
            "file:///etc/passwd",
            "https://",
            "https://exa mple.com",
            "https://x.com:abc",
            "meet.google.com",
            "https://пример.рф/",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }

    /// Chromium's app id of a manifest id: SHA-256 of SHA-256 of the id's spec, first 128
    /// bits, each hex digit 0–f written as a letter a–p (`GenerateAppIdFromManifestId` and
    /// `crx_file::id_util::GenerateId`).
    fn chromium_app_id(manifest_id: &str) -> String {
        use sha2::{Digest, Sha256};
        let twice = Sha256::digest(Sha256::digest(manifest_id.as_bytes()));
        twice[..16]
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .map(|n| char::from(b'a' + n))
            .collect()
    }

    #[test]
    fn catalog_app_ids_are_chromiums_hash_of_their_start_urls() {
        // Start URLs from Chromium's ash/constants/web_app_id_constants.h.
        assert_eq!(
            chromium_app_id("https://meet.google.com/landing?lfhs=2"),
            MEET
        );
        assert_eq!(
            chromium_app_id("https://mail.google.com/chat/"),
            "mdpkiolbdkhdjpekfbkbmhigcaggjagi"
        );
        let catalog = Catalog::embedded();
        let has = |product: &str, id: &str| {
            catalog.products().iter().any(|p| {
                p.id == product
                    && p.signatures.iter().any(|s| {
                        s.kind == SignatureKind::PwaAppId && s.values.iter().any(|v| v == id)
                    })
            })
        };
        assert!(has("google-meet", MEET));
        assert!(has("google-chat", "mdpkiolbdkhdjpekfbkbmhigcaggjagi"));
    }

    #[test]
    fn app_ids_are_32_letters_a_to_p() {
        assert!(is_app_id(MEET));
        assert!(!is_app_id("Temp"));
        assert!(!is_app_id(&MEET.to_uppercase()));
        assert!(!is_app_id(&format!("{MEET}a")));
    }
}
