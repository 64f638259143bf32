//! Software no package database knows: AppImages and vendor or tarball installs.
//!
//! - `appimage`: files named `*.AppImage` (any case) in the places people keep them: every
//!   user's home, `~/Applications`, `~/Downloads`, `~/Desktop`, `~/.local/bin`, `~/bin`, `~/opt`,
//!   and `/opt`, each down to two levels (`~/Applications/Zoom/x.AppImage`). Hidden folders of
//!   a home are not descended into; walks never follow symlinks and stop at an entry budget.
//! - `install_path`: every `linux_path` value of the catalog is probed (absolute ones under the
//!   root, `~/`-relative ones under each home) and reported as written in the catalog when it
//!   is a directory; and every folder of `/opt` is reported as `/opt/<name>`, so catalog paths
//!   match whatever case the vendor used. Probing known paths keeps the cost at a few dozen
//!   `stat` calls instead of a disk walk.

use super::{ScanContext, Source, fs::Walk, rooted};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::collections::BTreeSet;
use std::path::Path;

/// The AppImage source.
#[derive(Debug, Clone, Copy)]
pub struct Appimage;

/// The install-path source.
#[derive(Debug, Clone, Copy)]
pub struct InstallPath;

/// Folders of a home searched for AppImages (`""` is the home itself).
pub const HOME_DIRS: [&str; 7] = [
    "",
    "Applications",
    "Downloads",
    "Desktop",
    ".local/bin",
    "bin",
    "opt",
];
/// Entries visited per searched folder.
const MAX_ENTRIES: usize = 20_000;

/// Whether a file name is an AppImage's.
pub fn is_appimage(name: &str) -> bool {
    let n = name.as_bytes();
    n.len() > ".appimage".len()
        && n[n.len() - ".appimage".len()..].eq_ignore_ascii_case(b".appimage")
}

/// AppImages under `dir` (a host path), at most two levels down, as `(path, file name)`.
fn find_appimages(dir: &Path, found: &mut BTreeSet<(String, String)>) {
    let walk = Walk {
        max_depth: 1,
        max_entries: MAX_ENTRIES,
    };
    let _ = walk.run(dir, |path, is_dir, _| {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        if is_dir {
            return !name.starts_with('.');
        }
        if is_appimage(name) {
            found.insert((path.to_string_lossy().into_owned(), name.to_owned()));
        }
        false
    });
}

impl Source for Appimage {
    fn name(&self) -> &'static str {
        "appimage"
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let mut scopes: Vec<(BTreeSet<(String, String)>, &str)> = Vec::new();
        for home in ctx.homes() {
            let mut found = BTreeSet::new();
            for rel in HOME_DIRS {
                let dir = format!("{}/{rel}", home.path.trim_end_matches('/'));
                if let Ok(host) = rooted::resolve(&ctx.root, &dir) {
                    find_appimages(&host, &mut found);
                }
            }
            scopes.push((found, "per-user"));
        }
        let mut system = BTreeSet::new();
        if let Ok(host) = rooted::resolve(&ctx.root, "/opt") {
            find_appimages(&host, &mut system);
        }
        scopes.push((system, "system"));
        for (found, scope) in scopes {
            for (_, name) in found {
                out.push(InventoryItem::installed(
                    "appimage",
                    SignatureKind::Appimage,
                    name.clone(),
                    format!("AppImage {name} ({scope})"),
                ));
            }
        }
        SourceOutcome::Ok
    }
}

