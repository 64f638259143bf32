//! Delivering one sink's outbox queue: a loop per sink that takes the sink's lock in the store
//! (so one collector among those sharing a database sends its alerts), reads the oldest
//! entries, sends them one at a time in order, removes each once sent, and on a failure waits
//! a capped exponential backoff with jitter before trying the same entry again.

use super::config::Routing;
use super::syslog::SyslogSender;
use super::{Alerts, SinkKind};
use crate::collector::Collector;
use crate::store::OutboxEntry;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Entries read from the store at once.
pub const BATCH: usize = 64;
/// How often a collector that does not hold a sink's lock tries to take it.
pub const LOCK_RETRY: Duration = Duration::from_secs(5);
/// How often an empty queue is read again without being woken (another collector on the
/// database may have enqueued).
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// How a sink sends.
pub(crate) enum Transport {
    Webhook(Box<super::config::Webhook>),
    Syslog(Box<SyslogSender>),
}

impl Transport {
    fn kind(&self) -> SinkKind {
        match self {
            Transport::Webhook(_) => SinkKind::Webhook,
            Transport::Syslog(_) => SinkKind::Syslog,
        }
    }

    /// One attempt; the error as text and whether the endpoint refused the request itself.
    async fn send(&mut self, entry: &OutboxEntry) -> Result<(), (String, bool)> {
        match self {
            Transport::Webhook(hook) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                super::webhook::send(hook, entry, now)
                    .await
                    .map_err(|e| (e.to_string(), e.is_refusal()))
            }
            Transport::Syslog(sender) => {
                let alert: super::event::Alert = serde_json::from_str(&entry.payload)
                    .map_err(|e| (format!("stored alert undecodable: {e}"), true))?;
                sender
                    .send(&alert)
                    .await
                    .map_err(|e| (e.to_string(), false))
            }
        }
    }
}

/// The delay before attempt `failures + 1`: `initial × 2^(failures-1)` capped at `max`, then a
/// uniformly random point in its upper half (jitter that never retries at once).
pub fn backoff(routing: &Routing, failures: u32) -> Duration {
    let exp = routing
        .retry_initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let cap = exp.min(routing.retry_max);
    let half = cap / 2;
    let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_millis(getrandom::u64().unwrap_or(0) % spread)
}

/// Blocking store calls off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Delivers sink `name` until `shutdown`.
pub(crate) async fn run(
    collector: Arc<Collector>,
    alerts: Arc<Alerts>,
    name: String,
    routing: Routing,
    mut transport: Transport,
    shutdown: CancellationToken,
) {
    let task = format!("alerts {name}");
    let kind = transport.kind();
    loop {
        let c = collector.clone();
        let t = task.clone();
        let held = match blocking(move || c.store().try_exclusive(&t)).await {
            Ok(h) => h,
            Err(error) => {
                tracing::warn!(sink = %name, %error, "alert sink lock not taken");
                None
            }
        };
        let Some(_held) = held else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(LOCK_RETRY) => continue,
            }
        };
        tracing::info!(sink = %name, kind = kind.as_str(), "delivering alerts from this collector");
        let mut failures = 0u32;
        'held: loop {
            let (c, n) = (collector.clone(), name.clone());
            let batch = match blocking(move || {
                let depth = c.store().alert_depth(&n)?;
                Ok((c.store().peek_alerts(&n, BATCH)?, depth))
            })
            .await
            {
                Ok((batch, depth)) => {
                    alerts.set_depth(&collector, &name, depth);
                    batch
                }
                Err(error) => {
                    tracing::warn!(sink = %name, %error, "alert outbox not read");
                    // The lock's connection may be gone with the database: take it again.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(LOCK_RETRY) => break 'held,
                    }
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = alerts.woken(&name) => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            for (position, entry) in batch {
                loop {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    let age = time::OffsetDateTime::now_utc() - entry.enqueued_at;
                    if failures > 0 && age > routing.max_age {
                        collector.metrics().alert_dropped(kind.as_str(), "too_old");
                        tracing::error!(sink = %name, event = %entry.event_id, age = %age, "alert dropped: still failing past max_age");
                        // The next entry gets its own attempts before its age counts.
                        failures = 0;
                        break;
                    }
                    let sent = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = transport.send(&entry) => r,
                    };
                    match sent {
                        Ok(()) => {
                            collector.metrics().alert_delivered(kind.as_str());
                            tracing::debug!(sink = %name, event = %entry.event_id, "alert delivered");
                            failures = 0;
                            break;
                        }
                        Err((error, refusal)) => {
                            failures += 1;
                            collector.metrics().alert_failed(kind.as_str());
                            let wait = backoff(&routing, failures);
                            if refusal {
                                tracing::error!(sink = %name, event = %entry.event_id, %error, failures, retry_in = ?wait, "alert refused by the receiver (check its secret and URL); retrying");
                            } else {
                                tracing::warn!(sink = %name, event = %entry.event_id, %error, failures, retry_in = ?wait, "alert not delivered; retrying");
                            }
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(wait) => {}
                            }
                            collector.metrics().alert_retried(kind.as_str());
                        }
                    }
                }
                let (c, n) = (collector.clone(), name.clone());
                // Flushed, so a restart resends only what was in flight, not what a lost
                // removal left behind.
                let removed = blocking(move || {
                    c.store().remove_alert(&n, position)?;
                    c.store().flush()
                });
                if let Err(error) = removed.await {
                    // Sent again after the store comes back: at least once.
                    tracing::warn!(sink = %name, event = %entry.event_id, %error, "delivered alert not removed from the outbox");
                    break;
                }
                alerts.removed(&collector, &name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::AlertKind;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_its_cap() {
        let r = Routing {
            organisations: None,
            events: AlertKind::ALL.into_iter().collect(),
            max_outbox: 1,
            max_age: Duration::from_secs(60),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d1 = backoff(&r, 1);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
            let d4 = backoff(&r, 4);
            assert!(d4 >= Duration::from_secs(4) && d4 <= Duration::from_secs(8));
            let d40 = backoff(&r, 40);
            assert!(d40 >= Duration::from_secs(30) && d40 <= Duration::from_secs(60));
        }
    }
}
