//! Talking to the collector: TLS channels and one `Reporting.Connect` session.
//!
//! Every connection pins the deployment CA from the data directory (no system roots). The
//! reporting channel presents the device certificate; the collector derives the device from it.
//! HTTP/2 keepalive notices a half-open link within `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT`.
//!
//! A session: send `Hello` (last acked sequence) → receive `Welcome` (the collector's stored
//! sequence) → scan → send a snapshot `Report` with the next sequence → wait for its `Ack` →
//! record it → wait for the next scan tick, a `Command`, or shutdown. The next sequence is
//! always above both the local and the collector's record, so a wiped data directory or a
//! restored collector backup cannot make reports be ignored.
//!
//! Errors are classified once, in [`TransportError::is_retriable`].

use crate::scanner::{ScanTarget, Scanner};
use crate::state::{DataDir, Sequence, StateError};
use commscan_proto::convert;
use commscan_proto::v1::{
    self, agent_message, collector_message, reporting_client::ReportingClient,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Interval between HTTP/2 keepalive pings.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the link counts as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for an acknowledgement before giving the session up.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The collector URL is unusable.
    #[error("collector URL '{url}': {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// TLS material is unusable.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The collector did not answer.
    #[error("cannot reach collector at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The error.
        source: tonic::transport::Error,
    },
    /// The collector answered with an error.
    #[error("collector refused: {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The collector broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Local state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

impl TransportError {
    /// Whether retrying later may succeed. Permanent: the collector refused this device or its
    /// input (unauthenticated, permission denied, invalid argument), or local setup is broken.
    pub fn is_retriable(&self) -> bool {
        use tonic::Code;
        match self {
            TransportError::Connect { .. } | TransportError::Protocol(_) => true,
            TransportError::Status(s) => !matches!(
                s.code(),
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::Unimplemented
            ),
            TransportError::Url { .. } | TransportError::Tls(_) | TransportError::State(_) => false,
        }
    }
}

impl From<tonic::Status> for TransportError {
    fn from(s: tonic::Status) -> Self {
        TransportError::Status(s)
    }
}

