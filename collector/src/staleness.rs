//! Staleness: a device that misses its reporting window becomes `stale`, and never counts as
//! compliant, without any report arriving to trigger it.
//!
//! The store keeps an index of devices by last report (`by_last_report`); [`Collector::sweep_stale`]
//! reads only the devices whose last report is older than the window, re-judges them (which marks
//! them stale), and writes them back through the normal transactional path, so aggregates,
//! trends and history follow. Stale devices leave the index; their next report puts them back.

use crate::collector::Collector;
use crate::error::CollectorError;
use commscan_core::verdict::Status;

/// Devices re-judged per sweep batch.
pub const SWEEP_BATCH: usize = 1000;

impl Collector {
    /// Marks every device past its reporting window stale. Returns how many changed.
    pub fn sweep_stale(&self) -> Result<usize, CollectorError> {
        let now = self.now();
        let cutoff = now - self.stale_after();
        let mut changed = 0;
        loop {
            let ids = self.store().stale_candidates(cutoff, SWEEP_BATCH)?;
            let batch = ids.len();
            let changed_before = changed;
            for id in ids {
                let _device_lock = self.lock_device(&id)?;
                let Some(mut device) = self.store().device(&id)? else {
                    continue;
                };
                let before = device.verdict.status;
                self.judge(&mut device, now);
                if device.verdict.status == Status::Stale && before != Status::Stale {
                    changed += 1;
                    tracing::info!(device = %id, organisation = %device.organisation, "device is stale");
                }
                // Written even when unchanged, so a device that is not stale after all (its
                // report raced the sweep) is re-indexed under its new report time.
                self.store_device(&device, before, now)?;
            }
            // A full batch with no change would be read again: stop rather than spin.
            if batch < SWEEP_BATCH || changed == changed_before {
                break;
            }
        }
        if changed > 0 {
            self.store().flush()?;
        }
        Ok(changed)
    }
}
