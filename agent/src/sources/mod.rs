//! Inventory sources: what is installed or running on a device, read from a root path (default
//! `/`) so tests and auditors point a scan at a directory tree or a mounted disk.
//!
//! # Design
//! - One module per source, named after the source (the name in evidence and `stats.sources`):
//!   [`dpkg`], [`rpm`], [`snap`], [`flatpak`], [`desktop`], [`appimage`] (Linux); [`macos_app`]
//!   (macOS); [`windows_registry`], [`appx`] (Windows); [`install_path`] (Linux and Windows, one
//!   submodule each); [`pwa`] and [`process`] (every platform). [`for_platform`] lists what runs
//!   where, in order.
//! - A source appends [`InventoryItem`]s to a vector and returns a [`SourceOutcome`] (`ok`,
//!   `absent`, `skipped`, `failed: ...`), so "not collected" is never confused with "not
//!   installed". It must not panic on any input, must read files streaming with bounded line
//!   lengths, and must carry on past one bad entry.
//! - A source reads only the scanned tree, never the host's files (except [`process`], the live
//!   process table, which is skipped for other trees), and never writes to it.
//! - What the sources share and that is not a source lives in [`util`]: bounded walks and
//!   reads, path resolution inside the root, the users of the scanned system, the registry hive
//!   reader. [`ScanContext`] carries what every source reads: root, platform, catalog and the
//!   users' homes, enumerated once per scan.

use commscan_core::catalog::Catalog;
use commscan_core::inventory::InventoryItem;
use commscan_core::platform::Platform;
use commscan_core::scan::SourceOutcome;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub(crate) mod appimage;
pub(crate) mod appx;
pub(crate) mod desktop;
pub(crate) mod dpkg;
pub(crate) mod flatpak;
pub(crate) mod install_path;
pub(crate) mod macos_app;
pub mod process;
pub(crate) mod pwa;
pub mod rpm;
pub(crate) mod snap;
pub(crate) mod util;
pub(crate) mod windows_registry;

/// What a scan reads.
#[derive(Debug, Clone)]
pub struct ScanContext {
    /// The root of the tree to read (`/` for this machine).
    pub(crate) root: PathBuf,
    /// The platform the tree belongs to.
    pub platform: Platform,
    /// Whether to read the live process table (only meaningful for this machine).
    pub(crate) processes: bool,
    /// The catalog, for sources that probe known locations (install paths) instead of
    /// enumerating everything.
    pub(crate) catalog: Arc<Catalog>,
    homes: Arc<OnceLock<Vec<util::users::Home>>>,
}

impl ScanContext {
    /// A context with the embedded catalog (the sources' unit tests).
    #[cfg(test)]
    pub(crate) fn new(
        root: impl Into<PathBuf>,
        platform: Platform,
        processes: bool,
    ) -> ScanContext {
        ScanContext::with_catalog(root, platform, processes, Arc::new(Catalog::embedded()))
    }

    /// A context with a given catalog.
    pub(crate) fn with_catalog(
        root: impl Into<PathBuf>,
        platform: Platform,
        processes: bool,
        catalog: Arc<Catalog>,
    ) -> ScanContext {
        ScanContext {
            root: root.into(),
            platform,
            processes,
            catalog,
            homes: Arc::new(OnceLock::new()),
        }
    }

    /// Users' home directories of the scanned system, enumerated once per scan.
    pub(crate) fn homes(&self) -> &[util::users::Home] {
        self.homes.get_or_init(|| util::users::homes(self))
    }

    /// `rel` (an absolute path of the scanned system) under the root.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

/// One inventory source.
pub trait Source: Send + Sync {
    /// Name used in evidence and `stats.sources`.
    fn name(&self) -> &'static str;
    /// Reads the source, appending items.
    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome;
    /// Directories (under the root) whose entries change when software is installed or
    /// removed, for the agent's file-watch triggers; the default is none.
    fn watch_paths(&self, _ctx: &ScanContext) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// The directories every source of `sources` watches, de-duplicated, existing ones only.
pub(crate) fn watch_paths(ctx: &ScanContext, sources: &[Box<dyn Source>]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = sources
        .iter()
        .flat_map(|s| s.watch_paths(ctx))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The sources of a platform, in the order they run.
pub fn for_platform(platform: Platform) -> Vec<Box<dyn Source>> {
    match platform {
        Platform::Linux => vec![
            Box::new(dpkg::Dpkg),
            Box::new(rpm::Rpm),
            Box::new(snap::Snap),
            Box::new(flatpak::Flatpak),
            Box::new(desktop::Desktop),
            Box::new(appimage::Appimage),
            Box::new(install_path::linux::InstallPath),
            Box::new(pwa::Pwa),
            Box::new(process::Process),
        ],
        Platform::Macos => vec![
            Box::new(macos_app::MacosApp),
            Box::new(pwa::Pwa),
            Box::new(process::Process),
        ],
        Platform::Windows => vec![
            Box::new(windows_registry::WindowsRegistry),
            Box::new(appx::Appx),
            Box::new(install_path::windows::InstallPath),
            Box::new(pwa::Pwa),
            Box::new(process::Process),
        ],
    }
}