impl Source for InstallPath {
    fn name(&self) -> &'static str {
        "install_path"
    }

    fn watch_paths(&self, ctx: &ScanContext) -> Vec<std::path::PathBuf> {
        vec![ctx.path("/opt")]
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let mut reported: BTreeSet<String> = BTreeSet::new();
        let mut emit = |value: &str, detail: String, out: &mut Vec<InventoryItem>| {
            if reported.insert(format!("{value}\0{detail}")) {
                out.push(InventoryItem::installed(
                    "install_path",
                    SignatureKind::LinuxPath,
                    value,
                    detail,
                ));
            }
        };
        let values: BTreeSet<&str> = ctx
            .catalog
            .values_of(SignatureKind::LinuxPath)
            .map(|(_, v)| v)
            .collect();
        for value in values {
            if let Some(rel) = value.strip_prefix("~/") {
                for home in ctx.homes() {
                    let path = format!("{}/{rel}", home.path.trim_end_matches('/'));
                    if rooted::is_dir(&ctx.root, &path) {
                        emit(value, format!("directory {value} (per-user)"), out);
                    }
                }
            } else if value.starts_with('/') && rooted::is_dir(&ctx.root, value) {
                emit(value, format!("directory {value}"), out);
            }
        }
        if let Ok(opt) = rooted::resolve(&ctx.root, "/opt")
            && let Ok(rd) = std::fs::read_dir(&opt)
        {
            let mut names: Vec<String> = rd
                .flatten()
                .take(MAX_ENTRIES)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            for name in names {
                let value = format!("/opt/{name}");
                let detail = format!("directory {value}");
                emit(&value, detail, out);
            }
        }
        SourceOutcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::platform::Platform;

    fn ids(src: &dyn Source, root: &Path) -> Vec<(String, String)> {
        let ctx = ScanContext::new(root, Platform::Linux, false);
        let mut out = Vec::new();
        assert_eq!(src.collect(&ctx, &mut out), SourceOutcome::Ok);
        out.into_iter()
            .map(|i| (i.ids[0].1.clone(), i.detail))
            .collect()
    }

    #[test]
    fn appimage_names_are_case_insensitive() {
        assert!(is_appimage("MAX.AppImage"));
        assert!(is_appimage("ktalk.appimage"));
        assert!(!is_appimage(".AppImage"));
        assert!(!is_appimage("zoom.AppImage.zsync.txt"));
    }

    #[test]
    fn appimages_in_homes_and_opt_two_levels_deep() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "home/alice/Applications/Work",
            "home/alice/.cache/deep",
            "home/alice/a/b/c",
            "opt/apps",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "home/alice/Applications/Work/ktalk-2.1.AppImage",
            "home/alice/zoomer.AppImage",
            "home/alice/.cache/deep/hidden.AppImage",
            "home/alice/a/b/c/too-deep.AppImage",
            "opt/apps/MAX.AppImage",
            "opt/readme.txt",
        ] {
            std::fs::write(r.join(f), b"").unwrap();
        }
        assert_eq!(
            ids(&Appimage, r),
            vec![
                (
                    "ktalk-2.1.AppImage".into(),
                    "AppImage ktalk-2.1.AppImage (per-user)".into()
                ),
                (
                    "zoomer.AppImage".into(),
                    "AppImage zoomer.AppImage (per-user)".into()
                ),
                (
                    "MAX.AppImage".into(),
                    "AppImage MAX.AppImage (system)".into()
                ),
            ]
        );
    }

    #[test]
    fn catalog_paths_and_opt_folders_are_reported_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "opt/zoom",
            "opt/trueconf/client",
            "usr/lib/slack",
            "home/bob/Downloads/Telegram",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("opt/not-a-dir"), b"").unwrap();
        let got = ids(&InstallPath, r);
        let values: Vec<&str> = got.iter().map(|(v, _)| v.as_str()).collect();
        for want in [
            "/opt/zoom",
            "/opt/trueconf/client",
            "/opt/trueconf",
            "/usr/lib/slack",
            "~/Downloads/Telegram",
        ] {
            assert!(values.contains(&want), "{want} missing from {values:?}");
        }
        assert!(!values.contains(&"/opt/not-a-dir"));
        // /opt/zoom is both a catalog path and an /opt folder: reported once.
        assert_eq!(values.iter().filter(|v| **v == "/opt/zoom").count(), 1);
        assert!(got.contains(&(
            "~/Downloads/Telegram".into(),
            "directory ~/Downloads/Telegram (per-user)".into()
        )));
    }
}
