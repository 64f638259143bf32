//! Ingest: apply one report from an authenticated device, judge it, store it durably.
//!
//! Rate: each device has a report budget ([`Collector::take_report_budget`]); a report over
//! it is not applied, and the device is told how long to wait ([`Throttled`]).
//!
//! Idempotent by sequence: a report at or below the stored sequence is acknowledged without
//! being applied (the agent resent it after a lost ack). A snapshot replaces the device's
//! findings; a delta upserts and removes. First sightings are kept per product for grace
//! periods.
//!
//! Bounds (ARCHITECTURE.md, "Bounds on what devices and enrolling peers send"): too many
//! findings, evidence entries, removals or candidates, a malformed state digest, or a sequence
//! more than [`MAX_SEQUENCE_STEP`] ahead of the stored one are refused with INVALID_ARGUMENT
//! naming the field. Every string is cut and cleaned to its canonical form
//! (`commscan_core::report`), findings of products the catalog in force does not know are
//! dropped, and a report that would make the stored record larger than
//! [`MAX_DEVICE_RECORD_BYTES`] is refused: what was cut or dropped is counted and logged
//! (`report content bounded`).
//!
//! Reconciliation: the device record keeps the state digest (`commscan_core::digest`) of
//! what it stores. A hello whose digest (the state the agent last had acknowledged) is empty
//! or differs gets `want_snapshot` ([`wants_snapshot`]); a delta that leaves the store with
//! another digest than the agent declared asks for a resync ([`Applied::resync`]). So a lost
//! delta, a restored backup of this store or a wiped agent spool heal on the next connection.
//! Every applied report is logged after the store flushed (`report applied`, with sequence
//! and digest); fault tests read these lines.

use crate::collector::Collector;
use crate::connections::Registered;
use crate::enrollment::clean_text;
use crate::error::CollectorError;
use crate::store::{DeviceCatalog, DeviceRecord};
use commscan_core::digest;
use commscan_core::identity::DeviceIdentity;
use commscan_core::platform::Platform;
use commscan_core::report::{
    MAX_SEQUENCE_STEP, SEQUENCE_CEILING, canonical_finding, canonical_stats, canonical_unclassified,
};
use commscan_core::scan::{Finding, ScanStats, Unclassified};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most findings one report may carry.
pub(crate) const MAX_FINDINGS: usize = 1_000;
/// Most unclassified candidates one report may carry.
pub(crate) const MAX_UNCLASSIFIED: usize = 500;
/// Most evidence entries one finding may carry.
pub(crate) const MAX_EVIDENCE: usize = 64;
/// Largest device record the collector stores, in bytes of its stored (JSON) form. Every
/// query and export answer carrying one device stays well inside a client's 4 MiB message
/// limit. A legitimate agent's record is a few kilobytes (a hundred findings with a few
/// evidence entries each are about 60 KiB).
pub const MAX_DEVICE_RECORD_BYTES: usize = 1024 * 1024;

pub use commscan_core::report::ReportBody;

/// One report from a device.
#[derive(Debug, Clone)]
pub struct IncomingReport {
    /// Sequence.
    pub sequence: u64,
    /// Body.
    pub body: ReportBody,
    /// Scan stats.
    pub stats: ScanStats,
    /// The agent's digest of its state once this report is applied; empty if not given.
    pub state_digest: Vec<u8>,
}

/// What applying a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The sequence to acknowledge.
    pub sequence: u64,
    /// The report was a delta and the stored state does not match the agent's declared
    /// digest: ask the agent for a snapshot (Command RESYNC) after the ack.
    pub resync: bool,
}

/// A report refused for its rate: it is not applied, the device is told to wait this long,
/// and its stream stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    /// How long until the device may report again.
    pub retry_after: std::time::Duration,
}

/// The hex state digest of what a device record stores.
pub(crate) fn stored_digest(device: &DeviceRecord) -> String {
    if device.state_digest.is_empty() {
        digest::hex(&digest::state_digest(
            &device.findings,
            &device.unclassified,
        ))
    } else {
        device.state_digest.clone()
    }
}