/// A channel to the collector pinning `ca_pem`, presenting `identity` (cert, key) if given.
pub async fn channel(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, TransportError> {
    let bad_url = |message: String| TransportError::Url {
        url: url.to_owned(),
        message,
    };
    if !url.starts_with("https://") {
        return Err(bad_url(
            "must start with https:// (the collector only speaks TLS)".into(),
        ));
    }
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad_url(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    endpoint
        .connect()
        .await
        .map_err(|source| TransportError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// An enrolled agent's reporting session.
pub struct Reporter {
    data: DataDir,
    scanner: Arc<Scanner>,
    target: ScanTarget,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// What [`Reporter::session`] ended with when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `once` was set and the first report was acknowledged with this sequence.
    Acked(u64),
    /// Shutdown was requested.
    Shutdown,
}

impl Reporter {
    /// A reporter for an enrolled data directory.
    pub fn new(data: DataDir, scanner: Arc<Scanner>, target: ScanTarget) -> Reporter {
        Reporter {
            data,
            scanner,
            target,
        }
    }

    async fn scan(&self) -> commscan_core::scan::ScanReport {
        let scanner = self.scanner.clone();
        let target = self.target.clone();
        tokio::task::spawn_blocking(move || scanner.scan(&target))
            .await
            .expect("scan task does not panic")
    }

    /// Runs one session. With `once`, returns after the first acknowledged report; otherwise
    /// rescans every `interval` (or on a collector command) until `shutdown`.
    pub async fn session(
        &self,
        interval: Duration,
        once: bool,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, TransportError> {
        let identity = self.data.identity()?;
        // Renew a certificate near its end before using it; a failed renewal is retried on
        // the next session while the current certificate still works.
        if let Err(e) =
            crate::enroll::renew_if_due(&self.data, time::OffsetDateTime::now_utc()).await
        {
            tracing::warn!(error = %e, "certificate renewal failed; will retry");
        }
        let (ca, cert, key) = self.data.credentials()?;
        let channel = channel(&identity.collector, &ca, Some((&cert, &key))).await?;
        let mut client = ReportingClient::new(channel);
        let mut seq = self.data.sequence();

        let (tx, rx) = mpsc::channel::<v1::AgentMessage>(8);
        let hello = v1::Hello {
            agent_version: commscan_core::VERSION.to_owned(),
            platform: convert::platform_to_wire(self.target.platform),
            last_acked_sequence: seq.acked,
            hostname: hostname(),
            state_digest: Vec::new(),
            device_id: identity.device_id.clone(),
        };
        tx.send(v1::AgentMessage {
            kind: Some(agent_message::Kind::Hello(hello)),
        })
        .await
        .map_err(|_| TransportError::Protocol("stream closed before hello".into()))?;
        let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
        let welcome = match inbound.message().await? {
            Some(v1::CollectorMessage {
                kind: Some(collector_message::Kind::Welcome(w)),
            }) => w,
            other => {
                return Err(TransportError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )));
            }
        };
        tracing::info!(device = %welcome.device_id, organisation = %welcome.organisation, stored_sequence = welcome.stored_sequence, "connected to collector");
        seq.sent = seq.sent.max(welcome.stored_sequence);

        loop {
            let report = self.scan().await;
            let sequence = seq.sent + 1;
            // Record the sequence before sending it, so a crash can never reuse it.
            seq.sent = sequence;
            self.data.set_sequence(seq)?;
            let msg = v1::Report {
                sequence,
                body: Some(v1::report::Body::Snapshot(v1::Snapshot {
                    findings: report
                        .findings
                        .iter()
                        .map(convert::finding_to_wire)
                        .collect(),
                    unclassified: report
                        .unclassified
                        .iter()
                        .map(convert::unclassified_to_wire)
                        .collect(),
                })),
                stats: Some(convert::stats_to_wire(&report.stats)),
                scanned_at: Some(convert::timestamp(time::OffsetDateTime::now_utc())),
                state_digest: Vec::new(),
            };
            let msg = v1::AgentMessage {
                kind: Some(agent_message::Kind::Report(msg)),
            };
            tx.send(msg.clone())
                .await
                .map_err(|_| TransportError::Protocol("stream closed by collector".into()))?;
            tracing::debug!(sequence, findings = report.findings.len(), "report sent");

            let mut rescan = false;
            let acked = tokio::time::timeout(ACK_TIMEOUT, async {
                loop {
                    match inbound.message().await? {
                        None => {
                            return Err(TransportError::Protocol("stream ended before ack".into()));
                        }
                        Some(m) => match m.kind {
                            Some(collector_message::Kind::Ack(a)) if a.sequence >= sequence => {
                                return Ok(a.sequence);
                            }
                            Some(collector_message::Kind::Command(_)) => rescan = true,
                            Some(collector_message::Kind::Throttle(t)) => {
                                // The report was not applied: wait as asked, then send it again.
                                let wait = Duration::from_millis(u64::from(t.retry_after_ms))
                                    .min(ACK_TIMEOUT / 2);
                                tracing::info!(
                                    retry_after_ms = t.retry_after_ms,
                                    "collector throttled this device"
                                );
                                tokio::time::sleep(wait).await;
                                tx.send(msg.clone()).await.map_err(|_| {
                                    TransportError::Protocol("stream closed by collector".into())
                                })?;
                            }
                            _ => {}
                        },
                    }
                }
            })
            .await
            .map_err(|_| {
                TransportError::Protocol(format!(
                    "no ack for sequence {sequence} within {ACK_TIMEOUT:?}"
                ))
            })??;
            seq = Sequence {
                sent: seq.sent,
                acked: acked.min(seq.sent),
            };
            self.data.set_sequence(seq)?;
            tracing::info!(
                sequence = acked,
                findings = report.findings.len(),
                "report acknowledged"
            );
            if once {
                return Ok(SessionEnd::Acked(acked));
            }
            if rescan {
                continue;
            }
            let tick = tokio::time::sleep(interval);
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                    _ = &mut tick => break,
                    m = inbound.message() => match m?.and_then(|m| m.kind) {
                        Some(collector_message::Kind::Command(c)) => {
                            tracing::info!(command = c.kind, "collector asked for a rescan");
                            break;
                        }
                        Some(_) => {}
                        None => return Err(TransportError::Protocol("stream closed by collector".into())),
                    },
                }
            }
        }
    }
}

/// This machine's host name, for display to officers.
pub fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "unknown".into())
}

/// Full-jitter exponential backoff: a random delay in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        u64::from(attempt) * 7919
    };
    let ms = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(r % (ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        for attempt in 0..40 {
            let d = backoff(attempt, Duration::from_millis(500), Duration::from_secs(60));
            assert!(d <= Duration::from_secs(60));
            assert!(d <= Duration::from_millis(500) * 2u32.pow(attempt.min(20)));
        }
    }

    #[test]
    fn refusals_are_permanent_and_outages_are_not() {
        assert!(
            !TransportError::Status(tonic::Status::permission_denied("revoked")).is_retriable()
        );
        assert!(!TransportError::Status(tonic::Status::unauthenticated("no cert")).is_retriable());
        assert!(TransportError::Status(tonic::Status::unavailable("down")).is_retriable());
        assert!(TransportError::Protocol("eof".into()).is_retriable());
    }
}
