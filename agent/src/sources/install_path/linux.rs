//! `install_path` on Linux: vendor and tarball installs no package database knows.
//!
//! Every `linux_path` value of the catalog is probed (absolute ones under the root, `~/`-relative
//! ones under each home) and reported as written in the catalog when it is a directory; and
//! every folder of `/opt` is reported as `/opt/<name>`, so catalog paths match whatever case the
//! vendor used. Probing known paths keeps the cost at a few dozen `stat` calls instead of a disk
//! walk. Paths are resolved inside the scanned root ([`rooted`]), never through the host's
//! links; one value found twice (a catalog path that is also an `/opt` folder) is one item.

use crate::sources::util::rooted;
use crate::sources::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::collections::BTreeSet;

/// The install-path source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstallPath;

/// Entries of `/opt` looked at.
const MAX_ENTRIES: usize = 20_000;

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

    fn ids(src: &dyn Source, root: &std::path::Path) -> Vec<(String, String)> {
        let ctx = ScanContext::new(root, Platform::Linux, false);
        let mut out = Vec::new();
        assert_eq!(src.collect(&ctx, &mut out), SourceOutcome::Ok);
        out.into_iter()
            .map(|i| (i.ids[0].1.clone(), i.detail))
            .collect()
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
