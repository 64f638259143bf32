//! `Reporting.Connect` adapter: one task per stream.
//!
//! The device is the one named by the verified client certificate; the stream is refused
//! before reading anything if there is none, or if the device is unknown or revoked. The first
//! message must be a hello; the collector answers with a welcome carrying its stored sequence,
//! then acknowledges each report after the store has flushed it, or answers a throttle when the
//! domain says the device is over its report rate ([`Collector::take_report_budget`]).
//! Outbound messages go through a bounded channel: a failed send means the agent is gone and
//! the task ends. Announcements to every agent join that channel's output in [`super::push`].

use super::{blocking, to_status};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::ingest::{HelloInfo, IncomingReport, ReportBody, Throttled, wants_snapshot};
use commscan_core::identity::DeviceIdentity;
use commscan_proto::convert;
use commscan_proto::v1::{
    self, AgentMessage, CollectorMessage, agent_message, collector_message,
    reporting_server::Reporting,
};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;

/// The `Reporting` service. Streams are long-lived: `shutdown` ends them (UNAVAILABLE, the
/// agent reconnects later) so that a graceful server shutdown does not wait for agents.
#[derive(Debug, Clone)]
pub struct ReportingService(pub Arc<Collector>, pub tokio_util::sync::CancellationToken);

/// The device identity of a request, from its verified client certificate only.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Result<DeviceIdentity, CollectorError> {
    let certs = request.peer_certs().ok_or_else(|| {
        CollectorError::Unauthenticated(
            "a device client certificate is required (enrol first)".into(),
        )
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| CollectorError::Unauthenticated("empty client certificate chain".into()))?;
    DeviceIdentity::from_certificate_der(leaf)
        .map_err(|e| CollectorError::Unauthenticated(e.to_string()))
}

fn report_from_wire(r: v1::Report) -> Result<IncomingReport, CollectorError> {
    let bad = CollectorError::InvalidArgument;
    if r.sequence == 0 {
        return Err(bad("report.sequence: must be at least 1".into()));
    }
    let findings = |list: Vec<v1::Finding>| {
        list.into_iter()
            .map(convert::finding_from_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)
    };
    let body = match r.body {
        Some(v1::report::Body::Snapshot(s)) => ReportBody::Snapshot {
            findings: findings(s.findings)?,
            unclassified: s
                .unclassified
                .into_iter()
                .map(convert::unclassified_from_wire)
                .collect(),
        },
        Some(v1::report::Body::Delta(d)) => ReportBody::Delta {
            upserted: findings(d.upserted)?,
            removed: d.removed,
            unclassified: d.unclassified_changed.then(|| {
                d.unclassified
                    .into_iter()
                    .map(convert::unclassified_from_wire)
                    .collect()
            }),
        },
        None => return Err(bad("report.body: a snapshot or a delta is required".into())),
    };
    Ok(IncomingReport {
        sequence: r.sequence,
        body,
        stats: convert::stats_from_wire(r.stats.unwrap_or_default()),
        state_digest: r.state_digest,
    })
}

/// Whether a status from reading the inbound stream says the peer sent bytes that are not a
/// message (tonic reports these as INTERNAL: an undecodable protobuf, a bad frame flag).
fn is_malformed(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Internal
        && (status
            .message()
            .contains("failed to decode Protobuf message")
            || status.message().contains("invalid compression flag"))
}

/// An agent's catalog statement, bounded and cleaned.
fn catalog_from_wire(c: &v1::CatalogState) -> crate::store::DeviceCatalog {
    crate::ingest::device_catalog(c.release, &c.digest, c.refused_release, &c.refusal)
}

fn msg(kind: collector_message::Kind) -> Result<CollectorMessage, tonic::Status> {
    Ok(CollectorMessage { kind: Some(kind) })
}

#[tonic::async_trait]
impl Reporting for ReportingService {
    type ConnectStream =
        Pin<Box<dyn Stream<Item = Result<CollectorMessage, tonic::Status>> + Send>>;