/// Whether a device's next report should be a snapshot: the collector holds nothing for it,
/// or the agent's digest of the state it last had acknowledged is unknown or differs.
pub(crate) fn wants_snapshot(device: &DeviceRecord, hello: &HelloInfo) -> bool {
    device.last_sequence == 0
        || hello.state_digest.is_empty()
        || digest::hex(&hello.state_digest) != stored_digest(device)
}

/// What the device said about itself in its hello.
#[derive(Debug, Clone, Default)]
pub struct HelloInfo {
    /// Agent version.
    pub agent_version: String,
    /// Platform.
    pub platform: Option<Platform>,
    /// Host name.
    pub hostname: String,
    /// The device id the agent believes it has; empty if not given.
    pub claimed_device_id: String,
    /// Digest of the state the agent last had acknowledged; empty if it does not know.
    pub state_digest: Vec<u8>,
    /// When the certificate the stream was opened with expires.
    pub certificate_expires: Option<time::OffsetDateTime>,
    /// The catalog the agent stated (cleaned); `None` from agents predating signed catalogs.
    pub catalog: Option<DeviceCatalog>,
}

/// Longest catalog refusal kept from an agent.
pub const MAX_CATALOG_REFUSAL: usize = 512;

/// An agent's catalog statement as the store keeps it: the digest only when it is 32 bytes,
/// the refusal cleaned and cut to [`MAX_CATALOG_REFUSAL`] characters.
pub fn device_catalog(
    release: u64,
    digest: &[u8],
    refused_release: u64,
    refusal: &str,
) -> DeviceCatalog {
    DeviceCatalog {
        release,
        digest: if digest.len() == 32 {
            digest::hex(digest)
        } else {
            String::new()
        },
        refused_release,
        refusal: clean_text(refusal, MAX_CATALOG_REFUSAL),
    }
}

/// What bounding a report cut or dropped, for one log line and the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bounded {
    /// Findings or candidates whose text was cut or cleaned.
    pub cut: usize,
    /// Findings of products the catalog in force does not know, dropped.
    pub unknown_products: usize,
    /// Scan-stats sources whose name or message was cut or cleaned, or that were dropped.
    pub sources: usize,
}

impl Bounded {
    fn any(&self) -> bool {
        *self != Bounded::default()
    }
}

fn check_findings(
    findings: &mut Vec<Finding>,
    known: impl Fn(&str) -> bool,
    bounded: &mut Bounded,
) -> Result<(), CollectorError> {
    if findings.len() > MAX_FINDINGS {
        return Err(CollectorError::InvalidArgument(format!(
            "report.findings: {} findings, at most {MAX_FINDINGS}",
            findings.len()
        )));
    }
    for f in findings.iter_mut() {
        if f.evidence.len() > MAX_EVIDENCE {
            return Err(CollectorError::InvalidArgument(format!(
                "finding '{}'.evidence: {} entries, at most {MAX_EVIDENCE}",
                f.product,
                f.evidence.len()
            )));
        }
        let canonical = canonical_finding(f.clone());
        if canonical != *f {
            bounded.cut += 1;
            *f = canonical;
        }
    }
    let before = findings.len();
    findings.retain(|f| known(&f.product));
    bounded.unknown_products += before - findings.len();
    Ok(())
}

fn check_unclassified(
    list: &mut [Unclassified],
    known: impl Fn(&str) -> bool,
    bounded: &mut Bounded,
) -> Result<(), CollectorError> {
    if list.len() > MAX_UNCLASSIFIED {
        return Err(CollectorError::InvalidArgument(format!(
            "report.unclassified: {} entries, at most {MAX_UNCLASSIFIED}",
            list.len()
        )));
    }
    for u in list.iter_mut() {
        let canonical = canonical_unclassified(u.clone());
        if canonical != *u {
            bounded.cut += 1;
            *u = canonical;
        }
        // A hint naming no product of the catalog in force is the agent's say-so alone: it
        // would pre-select a mapping an officer confirms in one click.
        if u.looks_like.as_deref().is_some_and(|p| !known(p)) {
            u.looks_like = None;
            bounded.cut += 1;
        }
    }
    Ok(())
}

