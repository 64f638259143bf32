//! Queries for officers and analysts. Each one is authorised through
//! [`crate::auth::authorize`] (via [`Collector::check`], which audits denials) before it reads
//! anything. Summaries read the maintained aggregates; they never scan devices.

use crate::auth::{Access, Principal};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{DeviceFilter, DevicePage, DeviceRecord, OrgAggregate};

/// Default page size.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page size.
pub const MAX_PAGE: usize = 1000;

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
        let filter = DeviceFilter {
            allowed_orgs: proof.orgs,
            ..filter.clone()
        };
        let limit = if page_size == 0 {
            DEFAULT_PAGE
        } else {
            page_size.min(MAX_PAGE)
        };
        Ok(self.store.list_devices(&filter, cursor, limit)?)
    }

    /// One device. A device outside the caller's organisations is reported exactly like a
    /// missing one, so ids cannot be probed across tenants.
    pub fn get_device(&self, who: &Principal, id: &str) -> Result<DeviceRecord, CollectorError> {
        let not_found = || {
            CollectorError::NotFound(format!(
                "no device '{id}' (list devices with `commscanctl devices`)"
            ))
        };
        let proof = self.check(who, Access::ReadDevices, None, "query.get_device")?;
        let device = self.store.device(id)?.ok_or_else(not_found)?;
        if !proof.covers(&device.organisation) {
            self.audit(
                &who.name,
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
        self.store.org_aggregate(org)?.ok_or_else(|| {
            CollectorError::NotFound(format!("no organisation '{org}' has enrolled devices"))
        })
    }
}
