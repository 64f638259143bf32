//! Installed snaps (source `snap`).
//!
//! Two places tell, and a mounted disk image may only have the first:
//! - `/var/lib/snapd/snaps/<name>_<rev>.snap`: the squashfs file of every kept revision
//!   (`<name>` may carry a parallel-install key, `<snap>_<key>`).
//! - `/snap/<name>/<rev>` (Fedora and others: `/var/lib/snapd/snap/...`): mount points, with
//!   `/snap/<name>/current` a symlink naming the active revision. The link is read with
//!   `read_link`, never followed for walking; the version comes from
//!   `/snap/<name>/<rev>/meta/snap.yaml`'s top-level `version:` line when the snap is mounted.
//!
//! Every snap is reported, bases and `snapd` included: only catalog matches leave the device.

use super::util::rooted;
use super::util::text::{clip, for_each_line};
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::collections::BTreeMap;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

/// The snap source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snap;

const SNAP_FILES: &str = "/var/lib/snapd/snaps";
const MOUNT_DIRS: [&str; 2] = ["/snap", "/var/lib/snapd/snap"];
/// Bytes of `snap.yaml` read looking for `version:`.
const MAX_YAML: u64 = 64 * 1024;
/// Most snaps listed; a real machine has tens.
const MAX_SNAPS: usize = 10_000;

#[derive(Default)]
struct Installed {
    revision: Option<String>,
    version: Option<String>,
}

/// Whether `s` is a snap revision: digits, or `x` and digits for a locally installed snap.
fn is_revision(s: &str) -> bool {
    let digits = s.strip_prefix('x').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a snap file name `<instance>_<rev>.snap` into instance name and revision.
pub(crate) fn parse_snap_file(file: &str) -> Option<(&str, &str)> {
    let stem = file.strip_suffix(".snap")?;
    let (instance, rev) = stem.rsplit_once('_')?;
    (!instance.is_empty() && is_revision(rev)).then_some((instance, rev))
}

/// The store name of an instance (`foo_work` → `foo`).
fn snap_name(instance: &str) -> &str {
    instance.split('_').next().unwrap_or(instance)
}

/// The top-level `version:` of a `snap.yaml`, read streaming up to [`MAX_YAML`] bytes.
pub(crate) fn yaml_version(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut version = None;
    let _ = for_each_line(BufReader::new(f.take(MAX_YAML)), |line, truncated| {
        if version.is_some() || truncated {
            return;
        }
        if let Some(v) = line.strip_prefix("version:") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'').trim();
            if !v.is_empty() {
                version = Some(clip(v));
            }
        }
    });
    version
}

fn list(dir: &Path, failures: &mut Vec<String>) -> Option<Vec<(String, std::fs::FileType)>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Some(
            rd.flatten()
                .take(MAX_SNAPS)
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_owned();
                    Some((name, e.file_type().ok()?))
                })
                .collect(),
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            failures.push(format!("{}: {e}", dir.display()));
            Some(Vec::new())
        }
    }
}

impl Source for Snap {
    fn name(&self) -> &'static str {
        "snap"
    }

    fn watch_paths(&self, ctx: &ScanContext) -> Vec<std::path::PathBuf> {
        vec![ctx.path(SNAP_FILES)]
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let mut snaps: BTreeMap<String, Installed> = BTreeMap::new();
        let mut failures = Vec::new();
        let mut seen_any = false;

        if let Ok(dir) = rooted::resolve(&ctx.root, SNAP_FILES)
            && let Some(entries) = list(&dir, &mut failures)
        {
            seen_any = true;
            for (file, _) in entries {
                if let Some((instance, rev)) = parse_snap_file(&file) {
                    let s = snaps.entry(instance.to_owned()).or_default();
                    // Without a mount, the highest kept revision stands in for the current one.
                    if s.revision.as_deref().is_none_or(|r| newer(rev, r)) {
                        s.revision = Some(rev.to_owned());
                    }
                }
            }
        }

        let mut mount_dirs = Vec::new();
        for m in MOUNT_DIRS {
            if let Ok(dir) = rooted::resolve(&ctx.root, m)
                && !mount_dirs.contains(&dir)
            {
                mount_dirs.push(dir);
            }
        }
        for dir in &mount_dirs {
            let Some(entries) = list(dir, &mut failures) else {
                continue;
            };
            seen_any = true;
            for (instance, ft) in entries {
                if !ft.is_dir() || instance == "bin" || instance.starts_with('.') {
                    continue;
                }
                let snap_dir = dir.join(&instance);
                let current = std::fs::read_link(snap_dir.join("current"))
                    .ok()
                    .and_then(|t| t.to_str().map(str::to_owned))
                    .filter(|t| is_revision(t));
                let revision = current.or_else(|| {
                    // No `current` link: any revision folder still shows an installation.
                    std::fs::read_dir(&snap_dir).ok()?.flatten().find_map(|e| {
                        let n = e.file_name().to_str()?.to_owned();
                        is_revision(&n).then_some(n)
                    })
                });
                let Some(revision) = revision else {
                    continue;
                };
                let version = yaml_version(&snap_dir.join(&revision).join("meta/snap.yaml"));
                let s = snaps.entry(instance).or_default();
                s.revision = Some(revision);
                if version.is_some() {
                    s.version = version;
                }
            }
        }

        for (instance, s) in snaps {
            let name = snap_name(&instance).to_owned();
            let mut detail = format!("snap {instance}");
            if let Some(v) = &s.version {
                detail.push_str(&format!(" {v}"));
            }
            if let Some(r) = &s.revision {
                detail.push_str(&format!(" (revision {r})"));
            }
            let mut item = InventoryItem::installed("snap", SignatureKind::Snap, name, detail);
            item.version = s.version;
            out.push(item);
        }

        if let Some(first) = failures.first() {
            SourceOutcome::Failed(first.clone())
        } else if seen_any {
            SourceOutcome::Ok
        } else {
            SourceOutcome::Absent
        }
    }
}

