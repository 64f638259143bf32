//! MSIX/AppX packages (source `appx`): Store apps, which leave no Uninstall entry. WhatsApp
//! and the new Teams exist on Windows only this way.
//!
//! Read from directory names alone, so every profile is covered, logged on or not:
//! - `/Program Files/WindowsApps/<PackageFullName>`: packages staged on the machine, for all
//!   users or provisioned for new ones ("provisioned"). A full name is
//!   `Name_Version_Arch_ResourceId_PublisherId` (the resource id is often empty:
//!   `5319275A.WhatsAppDesktop_2.2425.6.0_x64__cv1g1gvanyjgm`); the family name is
//!   `Name_PublisherId`. When several versions of one family are staged, the highest is kept.
//! - `<home>/AppData/Local/Packages/<PackageFamilyName>`: the package's data folder, which
//!   Windows creates when the package is registered for that user and removes when it is
//!   uninstalled for them ("per-user"). Its version is the highest staged one, if any.
//!
//! Each family is an installed item `(AppxFamily, family)` with detail
//! `appx package <family> <version> (provisioned|per-user)`; per-user details carry no user
//! name, so several users with one package give one piece of evidence. Names that are not
//! package names (`Deleted`, `MutablePackages`, ...) are ignored. `AppxManifest.xml` is not
//! read: the full name already carries the version. A directory lists at most
//! [`MAX_DIR_ENTRIES`] entries.

use super::util::fs::Walk;
use super::util::winpath::resolve;
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The AppX source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appx;

/// Entries listed in one package directory.
pub(crate) const MAX_DIR_ENTRIES: usize = 50_000;

const WINDOWS_APPS: [&str; 2] = ["Program Files", "WindowsApps"];
const PACKAGES: [&str; 3] = ["AppData", "Local", "Packages"];

