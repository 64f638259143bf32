//! The catalog grows from the field: an officer maps an unclassified candidate seen in their
//! organisation to a catalog product, or dismisses it.
//!
//! Decisions are stored per organisation and applied by the collector to every report from then
//! on ([`Collector::apply_classifications`]): a mapped candidate becomes a finding of the product
//! (installed, with the agent's evidence and the officer's decision named), a dismissed one is
//! dropped. Existing devices of the organisation are re-judged at once. The organisation's
//! agents are sent its decisions too ([`crate::mappings`]) and apply them to their own scans
//! with the same code ([`commscan_core::mappings`]); the collector applies them anyway, so a
//! report from an agent that has not heard yet (or predates mappings) is judged the same.

use crate::auth::{Access, Principal};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{Classification, DeviceFilter, DeviceRecord};
use commscan_core::mappings::{MAX_MAPPINGS, apply_decision, officer_mapped, take_out_mapping_of};

impl Collector {
    /// Turns a device's unclassified candidates into findings or drops them, as its
    /// organisation decided.
    pub(crate) fn apply_classifications(
        &self,
        device: &mut DeviceRecord,
    ) -> Result<(), CollectorError> {
        if device.unclassified.is_empty() {
            return Ok(());
        }
        let decisions = self.store().classifications(&device.organisation)?;
        if decisions.is_empty() {
            return Ok(());
        }
        let mut keep = Vec::with_capacity(device.unclassified.len());
        for u in std::mem::take(&mut device.unclassified) {
            match decisions.iter().find(|(name, _)| *name == u.name) {
                None => keep.push(u),
                // Every stored decision, through the function agents apply (the store may
                // hold decisions beyond the bounds of what agents are sent).
                Some((_, c)) => apply_decision(&u, &c.into(), &mut device.findings),
            }
        }
        device.unclassified = keep;
        Ok(())
    }

    /// Records an officer's decision and applies it to the organisation's devices now.
    pub fn classify_candidate(
        &self,
        who: &Principal,
        org: &str,
        name: &str,
        decision: Classification,
    ) -> Result<usize, CollectorError> {
        self.check(who, Access::ManageDevices, Some(org), "candidates.classify")?;
        if name.trim().is_empty() {
            return Err(CollectorError::InvalidArgument("name: required".into()));
        }
        if let Classification::Product { product } = &decision {
            let catalog = &self.rules().catalog;
            if !catalog.contains(product) {
                return Err(CollectorError::InvalidArgument(format!(
                    "product: {} (see `commscanctl catalog list`)",
                    commscan_core::suggest::unknown(
                        "product",
                        product,
                        catalog.products().iter().map(|p| p.id.as_str())
                    )
                )));
            }
        }
        // Only a name the organisation's devices reported (or one already decided, to change
        // the decision): a mistyped name would otherwise be "dismissed" and the real one stay.
        let mut known: Vec<String> = self
            .store()
            .org_aggregate(org)?
            .unwrap_or_default()
            .unclassified
            .into_keys()
            .collect();
        let decided = self.store().classifications(org)?;
        if decided.len() >= MAX_MAPPINGS && !decided.iter().any(|(n, _)| n == name) {
            return Err(CollectorError::InvalidArgument(format!(
                "'{org}' holds {} candidate decisions, at most {MAX_MAPPINGS} (its agents are sent them all): unmap some first",
                decided.len()
            )));
        }
        known.extend(decided.into_iter().map(|(n, _)| n));
        if !known.iter().any(|k| k == name) {
            return Err(CollectorError::NotFound(format!(
                "{} in '{org}' (see `commscanctl candidates list --org {org}`)",
                commscan_core::suggest::unknown(
                    "candidate",
                    name,
                    known.iter().map(String::as_str)
                )
            )));
        }
        self.store().put_classification(org, name, &decision)?;
        // Agents hear of it now, whatever happens to the re-judging below.
        self.mappings_changed(org);
        // Devices that report it, and those an earlier mapping of it changed (re-mapped now).
        let touched = self.rejudge_where(
            org,
            |d| {
                d.unclassified.iter().any(|u| u.name == name)
                    || d.findings
                        .iter()
                        .any(|f| f.evidence.iter().any(|e| officer_mapped(e, name).is_some()))
            },
            |d| {
                take_out_mapping_of(name, &mut d.findings, &mut d.unclassified);
            },
        )?;
        let what = match &decision {
            Classification::Product { product } => format!("'{name}' mapped to {product}"),
            Classification::Dismissed => format!("'{name}' dismissed"),
        };
        self.audit(
            &who.actor(),
            "candidates.classify",
            Some(org),
            true,
            format!("{what}; {touched} devices updated"),
        );
        Ok(touched)
    }

    /// Undoes an officer's decision: the candidate is listed again, and the organisation's
    /// devices lose the findings the mapping made (the evidence an officer's classification
    /// added turns back into the candidate) and are judged again at once.
    pub fn unclassify_candidate(
        &self,
        who: &Principal,
        org: &str,
        name: &str,
    ) -> Result<usize, CollectorError> {
        self.check(who, Access::ManageDevices, Some(org), "candidates.unmap")?;
        let decided = self.store().classifications(org)?;
        if !decided.iter().any(|(n, _)| n == name) {
            return Err(CollectorError::NotFound(format!(
                "{} in '{org}': nothing was mapped or dismissed under that name",
                commscan_core::suggest::unknown(
                    "decision",
                    name,
                    decided.iter().map(|(n, _)| n.as_str())
                )
            )));
        }
        self.store().remove_classification(org, name)?;
        self.mappings_changed(org);
        let touched = self.rejudge_where(
            org,
            |d| {
                d.findings
                    .iter()
                    .any(|f| f.evidence.iter().any(|e| officer_mapped(e, name).is_some()))
            },
            |d| {
                take_out_mapping_of(name, &mut d.findings, &mut d.unclassified);
            },
        )?;
        self.audit(
            &who.actor(),
            "candidates.unmap",
            Some(org),
            true,
            format!("'{name}' unmapped; {touched} devices updated"),
        );
        Ok(touched)
    }

    /// Re-judges, under each one's lock, the devices of `org` that `affected` picks, after
    /// `change`; stores them and flushes. How many were touched.
    fn rejudge_where(
        &self,
        org: &str,
        affected: impl Fn(&DeviceRecord) -> bool,
        change: impl Fn(&mut DeviceRecord),
    ) -> Result<usize, CollectorError> {
        let now = self.now();
        let mut touched = 0;
        let mut cursor: Option<String> = None;
        let filter = DeviceFilter {
            organisation: Some(org.to_owned()),
            ..DeviceFilter::default()
        };
        loop {
            let page = self
                .store()
                .list_devices(&filter, cursor.as_deref(), 1000)?;
            for listed in page.devices {
                if !affected(&listed) {
                    continue;
                }
                // Re-read under the device's lock: a report may have landed since the listing.
                let _device_lock = self.lock_device(&listed.device_id)?;
                let Some(mut device) = self.store().device(&listed.device_id)? else {
                    continue;
                };
                let before = device.verdict.status;
                change(&mut device);
                self.apply_classifications(&mut device)?;
                self.judge(&mut device, now);
                self.store_device(&device, before, now)?;
                touched += 1;
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        self.store().flush()?;
        Ok(touched)
    }
}
