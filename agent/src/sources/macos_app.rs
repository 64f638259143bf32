//! macOS application bundles (source `macos_app`, `.app`).
//!
//! Where: `/Applications` (scope `system`) and every user's `~/Applications` (scope
//! `per-user`, users from [`ScanContext::homes`], so users who are not logged in count too).
//! `/System/Applications` is not read: it holds only Apple's built-in apps.
//!
//! How deep: a bundle may sit directly in an Applications folder or in sub-folders down to
//! three levels (`/Applications/Foo.app`, `/Applications/Vendor/Foo.app`,
//! `/Applications/Vendor/Sub/Foo.app`; `~/Applications/Chrome Apps.localized/Meet.app`). The
//! walk never enters a `.app` bundle (apps nested inside another app are its helpers, not
//! installations), never follows a symlink (a symlinked bundle or folder is skipped; a
//! symlinked `~/Applications` too, as it usually points at `/Applications`), skips dot-folders
//! and stops at the walk's entry budget.
//!
//! What: each bundle's `Contents/Info.plist`, XML, binary or ASCII, read with a 1 MiB cap
//! ([`MAX_PLIST`]) and parsed as an event stream with an event budget ([`MAX_EVENTS`]), so a
//! huge or maliciously nested plist costs bounded time and memory. Only string values of the
//! top-level dictionary are kept: `CFBundleIdentifier`, `CFBundleExecutable`,
//! `CFBundleShortVersionString`, `CFBundleVersion`, `CFBundleDisplayName`, `CFBundleName`,
//! `LSApplicationCategoryType`.
//!
//! Emits one installed item per bundle:
//! - ids `(bundle_id, CFBundleIdentifier)`, `(mac_app, "<Name>.app")` (the folder name in
//!   Unicode NFC, as HFS+ stores names decomposed), `(mac_exe, CFBundleExecutable)`, each only
//!   when present;
//! - version `CFBundleShortVersionString`, else `CFBundleVersion`;
//! - detail `app <Name>.app <bundle id> <version> (system|per-user)`;
//! - an unclassified candidate when `LSApplicationCategoryType` is
//!   `public.app-category.social-networking` (Apple's category for messengers; it is
//!   reported only if no catalog signature matches the bundle).
//!
//! A bundle whose Info.plist is missing, too large or unparsable still yields an item with
//! the weak `mac_app` id alone (detail ends `; Info.plist unreadable`), the scan goes on, and
//! the source reports `failed: N problems: <file>: <why>; ...` naming the files as paths of
//! the scanned system, a user's home written `~` (outcomes go to the collector, user names
//! do not).

use super::util::fs::{Walk, read_capped};
use super::util::outcome::{problems_outcome, shown_path};
use super::util::users::in_homes;
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use plist::stream::{Event, Reader};
use std::io;
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

/// The macOS application-bundle source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MacosApp;

const SOURCE: &str = "macos_app";

/// Largest Info.plist read, in bytes.
pub(crate) const MAX_PLIST: u64 = 1024 * 1024;

/// Most plist events (keys, values, collection starts and ends) read from one Info.plist.
pub(crate) const MAX_EVENTS: usize = 100_000;

/// Longest string value kept; longer values are not identifiers and are ignored.
const MAX_VALUE: usize = 1024;

/// Walk depth: entries of an Applications folder are level 0 and the walk lists down to
/// level 2, so a bundle is at most the third path component below the folder.
const WALK_DEPTH: usize = 2;

/// The App Store category that marks an unknown bundle as a candidate.
pub(crate) const SOCIAL_NETWORKING: &str = "public.app-category.social-networking";

/// The keys kept from an Info.plist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BundleInfo {
    /// `CFBundleIdentifier`.
    pub(crate) bundle_id: Option<String>,
    /// `CFBundleExecutable`.
    pub(crate) executable: Option<String>,
    /// `CFBundleShortVersionString`.
    pub(crate) short_version: Option<String>,
    /// `CFBundleVersion`.
    pub(crate) version: Option<String>,
    /// `CFBundleDisplayName`.
    pub(crate) display_name: Option<String>,
    /// `CFBundleName`.
    pub(crate) name: Option<String>,
    /// `LSApplicationCategoryType`.
    pub(crate) category: Option<String>,
}

