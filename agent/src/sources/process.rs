//! Running processes (source `process`), from the live process table (sysinfo).
//!
//! Only executable base names are kept (`zoom`, `Telegram`, `Zoom.exe`): no command lines, no
//! paths (they would name users), no process ids. This source reads the machine the agent runs
//! on, so it is skipped for `--root` scans of another tree.

use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::platform::Platform;
use commscan_core::scan::SourceOutcome;
use std::collections::BTreeSet;
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

/// The process source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process;

/// The signature kind of executable names on a platform.
pub(crate) fn exe_kind(platform: Platform) -> SignatureKind {
    match platform {
        Platform::Linux => SignatureKind::LinuxExe,
        Platform::Macos => SignatureKind::MacExe,
        Platform::Windows => SignatureKind::WinExe,
    }
}

/// Turns executable names into running items, one per distinct name.
pub fn items_from_names(
    platform: Platform,
    names: impl IntoIterator<Item = String>,
    out: &mut Vec<InventoryItem>,
) {
    let distinct: BTreeSet<String> = names.into_iter().filter(|n| !n.is_empty()).collect();
    let kind = exe_kind(platform);
    out.extend(
        distinct
            .into_iter()
            .map(|n| InventoryItem::running("process", kind, n.clone(), format!("process {n}"))),
    );
}

impl Source for Process {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        if !ctx.processes {
            return SourceOutcome::Skipped;
        }
        let mut sys = System::new();
        sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_exe(UpdateKind::OnlyIfNotSet),
        );
        let names = sys.processes().values().map(|p| {
            p.exe()
                .and_then(|e| e.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.name().to_string_lossy().into_owned())
        });
        items_from_names(ctx.platform, names, out);
        SourceOutcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deduplicated_and_typed_per_platform() {
        let mut out = Vec::new();
        items_from_names(
            Platform::Windows,
            ["Zoom.exe".into(), "Zoom.exe".into(), String::new()],
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].ids,
            vec![(SignatureKind::WinExe, "Zoom.exe".to_owned())]
        );
    }

    #[test]
    fn skipped_for_offline_roots() {
        let ctx = ScanContext::new("/nonexistent", Platform::Linux, false);
        assert_eq!(
            Process.collect(&ctx, &mut Vec::new()),
            SourceOutcome::Skipped
        );
    }

    #[test]
    fn this_machine_has_processes() {
        let ctx = ScanContext::new("/", Platform::Linux, true);
        let mut out = Vec::new();
        assert_eq!(Process.collect(&ctx, &mut out), SourceOutcome::Ok);
        assert!(
            !out.is_empty(),
            "at least the test process itself is running"
        );
    }
}