/// Running totals of what ingest cut or dropped since the collector started (the log line
/// `report content bounded` tells each occurrence).
#[derive(Debug, Default)]
pub struct BoundCounters {
    /// Reports that had something cut or dropped.
    pub reports: AtomicU64,
    /// Findings or candidates whose text was cut or cleaned.
    pub cut: AtomicU64,
    /// Findings of unknown products dropped.
    pub unknown_products: AtomicU64,
    /// Scan-stats sources cut, cleaned or dropped.
    pub sources: AtomicU64,
}

/// Refuses a sequence at or beyond [`SEQUENCE_CEILING`], or more than [`MAX_SEQUENCE_STEP`] ahead of `stored`.
pub(crate) fn check_sequence(sequence: u64, stored: u64) -> Result<(), CollectorError> {
    if sequence >= SEQUENCE_CEILING {
        return Err(CollectorError::InvalidArgument(format!(
            "report.sequence: {sequence} is beyond the ceiling {SEQUENCE_CEILING}"
        )));
    }
    if sequence > stored.saturating_add(MAX_SEQUENCE_STEP) {
        return Err(CollectorError::InvalidArgument(format!(
            "report.sequence: {sequence} is more than {MAX_SEQUENCE_STEP} ahead of the stored sequence {stored}"
        )));
    }
    Ok(())
}

