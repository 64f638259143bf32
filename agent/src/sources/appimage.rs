//! AppImages (source `appimage`): self-contained Linux programs no package database knows.
//!
//! Files named `*.AppImage` (any case) are looked for in the places people keep them: every
//! user's home, `~/Applications`, `~/Downloads`, `~/Desktop`, `~/.local/bin`, `~/bin`, `~/opt`,
//! and `/opt`, each down to two levels (`~/Applications/Zoom/x.AppImage`). Hidden folders of a
//! home are not descended into; walks never follow symlinks and stop at an entry budget, and
//! the folders are resolved inside the scanned root ([`rooted`]). Each file is an installed
//! item `(Appimage, <file name>)` with detail `AppImage <file name> (per-user|system)`: the
//! user's name is never reported.

use crate::sources::util::{fs::Walk, rooted};
use crate::sources::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::collections::BTreeSet;
use std::path::Path;

/// The AppImage source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appimage;

/// Folders of a home searched for AppImages (`""` is the home itself).
pub(crate) const HOME_DIRS: [&str; 7] = [
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
pub(crate) fn is_appimage(name: &str) -> bool {
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
}