/// A package name: 3 to 50 letters, digits, dots and dashes.
fn is_package_name(s: &str) -> bool {
    (3..=50).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// A publisher id: 13 characters of lowercase base32.
fn is_publisher_id(s: &str) -> bool {
    s.len() == 13
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// A version `a.b.c.d` as numbers, for ordering.
fn version_key(s: &str) -> Option<[u16; 4]> {
    let mut out = [0u16; 4];
    let mut parts = s.split('.');
    for slot in &mut out {
        *slot = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `Name_PublisherId` if `s` is a package family name.
pub(crate) fn is_family_name(s: &str) -> bool {
    matches!(s.split_once('_'), Some((name, publisher)) if is_package_name(name) && is_publisher_id(publisher))
}

/// The family name and version of a package full name.
pub(crate) fn parse_full_name(s: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = s.split('_').collect();
    let [name, version, arch, _resource, publisher] = parts[..] else {
        return None;
    };
    let ok = is_package_name(name)
        && version_key(version).is_some()
        && !arch.is_empty()
        && is_publisher_id(publisher);
    ok.then(|| (format!("{name}_{publisher}"), version.to_owned()))
}

/// Names of the subdirectories of `dir` (bounded); `Err` if `dir` cannot be listed.
fn subdirs(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let walk = Walk {
        max_depth: 0,
        max_entries: MAX_DIR_ENTRIES,
    };
    walk.run(dir, |path, is_dir, _| {
        if is_dir && let Some(name) = path.file_name() {
            out.push(name.to_string_lossy().into_owned());
        }
        false
    })?;
    Ok(out)
}

fn item(family: &str, version: Option<&str>, scope: &str) -> InventoryItem {
    let detail = match version {
        Some(v) => format!("appx package {family} {v} ({scope})"),
        None => format!("appx package {family} ({scope})"),
    };
    let item = InventoryItem::installed("appx", SignatureKind::AppxFamily, family, detail);
    match version {
        Some(v) => item.with_version(v),
        None => item,
    }
}

impl Source for Appx {
    fn name(&self) -> &'static str {
        "appx"
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let mut seen_any = false;
        let mut failures: Vec<String> = Vec::new();
        let mut fail = |place: String, e: std::io::Error| failures.push(format!("{place}: {e}"));

        // Staged packages: family -> (version key, version text), the highest version.
        let mut staged: BTreeMap<String, ([u16; 4], String)> = BTreeMap::new();
        match resolve(&ctx.root, &WINDOWS_APPS) {
            Ok(Some(dir)) => match subdirs(&dir) {
                Ok(names) => {
                    seen_any = true;
                    for (family, version) in names.iter().filter_map(|n| parse_full_name(n)) {
                        let key = version_key(&version).unwrap_or_default();
                        let slot = staged.entry(family).or_insert((key, version.clone()));
                        if key > slot.0 {
                            *slot = (key, version);
                        }
                    }
                }
                Err(e) => fail(dir.display().to_string(), e),
            },
            Ok(None) => {}
            Err(e) => fail(
                ctx.path("/Program Files/WindowsApps").display().to_string(),
                e,
            ),
        }

        let mut per_user: BTreeSet<String> = BTreeSet::new();
        for home in ctx.homes() {
            let base = ctx.path(&home.path);
            match resolve(&base, &PACKAGES) {
                Ok(Some(dir)) => match subdirs(&dir) {
                    Ok(names) => {
                        seen_any = true;
                        per_user.extend(names.into_iter().filter(|n| is_family_name(n)));
                    }
                    Err(e) => fail(dir.display().to_string(), e),
                },
                Ok(None) => {}
                Err(e) => fail(base.display().to_string(), e),
            }
        }

        for (family, (_, version)) in &staged {
            out.push(item(family, Some(version), "provisioned"));
        }
        for family in &per_user {
            let version = staged.get(family).map(|(_, v)| v.as_str());
            out.push(item(family, version, "per-user"));
        }

        if let Some(first) = failures.first() {
            SourceOutcome::Failed(format!(
                "{} directories unreadable: {first}",
                failures.len()
            ))
        } else if seen_any {
            SourceOutcome::Ok
        } else {
            SourceOutcome::Absent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::platform::Platform;

    const WHATSAPP: &str = "5319275A.WhatsAppDesktop_cv1g1gvanyjgm";

    #[test]
    fn full_names_give_family_and_version() {
        assert_eq!(
            parse_full_name("5319275A.WhatsAppDesktop_2.2425.6.0_x64__cv1g1gvanyjgm"),
            Some((WHATSAPP.into(), "2.2425.6.0".into()))
        );
        // Bundles (`~`) and resource packages belong to their main package's family.
        assert_eq!(
            parse_full_name("Microsoft.WindowsStore_22110.1401.12.0_neutral_~_8wekyb3d8bbwe")
                .map(|p| p.0),
            Some("Microsoft.WindowsStore_8wekyb3d8bbwe".into())
        );
        for bad in [
            "Deleted",
            "MutablePackages",
            "MSTeams_1.0_x64__8wekyb3d8bbwe",
            "MSTeams_24.1.0.0_x64__8WEKYB3D8BBWE",
            "a_1.0.0.0_x64__8wekyb3d8bbwe",
        ] {
            assert_eq!(parse_full_name(bad), None, "{bad}");
        }
        assert!(is_family_name("MSTeams_8wekyb3d8bbwe"));
        assert!(!is_family_name("MSTeams_24.1.0.0_x64__8wekyb3d8bbwe"));
        assert!(!is_family_name("Microsoft"));
    }

    #[test]
    fn staged_and_per_user_packages_with_the_highest_version() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "Program Files/WindowsApps/MSTeams_24000.1.0.0_x64__8wekyb3d8bbwe",
            "Program Files/WindowsApps/MSTeams_25000.2.0.0_x64__8wekyb3d8bbwe",
            "Program Files/WindowsApps/MSTeams_9000.9.0.0_x64__8wekyb3d8bbwe",
            "Program Files/WindowsApps/Deleted",
            "Users/olga/AppData/Local/Packages/5319275A.WhatsAppDesktop_cv1g1gvanyjgm/LocalState",
            "Users/petr/appdata/local/packages/MSTeams_8wekyb3d8bbwe",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let ctx = ScanContext::new(dir.path(), Platform::Windows, false);
        let mut out = Vec::new();
        assert_eq!(Appx.collect(&ctx, &mut out), SourceOutcome::Ok);
        let details: Vec<&str> = out.iter().map(|i| i.detail.as_str()).collect();
        assert_eq!(
            details,
            vec![
                "appx package MSTeams_8wekyb3d8bbwe 25000.2.0.0 (provisioned)",
                "appx package 5319275A.WhatsAppDesktop_cv1g1gvanyjgm (per-user)",
                "appx package MSTeams_8wekyb3d8bbwe 25000.2.0.0 (per-user)",
            ]
        );
        assert_eq!(out[0].version.as_deref(), Some("25000.2.0.0"));
    }

    #[test]
    fn a_tree_without_packages_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Users/olga/Desktop")).unwrap();
        let ctx = ScanContext::new(dir.path(), Platform::Windows, false);
        assert_eq!(Appx.collect(&ctx, &mut Vec::new()), SourceOutcome::Absent);
    }
}
