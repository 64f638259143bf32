//! Verdict-change events for dashboards and SIEMs.
//!
//! Every device write that changes a status publishes one event on a broadcast channel
//! (bounded: a subscriber that falls behind by more than the buffer misses the oldest events
//! and is told so by the stream, rather than slowing ingest). `WatchEvents` subscribers filter
//! by the organisations they may see.

use crate::store::DeviceRecord;
use commscan_core::verdict::Status;
use time::OffsetDateTime;

/// Events kept for slow subscribers before they start missing some.
pub const EVENT_BUFFER: usize = 4096;

/// One verdict change.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictEvent {
    /// When.
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

/// A new broadcast channel for events.
pub fn channel() -> tokio::sync::broadcast::Sender<VerdictEvent> {
    tokio::sync::broadcast::channel(EVENT_BUFFER).0
}