/// The size of a device record in its stored form.
fn record_bytes(device: &DeviceRecord) -> usize {
    serde_json::to_vec(device)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

impl Collector {
    /// The device record of an authenticated identity, refusing unknown and revoked devices.
    pub(crate) fn admit(&self, who: &DeviceIdentity) -> Result<DeviceRecord, CollectorError> {
        if who.trust_domain != self.trust_domain() {
            return Err(CollectorError::Unauthenticated(format!(
                "certificate is for trust domain '{}'",
                who.trust_domain
            )));
        }
        let device = self.store().device(&who.device_id)?.ok_or_else(|| {
            CollectorError::PermissionDenied(format!(
                "device {} is not enrolled here",
                who.device_id
            ))
        })?;
        if device.organisation != who.organisation {
            return Err(CollectorError::PermissionDenied(format!(
                "device {} belongs to another organisation",
                who.device_id
            )));
        }
        if device.revoked {
            return Err(CollectorError::PermissionDenied(format!(
                "device {} is revoked",
                who.device_id
            )));
        }
        if let Some(why) = &device.duplicate {
            return Err(CollectorError::PermissionDenied(format!(
                "device {} is flagged as a duplicate enrolment ({why}); revoke it and re-enrol each machine",
                who.device_id
            )));
        }
        Ok(device)
    }

    /// Opens a reporting stream: admits the device, checks what the hello claims against the
    /// certificate, and registers the stream. Refusals and duplicates are audited.
    pub(crate) fn open_stream(
        &self,
        who: &DeviceIdentity,
        hello: &HelloInfo,
    ) -> Result<(DeviceRecord, Registered), CollectorError> {
        let actor = format!("device:{}", who.device_id);
        let result = self.admit(who).and_then(|device| {
            if !hello.claimed_device_id.is_empty() && hello.claimed_device_id != who.device_id {
                return Err(CollectorError::PermissionDenied(format!(
                    "hello names device {} but the certificate is device {}",
                    clean_text(&hello.claimed_device_id, 64),
                    who.device_id
                )));
            }
            Ok(device)
        });
        let device = result.inspect_err(|e| {
            self.audit(
                &actor,
                "reporting.connect",
                Some(&who.organisation),
                false,
                e.to_string(),
            )
        })?;
        let device = self.forget_absurd_sequence(device)?;
        let mut registered = self
            .connections()
            .register(&who.device_id, std::time::Instant::now());
        // Collectors sharing the store count takeovers across all of them.
        match self.store().claim_stream(
            &who.device_id,
            self.node(),
            registered.conn,
            crate::connections::TAKEOVER_WINDOW,
        ) {
            Ok(Some(claim)) => {
                registered.duplicate |=
                    claim.takeovers >= crate::connections::TAKEOVERS_FOR_DUPLICATE;
            }
            Ok(None) => {}
            Err(e) => {
                self.connections()
                    .unregister(&who.device_id, registered.conn);
                return Err(e.into());
            }
        }
        if registered.duplicate {
            let why = "two agents kept taking over each other's stream".to_owned();
            {
                let _device_lock = self.lock_device(&who.device_id)?;
                let mut flagged = self
                    .store()
                    .device(&who.device_id)?
                    .unwrap_or_else(|| device.clone());
                flagged.duplicate = Some(why.clone());
                self.store().put_device(&flagged, self.now())?;
            }
            self.store().flush()?;
            self.audit(
                &actor,
                "reporting.connect",
                Some(&who.organisation),
                false,
                format!("flagged as duplicate enrolment: {why}"),
            );
            tracing::warn!(device = %who.device_id, organisation = %who.organisation, "duplicate enrolment flagged");
            self.close_stream(&who.device_id, registered.conn);
            return Err(CollectorError::AlreadyExists(format!(
                "device {} is used by more than one agent; flagged as a duplicate enrolment",
                who.device_id
            )));
        }
        Ok((device, registered))
    }

    /// Stores the catalog a device's agent states it uses (its hello, or its answer to a
    /// catalog update), when it differs from the stored one, so `catalog versions` sees it
    /// before the next report.
    pub(crate) fn record_catalog(
        &self,
        who: &DeviceIdentity,
        catalog: &DeviceCatalog,
    ) -> Result<(), CollectorError> {
        {
            let _device_lock = self.lock_device(&who.device_id)?;
            let mut device = self.admit(who)?;
            if &device.catalog == catalog {
                return Ok(());
            }
            device.catalog = catalog.clone();
            self.store().put_device(&device, self.now())?;
        }
        self.store().flush()?;
        if catalog.refused_release > 0 {
            tracing::warn!(device = %who.device_id, organisation = %who.organisation, release = catalog.release, refused_release = catalog.refused_release, refusal = %catalog.refusal, "agent refused a signed catalog");
        } else {
            tracing::info!(device = %who.device_id, organisation = %who.organisation, release = catalog.release, "agent catalog recorded");
        }
        Ok(())
    }

    /// Forgets a stream that ended, here and in a store shared with other collectors.
    pub(crate) fn close_stream(&self, device: &str, conn: u64) {
        self.connections().unregister(device, conn);
        if let Err(e) = self.store().release_stream(device, self.node(), conn) {
            tracing::warn!(error = %e, device, "stream end not recorded in the store");
        }
    }

    /// A device record storing a sequence at or above [`SEQUENCE_CEILING`] (accepted before
    /// sequences were bounded) leaves its agent no sequence to count on: it is forgotten, so
    /// the welcome says 0 and asks for a snapshot, which the agent sends under its own
    /// sequence.
    fn forget_absurd_sequence(&self, device: DeviceRecord) -> Result<DeviceRecord, CollectorError> {
        if device.last_sequence < SEQUENCE_CEILING {
            return Ok(device);
        }
        let updated = {
            let _device_lock = self.lock_device(&device.device_id)?;
            let mut d = self.store().device(&device.device_id)?.unwrap_or(device);
            if d.last_sequence >= SEQUENCE_CEILING {
                tracing::warn!(device = %d.device_id, stored = d.last_sequence, "stored sequence beyond the ceiling forgotten; asking for a snapshot");
                d.last_sequence = 0;
                self.store().put_device(&d, self.now())?;
            }
            d
        };
        self.store().flush()?;
        Ok(updated)
    }

    /// Adds what one report had cut or dropped to the running totals.
    fn count_bounded(&self, b: &Bounded) {
        let c = self.bound_counters();
        c.reports.fetch_add(1, Ordering::Relaxed);
        c.cut.fetch_add(b.cut as u64, Ordering::Relaxed);
        c.unknown_products
            .fetch_add(b.unknown_products as u64, Ordering::Relaxed);
        c.sources.fetch_add(b.sources as u64, Ordering::Relaxed);
    }

    /// Spends one report of `device`'s rate budget ([`crate::limits::Limiters::reports`]);
    /// every report is checked before anything else is done with it. A device over its rate
    /// is throttled rather than refused.
    pub(crate) fn take_report_budget(&self, device: &str) -> Result<(), Throttled> {
        self.limiters()
            .reports
            .take(&device.to_owned(), std::time::Instant::now())
            .map_err(|retry_after| Throttled { retry_after })
    }

    /// Applies a report and makes it durable; only then returns what to acknowledge.
    pub fn apply_report(
        &self,
        who: &DeviceIdentity,
        hello: &HelloInfo,
        report: IncomingReport,
    ) -> Result<Applied, CollectorError> {
        let device_lock = self.lock_device(&who.device_id)?;
        let mut device = self.admit(who)?;
        if report.sequence <= device.last_sequence {
            tracing::info!(device = %who.device_id, sequence = report.sequence, stored = device.last_sequence, "report already stored");
            return Ok(Applied {
                sequence: device.last_sequence,
                resync: false,
            });
        }
        check_sequence(report.sequence, device.last_sequence)?;
        if !report.state_digest.is_empty()
            && report.state_digest.len() != std::mem::size_of::<digest::StateDigest>()
        {
            return Err(CollectorError::InvalidArgument(format!(
                "report.state_digest: {} bytes, a SHA-256 digest is 32",
                report.state_digest.len()
            )));
        }
        let now = self.now();
        let rules = self.rules();
        let known = |p: &str| rules.catalog.contains(p);
        let mut bounded = Bounded::default();
        let is_delta = matches!(report.body, ReportBody::Delta { .. });
        match report.body {
            ReportBody::Snapshot {
                mut findings,
                mut unclassified,
            } => {
                check_findings(&mut findings, known, &mut bounded)?;
                check_unclassified(&mut unclassified, known, &mut bounded)?;
                device.findings = findings;
                device.unclassified = unclassified;
            }
            ReportBody::Delta {
                mut upserted,
                removed,
                unclassified,
            } => {
                if removed.len() > MAX_FINDINGS {
                    return Err(CollectorError::InvalidArgument(format!(
                        "report.delta.removed: {} entries, at most {MAX_FINDINGS}",
                        removed.len()
                    )));
                }
                check_findings(&mut upserted, known, &mut bounded)?;
                let mut by_product: BTreeMap<String, Finding> = device
                    .findings
                    .drain(..)
                    .map(|f| (f.product.clone(), f))
                    .collect();
                for r in &removed {
                    by_product.remove(r);
                }
                for f in upserted {
                    by_product.insert(f.product.clone(), f);
                }
                if by_product.len() > MAX_FINDINGS {
                    return Err(CollectorError::InvalidArgument(format!(
                        "report.delta: device would hold {} findings, at most {MAX_FINDINGS}",
                        by_product.len()
                    )));
                }
                device.findings = by_product.into_values().collect();
                if let Some(mut u) = unclassified {
                    check_unclassified(&mut u, known, &mut bounded)?;
                    device.unclassified = u;
                }
            }
        }
        device
            .first_seen
            .retain(|p, _| device.findings.iter().any(|f| &f.product == p));
        for f in &device.findings {
            device.first_seen.entry(f.product.clone()).or_insert(now);
        }
        let stats = canonical_stats(report.stats.clone());
        if stats != report.stats {
            bounded.sources = report
                .stats
                .sources
                .len()
                .saturating_sub(stats.sources.len())
                .max(1);
        }
        device.stats = stats;
        device.last_sequence = report.sequence;
        device.last_report = Some(now);
        if !hello.hostname.is_empty() {
            device.hostname = clean_text(&hello.hostname, 255);
        }
        if !hello.agent_version.is_empty() {
            device.agent_version = clean_text(&hello.agent_version, 64);
        }
        if hello.platform.is_some() {
            device.platform = hello.platform;
        }
        if hello.certificate_expires.is_some() {
            device.certificate_expires = hello.certificate_expires;
        }
        if let Some(c) = &hello.catalog {
            device.catalog = c.clone();
        }
        // The digest of the state as the agent reported it, before this collector applies
        // the organisation's decisions on candidates (which the agent may hold an older
        // version of, or none).
        let reported = digest::hex(&digest::state_digest(
            &device.findings,
            &device.unclassified,
        ));
        // The collector is the authority on decisions: mappings in the report (made by an
        // agent that was sent them) go back to candidates, and the decisions in the store
        // are applied below.
        let agent_mapped = commscan_core::mappings::take_out_mappings(
            &mut device.findings,
            &mut device.unclassified,
        );
        let declared = digest::hex(&report.state_digest);
        // Where the organisation classifies candidates, a stored base may already hold
        // officer-made findings or lack dismissed candidates, so the collector cannot recompute
        // the agent's view after a delta: it keeps the agent's declared digest and asks no
        // resync. Elsewhere the recomputed digest is the truth and a mismatch means a lost delta.
        let classifies = is_delta
            && (agent_mapped
                || !self
                    .store()
                    .classifications(&device.organisation)?
                    .is_empty());
        // Findings of products unknown here were dropped: the agent's state holds them, so
        // its digest cannot match; keep it, as for classifications, rather than ask again.
        let filtered = bounded.unknown_products > 0;
        let resync =
            is_delta && !classifies && !filtered && !declared.is_empty() && declared != reported;
        device.state_digest = if (classifies || filtered) && !declared.is_empty() {
            declared.clone()
        } else {
            reported
        };
        self.apply_classifications(&mut device)?;
        let previous = device.verdict.status;
        self.judge(&mut device, now);
        let size = record_bytes(&device);
        if size > MAX_DEVICE_RECORD_BYTES {
            tracing::warn!(device = %who.device_id, organisation = %who.organisation, sequence = report.sequence, bytes = size, max = MAX_DEVICE_RECORD_BYTES, "report refused: device record would be too large");
            return Err(CollectorError::InvalidArgument(format!(
                "report: the device record would be {size} bytes, at most {MAX_DEVICE_RECORD_BYTES}"
            )));
        }
        if bounded.any() {
            self.count_bounded(&bounded);
            tracing::warn!(
                device = %who.device_id,
                organisation = %who.organisation,
                sequence = report.sequence,
                cut = bounded.cut,
                unknown_products = bounded.unknown_products,
                sources = bounded.sources,
                "report content bounded"
            );
        }
        self.store_device(&device, previous, now)?;
        // The record is written; other updates of this device may proceed while this report
        // waits for its flush (the ack is still sent only after it).
        drop(device_lock);
        let flushing = std::time::Instant::now();
        self.store().flush()?;
        self.metrics().flushed(flushing.elapsed());
        tracing::info!(
            device = %who.device_id,
            sequence = report.sequence,
            kind = if is_delta { "delta" } else { "snapshot" },
            digest = %device.state_digest,
            resync,
            "report applied"
        );
        if !is_delta && !declared.is_empty() && declared != device.state_digest {
            // A snapshot is the whole state: a mismatch is an agent/collector disagreement on
            // the canonical form, and asking again would loop.
            tracing::warn!(device = %who.device_id, agent = %declared, stored = %device.state_digest, "snapshot digest differs from the agent's");
        }
        if previous != device.verdict.status {
            tracing::info!(device = %who.device_id, organisation = %who.organisation, from = %previous, to = %device.verdict.status, "verdict changed");
        }
        Ok(Applied {
            sequence: report.sequence,
            resync,
        })
    }
}