impl BundleInfo {
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "CFBundleIdentifier" => &mut self.bundle_id,
            "CFBundleExecutable" => &mut self.executable,
            "CFBundleShortVersionString" => &mut self.short_version,
            "CFBundleVersion" => &mut self.version,
            "CFBundleDisplayName" => &mut self.display_name,
            "CFBundleName" => &mut self.name,
            "LSApplicationCategoryType" => &mut self.category,
            _ => return None,
        })
    }
}

/// Parses an Info.plist (any encoding) into the keys commscan keeps. Errors say why in a few
/// words: not a plist, not a dictionary, too many events.
pub(crate) fn parse_info_plist(bytes: &[u8]) -> Result<BundleInfo, String> {
    let mut events = Reader::new(io::Cursor::new(bytes));
    let mut next = |budget: &mut usize| -> Result<Event<'static>, String> {
        if *budget == 0 {
            return Err(format!("more than {MAX_EVENTS} plist events"));
        }
        *budget -= 1;
        match events.next() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(format!("not a valid plist: {e}")),
            None => Err("plist ends before its top-level dictionary does".into()),
        }
    };
    let mut budget = MAX_EVENTS;
    match next(&mut budget)? {
        Event::StartDictionary(_) => {}
        _ => return Err("the top-level plist value is not a dictionary".into()),
    }
    let mut info = BundleInfo::default();
    loop {
        // At the top level: a key, or the end of the dictionary.
        let key = match next(&mut budget)? {
            Event::EndCollection => return Ok(info),
            Event::String(k) => k.into_owned(),
            _ => return Err("a dictionary key is not a string".into()),
        };
        // Its value: a scalar, or a collection skipped whole.
        match next(&mut budget)? {
            Event::String(v) => {
                let v = v.trim();
                if let Some(slot) = info.slot(&key)
                    && slot.is_none()
                    && !v.is_empty()
                    && v.len() <= MAX_VALUE
                {
                    *slot = Some(v.to_owned());
                }
            }
            Event::StartArray(_) | Event::StartDictionary(_) => {
                let mut depth = 1usize;
                while depth > 0 {
                    match next(&mut budget)? {
                        Event::StartArray(_) | Event::StartDictionary(_) => depth += 1,
                        Event::EndCollection => depth -= 1,
                        _ => {}
                    }
                }
            }
            Event::EndCollection => return Err("a dictionary key has no value".into()),
            _ => {}
        }
    }
}

/// Where a bundle was installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    System,
    PerUser,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::System => "system",
            Scope::PerUser => "per-user",
        }
    }
}

fn is_app_name(name: &str) -> bool {
    name.len() > 4
        && name
            .get(name.len() - 4..)
            .is_some_and(|ext| ext.eq_ignore_ascii_case(".app"))
}

/// The bundles under an Applications folder, sorted. `Err` only if the folder itself cannot
/// be listed.
fn bundles_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    Walk::depth(WALK_DEPTH).run(dir, |path, is_dir, _| {
        if !is_dir {
            return false; // files and symlinks
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.starts_with('.') {
            return false;
        }
        if is_app_name(&name) {
            found.push(path.to_path_buf());
            return false; // never look inside a bundle
        }
        true
    })?;
    found.sort();
    Ok(found)
}

