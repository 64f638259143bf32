//! The spool: the agent's durable record of what it must still tell the collector.
//!
//! # Why it looks like this
//!
//! Inventory is *state*, not a log. The collector needs the device's current findings, not
//! every intermediate step, so the spool does not queue scans: it keeps the latest state and
//! the changes the collector has not acknowledged, one per product, and any loss heals
//! because the next scan observes the state again and the hello's digest exposes any
//! disagreement (see [`crate::device_state`] and `commscan_core::digest`).
//!
//! # Invariants
//!
//! 1. **Written before sent.** A change reaches the wire only inside a [`Record`] that was
//!    written and flushed to disk first ([`Spool::next_record`] returns after the flush).
//! 2. **Forgotten only after acknowledgement.** A record leaves the outbox only in
//!    [`Spool::acknowledge`] (an `Ack` from the collector), in [`Spool::welcome`] when the
//!    collector wants a snapshot, in [`Spool::resync`], or when the cap forces a snapshot;
//!    in the last three cases the snapshot that replaces it carries the whole state.
//! 3. **Sequences never repeat.** `next_sequence` is stored in the same atomic batch that
//!    adds a record, and is raised above the collector's stored sequence on every welcome, so
//!    a wiped spool or a restored collector backup cannot make reports be ignored.
//! 4. **Replay reaches the current state.** Applying the outbox records (oldest first) and
//!    then the pending changes to the state the collector acknowledged gives `current`.
//! 5. **Bounded.** Pending changes coalesce per product (a later change of a product replaces
//!    the earlier one); the bytes of pending changes plus outbox records stay under the cap.
//!    Reaching it drops them all and marks a snapshot as needed (logged, counted in
//!    `fallbacks`, shown by `commscan-agent status`): at most one state's worth is then kept.
//! 6. **Atomic steps.** Every operation is one checksummed batch appended and synced
//!    ([`LogSpool`]): after a crash the spool is exactly as after some completed operation,
//!    never between two.
//!
//! # Record format
//!
//! Entries (key → value) in `<data-dir>/spool.log`, whose framing [`LogSpool`] documents;
//! values are JSON (readable in a debugger, versioned by `Meta::version`):
//!
//! | key | value |
//! |---|---|
//! | `m` | [`Meta`]: sequences, acknowledged digest, flags, last stats, counters |
//! | `s/f/<product>` | the current [`Finding`](commscan_core::scan::Finding) of a product |
//! | `s/u` | the current unclassified list |
//! | `p/f/<product>`, `p/u` | a pending [`Change`] (coalesced per key) |
//! | `o/<sequence, u64 big-endian>` | an outbox [`Record`]: sent or about to be, not acknowledged |
//!
//! A record is a snapshot or a delta, the scan stats and time, and the digest of the state
//! the collector will hold once it applies the record. Records are frozen from the pending
//! changes when there is something to send and the outbox is empty; a record is never
//! changed afterwards (a resend after a throttle or a reconnect sends the same bytes under
//! the same sequence), except that a record the collector cannot have applied is renumbered
//! above the collector's stored sequence at welcome.
//!
//! # What an acknowledgement means
//!
//! `Ack { sequence }` means the collector's store has flushed every report up to and
//! including `sequence` (it flushes before it answers). Only then does the agent delete those
//! records and remember their digest as the acknowledged state, which the next hello carries.
//!
//! # The data-loss window
//!
//! - An observation is committed when [`Spool::observe`] returns (written and flushed). A
//!   crash or power cut before that loses it from the spool; the first scan after restart
//!   observes the device again, so the *state* heals and only a transition that was undone
//!   in between (installed and removed within one scan interval) is never reported.
//! - Offline, coalescing keeps the last change per product: the collector learns the net
//!   change, not each intermediate one. Reaching the cap keeps only a snapshot.
//! - A spool that cannot be read is quarantined (renamed aside) and a fresh one started; the
//!   hello then carries no digest, so the collector asks for a snapshot. What is lost is the
//!   unacknowledged transitions; the state heals on the next connection.
//! - Writes the kernel accepted survive the agent's death (SIGKILL); a power cut loses
//!   nothing flushed, as far as the disk honours `fsync`.

mod from_sled;
mod log_spool;
mod logic;
pub mod quarantine;
#[cfg(any(test, feature = "torture"))]
pub mod torture;

pub use log_spool::LogSpool;
pub use logic::SpoolView;

use crate::device_state::{Change, State};
use commscan_core::digest::StateDigest;
pub use commscan_core::report::ReportBody;
use commscan_core::scan::ScanStats;
use serde::{Deserialize, Serialize};

/// Default cap on the bytes of pending changes plus outbox records.
pub const DEFAULT_CAP_BYTES: u64 = 4 * 1024 * 1024;

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The database failed (I/O, lock held by another agent).
    #[error("spool: {0}")]
    Backend(String),
    /// The spool's content cannot be read: it is quarantined, never crashed on.
    #[error("spool: corrupt {what}: {message}")]
    Corrupt {
        /// The key or file.
        what: String,
        /// What is wrong.
        message: String,
    },
}

