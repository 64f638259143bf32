//! The enterprise side of federation: a background task that pushes this collector's
//! per-organisation aggregates to the ministry's collector.
//!
//! **When.** At start; whenever the aggregates differ from what the ministry last
//! acknowledged (checked every `change_poll`, default 10 s, and [`SETTLE`] after any verdict
//! change so a burst of reports becomes one push); and every `interval` (default 15 min) even
//! without a change, so the ministry can tell a quiet enterprise from a dead one.
//!
//! **What.** Every local organisation aggregate whose organisation the enterprise certificate
//! grants, without unclassified candidates: counts only. Organisations the certificate does
//! not grant are left out (the ministry would refuse the whole push) and named in a warning.
//!
//! **Delivery.** A push counts as delivered only when the ministry answers, which it does after
//! flushing it to disk. A failure that may pass (unreachable, unavailable, timeout) is retried
//! with capped full-jitter backoff (1 s doubling up to 5 min, never beyond the interval); a
//! refusal (permission denied, invalid argument...) is logged as an error and retried only at
//! the next interval, since only the ministry's operator can fix it. Changes that happen while
//! a retry waits go out with the retry: each push is a full snapshot.
//!
//! **One pusher per enterprise.** Collectors sharing a database push from one of them at a
//! time: the pusher runs while its collector holds the store's `federation push` lock
//! ([`crate::store::Store::try_exclusive`], a session advisory lock on PostgreSQL, released
//! when its holder dies); the others try again every [`LEAD_RETRY`] and take over. Should the
//! holder's lock connection break while it keeps running, two may push for a while: harmless,
//! since each push is a full snapshot the ministry applies atomically.
//!
//! **Rules from the ministry.** After every delivered push, and every `fetch_interval`
//! (default 5 min, never beyond the push interval), the same task asks the ministry for the
//! rules it publishes and adopts them ([`super::fetch`]): a failed fetch is logged and tried
//! again at the next one; it never delays a push.
//!
//! **Never in the way of ingest.** The task only reads the store, on the blocking pool; the
//! verdict-change subscription is a bounded broadcast whose laggards miss events (and then
//! simply push), never slowing the sender.

use super::OrgSummary;
use super::upstream::Upstream;
use crate::collector::Collector;
use crate::error::CollectorError;
use commscan_core::identity::EnterpriseIdentity;
use commscan_proto::v1::federation_client::FederationClient;
use commscan_runtime::transport::{TransportError, backoff, channel};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Default interval between pushes when nothing changes.
pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Default interval between checks of the local aggregates for changes.
pub const DEFAULT_CHANGE_POLL: Duration = Duration::from_secs(10);
/// How long to wait after a verdict change for more before pushing.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);
/// How long the ministry may take to answer a push.
pub(crate) const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry delay ceiling.
pub(crate) const RETRY_BASE: Duration = Duration::from_secs(1);
/// Largest retry delay.
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(5 * 60);
/// Default interval between fetches of the ministry's published rules (also after every
/// delivered push).
pub const DEFAULT_FETCH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How often a collector that does not push tries to take over pushing.
pub const LEAD_RETRY: Duration = Duration::from_secs(10);

/// Pushes ([`run`]) while this collector is the one of those sharing the store that pushes;
/// until `shutdown`.
pub async fn run_exclusive(
    collector: Arc<Collector>,
    upstream: Upstream,
    shutdown: CancellationToken,
) {
    let mut waiting_logged = false;
    loop {
        let c = collector.clone();
        match tokio::task::spawn_blocking(move || c.store().try_exclusive("federation push")).await
        {
            Ok(Ok(Some(held))) => {
                run(collector, upstream, shutdown).await;
                drop(held);
                return;
            }
            Ok(Ok(None)) => {
                if !std::mem::replace(&mut waiting_logged, true) {
                    tracing::info!(
                        "federation: another collector on this store pushes; standing by"
                    );
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "federation: cannot take the push lock"),
            Err(e) => tracing::warn!(error = %e, "federation: push lock task failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LEAD_RETRY) => {}
        }
    }
}

/// A failed push.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// Connecting or the call failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The ministry did not answer in time.
    #[error("the upstream collector did not answer within {0:?}")]
    Timeout(Duration),
}

impl PushError {
    /// Whether retrying soon may succeed (the one classification; refusals wait for the
    /// ministry's operator).
    pub fn is_retriable(&self) -> bool {
        match self {
            PushError::Transport(e) => e.is_retriable(),
            PushError::Timeout(_) => true,
        }
    }
}

impl From<tonic::Status> for PushError {
    fn from(s: tonic::Status) -> Self {
        PushError::Transport(TransportError::Status(s))
    }
}

/// What is pushed: the granted organisations' summaries, and the local organisations left out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// Summaries of granted organisations, ordered by organisation.
    pub organisations: Vec<OrgSummary>,
    /// Local organisations the certificate does not grant.
    pub not_granted: BTreeSet<String>,
}