/// The item for one bundle; a problem reading its Info.plist is appended to `problems`, the
/// file named as `shown`.
fn bundle_item(
    bundle: &Path,
    shown: &str,
    scope: Scope,
    problems: &mut Vec<String>,
) -> InventoryItem {
    let file_name: String = bundle
        .file_name()
        .map(|n| n.to_string_lossy().nfc().collect())
        .unwrap_or_default();
    let plist_path = bundle.join("Contents/Info.plist");
    let info = read_capped(&plist_path, MAX_PLIST)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "missing".to_owned(),
            _ => e.to_string(),
        })
        .and_then(|bytes| parse_info_plist(&bytes));
    let info = match info {
        Ok(info) => info,
        Err(why) => {
            problems.push(format!("{shown}/Contents/Info.plist: {why}"));
            return InventoryItem::installed(
                SOURCE,
                SignatureKind::MacApp,
                file_name.clone(),
                format!(
                    "app {file_name} ({}; Info.plist unreadable)",
                    scope.as_str()
                ),
            );
        }
    };
    let version = info.short_version.clone().or_else(|| info.version.clone());
    let mut detail = format!("app {file_name}");
    for part in [&info.bundle_id, &version].into_iter().flatten() {
        detail.push(' ');
        detail.push_str(part);
    }
    detail.push_str(&format!(" ({})", scope.as_str()));
    let mut ids = Vec::with_capacity(3);
    if let Some(id) = &info.bundle_id {
        ids.push((SignatureKind::BundleId, id.clone()));
    }
    ids.push((SignatureKind::MacApp, file_name.clone()));
    if let Some(exe) = &info.executable {
        ids.push((SignatureKind::MacExe, exe.clone()));
    }
    let mut item = InventoryItem::installed(SOURCE, ids[0].0, ids[0].1.clone(), detail);
    for (kind, value) in ids.into_iter().skip(1) {
        item = item.with_id(kind, value);
    }
    item.version = version;
    // The name it shows, for near misses: an unknown bundle id called "WhatsApp" is reported.
    if let Some(name) = info.display_name.clone().or_else(|| info.name.clone()) {
        item = item.with_name(name);
    }
    if info.category.as_deref() == Some(SOCIAL_NETWORKING) {
        let stem = file_name
            .get(..file_name.len().saturating_sub(4))
            .unwrap_or(&file_name)
            .to_owned();
        let name = info.display_name.or(info.name).unwrap_or(stem);
        item = item.with_candidate(
            name,
            format!("LSApplicationCategoryType={SOCIAL_NETWORKING}"),
        );
    }
    item
}

