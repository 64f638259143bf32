//! The observer: triggers → scan → spool.
//!
//! Triggers: a full scan at start and then every `full_scan_interval` jittered by up to a
//! tenth either way (so a fleet restarted together spreads out); a process-only sample
//! every `process_sample_interval`; a full scan `watch_debounce` after the last change in a
//! watched directory (at most ten debounce periods after the first, so a long install
//! cannot postpone it forever); a full scan when the collector sends Command RESCAN. The
//! watch list is the sources' directories under the root ([`Inventory::watch_paths`]),
//! refreshed after every full scan so that directories created since are watched too.
//!
//! [`Inventory::watch_paths`]: crate::scanner::Inventory::watch_paths

use super::{AgentEvent, Shared, now};
use crate::device_state::State;
use crate::spool::{Observation, SpoolError};
use commscan_core::scan::{ScanReport, SourceOutcome};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What triggered a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// The periodic full scan (or the one at start).
    Full,
    /// The cheap process sample.
    Sample,
    /// A change in a watched directory.
    Watch,
    /// The collector asked.
    Rescan,
}

impl ScanKind {
    fn as_str(self) -> &'static str {
        match self {
            ScanKind::Full => "full",
            ScanKind::Sample => "sample",
            ScanKind::Watch => "watch",
            ScanKind::Rescan => "rescan",
        }
    }
}

/// `d` moved by a random amount of up to a tenth either way.
pub fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        0
    };
    let tenth = d.as_millis() as u64 / 10;
    if tenth == 0 {
        return d;
    }
    d - Duration::from_millis(tenth) + Duration::from_millis(r % (2 * tenth + 1))
}

/// How long a quarantine stays in the reports' `spool` entry.
const QUARANTINE_REPORTED: i64 = 7 * 86_400;

/// Scans (on the blocking pool) and records the result; tells the sender.
pub(crate) async fn scan_now(shared: &Arc<Shared>, kind: ScanKind) -> Result<(), SpoolError> {
    let inventory = shared.inventory.clone();
    let full = kind != ScanKind::Sample;
    let report: Option<ScanReport> = tokio::task::spawn_blocking(move || {
        if full {
            Some(inventory.full())
        } else {
            inventory.sample()
        }
    })
    .await
    .expect("scans do not panic");
    let Some(report) = report else {
        return Ok(());
    };
    let mut stats = report.stats.clone();
    let view = shared.spool.view();
    if let Some(q) = &view.meta.quarantine
        && now() - q.at < QUARANTINE_REPORTED
    {
        // Tell the collector, beside the sources, that unacknowledged changes were lost.
        stats.sources.insert(
            "spool".into(),
            SourceOutcome::Failed(format!(
                "quarantined a corrupt spool at {} ({}); started a fresh one",
                q.at, q.reason
            )),
        );
    }
    let observed = shared.spool.observe(Observation {
        state: State::from_report(&report),
        stats,
        scanned_at: now(),
        report: full,
    })?;
    if observed.fell_back {
        tracing::warn!("spool cap reached: the next report is a snapshot");
    }
    tracing::debug!(
        kind = kind.as_str(),
        changes = observed.changes,
        "scan recorded"
    );
    if kind == ScanKind::Sample && observed.changes == 0 {
        // Nothing new to tell: no status write every 30 s.
        return Ok(());
    }
    shared.set_status(|s| {
        s.last_scan = Some(crate::status::ScanNote {
            at: now(),
            kind: kind.as_str().into(),
            duration_ms: report.stats.duration_ms,
            changes: observed.changes,
        })
    });
    shared.emit(AgentEvent::Scanned {
        kind,
        changes: observed.changes,
        fell_back: observed.fell_back,
    });
    if observed.sendable {
        shared.ready.notify_one();
    }
    Ok(())
}

/// File-system watcher feeding a [`Notify`].
struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: Vec<PathBuf>,
    changed: Arc<Notify>,
}

impl Watch {
    fn new(enabled: bool) -> Watch {
        let changed = Arc::new(Notify::new());
        let tx = changed.clone();
        let watcher = enabled
            .then(|| {
                notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                    if let Ok(e) = res
                        && !e.kind.is_access()
                    {
                        tx.notify_one();
                    }
                })
                .inspect_err(|e| tracing::warn!(error = %e, "file watching unavailable; relying on periodic scans"))
                .ok()
            })
            .flatten();
        Watch {
            watcher,
            watched: Vec::new(),
            changed,
        }
    }

    fn set(&mut self, paths: Vec<PathBuf>) {
        use notify::Watcher as _;
        let Some(w) = &mut self.watcher else { return };
        if paths == self.watched {
            return;
        }
        for p in &self.watched {
            let _ = w.unwatch(p);
        }
        self.watched.clear();
        for p in paths {
            match w.watch(&p, notify::RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(p),
                Err(e) => tracing::debug!(path = %p.display(), error = %e, "cannot watch"),
            }
        }
        // Logged when the set changes: at start, then when an install or removal changed it.
        tracing::info!(dirs = self.watched.len(), "watching for installs");
    }
}

/// The observer loop.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let t = shared.config.triggers.clone();
    let mut watch = Watch::new(t.watch);
    let mut next_full = Instant::now();
    let mut next_sample = t.process_sample_interval.map(|i| Instant::now() + i);
    // (first change, deadline) of a pending watch trigger.
    let mut watch_due: Option<(Instant, Instant)> = None;
    let changed = watch.changed.clone();
    // Watched before the first scan too, so that an install during that scan is not missed
    // until the next full one; refreshed after every full or watch scan below.
    if t.watch {
        let inventory = shared.inventory.clone();
        if let Ok(paths) = tokio::task::spawn_blocking(move || inventory.watch_paths()).await {
            watch.set(paths);
        }
    }
    loop {
        let kind = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next_full) => ScanKind::Full,
            _ = tokio::time::sleep_until(next_sample.unwrap_or(next_full)), if next_sample.is_some() => ScanKind::Sample,
            _ = tokio::time::sleep_until(watch_due.map(|w| w.1).unwrap_or(next_full)), if watch_due.is_some() => ScanKind::Watch,
            _ = shared.rescan.notified() => ScanKind::Rescan,
            _ = changed.notified() => {
                let now = Instant::now();
                let first = watch_due.map(|w| w.0).unwrap_or(now);
                let deadline = (now + t.watch_debounce).min(first + t.watch_debounce * 10);
                watch_due = Some((first, deadline));
                continue;
            }
        };
        if let Err(e) = scan_now(&shared, kind).await {
            tracing::error!(error = %e, "cannot record a scan in the spool");
        }
        if kind != ScanKind::Sample {
            // The scan's buffers are dropped: give their pages back while the agent waits.
            crate::memory::trim();
        }
        match kind {
            ScanKind::Sample => {
                next_sample = t.process_sample_interval.map(|i| Instant::now() + i);
            }
            _ => {
                watch_due = None;
                if kind == ScanKind::Full {
                    next_full = Instant::now() + jittered(t.full_scan_interval);
                }
                if t.watch {
                    let inventory = shared.inventory.clone();
                    if let Ok(paths) =
                        tokio::task::spawn_blocking(move || inventory.watch_paths()).await
                    {
                        watch.set(paths);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth() {
        let h = Duration::from_secs(3600);
        for _ in 0..200 {
            let j = jittered(h);
            assert!(
                j >= Duration::from_secs(3240) && j <= Duration::from_secs(3960),
                "{j:?}"
            );
        }
    }
}
