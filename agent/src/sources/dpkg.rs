//! The dpkg status database (source `dpkg`, `/var/lib/dpkg/status`).
//!
//! Read streaming, one paragraph at a time, keeping only `Package`, `Status` and `Version`.
//! A package counts as installed when its status (third word of `Status`) says its files are
//! on disk: `installed`, `half-configured`, `unpacked`, `triggers-awaited`,
//! `triggers-pending`. `config-files` (removed, configuration kept), `half-installed` and
//! `not-installed` do not count: `deinstall ok config-files` is not an installation.

use super::util::{outcome::open_outcome, text::for_each_line};
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::io::BufReader;

/// The dpkg source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dpkg;

const STATUS: &str = "/var/lib/dpkg/status";

#[derive(Default)]
struct Paragraph {
    package: Option<String>,
    status: Option<String>,
    version: Option<String>,
}

fn files_present(status: &str) -> bool {
    matches!(
        status.split_whitespace().nth(2),
        Some(
            "installed" | "half-configured" | "unpacked" | "triggers-awaited" | "triggers-pending"
        )
    )
}

impl Paragraph {
    fn finish(&mut self, out: &mut Vec<InventoryItem>) {
        let p = std::mem::take(self);
        if let (Some(name), Some(status)) = (p.package, p.status)
            && files_present(&status)
        {
            let detail = match &p.version {
                Some(v) => format!("package {name} {v}"),
                None => format!("package {name}"),
            };
            let mut item = InventoryItem::installed("dpkg", SignatureKind::Dpkg, name, detail);
            item.version = p.version;
            out.push(item);
        }
    }
}

/// Parses a dpkg status stream, appending installed packages. Returns the number of
/// malformed lines skipped.
pub(crate) fn parse(
    reader: impl std::io::BufRead,
    out: &mut Vec<InventoryItem>,
) -> std::io::Result<usize> {
    let mut para = Paragraph::default();
    let mut bad = 0;
    for_each_line(reader, |line, truncated| {
        if truncated {
            bad += 1;
            return;
        }
        if line.trim().is_empty() {
            para.finish(out);
            return;
        }
        if line.starts_with([' ', '\t']) {
            return; // continuation of a multi-line field we do not keep
        }
        let Some((field, value)) = line.split_once(':') else {
            bad += 1;
            return;
        };
        let value = value.trim();
        match field {
            "Package" => {
                // A Package field without a blank line before it starts a new paragraph.
                if para.package.is_some() {
                    para.finish(out);
                }
                para.package = Some(value.to_owned());
            }
            "Status" => para.status = Some(value.to_owned()),
            "Version" => para.version = Some(value.to_owned()),
            _ => {}
        }
    })?;
    para.finish(out);
    Ok(bad)
}

impl Source for Dpkg {
    fn name(&self) -> &'static str {
        "dpkg"
    }

    fn watch_paths(&self, ctx: &ScanContext) -> Vec<std::path::PathBuf> {
        // dpkg replaces the status file by renaming: watch its directory.
        vec![ctx.path("/var/lib/dpkg")]
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        let path = ctx.path(STATUS);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return open_outcome(&path, &e),
        };
        match parse(BufReader::new(file), out) {
            Ok(0) => SourceOutcome::Ok,
            Ok(bad) => {
                SourceOutcome::Failed(format!("{}: {bad} malformed lines skipped", path.display()))
            }
            Err(e) => SourceOutcome::Failed(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        parse(std::io::Cursor::new(text), &mut out).unwrap();
        out.into_iter()
            .map(|i| (i.ids[0].1.clone(), i.version))
            .collect()
    }

    #[test]
    fn only_packages_with_files_on_disk_count() {
        let text = "Package: zoom\nStatus: install ok installed\nVersion: 6.1.0\nDescription: video\n more text\n\n\
Package: skypeforlinux\nStatus: deinstall ok config-files\nVersion: 8.1\n\n\
Package: slack-desktop\nStatus: install ok unpacked\nVersion: 4.41\n\n\
Package: teams\nStatus: purge ok not-installed\n\n\
Package: discord\nStatus: install reinstreq half-installed\n";
        assert_eq!(
            names(text),
            vec![
                ("zoom".into(), Some("6.1.0".into())),
                ("slack-desktop".into(), Some("4.41".into()))
            ]
        );
    }

    #[test]
    fn truncated_file_keeps_complete_paragraphs() {
        let text = "Package: zoom\nStatus: install ok installed\nVersion: 6.1.0\n\nPackage: telegram-desktop\nStat";
        assert_eq!(names(text), vec![("zoom".into(), Some("6.1.0".into()))]);
    }

    #[test]
    fn missing_database_is_absent_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ScanContext::new(dir.path(), commscan_core::platform::Platform::Linux, false);
        assert_eq!(Dpkg.collect(&ctx, &mut Vec::new()), SourceOutcome::Absent);
    }
}