impl Source for MacosApp {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn watch_paths(&self, ctx: &ScanContext) -> Vec<std::path::PathBuf> {
        let mut v = vec![ctx.path("/Applications")];
        v.extend(in_homes(ctx, "Applications"));
        v
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        // (folder, how problems name it, scope); a user's home is shown as `~`.
        let mut folders = vec![(ctx.path("/Applications"), "/Applications", Scope::System)];
        for home in ctx.homes() {
            let dir = ctx.path(&home.path).join("Applications");
            let symlink = std::fs::symlink_metadata(&dir)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if !symlink {
                folders.push((dir, "~/Applications", Scope::PerUser));
            }
        }
        let mut present = false;
        let mut problems = Vec::new();
        for (dir, shown, scope) in folders {
            match bundles_in(&dir) {
                Ok(bundles) => {
                    present = true;
                    for bundle in bundles {
                        let shown = shown_path(shown, &dir, &bundle);
                        out.push(bundle_item(&bundle, &shown, scope, &mut problems));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    present = true;
                    problems.push(format!("{shown}: {e}"));
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
    use commscan_core::platform::Platform;
    use plist::{Dictionary, Value};
    use std::fs;

    #[derive(Clone, Copy)]
    enum Enc {
        Xml,
        Binary,
    }

    fn plist_bytes(pairs: &[(&str, &str)], enc: Enc) -> Vec<u8> {
        let mut dict = Dictionary::new();
        for (k, v) in pairs {
            dict.insert((*k).to_owned(), Value::String((*v).to_owned()));
        }
        // Something nested, as real Info.plists have, which the parser must skip.
        let mut nested = Dictionary::new();
        nested.insert(
            "CFBundleURLSchemes".into(),
            Value::Array(vec![Value::String("tg".into())]),
        );
        dict.insert(
            "CFBundleURLTypes".into(),
            Value::Array(vec![Value::Dictionary(nested)]),
        );
        let mut buf = Vec::new();
        match enc {
            Enc::Xml => Value::Dictionary(dict).to_writer_xml(&mut buf).unwrap(),
            Enc::Binary => Value::Dictionary(dict).to_writer_binary(&mut buf).unwrap(),
        }
        buf
    }

    /// Writes `<root>/<rel>/Contents/Info.plist` with the given bytes.
    fn bundle(root: &Path, rel: &str, plist: Option<Vec<u8>>) {
        let contents = root.join(rel).join("Contents");
        fs::create_dir_all(contents.join("MacOS")).unwrap();
        if let Some(bytes) = plist {
            fs::write(contents.join("Info.plist"), bytes).unwrap();
        }
    }

    fn app(root: &Path, rel: &str, id: &str, exe: &str, version: &str, enc: Enc) {
        bundle(
            root,
            rel,
            Some(plist_bytes(
                &[
                    ("CFBundleIdentifier", id),
                    ("CFBundleExecutable", exe),
                    ("CFBundleShortVersionString", version),
                    ("CFBundleVersion", "12345"),
                ],
                enc,
            )),
        );
    }

    fn ctx(root: &Path) -> ScanContext {
        ScanContext::new(root, Platform::Macos, false)
    }

    fn collect(root: &Path) -> (Vec<InventoryItem>, SourceOutcome) {
        let mut out = Vec::new();
        let outcome = MacosApp.collect(&ctx(root), &mut out);
        (out, outcome)
    }

    fn scan(root: &Path) -> commscan_core::scan::ScanReport {
        Scanner::new(&Catalog::embedded()).scan_with(
            &ScanTarget::tree(root, Platform::Macos),
            &[Box::new(MacosApp)],
        )
    }

    fn products(report: &commscan_core::scan::ScanReport) -> Vec<&str> {
        report.findings.iter().map(|f| f.product.as_str()).collect()
    }

    #[test]
    fn xml_and_binary_plists_give_the_same_keys() {
        let pairs = [
            ("CFBundleIdentifier", "us.zoom.xos"),
            ("CFBundleExecutable", "zoom.us"),
            ("CFBundleShortVersionString", "6.1.0"),
            ("LSApplicationCategoryType", "public.app-category.business"),
        ];
        let xml = parse_info_plist(&plist_bytes(&pairs, Enc::Xml)).unwrap();
        let bin = parse_info_plist(&plist_bytes(&pairs, Enc::Binary)).unwrap();
        assert_eq!(xml, bin);
        assert_eq!(xml.bundle_id.as_deref(), Some("us.zoom.xos"));
        assert_eq!(xml.executable.as_deref(), Some("zoom.us"));
        assert_eq!(xml.short_version.as_deref(), Some("6.1.0"));
        assert!(parse_info_plist(b"<plist><array/></plist>").is_err());
        assert!(parse_info_plist(b"\x00\x01garbage").is_err());
    }

    #[test]
    fn finds_system_nested_and_per_user_bundles() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        app(
            r,
            "Applications/zoom.us.app",
            "us.zoom.xos",
            "zoom.us",
            "6.1.0",
            Enc::Binary,
        );
        // A vendor folder, and a bundle nested inside a bundle (a helper: not reported).
        app(
            r,
            "Applications/Vendor/Slack.app",
            "com.tinyspeck.slackmacgap",
            "Slack",
            "4.41",
            Enc::Xml,
        );
        app(
            r,
            "Applications/Vendor/Slack.app/Contents/Helpers/Helper.app",
            "com.example.helper",
            "Helper",
            "1",
            Enc::Xml,
        );
        // Deeper than the walk goes.
        app(
            r,
            "Applications/a/b/c/Deep.app",
            "com.example.deep",
            "Deep",
            "1",
            Enc::Xml,
        );
        // bob is not logged in: nothing but his home folder tells he exists.
        app(
            r,
            "Users/bob/Applications/Signal.app",
            "org.whispersystems.signal-desktop",
            "Signal",
            "7.0",
            Enc::Xml,
        );
        let (items, outcome) = collect(r);
        assert_eq!(outcome, SourceOutcome::Ok);
        let details: Vec<&str> = items.iter().map(|i| i.detail.as_str()).collect();
        assert_eq!(
            details,
            vec![
                "app Slack.app com.tinyspeck.slackmacgap 4.41 (system)",
                "app zoom.us.app us.zoom.xos 6.1.0 (system)",
                "app Signal.app org.whispersystems.signal-desktop 7.0 (per-user)",
            ]
        );
        let zoom = &items[1];
        assert_eq!(
            zoom.ids,
            vec![
                (SignatureKind::BundleId, "us.zoom.xos".into()),
                (SignatureKind::MacApp, "zoom.us.app".into()),
                (SignatureKind::MacExe, "zoom.us".into()),
            ]
        );
        assert_eq!(zoom.version.as_deref(), Some("6.1.0"));
        assert_eq!(products(&scan(r)), vec!["signal", "slack", "zoom"]);
    }

    #[test]
    fn two_telegram_bundles_are_told_apart_by_bundle_id() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        app(
            r,
            "Applications/Telegram.app",
            "com.tdesktop.Telegram",
            "Telegram",
            "5.1",
            Enc::Xml,
        );
        app(
            r,
            "Users/alice/Applications/Telegram.app",
            "ru.keepcoder.Telegram",
            "Telegram",
            "11.0",
            Enc::Binary,
        );
        let report = scan(r);
        assert_eq!(products(&report), vec!["telegram", "telegram-macos"]);
        assert_eq!(report.findings[0].version.as_deref(), Some("5.1"));
        assert_eq!(
            report.findings[1].evidence[0].detail,
            "app Telegram.app ru.keepcoder.Telegram 11.0 (per-user)"
        );
        assert_eq!(report.findings[1].evidence[0].signature, "bundle_id");
    }

    #[test]
    fn unicode_bundle_names_are_nfc_and_match() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        // "Толк" has no decomposable letter, so its NFD form is itself; "Café" has one.
        let tolk_nfd: String = "Толк.app".nfd().collect();
        bundle(r, &format!("Applications/{tolk_nfd}"), None);
        let cafe_nfd = "Cafe\u{301}.app";
        bundle(
            r,
            &format!("Applications/{cafe_nfd}"),
            Some(plist_bytes(
                &[("CFBundleIdentifier", "com.example.cafe")],
                Enc::Xml,
            )),
        );
        let (items, _) = collect(r);
        let names: Vec<&str> = items
            .iter()
            .flat_map(|i| i.ids.iter())
            .filter(|(k, _)| *k == SignatureKind::MacApp)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(names, vec!["Café.app", "Толк.app"]);
        assert_eq!(names[0].chars().count(), 8, "NFC: é is one character");
        // No Info.plist: the weak name alone still identifies Kontur.Tolk.
        assert_eq!(products(&scan(r)), vec!["kontur-tolk"]);
        // With an Info.plist its bundle id decides.
        let dir = tempfile::tempdir().unwrap();
        app(
            dir.path(),
            &format!("Applications/{tolk_nfd}"),
            "kontur.talk",
            "Толк",
            "2.3",
            Enc::Binary,
        );
        let report = scan(dir.path());
        assert_eq!(products(&report), vec!["kontur-tolk"]);
        assert_eq!(report.findings[0].evidence[0].signature, "bundle_id");
    }

    #[test]
    fn a_look_alike_is_not_zoom_and_social_apps_are_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        app(
            r,
            "Applications/Zoomer.app",
            "com.example.zoomer",
            "Zoomer",
            "1.0",
            Enc::Xml,
        );
        bundle(
            r,
            "Applications/Chatty.app",
            Some(plist_bytes(
                &[
                    ("CFBundleIdentifier", "com.example.chatty"),
                    ("CFBundleDisplayName", "Chatty Messenger"),
                    ("LSApplicationCategoryType", SOCIAL_NETWORKING),
                ],
                Enc::Binary,
            )),
        );
        let report = scan(r);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.unclassified.len(), 1);
        assert_eq!(report.unclassified[0].name, "Chatty Messenger");
        assert_eq!(report.unclassified[0].source, "macos_app");
        assert_eq!(
            report.unclassified[0].detail,
            "LSApplicationCategoryType=public.app-category.social-networking"
        );
    }

