//! The sender: one `Reporting.Connect` stream at a time, records from the spool, reconnects.
//!
//! A session: hello (acknowledged sequence and state digest) → welcome (awaited at most
//! `ack_timeout`), handed to the spool (a snapshot may replace the pending deltas; sequences
//! move above the collector's) → then, while the stream lives, the spool's next record is
//! sent and its acknowledgement awaited (at most `ack_timeout`) before the next; with nothing
//! to send the sender waits for the observer, a command, or shutdown, the link watched only by
//! rare pings ([`super::keepalive`]: the interval halves after a link found dead while idle). Throttle: the record was not applied; wait as asked
//! (at most half the ack timeout) and send it again under the same sequence. RESYNC (sent
//! after an ack): the spool replaces what is pending by a snapshot. RESCAN: the observer
//! scans now.
//!
//! Between sessions: full-jitter exponential backoff from `backoff_initial` up to
//! `backoff_max` (permanent refusals wait at least an hour), never shorter than a throttle
//! the collector asked for; a session that reached the welcome resets the backoff. A
//! connection refused (the collector restarting: its host answers the connection attempt,
//! nothing listens yet) backs off on its own count and within
//! [`REFUSED_BACKOFF_MAX`], so a fleet is back a few seconds after its collector listens
//! again rather than minutes; a failure that may mean an overloaded collector (a timeout, a
//! handshake failing, a throttle) still grows the ordinary backoff, which refusals leave
//! untouched.

use super::keepalive::{IdlePing, broke_in_transit};
use super::{AgentError, AgentEvent, Shared, now};
use crate::spool::{Record, ReportBody, hello_fields};
use commscan_proto::convert;
use commscan_proto::v1::{
    self, agent_message, collector_message, reporting_client::ReportingClient,
};
use commscan_runtime::transport::{self, REFUSED_BACKOFF_MAX, TransportError, backoff};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Permanent refusals (revoked, unknown device) are retried this rarely at most.
const PERMANENT_BACKOFF: Duration = Duration::from_secs(3600);

/// How a session failed, as far as the wait before the next one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Connection refused: the collector restarting.
    Refused,
    /// Any other failure a retry may fix.
    Retriable,
    /// A refusal no retry can fix (revoked, unknown device).
    Permanent,
}

impl Failure {
    fn of(e: &AgentError) -> Failure {
        if !e.is_retriable() {
            Failure::Permanent
        } else if e.is_refused() {
            Failure::Refused
        } else {
            Failure::Retriable
        }
    }
}

/// Failed sessions since the last established one, refusals counted apart: a collector that
/// was restarting does not lengthen the backoff after a later timeout, nor the reverse.
#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    refused: u32,
    other: u32,
}

impl Failures {
    /// The wait before the next session after `failure`; counts it.
    fn next_delay(
        &mut self,
        failure: Failure,
        d: &crate::config::Delivery,
        throttle: Duration,
    ) -> Duration {
        let count = match failure {
            Failure::Refused => &mut self.refused,
            Failure::Retriable | Failure::Permanent => &mut self.other,
        };
        let delay = retry_delay(failure, *count, d, throttle);
        *count = count.saturating_add(1);
        delay
    }
}

/// The wait before the next session: full-jitter backoff for a retriable failure, never less
/// than the collector's throttle, within [`REFUSED_BACKOFF_MAX`] (or `backoff_max` if lower)
/// after a refused connection; at least [`PERMANENT_BACKOFF`] (plus up to a tenth of it, so a
/// fleet refused at once does not come back at once) for a refusal no retry can fix.
fn retry_delay(
    failure: Failure,
    attempt: u32,
    d: &crate::config::Delivery,
    throttle: Duration,
) -> Duration {
    match failure {
        Failure::Refused => backoff(
            attempt,
            d.backoff_initial,
            d.backoff_max.min(REFUSED_BACKOFF_MAX),
        )
        .max(throttle),
        Failure::Retriable => backoff(attempt, d.backoff_initial, d.backoff_max).max(throttle),
        Failure::Permanent => {
            PERMANENT_BACKOFF + backoff(attempt, PERMANENT_BACKOFF / 10, PERMANENT_BACKOFF / 10)
        }
    }
}