impl SpoolError {
    /// Whether the spool should be quarantined and started afresh (as opposed to an error,
    /// like a lock held by another running agent, that a new spool would not fix).
    pub fn is_corruption(&self) -> bool {
        matches!(self, SpoolError::Corrupt { .. })
    }
}

/// One report to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its sequence.
    pub sequence: u64,
    /// Snapshot or delta.
    pub body: ReportBody,
    /// Figures of the latest scan.
    pub stats: ScanStats,
    /// When the latest scan finished (Unix seconds, device clock).
    pub scanned_at: i64,
    /// Hex digest of the state once the record is applied.
    pub state_digest: String,
}

/// A note that a corrupt spool was set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineNote {
    /// When (Unix seconds).
    pub at: i64,
    /// Where the corrupt spool now is.
    pub path: String,
    /// Why it was set aside.
    pub reason: String,
}

/// The spool's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Format version (1).
    pub version: u32,
    /// The sequence the next record gets.
    pub next_sequence: u64,
    /// Highest sequence acknowledged.
    pub acked_sequence: u64,
    /// Hex digest of the acknowledged state; `None` when unknown (fresh spool, after a
    /// fallback), which makes the collector ask for a snapshot.
    pub acked_digest: Option<String>,
    /// The next record must be a snapshot.
    pub snapshot_needed: bool,
    /// The next record must be sent even without changes (a full scan: liveness and stats).
    pub report_due: bool,
    /// Stats of the latest observation.
    pub stats: ScanStats,
    /// When it finished (Unix seconds), if any.
    pub scanned_at: Option<i64>,
    /// Changes observed since the spool was created.
    pub observed_changes: u64,
    /// Times the cap forced a snapshot.
    pub fallbacks: u64,
    /// The latest such time, as a message.
    pub last_fallback: Option<String>,
    /// Set when this spool replaced a corrupt one.
    pub quarantine: Option<QuarantineNote>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            version: 1,
            next_sequence: 1,
            acked_sequence: 0,
            acked_digest: None,
            snapshot_needed: true,
            report_due: false,
            stats: ScanStats::default(),
            scanned_at: None,
            observed_changes: 0,
            fallbacks: 0,
            last_fallback: None,
            quarantine: None,
        }
    }
}

/// What a scan found, for [`Spool::observe`].
#[derive(Debug, Clone)]
pub struct Observation {
    /// The state found.
    pub state: State,
    /// The scan's figures.
    pub stats: ScanStats,
    /// When it finished (Unix seconds).
    pub scanned_at: i64,
    /// Send a report even if nothing changed (full scans do; process samples do not).
    pub report: bool,
}

/// What [`Spool::observe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// Changes against the previous state.
    pub changes: usize,
    /// The cap was reached: pending changes were replaced by a snapshot.
    pub fell_back: bool,
    /// Something is ready to send.
    pub sendable: bool,
}

/// The durable spool. One implementation ([`LogSpool`]); the trait is the seam the
/// delivery loop and its tests use.
pub trait Spool: Send + Sync {
    /// A copy of the spool's content.
    fn view(&self) -> SpoolView;
    /// Records a scan: diffs it against the current state, coalesces the changes into the
    /// pending ones, enforces the cap. Durable when it returns.
    fn observe(&self, obs: Observation) -> Result<Observed, SpoolError>;
    /// The record to send next: the oldest unacknowledged one, or a new one frozen from the
    /// pending changes (durable when returned); `None` if there is nothing to send.
    fn next_record(&self) -> Result<Option<Record>, SpoolError>;
    /// The collector acknowledged every report up to `sequence`.
    fn acknowledge(&self, sequence: u64) -> Result<(), SpoolError>;
    /// The collector's welcome: its stored sequence, and whether it wants a snapshot.
    fn welcome(&self, stored_sequence: u64, want_snapshot: bool) -> Result<(), SpoolError>;
    /// The collector asked for a resync: replace everything unacknowledged by a snapshot.
    fn resync(&self) -> Result<(), SpoolError>;
    /// Flushes to disk (every operation already does; this is for shutdown).
    fn flush(&self) -> Result<(), SpoolError>;
}

/// `(last acknowledged sequence, digest of the acknowledged state)` for a hello.
pub fn hello_fields(view: &SpoolView) -> (u64, Option<StateDigest>) {
    let digest = view
        .meta
        .acked_digest
        .as_deref()
        .and_then(commscan_core::digest::from_hex);
    (view.meta.acked_sequence, digest)
}

/// A pending change as stored, for [`SpoolView`].
pub type Pending = std::collections::BTreeMap<String, Change>;

#[cfg(test)]
mod tests;
