//! The judge: catalog, registers and policies in force, applied to device records.
//!
//! One policy is the default; organisations may have their own (`--org-policy ORG=FILE`). The
//! catalog and registers are the embedded ones unless files replace them. All of it is loaded
//! and validated together from a [`RulesConfig`], so a reload either takes whole or not at all.
//!
//! Held behind a lock of an `Arc` so a reload swaps the whole set at once and a failed reload
//! leaves the previous one in force.

use crate::store::DeviceRecord;
use commscan_core::catalog::Catalog;
use commscan_core::policy::Policy;
use commscan_core::register::Registers;
use commscan_core::textpos::Problems;
use commscan_core::verdict::{Status, Subject};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// Where the rules come from; `None` means the embedded default.
#[derive(Debug, Clone, Default)]
pub struct RulesConfig {
    /// Catalog file.
    pub catalog: Option<PathBuf>,
    /// Registers file.
    pub registers: Option<PathBuf>,
    /// Default policy file.
    pub policy: Option<PathBuf>,
    /// Per-organisation policy files.
    pub org_policies: Vec<(String, PathBuf)>,
}

impl RulesConfig {
    /// The embedded catalog and registers with a default policy file.
    pub fn with_policy(policy: Option<&Path>) -> RulesConfig {
        RulesConfig {
            policy: policy.map(Path::to_path_buf),
            ..RulesConfig::default()
        }
    }
}

/// What judging needs, loaded and validated together.
#[derive(Debug)]
pub struct Rules {
    /// The catalog.
    pub catalog: Catalog,
    /// Registers checked against it.
    pub registers: Registers,
    /// The default policy, checked against both.
    pub policy: Policy,
    /// Policies of organisations that have their own.
    pub org_policies: BTreeMap<String, Policy>,
}

impl Rules {
    /// Loads and validates everything `config` names; every problem of every file at once.
    pub fn load(config: &RulesConfig) -> Result<Rules, Problems> {
        let catalog = match &config.catalog {
            Some(p) => Catalog::from_file(p)?,
            None => Catalog::embedded(),
        };
        let registers = match &config.registers {
            Some(p) => Registers::from_file(p, &catalog)?,
            None => Registers::embedded(&catalog)?,
        };
        let mut problems = Vec::new();
        let policy = match &config.policy {
            Some(p) => Policy::from_file(p, &catalog, &registers),
            None => Policy::embedded(&catalog, &registers),
        }
        .map_err(|e| problems.extend(e.0))
        .ok();
        let mut org_policies = BTreeMap::new();
        for (org, path) in &config.org_policies {
            match Policy::from_file(path, &catalog, &registers) {
                Ok(p) => {
                    org_policies.insert(org.clone(), p);
                }
                Err(e) => problems.extend(e.0),
            }
        }
        match policy {
            Some(policy) if problems.is_empty() => Ok(Rules {
                catalog,
                registers,
                policy,
                org_policies,
            }),
            _ => Err(Problems(problems)),
        }
    }

    /// The policy that judges `organisation`.
    pub fn policy_for(&self, organisation: &str) -> &Policy {
        self.org_policies.get(organisation).unwrap_or(&self.policy)
    }

    /// Re-judges a device record at `now`. Devices that never reported stay `unknown`; devices
    /// whose last report is older than `stale_after` are `stale` (their policy reasons are kept,
    /// so an officer still sees what they had), and never count as compliant.
    pub fn judge(
        &self,
        device: &mut DeviceRecord,
        now: OffsetDateTime,
        stale_after: std::time::Duration,
    ) {
        let Some(last) = device.last_report else {
            device.verdict.status = Status::Unknown;
            return;
        };
        let subject = Subject {
            device_id: &device.device_id,
            organisation: &device.organisation,
            first_seen: &device.first_seen,
        };
        let policy = self.policy_for(&device.organisation);
        device.verdict = policy.judge(subject, &device.findings, now);
        if now - last > stale_after {
            device.verdict.status = Status::Stale;
        }
        device.judged_at = Some(now);
        device.policy = policy.id.clone();
    }
}

/// The rules in force, swappable as a whole.
#[derive(Debug, Clone)]
pub(crate) struct Compliance {
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
