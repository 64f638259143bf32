//! Alert hooks: verdict changes, stale devices and stale enterprises pushed to webhooks
//! (signed JSON) and syslog receivers (RFC 5424 over TCP or TLS), from a durable outbox.
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | `[alerts]`: the serde struct, validation naming every bad key, the typed sinks |
//! | [`event`] | what an alert says ([`event::Alert`]), from a verdict change or a stale enterprise |
//! | [`outbox`] | per sink: the store lock, reading in order, sending, backoff, removal |
//! | [`webhook`] | one signed HTTP POST |
//! | [`syslog`] | RFC 5424 formatting, SD-PARAM escaping, octet-counted frames |
//!
//! # Flow and invariants
//!
//! 1. **Raised with the change.** [`crate::collector::Collector`] turns a verdict change into an
//!    [`event::Alert`] with a random id, routes it ([`Alerts::entries`]: the sinks whose
//!    `organisations` and `events` match) and writes one outbox entry per sink *in the device
//!    write's transaction* ([`crate::store::Store::put_device_alerting`], sled and
//!    PostgreSQL alike). So a verdict change is stored with its alerts or not at all; an
//!    agent's report is acknowledged after the flush that covers both. A stale enterprise (on
//!    a ministry) is checked every [`ENTERPRISE_CHECK`] by one collector and raised once per
//!    staleness episode ([`crate::store::AlertStore::enqueue_alerts_once`], marked by the
//!    time of the enterprise's last push).
//! 2. **Sent in order, at least once.** Per sink, one task on one collector (the holder of the
//!    store's `alerts <sink>` lock: always this one on sled; on PostgreSQL the first to take
//!    the advisory lock, the others taking over within [`outbox::LOCK_RETRY`] of its death)
//!    sends the oldest entry, removes it (flushed) once the receiver took it, and moves on. A failure
//!    is retried, the same entry, after a backoff doubling from `retry_initial` to
//!    `retry_max` with jitter; entries behind it wait (order is kept per sink).
//! 3. **What "once" means.** An entry is removed after delivery; if the collector dies between
//!    the two, the entry is sent again by the next holder. Receivers deduplicate by the
//!    alert's `id` (`Idempotency-Key` header and JSON field; syslog's `id` SD-PARAM), which
//!    every attempt and every sink share. So: at least once, and exactly once after
//!    deduplication by id. For syslog "taken" means written and flushed to the TCP socket (see
//!    [`syslog`] for the window that leaves).
//! 4. **Bounded.** A sink's queue holds at most its `max_outbox` entries (default
//!    [`config::DEFAULT_MAX_OUTBOX`]). When full, new alerts *for that sink* are dropped,
//!    counted (`commscan_alerts_dropped_total{reason="outbox_full"}`) and logged at error; the
//!    device write itself always proceeds. The depth is read from the store by the sink's task
//!    (every batch) and counted up on enqueue, so with several collectors the bound can be
//!    overshot by what the others enqueue between two reads. An entry still failing after
//!    `max_age` (default 7 days) is dropped, counted and logged.
//!
//! Each sink's queue is delivered one entry at a time: a webhook that takes its full timeout
//! per alert delivers at most one alert per timeout. Alerts are rare (status changes, not
//! reports); a re-judgement of many devices queues many, which drain at the receiver's pace.

pub mod config;
pub mod event;
pub mod outbox;
pub mod syslog;
mod transport;
pub mod webhook;

use crate::collector::Collector;
use crate::store::OutboxEntry;
use config::{Routing, Sinks};
use event::Alert;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often stale enterprises are looked for (on a ministry).
pub const ENTERPRISE_CHECK: Duration = Duration::from_secs(30);

/// A sink's kind, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// HTTP POST.
    Webhook,
    /// RFC 5424 over TCP/TLS.
    Syslog,
}

impl SinkKind {
    /// `webhook` or `syslog`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Syslog => "syslog",
        }
    }
}

struct SinkState {
    kind: SinkKind,
    routing: Routing,
    depth: AtomicU64,
    wake: tokio::sync::Notify,
}

