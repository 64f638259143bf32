//! Queries for officers and analysts, each authorised through [`crate::auth::authorize`].
//! Summaries read the maintained aggregates; they never scan devices.

use crate::auth::{Access, Principal, authorize};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{DeviceFilter, DevicePage, DeviceRecord, OrgAggregate};

/// Default page size.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page size.
pub const MAX_PAGE: usize = 1000;

impl Collector {
    /// Lists devices.
    pub fn list_devices(
        &self,
        who: &Principal,
        filter: &DeviceFilter,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<DevicePage, CollectorError> {
        authorize(who, Access::ReadDevices, filter.organisation.as_deref())?;
        let limit = if page_size == 0 {
            DEFAULT_PAGE
        } else {
            page_size.min(MAX_PAGE)
        };
        Ok(self.store.list_devices(filter, cursor, limit)?)
    }

    /// One device.
    pub fn get_device(&self, who: &Principal, id: &str) -> Result<DeviceRecord, CollectorError> {
        let device = self.store.device(id)?;
        // Authorise against the device's organisation; an unknown id is NOT_FOUND only for
        // callers who could have seen it.
        let org = device.as_ref().map(|d| d.organisation.as_str());
        authorize(who, Access::ReadDevices, org)?;
        device.ok_or_else(|| {
            CollectorError::NotFound(format!(
                "no device '{id}' (list devices with `commscanctl devices`)"
            ))
        })
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
        authorize(who, Access::ReadSummaries, Some(org))?;
        self.store.org_aggregate(org)?.ok_or_else(|| {
            CollectorError::NotFound(format!("no organisation '{org}' has enrolled devices"))
        })
    }
}