impl Collector {
    /// The aggregates an enterprise with `identity` pushes.
    pub(crate) fn federation_snapshot(
        &self,
        identity: &EnterpriseIdentity,
    ) -> Result<Snapshot, CollectorError> {
        let mut organisations = Vec::new();
        let mut not_granted = BTreeSet::new();
        for (org, aggregate) in self.store().org_aggregates()? {
            if identity.may_report(&org) {
                organisations.push(OrgSummary::of(org, aggregate));
            } else {
                not_granted.insert(org);
            }
        }
        Ok(Snapshot {
            organisations,
            not_granted,
        })
    }
}

/// The client to the ministry, connecting when there is none (a failure drops it).
async fn connected<'a>(
    client: &'a mut Option<FederationClient<Channel>>,
    upstream: &Upstream,
) -> Result<&'a mut FederationClient<Channel>, PushError> {
    if client.is_none() {
        let ch = channel(
            &upstream.url,
            &upstream.ca_pem,
            Some((&upstream.cert_pem, &upstream.key_pem)),
        )
        .await?;
        *client = Some(FederationClient::new(ch));
    }
    Ok(client.as_mut().expect("just set"))
}

/// Sends one push and waits for the ministry's acknowledgement.
async fn push_once(
    client: &mut Option<FederationClient<Channel>>,
    upstream: &Upstream,
    snapshot: &Snapshot,
) -> Result<super::Receipt, PushError> {
    let c = connected(client, upstream).await?;
    let request = crate::grpc::federation::push_to_wire(&super::Push {
        generated_at: time::OffsetDateTime::now_utc(),
        organisations: snapshot.organisations.clone(),
    });
    let answer = tokio::time::timeout(PUSH_TIMEOUT, c.push_summary(request))
        .await
        .map_err(|_| PushError::Timeout(PUSH_TIMEOUT))??
        .into_inner();
    crate::grpc::federation::receipt_from_wire(&answer)
        .map_err(|e| PushError::Transport(TransportError::Protocol(e)))
}

/// Asks the ministry for the rules it publishes beyond what this collector holds.
async fn fetch_once(
    client: &mut Option<FederationClient<Channel>>,
    upstream: &Upstream,
    held: &super::fetch::Held,
) -> Result<super::fetch::Published, PushError> {
    let c = connected(client, upstream).await?;
    let request = crate::grpc::federation::held_to_wire(held);
    let answer = tokio::time::timeout(PUSH_TIMEOUT, c.fetch_rules(request))
        .await
        .map_err(|_| PushError::Timeout(PUSH_TIMEOUT))??
        .into_inner();
    Ok(crate::grpc::federation::published_from_wire(answer))
}

/// Fetches and adopts the ministry's published rules; failures are logged, never returned.
async fn fetch_and_adopt(
    collector: &Arc<Collector>,
    client: &mut Option<FederationClient<Channel>>,
    upstream: &Upstream,
    refused: &mut super::fetch::Refused,
) {
    let held = collector.held_rules(upstream.fetch_registers, refused);
    let published = match fetch_once(client, upstream, &held).await {
        Ok(p) => p,
        Err(e) => {
            if e.is_retriable() {
                *client = None;
            }
            tracing::warn!(upstream = %upstream.url, error = %e, "federation: cannot fetch the ministry's rules; trying again later");
            return;
        }
    };
    if published.signed_catalog.is_none() && published.registers.is_none() {
        return;
    }
    let c = collector.clone();
    let (url, take_registers) = (upstream.url.clone(), upstream.fetch_registers);
    let mut r = refused.clone();
    match tokio::task::spawn_blocking(move || {
        let adopted = c.adopt_published(&url, &published, take_registers, &mut r);
        (adopted, r)
    })
    .await
    {
        Ok((_, r)) => *refused = r,
        Err(e) => tracing::error!(error = %e, "federation: adopting the ministry's rules failed"),
    }
}

