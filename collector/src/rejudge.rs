//! Policy and catalog changes: swap the rules in force, then re-judge every device from its
//! stored findings, without a rescan. Each device is rewritten through the store's normal
//! transactional path, so the organisation aggregates follow.
//!
//! A reload that fails validation returns every problem and leaves the rules in force untouched.
//! A reload that re-judged every device is announced to every connected agent
//! ([`crate::connections::Connections::announce_policy_change`]).
//!
//! At start, `serve` listens first and re-judges in the background ([`spawn_rejudge_at_start`]):
//! a restarted collector takes its agents back at once instead of after re-judging its whole
//! fleet (16,000 devices: several seconds). This is safe because re-judging holds each
//! device's lock while it reads, judges and writes the device back, as applying a report does:
//! a report applied meanwhile is judged under the rules in force and not overwritten, and a
//! device re-judged after it is read afresh. Until the pass ends, devices it has not reached
//! yet show the verdict stored under the previous policy in queries, exports and aggregates
//! (as they would have before the restart); the pass logs `devices judged under the policy in
//! force` when done. A reload during the pass re-judges everything again under its rules.

use crate::collector::Collector;
use crate::compliance::{Rules, RulesConfig, Sources};
use crate::error::CollectorError;
use commscan_core::textpos::Problems;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a re-judgement changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejudged {
    /// Devices looked at.
    pub devices: usize,
    /// Devices whose status changed.
    pub changed: usize,
}

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new rules are invalid; the previous ones stay in force.
    #[error("reload refused, previous policy stays in force: {0}")]
    Invalid(#[from] Problems),
    /// The new catalog is signed by none of the collector's catalog keys; the previous rules
    /// stay in force.
    #[error("reload refused, previous policy stays in force: {0}")]
    Untrusted(#[from] crate::catalog_trust::Untrusted),
    /// Re-judging failed part-way; the new rules are in force and the next report or reload
    /// finishes the job.
    #[error("re-judging devices: {0}")]
    Rejudge(#[from] CollectorError),
}

impl Collector {
    /// Re-judges every stored device under the rules in force now.
    pub fn rejudge_all(&self) -> Result<Rejudged, CollectorError> {
        self.rejudge(self.store().device_ids()?)
    }

    /// [`Collector::rejudge_all`], stopping between two devices once `stop` fires (what was
    /// re-judged by then is stored and flushed).
    pub fn rejudge_all_until(&self, stop: &CancellationToken) -> Result<Rejudged, CollectorError> {
        self.rejudge_until(self.store().device_ids()?, Some(stop))
    }

    /// Re-judges the devices of `organisation`.
    pub(crate) fn rejudge_organisation(
        &self,
        organisation: &str,
    ) -> Result<Rejudged, CollectorError> {
        let filter = crate::store::DeviceFilter {
            organisation: Some(organisation.to_owned()),
            ..Default::default()
        };
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store()
                .list_devices(&filter, cursor.as_deref(), 1000)?;
            ids.extend(page.devices.into_iter().map(|d| d.device_id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        self.rejudge(ids)
    }

    /// Re-judges `ids` under the rules in force now; a device no longer stored is skipped.
    pub(crate) fn rejudge(&self, ids: Vec<String>) -> Result<Rejudged, CollectorError> {
        self.rejudge_until(ids, None)
    }

    fn rejudge_until(
        &self,
        ids: Vec<String>,
        stop: Option<&CancellationToken>,
    ) -> Result<Rejudged, CollectorError> {
        let mut out = Rejudged::default();
        for id in ids {
            if stop.is_some_and(CancellationToken::is_cancelled) {
                break;
            }
            let _device_lock = self.lock_device(&id)?;
            // Read under the lock: a pass running beside ingest (at start) judges each device
            // at its own time, after any report applied before it.
            let now = self.now();
            let Some(mut device) = self.store().device(&id)? else {
                continue;
            };
            let before = device.verdict.clone();
            self.apply_classifications(&mut device)?;
            self.judge(&mut device, now);
            out.devices += 1;
            // Revoked by a collector that still counted revoked devices: left out now.
            let uncount = device.revoked && !device.uncounted;
            device.uncounted |= device.revoked;
            if device.verdict != before || uncount {
                if device.verdict.status != before.status {
                    out.changed += 1;
                    tracing::info!(device = %id, from = %before.status, to = %device.verdict.status, "verdict changed by policy");
                }
                self.store_device(&device, before.status, now)?;
            }
        }
        self.store().flush()?;
        Ok(out)
    }

    /// Reads the files `config` names as the new base, lays the stored versions over it
    /// ([`crate::stored_rules`]) and, if all of it is valid, puts them in force and re-judges
    /// every device.
    pub fn reload(&self, config: &RulesConfig) -> Result<Rejudged, ReloadError> {
        let _one_at_a_time = self
            .rules_changes()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let base = Sources::read(config)?;
        let stored = self.store().current_rules().map_err(CollectorError::from)?;
        let rules = Rules::parse(base.overlay(&stored))?;
        crate::catalog_trust::check(&rules, self.catalog_keys())?;
        let id = rules.policy.id.clone();
        self.set_base_rules(base);
        self.replace_rules(rules);
        let r = self.rejudge_all()?;
        self.connections().announce_policy_change();
        tracing::info!(policy = %id, devices = r.devices, changed = r.changed, "policy reloaded");
        Ok(r)
    }
}

/// Re-judges every stored device on a blocking thread while the collector serves (see the
/// module documentation), until done or `stop` fires. A failure is logged: the rules are in
/// force, and the next report of each device or the next reload judges it.
pub fn spawn_rejudge_at_start(
    collector: Arc<Collector>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Option<Rejudged>> {
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        match collector.rejudge_all_until(&stop) {
            Ok(r) => {
                tracing::info!(
                    devices = r.devices,
                    changed = r.changed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    complete = !stop.is_cancelled(),
                    "devices judged under the policy in force"
                );
                Some(r)
            }
            Err(e) => {
                tracing::error!(error = %e, "re-judging stored devices at start failed; each is judged at its next report or reload");
                None
            }
        }
    })
}
