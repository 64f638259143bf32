//! `Query` adapter. Every call resolves the bearer token to a principal first; the domain
//! methods authorise. Streams (events, exports) authorise once, at the start: an export
//! streams the pages the domain's [`crate::queries::DeviceExport`] yields, formatted as CSV or
//! JSON lines.
//!
//! Both streams end when the collector shuts down, with `UNAVAILABLE` ("the collector is
//! shutting down"), never with an OK end: a watcher knows to reconnect, and an export cut
//! short can never be taken for a complete one.

use super::backstop::mark_of;
use super::{blocking, to_status};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::records::OrgAggregate;
use crate::store::{Classification, DeviceFilter, DeviceRecord, HistoryKind};
use commscan_core::verdict::Status;
use commscan_proto::convert;
use commscan_proto::v1::{self, query_server::Query};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The `Query` service, and the collector's shutdown, which ends its streams.
#[derive(Debug, Clone)]
pub(crate) struct QueryService(pub Arc<Collector>, pub CancellationToken);

/// The error a stream ends with when the collector shuts down.
fn shutting_down() -> tonic::Status {
    tonic::Status::unavailable("the collector is shutting down")
}

/// Sends `item` on a stream, unless `shutdown` fires first: then the stream ends with
/// [`shutting_down`] (waiting for room, or for the client to go: the server closes connections
/// a bounded time after shutdown starts). `false` when the stream is over.
async fn send_or_end<T>(
    tx: &mpsc::Sender<Result<T, tonic::Status>>,
    item: T,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {
            let _ = tx.send(Err(shutting_down())).await;
            false
        }
        sent = tx.send(Ok(item)) => sent.is_ok(),
    }
}

/// The bearer token of a request.
pub(crate) fn bearer<T>(request: &tonic::Request<T>) -> Option<String> {
    let v = request.metadata().get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(|t| t.trim().to_owned())
}

/// A device's listing row.
pub(crate) fn row(d: &DeviceRecord) -> v1::DeviceRow {
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
        revoked: d.revoked,
    }
}

fn status_counts(by_status: &std::collections::BTreeMap<Status, u64>) -> Vec<v1::StatusCount> {
    by_status
        .iter()
        .map(|(s, n)| v1::StatusCount {
            status: convert::status_to_wire(*s),
            devices: *n,
        })
        .collect()
}

fn by_status(a: &OrgAggregate) -> Vec<v1::StatusCount> {
    status_counts(&a.by_status)
}

/// The CSV header of device exports; the columns of [`csv_line`].
pub const CSV_HEADER: &str =
    "device_id,organisation,hostname,platform,status,products,last_report,agent_version\n";