    async fn connect(
        &self,
        request: tonic::Request<tonic::Streaming<AgentMessage>>,
    ) -> Result<tonic::Response<Self::ConnectStream>, tonic::Status> {
        let certificate_expires = request.peer_certs().and_then(|c| {
            c.first()
                .and_then(|leaf| commscan_core::identity::certificate_not_after(leaf))
        });
        let who = match peer_identity(&request) {
            Ok(who) => who,
            Err(e) => {
                let actor = request
                    .remote_addr()
                    .map(|a| format!("anonymous@{}", a.ip()))
                    .unwrap_or_else(|| "anonymous".into());
                self.0
                    .audit(&actor, "reporting.connect", None, false, e.to_string());
                return Err(to_status(e));
            }
        };
        let mut inbound = request.into_inner();
        let first = inbound.message().await.map_err(|s| {
            if is_malformed(&s) {
                tracing::warn!(device = %who, error = %s.message(), "malformed hello");
                tonic::Status::invalid_argument(format!("malformed message: {}", s.message()))
            } else {
                s
            }
        })?;
        let hello = match first {
            Some(AgentMessage {
                kind: Some(agent_message::Kind::Hello(h)),
            }) => h,
            _ => {
                return Err(tonic::Status::failed_precondition(
                    "the first message of a stream must be a hello",
                ));
            }
        };
        let info = HelloInfo {
            agent_version: hello.agent_version,
            platform: convert::platform_from_wire(hello.platform).ok(),
            hostname: hello.hostname,
            claimed_device_id: hello.device_id,
            state_digest: hello.state_digest,
            certificate_expires,
            catalog: hello.catalog.as_ref().map(catalog_from_wire),
        };
        let mappings_digest = hello
            .catalog
            .as_ref()
            .map(|c| c.mappings_digest.clone())
            .unwrap_or_default();
        let stated_mappings = mappings_digest.len() == 32;
        let (device, registered) = {
            let (w, info) = (who.clone(), info.clone());
            blocking(&self.0, move |c| {
                let opened = c.open_stream(&w, &info)?;
                if stated_mappings {
                    c.ensure_mappings(&w.organisation);
                }
                Ok(opened)
            })
            .await
            .inspect_err(
                |s| tracing::warn!(device = %who, error = %s.message(), "stream refused"),
            )?
        };
        if let Some(catalog) = info.catalog.clone()
            && catalog != device.catalog
        {
            let w = who.clone();
            if let Err(s) = blocking(&self.0, move |c| c.record_catalog(&w, &catalog)).await {
                tracing::warn!(device = %who, error = %s.message(), "agent catalog not recorded");
            }
        }
        let policy_changes = self.0.connections().policy_changes();
        let (tx, rx) = mpsc::channel(16);
        let welcome = v1::Welcome {
            device_id: who.device_id.clone(),
            organisation: who.organisation.clone(),
            stored_sequence: device.last_sequence,
            want_snapshot: wants_snapshot(&device, &info),
        };
        let welcome_wants = welcome.want_snapshot;
        tx.send(msg(collector_message::Kind::Welcome(welcome)))
            .await
            .map_err(|_| tonic::Status::cancelled("agent gone"))?;
        tracing::info!(device = %who.device_id, organisation = %who.organisation, last_acked = hello.last_acked_sequence, stored = device.last_sequence, want_snapshot = welcome_wants, "agent connected");

        let outbound = super::push::Outbound::new(
            rx,
            policy_changes,
            self.0.clone(),
            who.organisation.clone(),
        )
        .with_agent_catalog(
            who.device_id.clone(),
            info.catalog
                .as_ref()
                .map(|c| (c.release, c.refused_release)),
        )
        .with_agent_mappings(&mappings_digest);
        let collector = self.0.clone();
        let shutdown = self.1.clone();
        tokio::spawn(async move {
            pump(
                &collector,
                &who,
                info,
                inbound,
                &tx,
                &registered.superseded,
                &shutdown,
            )
            .await;
            let (c, device) = (collector.clone(), who.device_id.clone());
            let _ =
                tokio::task::spawn_blocking(move || c.close_stream(&device, registered.conn)).await;
            tracing::info!(device = %who.device_id, "agent disconnected");
        });
        Ok(tonic::Response::new(Box::pin(outbound)))
    }
}

