//! `Query` adapter. Every call resolves the bearer token to a principal first; the domain
//! methods authorise.

use super::backstop::mark_of;
use super::blocking;
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{DeviceFilter, DeviceRecord};
use commscan_proto::convert;
use commscan_proto::v1::{self, query_server::Query};
use std::sync::Arc;

/// The `Query` service.
#[derive(Debug, Clone)]
pub struct QueryService(pub Arc<Collector>);

/// The bearer token of a request.
pub fn bearer<T>(request: &tonic::Request<T>) -> Option<String> {
    let v = request.metadata().get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(|t| t.trim().to_owned())
}

/// A device's listing row.
pub fn row(d: &DeviceRecord) -> v1::DeviceRow {
    v1::DeviceRow {
        device_id: d.device_id.clone(),
        organisation: d.organisation.clone(),
        hostname: d.hostname.clone(),
        platform: d
            .platform
            .map(convert::platform_to_wire)
            .unwrap_or_default(),
        status: convert::status_to_wire(d.verdict.status),
        products: d.verdict.products(),
        last_report: d.last_report.map(convert::timestamp),
        agent_version: d.agent_version.clone(),
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_devices(
        &self,
        request: tonic::Request<v1::ListDevicesRequest>,
    ) -> Result<tonic::Response<v1::ListDevicesResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let r = request.into_inner();
        let status =
            convert::status_from_wire(r.status).map_err(tonic::Status::invalid_argument)?;
        let filter = DeviceFilter {
            organisation: Some(r.organisation).filter(|s| !s.is_empty()),
            status,
            product: Some(r.product).filter(|s| !s.is_empty()),
            allowed_orgs: None,
        };
        let cursor = Some(r.page_token).filter(|s| !s.is_empty());
        let page = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.list_devices(&who, &filter, cursor.as_deref(), r.page_size as usize)
        })
        .await?;
        Ok(tonic::Response::new(v1::ListDevicesResponse {
            devices: page.devices.iter().map(row).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_device(
        &self,
        request: tonic::Request<v1::GetDeviceRequest>,
    ) -> Result<tonic::Response<v1::GetDeviceResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let id = request.into_inner().device_id;
        let d = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            if id.is_empty() {
                return Err(CollectorError::InvalidArgument(
                    "device_id: required".into(),
                ));
            }
            c.get_device(&who, &id)
        })
        .await?;
        Ok(tonic::Response::new(v1::GetDeviceResponse {
            device: Some(row(&d)),
            verdict: Some(convert::verdict_to_wire(&d.verdict, d.judged_at, &d.policy)),
            findings: d.findings.iter().map(convert::finding_to_wire).collect(),
            unclassified: d
                .unclassified
                .iter()
                .map(convert::unclassified_to_wire)
                .collect(),
            stats: Some(convert::stats_to_wire(&d.stats)),
            enrolled_at: Some(convert::timestamp(d.enrolled_at)),
            last_sequence: d.last_sequence,
            os_version: d.os_version.clone(),
            revoked: d.revoked,
            duplicate: d.duplicate.clone().unwrap_or_default(),
        }))
    }

    async fn organisation_summary(
        &self,
        request: tonic::Request<v1::OrganisationSummaryRequest>,
    ) -> Result<tonic::Response<v1::OrganisationSummaryResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let org = request.into_inner().organisation;
        let org2 = org.clone();
        let agg = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.organisation_summary(&who, &org2)
        })
        .await?;
        let mut by_product: Vec<v1::ProductCount> = agg
            .by_product
            .iter()
            .map(|(p, c)| v1::ProductCount {
                product: p.clone(),
                devices: c.devices,
                violating: c.violating,
            })
            .collect();
        by_product.sort_by(|a, b| {
            b.devices
                .cmp(&a.devices)
                .then_with(|| a.product.cmp(&b.product))
        });
        Ok(tonic::Response::new(v1::OrganisationSummaryResponse {
            organisation: org,
            devices: agg.devices,
            by_status: agg
                .by_status
                .iter()
                .map(|(s, n)| v1::StatusCount {
                    status: convert::status_to_wire(*s),
                    devices: *n,
                })
                .collect(),
            by_product,
            percent_compliant: agg.percent_compliant(),
        }))
    }
}
