//! Queries for officers and analysts. Each one is authorised through
//! [`crate::auth::authorize`] (via [`Collector::check`], which audits denials) before it reads
//! anything. Summaries read the maintained aggregates; they never scan devices. The rules of
//! what a summary says live here, not in the adapters: fleet totals ([`FleetSummary`]) count
//! every device of a stale federated row as stale, never compliant. Exports are authorised
//! once and paged here too ([`DeviceExport`]); the adapter only formats and streams the pages.

use crate::auth::{Access, Principal};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{DeviceFilter, DevicePage, DeviceRecord, OrgAggregate};
use commscan_core::verdict::Status;
use std::collections::BTreeMap;

/// Default page size.
pub(crate) const DEFAULT_PAGE: usize = 100;
/// Largest page size.
pub(crate) const MAX_PAGE: usize = 1000;

impl Collector {
    /// Lists devices the caller may see, filtered.
    pub fn list_devices(
        &self,
        who: &Principal,
        filter: &DeviceFilter,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<DevicePage, CollectorError> {
        let proof = self.check(
            who,
            Access::ReadDevices,
            filter.organisation.as_deref(),
            "query.list_devices",
        )?;
        // A mistyped product would match nothing and read as "none has it".
        if let Some(product) = filter.product.as_deref() {
            let catalog = &self.rules().catalog;
            if !catalog.contains(product) {
                return Err(CollectorError::InvalidArgument(format!(
                    "product: {}",
                    commscan_core::suggest::unknown(
                        "product",
                        product,
                        catalog.products().iter().map(|p| p.id.as_str())
                    )
                )));
            }
        }
        let filter = DeviceFilter {
            allowed_orgs: proof.orgs,
            ..filter.clone()
        };
        let limit = if page_size == 0 {
            DEFAULT_PAGE
        } else {
            page_size.min(MAX_PAGE)
        };
        Ok(self.store().list_devices(&filter, cursor, limit)?)
    }

    /// One device. A device outside the caller's organisations is reported exactly like a
    /// missing one, so ids cannot be probed across tenants.
    pub(crate) fn get_device(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<DeviceRecord, CollectorError> {
        let not_found = || {
            CollectorError::NotFound(format!(
                "no device '{id}' (list devices with `commscanctl devices`)"
            ))
        };
        let proof = self.check(who, Access::ReadDevices, None, "query.get_device")?;
        let device = self.store().device(id)?.ok_or_else(not_found)?;
        if !proof.covers(&device.organisation) {
            self.audit(
                &who.actor(),
                "query.get_device",
                Some(&device.organisation),
                false,
                format!("device {id} is outside the caller's organisations"),
            );
            return Err(not_found());
        }
        Ok(device)
    }

    /// An organisation's summary.
    pub fn organisation_summary(
        &self,
        who: &Principal,
        org: &str,
    ) -> Result<OrgAggregate, CollectorError> {
        if org.is_empty() {
            return Err(CollectorError::InvalidArgument(
                "organisation: required".into(),
            ));
        }
        self.check(
            who,
            Access::ReadSummaries,
            Some(org),
            "query.organisation_summary",
        )?;
        self.store().org_aggregate(org)?.ok_or_else(|| {
            CollectorError::NotFound(format!("no organisation '{org}' has enrolled devices"))
        })
    }
}

/// Devices per page of an export.
pub(crate) const EXPORT_PAGE: usize = 2000;

/// An authorised export: every device the caller may see that matches the filter, one page
/// of at most [`EXPORT_PAGE`] devices per [`Iterator::next`], read from the store only when
/// asked for. The caller was authorised once, when the export was made
/// ([`Collector::export_devices`]); every page stays within that proof's organisations.
/// Reading is synchronous: async callers pull pages on the blocking pool. The iterator ends
/// after the last page or after the first error.
pub(crate) struct DeviceExport {
    devices: std::sync::Arc<dyn crate::store::Store>,
    filter: DeviceFilter,
    cursor: Option<String>,
    done: bool,
}

impl std::fmt::Debug for DeviceExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceExport")
            .field("filter", &self.filter)
            .field("cursor", &self.cursor)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Iterator for DeviceExport {
    type Item = Result<Vec<DeviceRecord>, CollectorError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self
            .devices
            .list_devices(&self.filter, self.cursor.as_deref(), EXPORT_PAGE)
        {
            Ok(page) => {
                // As listings do: under a status filter a revoked device is left out.
                let page = keep_revoked(page, false, self.filter.status.is_some());
                self.done = page.next.is_none();
                self.cursor = page.next;
                Some(Ok(page.devices))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}

impl Collector {
    /// Authorises an export of the devices matching `filter` (organisation and status are
    /// honoured; under a status, revoked devices are left out) and returns its pages.
    pub(crate) fn export_devices(
        &self,
        who: &Principal,
        filter: &DeviceFilter,
    ) -> Result<DeviceExport, CollectorError> {
        let proof = self.check(
            who,
            Access::ReadDevices,
            filter.organisation.as_deref(),
            "query.export_devices",
        )?;
        Ok(DeviceExport {
            devices: self.store().clone(),
            filter: DeviceFilter {
                allowed_orgs: proof.orgs,
                ..filter.clone()
            },
            cursor: None,
            done: false,
        })
    }
}

/// Devices of one organisation on one catalog release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogVersionRow {
    /// The organisation.
    pub organisation: String,
    /// The release its agents stated (0: not stated).
    pub release: u64,
    /// Devices on it.
    pub devices: u64,
    /// Of these, devices that refused the last signed catalog offered.
    pub refusing: u64,
    /// One refusal, as an agent stated it.
    pub refusal: String,
}

impl Collector {
    /// Devices per organisation and catalog release, for the organisations `who` may read
    /// (one when `organisation` is given), and the signed release this collector serves (0:
    /// none). Reads every device record in scope: catalog releases are not kept in the
    /// aggregates, so this is an operator's occasional question, not a dashboard's.
    pub fn catalog_versions(
        &self,
        who: &Principal,
        organisation: Option<&str>,
    ) -> Result<(u64, Vec<CatalogVersionRow>), CollectorError> {
        let proof = self.check(
            who,
            Access::ReadDevices,
            organisation,
            "query.catalog_versions",
        )?;
        let filter = DeviceFilter {
            organisation: organisation.map(str::to_owned),
            allowed_orgs: proof.orgs,
            ..DeviceFilter::default()
        };
        let mut rows: BTreeMap<(String, u64), CatalogVersionRow> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store()
                .list_devices(&filter, cursor.as_deref(), MAX_PAGE)?;
            for d in &page.devices {
                let row = rows
                    .entry((d.organisation.clone(), d.catalog.release))
                    .or_insert_with(|| CatalogVersionRow {
                        organisation: d.organisation.clone(),
                        release: d.catalog.release,
                        devices: 0,
                        refusing: 0,
                        refusal: String::new(),
                    });
                row.devices += 1;
                if d.catalog.refused_release > 0 {
                    row.refusing += 1;
                    if row.refusal.is_empty() {
                        row.refusal = d.catalog.refusal.clone();
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let served = self
            .rules()
            .signed_catalog
            .as_ref()
            .map_or(0, |s| s.release);
        Ok((served, rows.into_values().collect()))
    }
}

/// One organisation's row in a fleet summary.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    /// The enterprise it came from; empty for this collector's organisations.
    pub enterprise: String,
    /// The organisation.
    pub organisation: String,
    /// Its aggregate.
    pub aggregate: OrgAggregate,
    /// When the figures were last updated.
    pub updated_at: Option<time::OffsetDateTime>,
    /// A federated row whose enterprise missed its window.
    pub stale: bool,
}

impl FleetRow {
    /// Compliant and waived devices as a percentage; 0 for a stale row, whose last known
    /// figures are shown for reference but vouch for nothing.
    pub fn percent_compliant(&self) -> f64 {
        if self.stale {
            0.0
        } else {
            self.aggregate.percent_compliant()
        }
    }
}

/// A fleet summary: the rows the caller may see and their totals.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSummary {
    /// This collector's organisations, then federated ones.
    pub rows: Vec<FleetRow>,
    /// Devices in every row.
    pub total_devices: u64,
    /// Devices by status across the rows. Every device of a stale row counts as stale,
    /// whatever its last known status.
    pub total_by_status: BTreeMap<Status, u64>,
    /// Compliant and waived devices as a percentage of all devices (0 without devices).
    pub percent_compliant: f64,
}

impl FleetSummary {
    /// Totals `rows`.
    pub fn of(rows: Vec<FleetRow>) -> FleetSummary {
        let mut totals = BTreeMap::<Status, u64>::new();
        let mut devices = 0;
        for r in &rows {
            devices += r.aggregate.devices;
            if r.stale {
                *totals.entry(Status::Stale).or_default() += r.aggregate.devices;
            } else {
                for (s, n) in &r.aggregate.by_status {
                    *totals.entry(*s).or_default() += n;
                }
            }
        }
        let ok = totals.get(&Status::Compliant).copied().unwrap_or(0)
            + totals.get(&Status::Waived).copied().unwrap_or(0);
        FleetSummary {
            rows,
            total_devices: devices,
            total_by_status: totals,
            percent_compliant: if devices == 0 {
                0.0
            } else {
                100.0 * ok as f64 / devices as f64
            },
        }
    }
}

/// A device's detail with its history and the waivers that concern it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceDetail {
    /// The record.
    pub device: DeviceRecord,
    /// Recent history, oldest first.
    pub history: Vec<crate::store::HistoryRecord>,
    /// Waivers of its policy covering it.
    pub waivers: Vec<commscan_core::policy::Waiver>,
}

/// The part of a device's history asked for: the latest [`HISTORY_LIMIT`] events at or after
/// `since` and before `until`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryWindow {
    /// From this time on.
    pub since: Option<time::OffsetDateTime>,
    /// Before this time.
    pub until: Option<time::OffsetDateTime>,
}

/// Most history events returned with a device.
pub(crate) const HISTORY_LIMIT: usize = 200;

impl Collector {
    /// A device with its history and the waivers that cover it.
    pub(crate) fn device_detail(
        &self,
        who: &Principal,
        id: &str,
        window: HistoryWindow,
    ) -> Result<DeviceDetail, CollectorError> {
        let device = self.get_device(who, id)?;
        let mut history = self.store().history(id, window.until, HISTORY_LIMIT)?;
        history.retain(|h| window.since.is_none_or(|s| h.at >= s));
        let rules = self.rules();
        let waivers = rules
            .policy_for(&device.organisation)
            .waivers
            .iter()
            .filter(|w| match &w.scope {
                commscan_core::policy::WaiverScope::Device(d) => d == &device.device_id,
                commscan_core::policy::WaiverScope::Organisation(o) => o == &device.organisation,
            })
            .cloned()
            .collect();
        Ok(DeviceDetail {
            device,
            history,
            waivers,
        })
    }

    /// An organisation's end-of-day trend, oldest first.
    pub(crate) fn organisation_trend(
        &self,
        who: &Principal,
        org: &str,
        days: usize,
    ) -> Result<Vec<(String, OrgAggregate)>, CollectorError> {
        self.check(
            who,
            Access::ReadSummaries,
            Some(org),
            "query.organisation_summary",
        )?;
        Ok(self.store().daily(org, days.clamp(1, 366))?)
    }

    /// One row per organisation the caller may see (this collector's, then federated ones),
    /// with the fleet's totals.
    pub fn fleet_summary(&self, who: &Principal) -> Result<FleetSummary, CollectorError> {
        let proof = self.check(who, Access::ReadSummaries, None, "query.fleet_summary")?;
        let mut rows: Vec<FleetRow> = self
            .store()
            .org_aggregates()?
            .into_iter()
            .filter(|(org, _)| proof.covers(org))
            .map(|(organisation, aggregate)| FleetRow {
                enterprise: String::new(),
                organisation,
                aggregate,
                updated_at: None,
                stale: false,
            })
            .collect();
        rows.extend(
            self.ministry()
                .federated_rows()?
                .into_iter()
                .filter(|r| proof.covers(&r.organisation)),
        );
        Ok(FleetSummary::of(rows))
    }

    /// Per product, devices and violating devices across the caller's organisations, or in
    /// one of them. An organisation the caller sees nothing of is refused as unknown, with
    /// the nearest name it does see.
    pub(crate) fn product_findings(
        &self,
        who: &Principal,
        org: Option<&str>,
    ) -> Result<Vec<(String, crate::store::records::ProductCounts)>, CollectorError> {
        let proof = self.check(who, Access::ReadSummaries, org, "query.product_findings")?;
        // What the caller sees in all, to suggest the organisation they meant.
        let proof = crate::auth::authorize(who, Access::ReadSummaries, None).unwrap_or(proof);
        let mut seen: std::collections::BTreeSet<String> = Default::default();
        let mut totals: std::collections::BTreeMap<String, crate::store::records::ProductCounts> =
            Default::default();
        // On a ministry, enterprises' organisations count too (stale ones with their last
        // known figures).
        let federated = self
            .ministry()
            .federated_rows()?
            .into_iter()
            .map(|r| (r.organisation, r.aggregate));
        let filter = org;
        for (org, agg) in self.store().org_aggregates()?.into_iter().chain(federated) {
            if !proof.covers(&org) {
                continue;
            }
            let wanted = filter.is_none_or(|f| f == org);
            seen.insert(org);
            if !wanted {
                continue;
            }
            for (p, c) in agg.by_product {
                let t = totals.entry(p).or_default();
                t.devices += c.devices;
                t.violating += c.violating;
            }
        }
        if let Some(f) = filter
            && !seen.contains(f)
        {
            return Err(CollectorError::NotFound(commscan_core::suggest::unknown(
                "organisation",
                f,
                seen.iter().map(String::as_str),
            )));
        }
        let mut out: Vec<_> = totals.into_iter().collect();
        out.sort_by(|a, b| b.1.devices.cmp(&a.1.devices).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Unclassified candidates of an organisation, most widespread first, without those an
    /// officer already mapped or dismissed.
    pub fn list_unclassified(
        &self,
        who: &Principal,
        org: &str,
    ) -> Result<Vec<(String, crate::store::records::CandidateCounts)>, CollectorError> {
        self.check(
            who,
            Access::ReadDevices,
            Some(org),
            "query.list_unclassified",
        )?;
        let decided: std::collections::BTreeSet<String> = self
            .store()
            .classifications(org)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let agg = self.store().org_aggregate(org)?.unwrap_or_default();
        let mut out: Vec<_> = agg
            .unclassified
            .into_iter()
            .filter(|(n, _)| !decided.contains(n))
            .collect();
        out.sort_by(|a, b| b.1.devices.cmp(&a.1.devices).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Authorises a subscription to verdict changes; returns the organisations it may see.
    pub(crate) fn watch(
        &self,
        who: &Principal,
        org: Option<&str>,
    ) -> Result<crate::auth::Authorized, CollectorError> {
        self.check(who, Access::ReadDevices, org, "query.watch_events")
    }
}

/// Applies the revoked filter of a device listing to one page: only revoked devices when
/// asked for them; otherwise, under a status filter, none (a revoked device is out of service
/// and is not "noncompliant" any more, whatever its last verdict). Pages may come out shorter
/// than asked; the cursor is the store's, so paging still visits every device once.
pub(crate) fn keep_revoked(
    mut page: DevicePage,
    only_revoked: bool,
    by_status: bool,
) -> DevicePage {
    if only_revoked {
        page.devices.retain(|d| d.revoked);
    } else if by_status {
        page.devices.retain(|d| !d.revoked);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(enterprise: &str, compliant: u64, noncompliant: u64, stale: bool) -> FleetRow {
        let mut aggregate = OrgAggregate {
            devices: compliant + noncompliant,
            ..Default::default()
        };
        aggregate.by_status.insert(Status::Compliant, compliant);
        aggregate
            .by_status
            .insert(Status::Noncompliant, noncompliant);
        FleetRow {
            enterprise: enterprise.into(),
            organisation: "acme".into(),
            aggregate,
            updated_at: None,
            stale,
        }
    }

    #[test]
    fn fleet_totals_count_every_device_of_a_stale_row_as_stale() {
        let s = FleetSummary::of(vec![row("", 3, 1, false), row("e1", 4, 0, true)]);
        assert_eq!(s.total_devices, 8);
        assert_eq!(
            s.total_by_status,
            BTreeMap::from([
                (Status::Compliant, 3),
                (Status::Noncompliant, 1),
                (Status::Stale, 4)
            ])
        );
        assert_eq!(s.percent_compliant, 37.5);
        assert_eq!(s.rows[1].percent_compliant(), 0.0);
        assert_eq!(s.rows[0].percent_compliant(), 75.0);
        assert_eq!(FleetSummary::of(Vec::new()).percent_compliant, 0.0);
    }
}