/// Reads the agent's messages until the stream ends, a newer stream of the device takes over,
/// a report is refused, or the collector shuts down.
async fn pump(
    collector: &Arc<Collector>,
    who: &DeviceIdentity,
    mut info: HelloInfo,
    mut inbound: tonic::Streaming<AgentMessage>,
    tx: &mpsc::Sender<Result<CollectorMessage, tonic::Status>>,
    superseded: &tokio_util::sync::CancellationToken,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.send(Err(tonic::Status::unavailable("the collector is shutting down"))).await;
                return;
            }
            _ = superseded.cancelled() => {
                let _ = tx.send(Err(tonic::Status::aborted("superseded by a newer connection of this device"))).await;
                return;
            }
            m = inbound.message() => match m {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(status) => {
                    if crate::grpc::oversize::is_oversize(status.code(), status.message()) {
                        tracing::warn!(device = %who.device_id, error = %status.message(), "oversized message; stream ended");
                        let _ = tx.send(Err(tonic::Status::resource_exhausted(status.message().to_owned()))).await;
                    } else if is_malformed(&status) {
                        // Not an OK end: the agent sent something that is not a message.
                        tracing::warn!(device = %who.device_id, error = %status.message(), "malformed message; stream ended");
                        let _ = tx.send(Err(tonic::Status::invalid_argument(format!("malformed message: {}", status.message())))).await;
                    } else {
                        tracing::debug!(device = %who.device_id, error = %status, "stream ended");
                    }
                    return;
                }
            },
        };
        match next.kind {
            Some(agent_message::Kind::Report(r)) => {
                if let Err(Throttled { retry_after }) = collector.take_report_budget(&who.device_id)
                {
                    let retry_after_ms =
                        retry_after.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
                    tracing::warn!(device = %who.device_id, retry_after_ms, "report rate exceeded; throttling");
                    if tx
                        .send(msg(collector_message::Kind::Throttle(v1::Throttle {
                            retry_after_ms,
                        })))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                let arrived = std::time::Instant::now();
                let outcome = match report_from_wire(r) {
                    Ok(report) => {
                        let (who, info) = (who.clone(), info.clone());
                        blocking(collector, move |c| c.apply_report(&who, &info, report)).await
                    }
                    Err(e) => Err(to_status(e)),
                };
                let (reply, resync) = match outcome {
                    Ok(a) => {
                        collector.metrics().report_acknowledged(arrived.elapsed());
                        (
                            msg(collector_message::Kind::Ack(v1::Ack {
                                sequence: a.sequence,
                            })),
                            a.resync,
                        )
                    }
                    Err(status) => {
                        tracing::warn!(device = %who.device_id, error = %status.message(), "report rejected");
                        (Err(status), false)
                    }
                };
                let fatal = reply.is_err();
                if tx.send(reply).await.is_err() || fatal {
                    return;
                }
                if resync {
                    tracing::warn!(device = %who.device_id, "stored state differs from the agent's after a delta; asking for a snapshot");
                    let resync = v1::Command {
                        kind: v1::CommandKind::Resync as i32,
                    };
                    if tx
                        .send(msg(collector_message::Kind::Command(resync)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Some(agent_message::Kind::Heartbeat(_)) => {}
            Some(agent_message::Kind::Catalog(state)) => {
                // The agent's answer to a catalog update: what it now uses, or what it refused.
                let catalog = catalog_from_wire(&state);
                info.catalog = Some(catalog.clone());
                let w = who.clone();
                if let Err(s) = blocking(collector, move |c| c.record_catalog(&w, &catalog)).await {
                    tracing::warn!(device = %who.device_id, error = %s.message(), "agent catalog not recorded");
                }
            }
            Some(agent_message::Kind::Hello(_)) | None => {
                let _ = tx
                    .send(Err(tonic::Status::failed_precondition(
                        "only one hello per stream",
                    )))
                    .await;
                return;
            }
        }
    }
}
