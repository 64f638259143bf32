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
use std::time::Instant;

/// Runs scans with a compiled catalog.
pub struct Scanner {
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
        let ctx = ScanContext {
            root: target.root.clone(),
            platform: target.platform,
            processes: target.processes,
        };
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
