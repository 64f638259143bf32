//! A scan: run every source of the platform, match the items, time it.
//!
//! The matcher is compiled once per [`Scanner`] and reused for every scan. A failing source
//! never stops the others: its outcome lands in `stats.sources`.

use crate::sources::{self, ScanContext, Source};
use commscan_core::catalog::Catalog;
use commscan_core::matcher::Matcher;
use commscan_core::platform::Platform;
use commscan_core::scan::{ScanReport, ScanStats};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Runs scans with a compiled catalog.
pub struct Scanner {
    catalog: Arc<Catalog>,
    matcher: Matcher,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").finish_non_exhaustive()
    }
}

/// Where and what to scan.
#[derive(Debug, Clone)]
pub struct ScanTarget {
    /// Root of the tree.
    pub root: PathBuf,
    /// Platform of the tree.
    pub platform: Platform,
    /// Read the live process table.
    pub processes: bool,
}

impl ScanTarget {
    /// This machine: root `/`, the host platform, processes included unless `no_processes`.
    pub fn host(no_processes: bool) -> Option<ScanTarget> {
        Some(ScanTarget {
            root: PathBuf::from("/"),
            platform: Platform::host()?,
            processes: !no_processes,
        })
    }

    /// The platform a tree belongs to, from marker files: `Windows/System32`, macOS's
    /// `System/Library/CoreServices/SystemVersion.plist` or `/Applications` beside `/Users`,
    /// Linux's `etc/os-release` or package databases. `None` if nothing tells.
    pub fn detect_platform(root: &Path) -> Option<Platform> {
        let has = |rel: &str| root.join(rel).exists();
        if has("Windows/System32") || has("windows/system32") {
            Some(Platform::Windows)
        } else if has("System/Library/CoreServices/SystemVersion.plist")
            || (has("Applications") && has("Users"))
        {
            Some(Platform::Macos)
        } else if has("etc/os-release")
            || has("var/lib/dpkg")
            || has("var/lib/rpm")
            || has("usr/share/applications")
        {
            Some(Platform::Linux)
        } else {
            None
        }
    }

    /// Another tree (a fixture or a mounted disk): processes are never read.
    pub fn tree(root: &Path, platform: Platform) -> ScanTarget {
        ScanTarget {
            root: root.to_path_buf(),
            platform,
            processes: false,
        }
    }
}

impl Scanner {
    /// Compiles the catalog.
    pub fn new(catalog: &Catalog) -> Scanner {
        Scanner {
            catalog: Arc::new(catalog.clone()),
            matcher: Matcher::new(catalog),
        }
    }

    /// Scans a target with the platform's sources.
    pub fn scan(&self, target: &ScanTarget) -> ScanReport {
        self.scan_with(target, &sources::for_platform(target.platform))
    }

    /// Scans with the given sources (tests pick their own).
    pub fn scan_with(&self, target: &ScanTarget, sources: &[Box<dyn Source>]) -> ScanReport {
        let start = Instant::now();
        let ctx = ScanContext::with_catalog(
            target.root.clone(),
            target.platform,
            target.processes,
            self.catalog.clone(),
        );
        let mut items = Vec::new();
        let mut stats = ScanStats::default();
        for source in sources {
            let outcome = source.collect(&ctx, &mut items);
            if let commscan_core::scan::SourceOutcome::Failed(why) = &outcome {
                tracing::warn!(source = source.name(), error = %why, "inventory source failed");
            }
            stats.sources.insert(source.name().to_owned(), outcome);
        }
        let (findings, unclassified) = self.matcher.match_all(&items);
        stats.items_seen = items.len() as u64;
        stats.duration_ms = start.elapsed().as_millis() as u64;
        ScanReport {
            platform: target.platform,
            findings,
            unclassified,
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_is_detected_from_marker_files() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        assert_eq!(ScanTarget::detect_platform(r), None);
        std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
        assert_eq!(ScanTarget::detect_platform(r), Some(Platform::Linux));
        std::fs::create_dir_all(r.join("Applications")).unwrap();
        std::fs::create_dir_all(r.join("Users")).unwrap();
        assert_eq!(ScanTarget::detect_platform(r), Some(Platform::Macos));
        std::fs::create_dir_all(r.join("Windows/System32")).unwrap();
        assert_eq!(ScanTarget::detect_platform(r), Some(Platform::Windows));
    }
}