/// Whether revision `a` is newer than `b` (numeric; local `x` revisions after store ones).
fn newer(a: &str, b: &str) -> bool {
    let key = |r: &str| {
        let local = r.starts_with('x');
        let n: u64 = r.trim_start_matches('x').parse().unwrap_or(0);
        (local, n)
    };
    key(a) > key(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::platform::Platform;

    fn collect(root: &Path) -> (SourceOutcome, Vec<(String, Option<String>, String)>) {
        let mut out = Vec::new();
        let ctx = ScanContext::new(root, Platform::Linux, false);
        let outcome = Snap.collect(&ctx, &mut out);
        let items = out
            .into_iter()
            .map(|i| (i.ids[0].1.clone(), i.version, i.detail))
            .collect();
        (outcome, items)
    }

    #[test]
    fn snap_file_names_split_into_instance_and_revision() {
        assert_eq!(parse_snap_file("slack_163.snap"), Some(("slack", "163")));
        assert_eq!(
            parse_snap_file("telegram-desktop_work_x2.snap"),
            Some(("telegram-desktop_work", "x2"))
        );
        assert_eq!(parse_snap_file("slack.snap"), None);
        assert_eq!(parse_snap_file("slack_abc.snap"), None);
        assert_eq!(parse_snap_file("_1.snap"), None);
    }

    #[test]
    fn snap_files_and_mounts_merge_with_the_current_revisions_version() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let files = r.join("var/lib/snapd/snaps");
        std::fs::create_dir_all(files.join("partial")).unwrap();
        for f in [
            "slack_160.snap",
            "slack_163.snap",
            "teamspeak3_12.snap",
            "core22_1380.snap",
        ] {
            std::fs::write(files.join(f), b"hsqs").unwrap();
        }
        std::fs::create_dir_all(r.join("snap/bin")).unwrap();
        std::fs::create_dir_all(r.join("snap/slack/163/meta")).unwrap();
        std::fs::write(
            r.join("snap/slack/163/meta/snap.yaml"),
            "name: slack\nsummary: x\n  version: nested\nversion: '4.41.105'\n",
        )
        .unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("163", r.join("snap/slack/current")).unwrap();
        let (outcome, items) = collect(r);
        assert_eq!(outcome, SourceOutcome::Ok);
        assert_eq!(
            items,
            vec![
                ("core22".into(), None, "snap core22 (revision 1380)".into()),
                (
                    "slack".into(),
                    Some("4.41.105".into()),
                    "snap slack 4.41.105 (revision 163)".into()
                ),
                (
                    "teamspeak3".into(),
                    None,
                    "snap teamspeak3 (revision 12)".into()
                ),
            ]
        );
    }

    #[test]
    fn parallel_instances_match_by_store_name() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("var/lib/snapd/snaps");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("discord_work_200.snap"), b"").unwrap();
        let (_, items) = collect(dir.path());
        assert_eq!(items[0].0, "discord");
        assert_eq!(items[0].2, "snap discord_work (revision 200)");
    }

    #[test]
    fn no_snapd_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(collect(dir.path()).0, SourceOutcome::Absent);
    }
}