/// Pushes until `shutdown` fires. Never returns an error: failures are logged and retried.
pub async fn run(collector: Arc<Collector>, upstream: Upstream, shutdown: CancellationToken) {
    let who = &upstream.identity;
    tracing::info!(upstream = %upstream.url, enterprise = %who.enterprise, organisations = ?who.organisations, interval = ?upstream.interval, "federation: pushing aggregates upstream");
    let mut changes = collector.subscribe_events();
    let mut changes_open = true;
    let mut client = None;
    // What the ministry acknowledged last, and when.
    let mut delivered: Option<(Instant, Snapshot)> = None;
    // After a failure: how many in a row, and not before when.
    let mut retry: Option<(u32, Instant)> = None;
    let mut warned_not_granted = BTreeSet::new();
    let mut warned_window = false;
    // When the ministry's rules were last asked for, and what was refused of them.
    let mut fetched: Option<Instant> = None;
    let mut refused = super::fetch::Refused::default();
    loop {
        let c = collector.clone();
        let id = who.clone();
        let snapshot = match tokio::task::spawn_blocking(move || c.federation_snapshot(&id)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "federation: cannot read local aggregates");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "federation: snapshot task failed");
                None
            }
        };
        let now = Instant::now();
        if let Some(snapshot) = snapshot {
            if snapshot.not_granted != warned_not_granted {
                if !snapshot.not_granted.is_empty() {
                    tracing::warn!(organisations = ?snapshot.not_granted, enterprise = %who.enterprise, "federation: organisations not granted by the enterprise certificate are not pushed");
                }
                warned_not_granted = snapshot.not_granted.clone();
            }
            let due = match (&retry, &delivered) {
                (Some((_, not_before)), _) => now >= *not_before,
                (None, None) => true,
                (None, Some((at, last))) => {
                    last.organisations != snapshot.organisations || now >= *at + upstream.interval
                }
            };
            if due {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = push_once(&mut client, &upstream, &snapshot) => r,
                };
                match outcome {
                    Ok(receipt) => {
                        let devices: u64 = snapshot
                            .organisations
                            .iter()
                            .map(|o| o.aggregate.devices)
                            .sum();
                        tracing::info!(upstream = %upstream.url, organisations = receipt.organisations, devices, "pushed aggregates upstream");
                        if upstream.interval >= receipt.stale_after && !warned_window {
                            tracing::warn!(interval = ?upstream.interval, ministry_window = ?receipt.stale_after, "federation: the push interval is not shorter than the ministry's freshness window; this enterprise will show as stale between pushes");
                            warned_window = true;
                        }
                        delivered = Some((Instant::now(), snapshot));
                        retry = None;
                        fetched = None;
                    }
                    Err(e) => {
                        let failures = retry.map_or(1, |(n, _)| n.saturating_add(1));
                        let wait = if e.is_retriable() {
                            client = None;
                            let wait =
                                backoff(failures, RETRY_BASE, RETRY_CAP.min(upstream.interval));
                            tracing::warn!(upstream = %upstream.url, error = %e, failures, retry_in = ?wait, "push upstream failed; will retry");
                            wait
                        } else {
                            tracing::error!(upstream = %upstream.url, error = %e, retry_in = ?upstream.interval, "push upstream refused; check the enterprise certificate with the ministry");
                            upstream.interval
                        };
                        retry = Some((failures, Instant::now() + wait));
                    }
                }
            }
        }
        if fetched.is_none_or(|at| at.elapsed() >= upstream.fetch_interval) && retry.is_none() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = fetch_and_adopt(&collector, &mut client, &upstream, &mut refused) => {}
            }
            fetched = Some(Instant::now());
        }
        let mut wake = Instant::now() + upstream.change_poll;
        if let Some((_, not_before)) = retry {
            wake = wake.min(not_before);
        } else if let Some((at, _)) = &delivered {
            wake = wake.min(*at + upstream.interval);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
            r = changes.recv(), if changes_open => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SETTLE) => {}
                    }
                }
                Err(RecvError::Closed) => changes_open = false,
            },
        }
    }
}
