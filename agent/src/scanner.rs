//! A scan: run every source of the platform, match the items, time it.
//!
//! The matcher is compiled once per [`Scanner`] and reused for every scan. A failing source
//! never stops the others: its outcome lands in `stats.sources`.

use crate::sources::{self, ScanContext, Source};
use commscan_core::catalog::Catalog;
use commscan_core::inventory::InventoryItem;
use commscan_core::mappings::CandidateMappings;
use commscan_core::matcher::Matcher;
use commscan_core::platform::Platform;
use commscan_core::scan::{ScanReport, ScanStats};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// The root of a scan of this machine: `/`, and on Windows the system drive's root (`C:\`,
/// from `%SystemDrive%`). A bare `/` on Windows is the root of the *current* drive, which is
/// another drive when the agent is started from one, and under Wine, which takes paths that
/// start with `/` for Unix paths, the Linux file system (`Z:\`).
pub fn host_root() -> PathBuf {
    if cfg!(windows) {
        let drive = std::env::var("SystemDrive")
            .ok()
            .filter(|d| d.len() == 2 && d.ends_with(':'))
            .unwrap_or_else(|| "C:".to_owned());
        PathBuf::from(format!("{drive}\\"))
    } else {
        PathBuf::from("/")
    }
}

impl ScanTarget {
    /// This machine: root [`host_root`], the host platform, processes included unless
    /// `no_processes`.
    pub fn host(no_processes: bool) -> Option<ScanTarget> {
        Some(ScanTarget {
            root: host_root(),
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
        let mut items = Vec::new();
        let mut stats = ScanStats::default();
        self.collect(target, sources, &mut items, &mut stats);
        self.finish(target.platform, &items, stats, start)
    }

    fn context(&self, target: &ScanTarget) -> ScanContext {
        ScanContext::with_catalog(
            target.root.clone(),
            target.platform,
            target.processes,
            self.catalog.clone(),
        )
    }

    /// Runs `sources`, appending their items and outcomes.
    pub fn collect(
        &self,
        target: &ScanTarget,
        sources: &[Box<dyn Source>],
        items: &mut Vec<InventoryItem>,
        stats: &mut ScanStats,
    ) {
        let ctx = self.context(target);
        for source in sources {
            let outcome = source.collect(&ctx, items);
            if let commscan_core::scan::SourceOutcome::Failed(why) = &outcome {
                tracing::warn!(source = source.name(), error = %why, "inventory source failed");
            }
            stats.sources.insert(source.name().to_owned(), outcome);
        }
    }

    /// Matches collected items into a report.
    pub fn finish(
        &self,
        platform: Platform,
        items: &[InventoryItem],
        mut stats: ScanStats,
        start: Instant,
    ) -> ScanReport {
        let (findings, unclassified) = self.matcher.match_all(items);
        stats.items_seen = items.len() as u64;
        stats.duration_ms = start.elapsed().as_millis() as u64;
        ScanReport {
            platform,
            findings,
            unclassified,
            stats,
        }
    }
}

/// What the agent observes, as the delivery loop sees it: full scans, cheap samples, and the
/// directories worth watching. [`HostInventory`] is the real one; tests substitute their own.
pub trait Inventory: Send + Sync {
    /// Every source.
    fn full(&self) -> ScanReport;
    /// Only the process table, combined with the installed items of the last full scan;
    /// `None` when there is nothing cheap to sample (no process source, no full scan yet).
    fn sample(&self) -> Option<ScanReport>;
    /// Directories whose changes should trigger a full scan.
    fn watch_paths(&self) -> Vec<PathBuf>;
    /// The platform reported in the hello.
    fn platform(&self) -> Platform;
    /// Scans with `catalog` from now on (a signed catalog was accepted); false when this
    /// inventory cannot change its catalog.
    fn use_catalog(&self, _catalog: &Catalog) -> bool {
        false
    }
    /// Applies the organisation's candidate decisions to every scan from now on
    /// ([`crate::candidate_mappings`]); false when this inventory cannot.
    fn use_mappings(&self, _mappings: Arc<CandidateMappings>) -> bool {
        false
    }
}

/// The sources of a target, run by a scanner.
pub struct HostInventory {
    /// Replaced whole when a signed catalog is accepted; a scan in progress keeps its own.
    scanner: std::sync::RwLock<Arc<Scanner>>,
    target: ScanTarget,
    /// Items and outcomes of the non-process sources at the last full scan.
    installed: Mutex<Option<(Vec<InventoryItem>, ScanStats)>>,
    /// The organisation's candidate decisions, applied to every scan.
    mappings: std::sync::RwLock<Arc<CandidateMappings>>,
}

impl std::fmt::Debug for HostInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostInventory")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

const PROCESS_SOURCE: &str = "process";

/// A list of sources.
type Sources = Vec<Box<dyn Source>>;

impl HostInventory {
    /// The inventory of `target`.
    pub fn new(scanner: Arc<Scanner>, target: ScanTarget) -> HostInventory {
        HostInventory {
            scanner: std::sync::RwLock::new(scanner),
            target,
            installed: Mutex::new(None),
            mappings: std::sync::RwLock::default(),
        }
    }

    /// The scanner in use.
    fn scanner(&self) -> Arc<Scanner> {
        self.scanner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `report` with the organisation's candidate decisions applied.
    fn decided(&self, mut report: ScanReport) -> ScanReport {
        let m = self
            .mappings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        m.apply(&mut report.findings, &mut report.unclassified);
        report
    }

    /// (installed-software sources, the process source).
    fn split(&self) -> (Sources, Sources) {
        sources::for_platform(self.target.platform)
            .into_iter()
            .partition(|s| s.name() != PROCESS_SOURCE)
    }
}

impl Inventory for HostInventory {
    fn full(&self) -> ScanReport {
        let start = Instant::now();
        let (installed, running) = self.split();
        let mut items = Vec::new();
        let mut stats = ScanStats::default();
        let scanner = self.scanner();
        scanner.collect(&self.target, &installed, &mut items, &mut stats);
        *self.installed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((items.clone(), stats.clone()));
        scanner.collect(&self.target, &running, &mut items, &mut stats);
        self.decided(scanner.finish(self.target.platform, &items, stats, start))
    }

    fn sample(&self) -> Option<ScanReport> {
        if !self.target.processes {
            return None;
        }
        let start = Instant::now();
        let (mut items, mut stats) = self
            .installed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let (_, running) = self.split();
        let scanner = self.scanner();
        scanner.collect(&self.target, &running, &mut items, &mut stats);
        Some(self.decided(scanner.finish(self.target.platform, &items, stats, start)))
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        let ctx = self.scanner().context(&self.target);
        sources::watch_paths(&ctx, &sources::for_platform(self.target.platform))
    }

    fn platform(&self) -> Platform {
        self.target.platform
    }

    fn use_catalog(&self, catalog: &Catalog) -> bool {
        let scanner = Arc::new(Scanner::new(catalog));
        *self.scanner.write().unwrap_or_else(|p| p.into_inner()) = scanner;
        // Installed items of the last full scan were matched under the old catalog only at
        // `finish`, so keeping them is correct: samples re-match them with the new one.
        true
    }

    fn use_mappings(&self, mappings: Arc<CandidateMappings>) -> bool {
        *self.mappings.write().unwrap_or_else(|p| p.into_inner()) = mappings;
        true
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

    #[test]
    fn the_watch_list_is_the_sources_existing_directories_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(r.join("usr/share/applications")).unwrap();
        std::fs::create_dir_all(r.join("home/alice/.local/share/applications")).unwrap();
        let inv = HostInventory::new(
            Arc::new(Scanner::new(&Catalog::embedded())),
            ScanTarget::tree(r, Platform::Linux),
        );
        let watched = inv.watch_paths();
        assert_eq!(
            watched,
            vec![
                r.join("home/alice/.local/share/applications"),
                r.join("usr/share/applications"),
                r.join("var/lib/dpkg"),
            ]
        );
        assert!(inv.sample().is_none(), "no processes in a tree");
    }
}