/// Refuses to connect with a certificate this device's own clock says is not valid: the
/// handshake would fail with nothing but "transport error". An unreadable certificate is left
/// to the handshake to report.
fn check_clock(cert_pem: &str, now: time::OffsetDateTime) -> Result<(), AgentError> {
    match commscan_core::pki::validity_window(cert_pem) {
        Ok((not_before, not_after)) if now < not_before || now > not_after => {
            Err(AgentError::Clock {
                now,
                not_before,
                not_after,
            })
        }
        _ => Ok(()),
    }
}

/// The collector for the `attempt`-th session since the last established one: the configured
/// list in turn (so a failed node's agents move to the next), or the enrolment's address.
fn collector_for<'a>(list: &'a [String], enrolled: &'a str, attempt: u32) -> &'a str {
    if list.is_empty() {
        return enrolled;
    }
    &list[attempt as usize % list.len()]
}

/// How a session ended without error.
enum End {
    Shutdown,
    Idle(u64),
}

/// What a failed session leaves for the backoff and the idle ping interval.
#[derive(Default)]
struct Progress {
    established: bool,
    throttle: Option<Duration>,
    /// The link broke in transit while nothing awaited an acknowledgement.
    dead_while_idle: bool,
}

/// The sender loop: sessions until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let d = shared.config.delivery.clone();
    // Sessions since the last established one: picks the collector of the list.
    let mut attempt = 0u32;
    let mut ping = IdlePing::new(&d);
    let mut failures = Failures::default();
    loop {
        let mut progress = Progress::default();
        let result = session(&shared, &shutdown, false, attempt, ping, &mut progress).await;
        shared.set_status(|s| s.connected = false);
        let err = match result {
            Ok(_) => return,
            Err(e) => e,
        };
        if let Some(interval) = ping.session_ended(progress.dead_while_idle) {
            tracing::info!(
                keepalive_interval_s = interval.as_secs(),
                "the link died while idle: pinging more often"
            );
        }
        if progress.established {
            attempt = 0;
            failures = Failures::default();
        }
        let failure = Failure::of(&err);
        let delay = failures.next_delay(failure, &d, progress.throttle.unwrap_or_default());
        attempt = attempt.saturating_add(1);
        tracing::warn!(error = %err, retriable = err.is_retriable(), refused = failure == Failure::Refused, retry_in_ms = delay.as_millis() as u64, "session ended");
        shared.emit(AgentEvent::Disconnected {
            error: err.to_string(),
        });
        shared.set_status(|s| s.last_error = Some(err.to_string()));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

/// One session that ends once nothing is left to send; returns the acknowledged sequence.
pub(crate) async fn until_idle(
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Result<u64, AgentError> {
    let mut progress = Progress::default();
    let ping = IdlePing::new(&shared.config.delivery);
    let r = session(shared, shutdown, true, 0, ping, &mut progress).await;
    shared.set_status(|s| s.connected = false);
    match r? {
        End::Idle(seq) => Ok(seq),
        End::Shutdown => Ok(shared.spool.view().meta.acked_sequence),
    }
}

fn report(r: &Record) -> v1::AgentMessage {
    let body = match &r.body {
        ReportBody::Snapshot {
            findings,
            unclassified,
        } => v1::report::Body::Snapshot(v1::Snapshot {
            findings: findings.iter().map(convert::finding_to_wire).collect(),
            unclassified: unclassified
                .iter()
                .map(convert::unclassified_to_wire)
                .collect(),
        }),
        ReportBody::Delta {
            upserted,
            removed,
            unclassified,
        } => v1::report::Body::Delta(v1::Delta {
            upserted: upserted.iter().map(convert::finding_to_wire).collect(),
            removed: removed.clone(),
            unclassified_changed: unclassified.is_some(),
            unclassified: unclassified
                .iter()
                .flatten()
                .map(convert::unclassified_to_wire)
                .collect(),
        }),
    };
    let state_digest = commscan_core::digest::from_hex(&r.state_digest)
        .map(|d| d.to_vec())
        .unwrap_or_default();
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Report(v1::Report {
            sequence: r.sequence,
            body: Some(body),
            stats: Some(convert::stats_to_wire(&r.stats)),
            scanned_at: Some(prost_types::Timestamp {
                seconds: r.scanned_at,
                nanos: 0,
            }),
            state_digest,
        })),
    }
}