/// The configured sinks and what the collector keeps about them while it runs.
pub struct Alerts {
    sinks: Sinks,
    state: BTreeMap<String, SinkState>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("sinks", &self.state.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Alerts {
    /// The sinks of a validated configuration.
    pub fn new(sinks: Sinks) -> Alerts {
        let mut state = BTreeMap::new();
        let mut add = |name: &str, kind, routing: &Routing| {
            state.insert(
                name.to_owned(),
                SinkState {
                    kind,
                    routing: routing.clone(),
                    depth: AtomicU64::new(0),
                    wake: tokio::sync::Notify::new(),
                },
            );
        };
        for w in &sinks.webhooks {
            add(&w.name, SinkKind::Webhook, &w.routing);
        }
        for s in &sinks.syslogs {
            add(&s.name, SinkKind::Syslog, &s.routing);
        }
        Alerts { sinks, state }
    }

    /// The outbox entries of `alert`: one per sink it is routed to whose queue has room.
    /// Alerts for a full queue are dropped here, counted and logged.
    pub(crate) fn entries(&self, collector: &Collector, alert: &Alert) -> Vec<OutboxEntry> {
        let mut out = Vec::new();
        let mut payload = None;
        for (name, s) in &self.state {
            let routed = s.routing.events.contains(&alert.kind)
                && s.routing
                    .organisations
                    .as_ref()
                    .is_none_or(|orgs| alert.organisations.iter().any(|o| orgs.contains(o)));
            if !routed {
                continue;
            }
            let depth = s.depth.load(Ordering::Relaxed);
            if depth >= s.routing.max_outbox {
                collector
                    .metrics()
                    .alert_dropped(s.kind.as_str(), "outbox_full");
                tracing::error!(sink = %name, event = %alert.id, kind = alert.kind.as_str(), depth, max_outbox = s.routing.max_outbox, "alert dropped: the sink's outbox is full");
                continue;
            }
            let payload = payload
                .get_or_insert_with(|| serde_json::to_string(alert).expect("alerts serialise"))
                .clone();
            out.push(OutboxEntry {
                sink: name.clone(),
                event_id: alert.id.clone(),
                payload,
                enqueued_at: collector.now(),
            });
        }
        out
    }

    /// `entries` were committed to the store: count them and wake their senders.
    pub(crate) fn enqueued(&self, collector: &Collector, entries: &[OutboxEntry]) {
        for e in entries {
            if let Some(s) = self.state.get(&e.sink) {
                let depth = s.depth.fetch_add(1, Ordering::Relaxed) + 1;
                collector.metrics().set_alert_depth(&e.sink, depth);
                s.wake.notify_one();
            }
        }
    }

    fn set_depth(&self, collector: &Collector, sink: &str, depth: u64) {
        if let Some(s) = self.state.get(sink) {
            s.depth.store(depth, Ordering::Relaxed);
            collector.metrics().set_alert_depth(sink, depth);
        }
    }

    fn removed(&self, collector: &Collector, sink: &str) {
        if let Some(s) = self.state.get(sink) {
            let depth = s
                .depth
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d.saturating_sub(1))
                })
                .unwrap_or(0)
                .saturating_sub(1);
            collector.metrics().set_alert_depth(sink, depth);
        }
    }

    async fn woken(&self, sink: &str) {
        match self.state.get(sink) {
            Some(s) => s.wake.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Whether no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }
}

/// Starts a delivery task per sink, and the stale-enterprise check, until `shutdown`. Does
/// nothing when the collector has no sinks.
pub fn spawn(collector: Arc<Collector>, shutdown: CancellationToken) -> TaskTracker {
    let tasks = TaskTracker::new();
    let Some(alerts) = collector.alerts().cloned() else {
        tasks.close();
        return tasks;
    };
    for w in &alerts.sinks.webhooks {
        tasks.spawn(outbox::run(
            collector.clone(),
            alerts.clone(),
            w.name.clone(),
            w.routing.clone(),
            outbox::Transport::Webhook(Box::new(w.clone())),
            shutdown.clone(),
        ));
    }
    for s in &alerts.sinks.syslogs {
        tasks.spawn(outbox::run(
            collector.clone(),
            alerts.clone(),
            s.name.clone(),
            s.routing.clone(),
            outbox::Transport::Syslog(Box::new(syslog::SyslogSender::new(s.clone()))),
            shutdown.clone(),
        ));
    }
    tasks.spawn(crate::service::every(
        ENTERPRISE_CHECK,
        shutdown,
        move || {
            let c = collector.clone();
            async move {
                match tokio::task::spawn_blocking(move || c.raise_stale_enterprises()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "stale enterprise check failed"),
                    Err(error) => tracing::warn!(%error, "stale enterprise check task failed"),
                }
            }
        },
    ));
    tasks.close();
    tasks
}

impl Collector {
    /// Raises `enterprise_stale` once for each enterprise whose pushed figures went stale
    /// since its last push (see [`crate::federation`]); how many were raised.
    pub fn raise_stale_enterprises(&self) -> Result<usize, crate::error::CollectorError> {
        let Some(alerts) = self.alerts() else {
            return Ok(0);
        };
        let Some(_held) = self.store().try_exclusive("alerts stale enterprises")? else {
            return Ok(0);
        };
        // enterprise → (stale, last push, organisations)
        let mut by_enterprise: BTreeMap<String, (bool, time::OffsetDateTime, Vec<String>)> =
            BTreeMap::new();
        for row in self.ministry().federated_rows()? {
            let e = by_enterprise.entry(row.enterprise).or_insert((
                true,
                time::OffsetDateTime::UNIX_EPOCH,
                Vec::new(),
            ));
            e.0 &= row.stale;
            if let Some(at) = row.updated_at {
                e.1 = e.1.max(at);
            }
            e.2.push(row.organisation);
        }
        let mut raised = 0;
        for (enterprise, (stale, last_push, organisations)) in by_enterprise {
            if !stale {
                continue;
            }
            let alert =
                Alert::of_stale_enterprise(&enterprise, organisations, last_push, self.now());
            let entries = alerts.entries(self, &alert);
            let mark = format!("enterprise-stale/{enterprise}");
            let value = last_push.unix_timestamp_nanos().to_string();
            if self.store().enqueue_alerts_once(&mark, &value, &entries)? {
                self.store().flush()?;
                alerts.enqueued(self, &entries);
                raised += 1;
                tracing::warn!(%enterprise, %last_push, sinks = entries.len(), "enterprise is stale: alert raised");
            }
        }
        Ok(raised)
    }
}

#[cfg(test)]
mod tests;
