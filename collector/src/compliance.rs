//! The judge: catalog, registers and policy in force, applied to device records.
//!
//! Held behind a lock of an `Arc` so a reload swaps the whole set at once and a failed reload
//! leaves the previous one in force.

use crate::store::DeviceRecord;
use commscan_core::catalog::Catalog;
use commscan_core::policy::Policy;
use commscan_core::register::Registers;
use commscan_core::textpos::Problems;
use commscan_core::verdict::{Status, Subject};
use std::path::Path;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// What judging needs, loaded and validated together.
#[derive(Debug)]
pub struct Rules {
    /// The catalog.
    pub catalog: Catalog,
    /// Registers checked against it.
    pub registers: Registers,
    /// The policy checked against both.
    pub policy: Policy,
}

impl Rules {
    /// The embedded catalog and registers with the policy at `policy` (or the embedded default).
    pub fn load(policy: Option<&Path>) -> Result<Rules, Problems> {
        let catalog = Catalog::embedded();
        let registers = Registers::embedded(&catalog)?;
        let policy = match policy {
            Some(p) => Policy::from_file(p, &catalog, &registers)?,
            None => Policy::embedded(&catalog, &registers)?,
        };
        Ok(Rules {
            catalog,
            registers,
            policy,
        })
    }

    /// Re-judges a device record at `now`. Devices that never reported stay `unknown`.
    pub fn judge(&self, device: &mut DeviceRecord, now: OffsetDateTime) {
        if device.last_report.is_none() {
            device.verdict.status = Status::Unknown;
            return;
        }
        let subject = Subject {
            device_id: &device.device_id,
            organisation: &device.organisation,
            first_seen: &device.first_seen,
        };
        device.verdict = self.policy.judge(subject, &device.findings, now);
        device.judged_at = Some(now);
        device.policy = self.policy.id.clone();
    }
}

/// The rules in force, swappable as a whole.
#[derive(Debug, Clone)]
pub struct Compliance {
    current: Arc<RwLock<Arc<Rules>>>,
}

impl Compliance {
    /// Starts with `rules`.
    pub fn new(rules: Rules) -> Compliance {
        Compliance {
            current: Arc::new(RwLock::new(Arc::new(rules))),
        }
    }

    /// Puts new rules in force.
    pub fn replace(&self, rules: Rules) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
