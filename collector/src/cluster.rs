//! Collectors sharing one database, kept in step: each follows the store's notifications
//! ([`crate::store::Store::notices`], LISTEN/NOTIFY on PostgreSQL).
//!
//! - A new version of the rules stored by any collector (its transaction notifies on commit):
//!   this one puts the stored rules in force, re-judges the devices connected to it and tells
//!   their agents ([`Collector::refresh_rules`]).
//! - A verdict change on another collector: put on this one's event channel, so `watch` on any
//!   collector sees every change ([`Collector::receive_verdict`]).
//! - A device's stream taken over by another collector: its stream here is closed (two agents
//!   with one identity connected to different collectors keep taking over from each other,
//!   and are flagged as they would be on one; see [`crate::connections`]).
//! - An organisation's candidate decisions changed on another collector: re-read for the
//!   streams here ([`crate::mappings`]).
//! - Every [`HEARTBEAT`], this collector says it is alive
//!   ([`crate::store::Store::heartbeat`]): a stream held by a collector that died is not
//!   counted as taken over.
//! - The listening connection was lost and is back, or this collector fell behind: the rules
//!   are re-read, since a change may have been missed.
//!
//! A check every [`RULES_BACKSTOP`] re-reads the rules (and the cached candidate decisions)
//! anyway: a notification is a hint to look
//! now, never the only way a change arrives. A store one process owns (sled) has no
//! notifications, and none of this runs.

use crate::collector::Collector;
use crate::store::{Channel, Notice, StreamMoved};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// How often the stored rules are re-read without a notification.
pub const RULES_BACKSTOP: Duration = Duration::from_secs(30);
/// How often this collector says it is alive (well within [`crate::store::NODE_GONE_AFTER`]).
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Follows the store's notifications until `shutdown`; returns at once for a store one
/// process owns.
pub async fn follow(collector: Arc<Collector>, shutdown: CancellationToken) {
    let Some(mut notices) = collector.store().notices() else {
        return;
    };
    let mut backstop = tokio::time::interval(RULES_BACKSTOP);
    backstop.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    backstop.tick().await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let refresh = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = backstop.tick() => true,
            _ = heartbeat.tick() => {
                let c = collector.clone();
                let beat = tokio::task::spawn_blocking(move || c.store().heartbeat(c.node()));
                if let Ok(Err(e)) = beat.await {
                    tracing::warn!(error = %e, "cluster heartbeat failed");
                }
                false
            }
            n = notices.recv() => match n {
                Ok(Notice::Message { channel: Channel::Rules, .. }) | Ok(Notice::Resync) => true,
                Ok(Notice::Message { channel: Channel::Verdicts, payload }) => {
                    collector.receive_verdict(&payload);
                    false
                }
                Ok(Notice::Message { channel: Channel::Mappings, payload }) => {
                    let c = collector.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || c.reload_mappings(&payload)).await {
                        tracing::error!(error = %e, "candidate decisions reload task failed");
                    }
                    false
                }
                Ok(Notice::Message { channel: Channel::Streams, payload }) => {
                    match serde_json::from_str::<StreamMoved>(&payload) {
                        Ok(m) if m.node != collector.node() => {
                            if collector.connections().close_taken_over(&m.device) {
                                tracing::info!(device = %m.device, to = %m.node, "stream taken over by another collector; closed here");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "undecodable stream notification ignored"),
                    }
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
            match tokio::task::spawn_blocking(move || {
                c.reload_all_mappings();
                c.refresh_rules()
            })
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "stored rules not put in force"),
                Err(e) => tracing::error!(error = %e, "rules refresh task failed"),
            }
        }
    }
}