/// One device as a CSV line.
pub fn csv_line(d: &DeviceRecord) -> String {
    use commscan_core::text::csv_field;
    let last = d
        .last_report
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let fields = [
        d.device_id.as_str(),
        d.organisation.as_str(),
        d.hostname.as_str(),
        d.platform.map(|p| p.as_str()).unwrap_or(""),
        d.verdict.status.as_str(),
        &d.verdict.products().join(" "),
        &last,
        d.agent_version.as_str(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// One device as a JSON line.
/// Bytes after which an export chunk is sent.
const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;

pub fn json_line(d: &DeviceRecord) -> String {
    let v = serde_json::json!({
        "device_id": d.device_id,
        "organisation": d.organisation,
        "hostname": d.hostname,
        "platform": d.platform,
        "status": d.verdict.status,
        "products": d.verdict.products(),
        "last_report": d.last_report.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "agent_version": d.agent_version,
        "findings": d.findings,
    });
    let mut line = v.to_string();
    line.push('\n');
    line
}

fn history_to_wire(h: &crate::store::HistoryRecord) -> v1::HistoryEvent {
    let mut e = v1::HistoryEvent {
        at: Some(convert::timestamp(h.at)),
        ..Default::default()
    };
    match &h.kind {
        HistoryKind::Enrolled => e.kind = "enrolled".into(),
        HistoryKind::ProductSeen { product } => {
            e.kind = "product_seen".into();
            e.product.clone_from(product);
        }
        HistoryKind::ProductRemoved { product } => {
            e.kind = "product_removed".into();
            e.product.clone_from(product);
        }
        HistoryKind::StatusChanged { from, to } => {
            e.kind = if *to == Status::Stale {
                "stale".into()
            } else {
                "status_changed".into()
            };
            e.from = convert::status_to_wire(*from);
            e.to = convert::status_to_wire(*to);
        }
        HistoryKind::Revoked => e.kind = "revoked".into(),
    }
    e
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

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
        let platform = if r.platform == 0 {
            None
        } else {
            Some(convert::platform_from_wire(r.platform).map_err(tonic::Status::invalid_argument)?)
        };
        let filter = DeviceFilter {
            organisation: Some(r.organisation).filter(|s| !s.is_empty()),
            status,
            product: Some(r.product).filter(|s| !s.is_empty()),
            platform,
            allowed_orgs: None,
        };
        let cursor = Some(r.page_token).filter(|s| !s.is_empty());
        let page = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            let page = c.list_devices(&who, &filter, cursor.as_deref(), r.page_size as usize)?;
            Ok(crate::queries::keep_revoked(
                page,
                r.revoked,
                filter.status.is_some(),
            ))
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
        let r = request.into_inner();
        let time = |t: Option<prost_types::Timestamp>, field: &str| {
            t.map(|t| {
                convert::from_timestamp(&t)
                    .map_err(|e| tonic::Status::invalid_argument(format!("{field}: {e}")))
            })
            .transpose()
        };
        let window = crate::queries::HistoryWindow {
            since: time(r.history_since, "history_since")?,
            until: time(r.history_until, "history_until")?,
        };
        let id = r.device_id;
        let detail = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            if id.is_empty() {
                return Err(CollectorError::InvalidArgument(
                    "device_id: required".into(),
                ));
            }
            c.device_detail(&who, &id, window)
        })
        .await?;
        let now = self.0.now();
        let d = &detail.device;
        Ok(tonic::Response::new(v1::GetDeviceResponse {
            device: Some(row(d)),
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
            history: detail.history.iter().map(history_to_wire).collect(),
            waivers: detail
                .waivers
                .iter()
                .map(|w| v1::Waiver {
                    scope: match w.scope {
                        commscan_core::policy::WaiverScope::Device(_) => "device".into(),
                        commscan_core::policy::WaiverScope::Organisation(_) => {
                            "organisation".into()
                        }
                    },
                    product: w.product.clone(),
                    reason: w.reason.clone(),
                    approver: w.approver.clone(),
                    expires: Some(convert::timestamp(w.expires)),
                    expired: w.expires <= now,
                })
                .collect(),
        }))
    }

    async fn organisation_summary(
        &self,
        request: tonic::Request<v1::OrganisationSummaryRequest>,
    ) -> Result<tonic::Response<v1::OrganisationSummaryResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let r = request.into_inner();
        let org = r.organisation.clone();
        let days = if r.trend_days == 0 {
            30
        } else {
            r.trend_days as usize
        };
        let (agg, trend) = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            let agg = c.organisation_summary(&who, &r.organisation)?;
            Ok((agg, c.organisation_trend(&who, &r.organisation, days)?))
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
            by_status: by_status(&agg),
            by_product,
            percent_compliant: agg.percent_compliant(),
            trend: trend
                .iter()
                .map(|(day, a)| v1::DayCount {
                    day: day.clone(),
                    by_status: by_status(a),
                    percent_compliant: a.percent_compliant(),
                })
                .collect(),
        }))
    }

    async fn catalog_versions(
        &self,
        request: tonic::Request<v1::CatalogVersionsRequest>,
    ) -> Result<tonic::Response<v1::CatalogVersionsResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let org = request.into_inner().organisation;
        let (served_release, rows) = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.catalog_versions(&who, (!org.is_empty()).then_some(org.as_str()))
        })
        .await?;
        Ok(tonic::Response::new(v1::CatalogVersionsResponse {
            served_release,
            rows: rows
                .into_iter()
                .map(|r| v1::CatalogVersionRow {
                    organisation: r.organisation,
                    release: r.release,
                    devices: r.devices,
                    refusing: r.refusing,
                    refusal: r.refusal,
                })
                .collect(),
        }))
    }

    async fn fleet_summary(
        &self,
        request: tonic::Request<v1::FleetSummaryRequest>,
    ) -> Result<tonic::Response<v1::FleetSummaryResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let summary = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.fleet_summary(&who)
        })
        .await?;
        Ok(tonic::Response::new(v1::FleetSummaryResponse {
            rows: summary
                .rows
                .iter()
                .map(|r| v1::FleetRow {
                    enterprise: r.enterprise.clone(),
                    organisation: r.organisation.clone(),
                    devices: r.aggregate.devices,
                    by_status: by_status(&r.aggregate),
                    percent_compliant: r.percent_compliant(),
                    updated_at: r.updated_at.map(convert::timestamp),
                    stale: r.stale,
                })
                .collect(),
            total_devices: summary.total_devices,
            total_by_status: status_counts(&summary.total_by_status),
            percent_compliant: summary.percent_compliant,
        }))
    }

    async fn product_findings(
        &self,
        request: tonic::Request<v1::ProductFindingsRequest>,
    ) -> Result<tonic::Response<v1::ProductFindingsResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let org = request.into_inner().organisation;
        let products = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.product_findings(&who, Some(org.as_str()).filter(|o| !o.is_empty()))
        })
        .await?;
        Ok(tonic::Response::new(v1::ProductFindingsResponse {
            products: products
                .into_iter()
                .map(|(p, c)| v1::ProductCount {
                    product: p,
                    devices: c.devices,
                    violating: c.violating,
                })
                .collect(),
        }))
    }

    async fn list_unclassified(
        &self,
        request: tonic::Request<v1::ListUnclassifiedRequest>,
    ) -> Result<tonic::Response<v1::ListUnclassifiedResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let org = request.into_inner().organisation;
        let list = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.list_unclassified(&who, &org)
        })
        .await?;
        Ok(tonic::Response::new(v1::ListUnclassifiedResponse {
            candidates: list
                .into_iter()
                .map(|(name, c)| v1::CandidateCount {
                    name,
                    source: c.source,
                    devices: c.devices,
                    detail: c.detail,
                    looks_like: c.looks_like,
                })
                .collect(),
        }))
    }

    async fn classify_candidate(
        &self,
        request: tonic::Request<v1::ClassifyCandidateRequest>,
    ) -> Result<tonic::Response<v1::ClassifyCandidateResponse>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let r = request.into_inner();
        blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            // A malformed request is named only to whoever may classify there.
            let refuse = |why: &str| -> Result<usize, CollectorError> {
                crate::auth::authorize(
                    &who,
                    crate::auth::Access::ManageDevices,
                    Some(&r.organisation),
                )?;
                Err(CollectorError::InvalidArgument(why.into()))
            };
            if r.unmap {
                if r.dismiss || !r.product.is_empty() {
                    return refuse("unmap: give neither product nor dismiss");
                }
                return c.unclassify_candidate(&who, &r.organisation, &r.name);
            }
            let decision = match (r.dismiss, r.product.is_empty()) {
                (true, true) => Classification::Dismissed,
                (false, false) => Classification::Product { product: r.product },
                _ => return refuse("give either product or dismiss"),
            };
            c.classify_candidate(&who, &r.organisation, &r.name, decision)
        })
        .await?;
        Ok(tonic::Response::new(v1::ClassifyCandidateResponse {}))
    }

    type WatchEventsStream = BoxStream<v1::Event>;

    async fn watch_events(
        &self,
        request: tonic::Request<v1::WatchEventsRequest>,
    ) -> Result<tonic::Response<Self::WatchEventsStream>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let org = Some(request.into_inner().organisation).filter(|o| !o.is_empty());
        let org2 = org.clone();
        let proof = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.watch(&who, org2.as_deref())
        })
        .await?;
        let mut rx = self.0.subscribe_events();
        let (tx, out) = mpsc::channel(64);
        let shutdown = self.1.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(shutting_down())).await;
                        return;
                    }
                    r = rx.recv() => r,
                };
                let e = match received {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "an event watcher fell behind");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if !proof.covers(&e.organisation)
                    || org.as_ref().is_some_and(|o| o != &e.organisation)
                {
                    continue;
                }
                let event = v1::Event {
                    at: Some(convert::timestamp(e.at)),
                    device_id: e.device_id,
                    organisation: e.organisation,
                    hostname: e.hostname,
                    from: convert::status_to_wire(e.from),
                    to: convert::status_to_wire(e.to),
                    products: e.products,
                };
                if !send_or_end(&tx, event, &shutdown).await {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(out))))
    }

    type ExportDevicesStream = BoxStream<v1::ExportChunk>;

    async fn export_devices(
        &self,
        request: tonic::Request<v1::ExportDevicesRequest>,
    ) -> Result<tonic::Response<Self::ExportDevicesStream>, tonic::Status> {
        let (token, mark) = (bearer(&request), mark_of(&request));
        let r = request.into_inner();
        let csv = match r.format.as_str() {
            "" | "csv" => true,
            "json" => false,
            other => {
                return Err(tonic::Status::invalid_argument(format!(
                    "format: '{other}' (csv or json)"
                )));
            }
        };
        let status =
            convert::status_from_wire(r.status).map_err(tonic::Status::invalid_argument)?;
        let filter = DeviceFilter {
            organisation: Some(r.organisation).filter(|s| !s.is_empty()),
            status,
            ..DeviceFilter::default()
        };
        let mut export = blocking(&self.0, move |c| {
            let who = c.authenticate(token.as_deref(), mark)?;
            c.export_devices(&who, &filter)
        })
        .await?;
        let (tx, out) = mpsc::channel(4);
        let shutdown = self.1.clone();
        tokio::spawn(async move {
            if csv
                && !send_or_end(
                    &tx,
                    v1::ExportChunk {
                        data: CSV_HEADER.as_bytes().to_vec(),
                    },
                    &shutdown,
                )
                .await
            {
                return;
            }
            loop {
                if shutdown.is_cancelled() {
                    let _ = tx.send(Err(shutting_down())).await;
                    return;
                }
                // The store is synchronous: pull each page on the blocking pool.
                let (page, rest) = match tokio::task::spawn_blocking(move || {
                    let page = export.next();
                    (page, export)
                })
                .await
                {
                    Ok(pulled) => pulled,
                    Err(e) => {
                        let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                export = rest;
                let devices = match page {
                    None => return,
                    Some(Ok(devices)) => devices,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                };
                // Chunks of about EXPORT_CHUNK_BYTES: a page of large devices never makes a
                // message a client refuses (one device is at most MAX_DEVICE_RECORD_BYTES).
                let mut data = String::with_capacity(EXPORT_CHUNK_BYTES);
                let mut devices = devices.iter().peekable();
                while let Some(d) = devices.next() {
                    data.push_str(&if csv { csv_line(d) } else { json_line(d) });
                    if (data.len() >= EXPORT_CHUNK_BYTES || devices.peek().is_none())
                        && !send_or_end(
                            &tx,
                            v1::ExportChunk {
                                data: std::mem::take(&mut data).into_bytes(),
                            },
                            &shutdown,
                        )
                        .await
                    {
                        return;
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