    #[test]
    fn corrupt_and_oversized_plists_fail_the_source_but_not_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        bundle(
            r,
            "Applications/Corrupt.app",
            Some(b"<?xml version=\"1.0\"?><plist><dict><key>CFBundle".to_vec()),
        );
        // Over the cap: a valid plist padded with a long string.
        let big = "x".repeat(MAX_PLIST as usize + 10);
        bundle(
            r,
            "Applications/Huge.app",
            Some(plist_bytes(&[("Padding", &big)], Enc::Xml)),
        );
        app(
            r,
            "Applications/Slack.app",
            "com.tinyspeck.slackmacgap",
            "Slack",
            "4.41",
            Enc::Xml,
        );
        // A per-user bundle without Info.plist: named from `~`, never with the user's name.
        bundle(r, "Users/carol/Applications/Broken.app", None);
        let (items, outcome) = collect(r);
        let SourceOutcome::Failed(why) = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(why.starts_with("3 problems: "), "{why}");
        assert!(
            why.contains("/Applications/Corrupt.app/Contents/Info.plist: not a valid plist"),
            "{why}"
        );
        assert!(
            why.contains("/Applications/Huge.app/Contents/Info.plist: "),
            "{why}"
        );
        assert!(why.contains("larger than the 1048576-byte limit"), "{why}");
        assert!(
            why.contains("~/Applications/Broken.app/Contents/Info.plist: missing"),
            "{why}"
        );
        assert!(!why.contains("carol"), "{why}");
        assert!(!why.contains(&r.display().to_string()), "{why}");
        // All still yield the weak name; Slack is found.
        let details: Vec<&str> = items.iter().map(|i| i.detail.as_str()).collect();
        assert_eq!(
            details,
            vec![
                "app Corrupt.app (system; Info.plist unreadable)",
                "app Huge.app (system; Info.plist unreadable)",
                "app Slack.app com.tinyspeck.slackmacgap 4.41 (system)",
                "app Broken.app (per-user; Info.plist unreadable)",
            ]
        );
        assert_eq!(
            items[0].ids,
            vec![(SignatureKind::MacApp, "Corrupt.app".into())]
        );
        let report = scan(r);
        assert_eq!(products(&report), vec!["slack"]);
        assert!(
            report.stats.sources["macos_app"]
                .to_string()
                .starts_with("failed: 3 problems")
        );
    }

    #[test]
    fn a_plist_bomb_is_cut_off_by_the_event_budget() {
        // Binary plists may reference one object many times: 40 levels of [x, x] would expand
        // to 2^40 values. The event budget stops the parser long before.
        // Written by hand (building it as a Value would itself explode): object 0 is the root
        // dictionary {"k": obj 2}, obj 1 is "k", objs 2..=41 are arrays [n+1, n+1], obj 42 is "x".
        let mut body = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        offsets.push(body.len());
        body.extend_from_slice(&[0xd1, 1, 2]); // dict, 1 entry: key ref 1, value ref 2
        offsets.push(body.len());
        body.extend_from_slice(&[0x51, b'k']);
        for n in 2..42u8 {
            offsets.push(body.len());
            body.extend_from_slice(&[0xa2, n + 1, n + 1]);
        }
        offsets.push(body.len());
        body.extend_from_slice(&[0x51, b'x']);
        let table = body.len();
        for o in &offsets {
            body.push(*o as u8);
        }
        body.extend_from_slice(&[0; 6]);
        body.push(1); // offset size
        body.push(1); // ref size
        body.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
        body.extend_from_slice(&0u64.to_be_bytes());
        body.extend_from_slice(&(table as u64).to_be_bytes());
        let started = std::time::Instant::now();
        let err = parse_info_plist(&body).unwrap_err();
        assert!(err.contains("plist events"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn no_applications_folder_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("Users/alice")).unwrap();
        assert_eq!(collect(dir.path()).1, SourceOutcome::Absent);
    }

    #[test]
    fn chrome_app_shims_in_a_users_applications_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        app(
            r,
            "Users/alice/Applications/Chrome Apps.localized/Google Meet.app",
            "com.google.Chrome.app.kjgfgldnnfoeklkmfkjfagphfepbbdan",
            "app_mode_loader",
            "1.0",
            Enc::Xml,
        );
        assert_eq!(products(&scan(r)), vec!["google-meet"]);
    }
}