fn closed() -> AgentError {
    TransportError::Protocol("stream closed by collector".into()).into()
}

/// Handles a command outside an ack wait.
/// The collector's announcement of a new policy: logged and emitted; the collector already
/// re-judged this device from what it holds.
fn policy_changed(shared: &Shared, p: v1::PolicyChanged) {
    let policy_id = commscan_core::text::terminal_safe(&p.policy_id)
        .chars()
        .take(64)
        .collect::<String>();
    tracing::info!(policy = %policy_id, "collector: the policy in force changed");
    shared.emit(AgentEvent::PolicyChanged { policy_id });
}

/// What the agent states about its catalog: in its hello and after every catalog update.
fn catalog_state(shared: &Shared) -> v1::CatalogState {
    let s = shared.catalog.status();
    v1::CatalogState {
        release: s.release,
        digest: s.digest.to_vec(),
        refused_release: s.refused_release,
        refusal: s.refusal,
        mappings_digest: shared.mappings.current().digest().to_vec(),
    }
}

/// The organisation's candidate decisions ([`crate::candidate_mappings`]): checked and stored
/// off the async threads, then applied to a rescan at once; refused whole otherwise. The
/// collector learns the digest in use at the next hello.
async fn candidate_mappings(shared: &Arc<Shared>, sent: v1::CandidateMappings) {
    let s = shared.clone();
    let offered = tokio::task::spawn_blocking(move || {
        let pairs = sent.mappings.into_iter().map(|m| (m.name, m.product));
        let m = s.mappings.offer(pairs)?;
        let decisions = m.len();
        if s.inventory.use_mappings(m) {
            s.rescan.notify_one();
        }
        Ok::<usize, crate::candidate_mappings::MappingsRefused>(decisions)
    });
    match offered.await {
        Ok(Ok(decisions)) => {
            tracing::info!(decisions, "candidate decisions of the organisation applied");
            shared.emit(AgentEvent::MappingsAccepted { decisions });
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "candidate decisions refused; the previous ones stay");
            shared.emit(AgentEvent::MappingsRefused);
        }
        Err(e) => tracing::error!(error = %e, "candidate decisions check failed"),
    }
    shared.set_status(|_| {});
}

/// A signed catalog from the collector ([`crate::catalog_update`]): checked and stored off the
/// async threads, then scanned with at once, or refused with the previous catalog kept; either
/// way the collector is told what the agent now uses.
async fn catalog_update(
    shared: &Arc<Shared>,
    update: v1::CatalogUpdate,
    tx: &mpsc::Sender<v1::AgentMessage>,
) -> Result<(), AgentError> {
    let s = shared.clone();
    // Accepted and put to use in one step on the blocking thread: were the session's future
    // dropped meanwhile (an ack timeout, shutdown), a stored catalog must not be left unused
    // while the hello already states it.
    let offered = tokio::task::spawn_blocking(move || {
        let catalog = s.catalog.offer(&update.signed_catalog)?;
        if s.inventory.use_catalog(&catalog) {
            s.rescan.notify_one();
        }
        Ok::<(), crate::catalog_update::OfferError>(())
    });
    match offered.await {
        Ok(Ok(())) => {
            shared.emit(AgentEvent::CatalogAccepted {
                release: shared.catalog.status().release,
            });
        }
        Ok(Err(e)) => shared.emit(AgentEvent::CatalogRefused { reason: e.code() }),
        Err(e) => tracing::error!(error = %e, "catalog check failed"),
    }
    shared.set_status(|_| {});
    tx.send(v1::AgentMessage {
        kind: Some(agent_message::Kind::Catalog(catalog_state(shared))),
    })
    .await
    .map_err(|_| closed())
}

