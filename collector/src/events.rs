//! Verdict-change events for dashboards and SIEMs.
//!
//! Every device write that changes a status publishes one event on a broadcast channel
//! (bounded: a subscriber that falls behind by more than the buffer misses the oldest events
//! and is told so by the stream, rather than slowing ingest). `WatchEvents` subscribers filter
//! by the organisations they may see.
//!
//! Collectors sharing a database pass their events to each other ([`crate::cluster`]): each
//! event is also sent as a database notification ([`VerdictEvent::encode`], at most
//! [`crate::store::MAX_NOTICE_BYTES`]: the product list is cut to fit), and the others put it
//! on their own channel, so a watcher on any collector sees every change.

use crate::store::DeviceRecord;
use commscan_core::verdict::Status;
use time::OffsetDateTime;

/// Events kept for slow subscribers before they start missing some.
pub const EVENT_BUFFER: usize = 4096;

/// One verdict change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VerdictEvent {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The device.
    pub device_id: String,
    /// Its organisation.
    pub organisation: String,
    /// Its host name.
    pub hostname: String,
    /// Before.
    pub from: Status,
    /// After.
    pub to: Status,
    /// Products behind the new status.
    pub products: Vec<String>,
}

impl VerdictEvent {
    /// The event of `device` changing from `from` at `at`.
    pub fn of(device: &DeviceRecord, from: Status, at: OffsetDateTime) -> VerdictEvent {
        VerdictEvent {
            at,
            device_id: device.device_id.clone(),
            organisation: device.organisation.clone(),
            hostname: device.hostname.clone(),
            from,
            to: device.verdict.status,
            products: device.verdict.products(),
        }
    }
}

/// An event as another collector receives it: who sent it, and the event.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    node: String,
    #[serde(flatten)]
    event: VerdictEvent,
}

impl VerdictEvent {
    /// The event as a notification from collector `node`, within
    /// [`crate::store::MAX_NOTICE_BYTES`] (products are dropped from the end until it fits).
    pub fn encode(&self, node: &str) -> String {
        let mut wire = Wire {
            node: node.to_owned(),
            event: self.clone(),
        };
        loop {
            let text = serde_json::to_string(&wire).expect("events always serialise");
            if text.len() <= crate::store::MAX_NOTICE_BYTES || wire.event.products.is_empty() {
                return text;
            }
            wire.event.products.pop();
        }
    }

    /// A notification's sender and event.
    pub fn decode(payload: &str) -> Result<(String, VerdictEvent), serde_json::Error> {
        serde_json::from_str::<Wire>(payload).map(|w| (w.node, w.event))
    }
}

/// A new broadcast channel for events.
pub fn channel() -> tokio::sync::broadcast::Sender<VerdictEvent> {
    tokio::sync::broadcast::channel(EVENT_BUFFER).0
}
