//! Collectors sharing one database, kept in step: each follows the store's notifications
//! ([`crate::store::Store::notices`], LISTEN/NOTIFY on PostgreSQL).
//!
//! - A new version of the rules stored by any collector (its transaction notifies on commit):
//!   this one puts the stored rules in force, re-judges the devices connected to it and tells
//!   their agents ([`Collector::refresh_rules`]).
//! - A verdict change on another collector: put on this one's event channel, so `watch` on any
//!   collector sees every change ([`Collector::receive_verdict`]).
//! - The listening connection was lost and is back, or this collector fell behind: the rules
//!   are re-read, since a change may have been missed.
//!
//! A check every [`RULES_BACKSTOP`] re-reads the rules anyway: a notification is a hint to look
//! now, never the only way a change arrives. A store one process owns (sled) has no
//! notifications, and none of this runs.

use crate::collector::Collector;
use crate::store::{Channel, Notice};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// How often the stored rules are re-read without a notification.
pub const RULES_BACKSTOP: Duration = Duration::from_secs(30);

/// Follows the store's notifications until `shutdown`; returns at once for a store one
/// process owns.
pub async fn follow(collector: Arc<Collector>, shutdown: CancellationToken) {
    let Some(mut notices) = collector.store().notices() else {
        return;
    };
    let mut backstop = tokio::time::interval(RULES_BACKSTOP);
    backstop.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    backstop.tick().await;
    loop {
        let refresh = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = backstop.tick() => true,
            n = notices.recv() => match n {
                Ok(Notice::Message { channel: Channel::Rules, .. }) | Ok(Notice::Resync) => true,
                Ok(Notice::Message { channel: Channel::Verdicts, payload }) => {
                    collector.receive_verdict(&payload);
                    false
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "fell behind the database's notifications; re-reading the rules");
                    true
                }
                Err(RecvError::Closed) => return,
            },
        };
        if refresh {
            let c = collector.clone();
            match tokio::task::spawn_blocking(move || c.refresh_rules()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "stored rules not put in force"),
                Err(e) => tracing::error!(error = %e, "rules refresh task failed"),
            }
        }
    }
}