fn command(shared: &Shared, c: &v1::Command) -> Result<(), AgentError> {
    match v1::CommandKind::try_from(c.kind) {
        Ok(v1::CommandKind::Rescan) => {
            tracing::info!("collector asked for a rescan");
            shared.rescan.notify_one();
        }
        Ok(v1::CommandKind::Resync) => {
            tracing::info!("collector asked for a resync; the next report is a snapshot");
            shared.spool.resync()?;
            shared.emit(AgentEvent::Resync);
            shared.ready.notify_one();
        }
        _ => {}
    }
    Ok(())
}

async fn session(
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    until_idle: bool,
    attempt: u32,
    ping: IdlePing,
    progress: &mut Progress,
) -> Result<End, AgentError> {
    let d = &shared.config.delivery;
    let identity = shared.data.identity()?;
    let collector = collector_for(&d.collectors, &identity.collector, attempt);
    // Renew a certificate near its end before using it; a failed renewal is retried on the
    // next session while the current certificate still works.
    if let Err(e) = crate::enroll::renew_if_due(&shared.data, time::OffsetDateTime::now_utc()).await
    {
        tracing::warn!(error = %e, "certificate renewal failed; will retry");
    }
    let (ca, cert, key) = shared.data.credentials()?;
    check_clock(&cert, time::OffsetDateTime::now_utc())?;
    tracing::debug!(
        collector,
        attempt,
        keepalive_interval_s = ping.interval().as_secs(),
        "connecting"
    );
    let channel = transport::channel_with(
        collector,
        &ca,
        Some((&cert, &key)),
        ping.interval(),
        d.keepalive_timeout,
    )
    .await?;
    let mut client = ReportingClient::new(channel);
    let (acked, digest) = hello_fields(&shared.spool.view());
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(8);
    let hello = v1::Hello {
        agent_version: commscan_core::VERSION.to_owned(),
        platform: convert::platform_to_wire(shared.inventory.platform()),
        last_acked_sequence: acked,
        hostname: crate::enroll::hostname(),
        state_digest: digest.map(|d| d.to_vec()).unwrap_or_default(),
        device_id: identity.device_id.clone(),
        catalog: Some(catalog_state(shared)),
    };
    tx.send(v1::AgentMessage {
        kind: Some(agent_message::Kind::Hello(hello)),
    })
    .await
    .map_err(|_| TransportError::Protocol("stream closed before hello".into()))?;
    // The welcome acknowledges the hello: a link that dies here is noticed within the
    // acknowledgement deadline too.
    let opened = tokio::time::timeout(d.ack_timeout, async {
        let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
        let first = inbound.message().await?;
        Ok::<_, AgentError>((inbound, first))
    })
    .await
    .map_err(|_| TransportError::Protocol(format!("no welcome within {:?}", d.ack_timeout)))??;
    let (mut inbound, first) = opened;
    let welcome = match first {
        Some(v1::CollectorMessage {
            kind: Some(collector_message::Kind::Welcome(w)),
        }) => w,
        Some(v1::CollectorMessage {
            kind: Some(collector_message::Kind::Throttle(t)),
        }) => {
            progress.throttle = Some(Duration::from_millis(u64::from(t.retry_after_ms)));
            return Err(TransportError::Protocol("throttled before welcome".into()).into());
        }
        other => {
            return Err(
                TransportError::Protocol(format!("expected welcome, got {other:?}")).into(),
            );
        }
    };
    shared
        .spool
        .welcome(welcome.stored_sequence, welcome.want_snapshot)?;
    progress.established = true;
    tracing::info!(device = %welcome.device_id, stored_sequence = welcome.stored_sequence, want_snapshot = welcome.want_snapshot, "connected to collector");
    shared.emit(AgentEvent::Connected {
        stored_sequence: welcome.stored_sequence,
        want_snapshot: welcome.want_snapshot,
    });
    shared.set_status(|s| {
        s.connected = true;
        s.last_error = None;
    });

    loop {
        if shutdown.is_cancelled() {
            return Ok(End::Shutdown);
        }
        let Some(record) = shared.spool.next_record()? else {
            if until_idle {
                return Ok(End::Idle(shared.spool.view().meta.acked_sequence));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(End::Shutdown),
                _ = shared.ready.notified() => continue,
                m = inbound.message() => match m.inspect_err(|e| progress.dead_while_idle = broke_in_transit(e))?.and_then(|m| m.kind) {
                    Some(collector_message::Kind::Command(c)) => command(shared, &c)?,
                    Some(collector_message::Kind::PolicyChanged(p)) => policy_changed(shared, p),
                    Some(collector_message::Kind::CatalogUpdate(u)) => catalog_update(shared, u, &tx).await?,
                    Some(collector_message::Kind::CandidateMappings(m)) => candidate_mappings(shared, m).await,
                    Some(_) => {}
                    None => return Err(closed()),
                },
            }
            continue;
        };
        let msg = report(&record);
        tx.send(msg.clone()).await.map_err(|_| closed())?;
        tracing::debug!(
            sequence = record.sequence,
            kind = record.body.kind(),
            "report sent"
        );
        shared.emit(AgentEvent::Sent {
            sequence: record.sequence,
            kind: record.body.kind(),
            state_digest: record.state_digest.clone(),
        });
        let mut resync = false;
        let wait = async {
            loop {
                match inbound.message().await? {
                    None => return Err::<u64, AgentError>(closed()),
                    Some(m) => match m.kind {
                        Some(collector_message::Kind::Ack(a)) if a.sequence >= record.sequence => {
                            return Ok(a.sequence);
                        }
                        Some(collector_message::Kind::Command(c)) => {
                            if c.kind == v1::CommandKind::Resync as i32 {
                                resync = true;
                            } else {
                                command(shared, &c)?;
                            }
                        }
                        Some(collector_message::Kind::PolicyChanged(p)) => {
                            policy_changed(shared, p)
                        }
                        Some(collector_message::Kind::CatalogUpdate(u)) => {
                            catalog_update(shared, u, &tx).await?
                        }
                        Some(collector_message::Kind::CandidateMappings(m)) => {
                            candidate_mappings(shared, m).await
                        }
                        Some(collector_message::Kind::Throttle(t)) => {
                            let wait = Duration::from_millis(u64::from(t.retry_after_ms))
                                .min(d.ack_timeout / 2);
                            tracing::info!(
                                retry_after_ms = t.retry_after_ms,
                                "collector throttled this device"
                            );
                            tokio::time::sleep(wait).await;
                            tx.send(msg.clone()).await.map_err(|_| closed())?;
                        }
                        _ => {}
                    },
                }
            }
        };
        let acked = tokio::select! {
            _ = shutdown.cancelled() => return Ok(End::Shutdown),
            r = tokio::time::timeout(d.ack_timeout, wait) => r.map_err(|_| {
                TransportError::Protocol(format!(
                    "no ack for sequence {} within {:?}",
                    record.sequence, d.ack_timeout
                ))
            })??,
        };
        shared.spool.acknowledge(acked)?;
        tracing::info!(
            sequence = acked,
            kind = record.body.kind(),
            "report acknowledged"
        );
        shared.emit(AgentEvent::Acked { sequence: acked });
        // The report's encoding is dropped: its pages go back while the agent waits.
        crate::memory::trim();
        shared.set_status(|s| {
            s.last_ack = Some(crate::status::AckNote {
                at: now(),
                sequence: acked,
            })
        });
        if resync {
            command(
                shared,
                &v1::Command {
                    kind: v1::CommandKind::Resync as i32,
                },
            )?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sessions_move_through_the_collector_list_in_turn() {
        let list = vec!["https://a:7443".to_owned(), "https://b:7443".to_owned()];
        let picked: Vec<&str> = (0..5)
            .map(|attempt| collector_for(&list, "https://enrolled:7443", attempt))
            .collect();
        assert_eq!(
            picked,
            [
                "https://a:7443",
                "https://b:7443",
                "https://a:7443",
                "https://b:7443",
                "https://a:7443"
            ]
        );
        assert_eq!(
            collector_for(&[], "https://enrolled:7443", 3),
            "https://enrolled:7443"
        );
    }

    #[test]
    fn a_refused_device_waits_at_least_an_hour_and_an_outage_is_retried_soon() {
        let d = crate::config::Delivery::default();
        for attempt in 0..5 {
            let refused = retry_delay(Failure::Permanent, attempt, &d, Duration::ZERO);
            assert!(refused >= PERMANENT_BACKOFF, "{refused:?}");
            assert!(refused <= PERMANENT_BACKOFF + PERMANENT_BACKOFF / 10);
        }
        let first = retry_delay(Failure::Retriable, 0, &d, Duration::ZERO);
        assert!(first <= d.backoff_initial, "{first:?}");
        let throttled = retry_delay(Failure::Retriable, 0, &d, Duration::from_secs(30));
        assert!(throttled >= Duration::from_secs(30));
    }

    #[test]
    fn a_refused_connection_is_retried_within_seconds_and_leaves_the_ordinary_backoff_alone() {
        let d = crate::config::Delivery::default();
        assert!(d.backoff_max > REFUSED_BACKOFF_MAX * 10);
        let mut failures = Failures::default();
        // A collector restarting for a long while: however many refusals, never over the cap.
        let mut longest = Duration::ZERO;
        for _ in 0..200 {
            let delay = failures.next_delay(Failure::Refused, &d, Duration::ZERO);
            assert!(delay <= REFUSED_BACKOFF_MAX, "{delay:?}");
            longest = longest.max(delay);
        }
        // Full jitter over [0, 5 s], 200 draws: the cap is reached, not a fixed short delay.
        assert!(longest > REFUSED_BACKOFF_MAX / 2, "{longest:?}");
        // The first failure of another kind after them starts the ordinary backoff afresh.
        let after = failures.next_delay(Failure::Retriable, &d, Duration::ZERO);
        assert!(after <= d.backoff_initial, "{after:?}");
        // Ordinary failures still grow past the refusal cap (4 s, 8 s, ... 300 s ceilings).
        let mut grown = Duration::ZERO;
        for _ in 0..200 {
            grown = grown.max(failures.next_delay(Failure::Retriable, &d, Duration::ZERO));
        }
        assert!(grown > REFUSED_BACKOFF_MAX, "{grown:?}");
        // A throttle is honoured even after a refusal, and a lower configured cap wins.
        let throttled = retry_delay(Failure::Refused, 0, &d, Duration::from_secs(30));
        assert!(throttled >= Duration::from_secs(30));
        let short = crate::config::Delivery {
            backoff_max: Duration::from_secs(2),
            ..d
        };
        for attempt in 0..20 {
            assert!(
                retry_delay(Failure::Refused, attempt, &short, Duration::ZERO)
                    <= Duration::from_secs(2)
            );
        }
    }

    #[test]
    fn a_clock_outside_the_certificate_is_named_not_a_transport_error() {
        use commscan_core::identity::DeviceIdentity;
        use commscan_core::pki::{Authority, device_key_and_csr};
        let (ca, _) = Authority::generate("t.local").unwrap();
        let (_, csr) = device_key_and_csr().unwrap();
        let id = DeviceIdentity {
            trust_domain: "t.local".into(),
            organisation: "acme".into(),
            device_id: "d".into(),
        };
        let start = time::macros::datetime!(2026-11-01 00:00 UTC);
        let end = time::macros::datetime!(2026-12-01 00:00 UTC);
        let (cert, _) = ca.sign_device_csr_between(&csr, &id, start, end).unwrap();
        assert!(check_clock(&cert, time::macros::datetime!(2026-11-15 00:00 UTC)).is_ok());
        let early = check_clock(&cert, time::macros::datetime!(2020-01-01 00:00 UTC)).unwrap_err();
        assert!(early.to_string().contains("set the clock"), "{early}");
        assert!(early.is_retriable());
        assert!(check_clock(&cert, time::macros::datetime!(2027-01-01 00:00 UTC)).is_err());
    }
}
