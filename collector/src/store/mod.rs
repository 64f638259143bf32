//! The compliance store: the narrow, transactional seam between the collector's domain and
//! its database.
//!
//! The seam is cut into focused traits, each meaningful alone, so a backend (the embedded one
//! is sled, [`sled_store::SledStore`]; [`pg_store::PgStore`] keeps them in PostgreSQL) implements
//! them one by one:
//!
//! | trait | holds |
//! |---|---|
//! | [`DeviceStore`] | devices, organisation aggregates and trends, history, classifications |
//! | [`TokenStore`] | enrolment tokens and people's bearer tokens, by hash |
//! | [`AuditStore`] | the append-only audit log |
//! | [`FederationStore`] | aggregates pushed by enterprises, on a ministry |
//! | [`RulesStore`] | versions of the catalog, registers and policies applied through the API |
//! | [`SessionStore`] | web console sessions and one-time login links, by hash |
//! | [`AlertStore`] | the alert outbox: alerts waiting for each webhook or syslog sink |
//! | [`Durable`] | `flush`, shared by all of them |
//! | [`Store`] | all of them, plus enrolment (a device write that consumes a token) and tasks one
//! collector runs at a time |
//!
//! The domain holds an `Arc<dyn Store>`; a part that needs less can hold less (the ministry
//! side holds an `Arc<dyn FederationStore>` and an `Arc<dyn AuditStore>`). Every write that
//! changes a device also updates its organisation's aggregate *in the same transaction*, so a
//! summary is a single read and never a scan. [`Durable::flush`] makes everything written so
//! far durable; the reporting service acknowledges an agent's report only after it returns.

pub(crate) mod combining;
pub mod group_commit;
pub mod migrate;
pub mod pg_store;
pub mod records;
pub mod recovering;
pub mod sled_store;

pub use records::{
    AuditRecord, Classification, DeviceCatalog, DeviceRecord, FederatedRecord, HistoryKind,
    HistoryRecord, OrgAggregate, OutboxEntry, PersonRecord, RulesKind, RulesVersion, SessionRecord,
    TokenRecord,
};

use commscan_core::verdict::Status;
use time::OffsetDateTime;

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("store: corrupt record {key}: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoder's message.
        message: String,
    },
    /// A conditional write lost (the record changed or vanished).
    #[error("store: {0}")]
    Conflict(String),
    /// An enrolment token could not be used.
    #[error("enrolment token refused: {0}")]
    TokenRefused(String),
    /// The disk failed under the store (full, read-only, I/O error): nothing more can be
    /// written until the store recovers ([`recovering::Recovering`] reopens it). Retriable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Filters and paging for device listings.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Only this organisation.
    pub organisation: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only devices with a finding of this product.
    pub product: Option<String>,
    /// Only devices of this platform.
    pub platform: Option<commscan_core::platform::Platform>,
    /// Only these organisations (the caller's scope); `None` means all.
    pub allowed_orgs: Option<std::collections::BTreeSet<String>>,
}

/// One page of devices.
#[derive(Debug, Clone)]
pub struct DevicePage {
    /// The rows.
    pub devices: Vec<DeviceRecord>,
    /// Cursor for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Durability, shared by every store trait: writes are not durable until [`Durable::flush`]
/// returns. A backend whose commits are durable implements it as a no-op.
pub trait Durable: Send + Sync + 'static {
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Writes a consistent copy of the whole store into the new directory `to`
    /// ([`crate::backup`]). Only the embedded store has one; PostgreSQL is backed up with its
    /// own tools.
    /// `cancelled` is polled during the copy; when it says so, the copy stops with an error.
    fn backup(
        &self,
        to: &std::path::Path,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<sled_store::BackupCounts, StoreError> {
        let _ = (to, cancelled);
        Err(StoreError::Backend(
            "this store has no built-in backup: back a PostgreSQL database up with its own tools (pg_dump, base backups)".into(),
        ))
    }
    /// Whether the store can take writes now. A backend that recovers from a failed disk
    /// ([`recovering::Recovering`]) tries to recover here; the health service polls it.
    fn check_health(&self) -> bool {
        true
    }
}

/// Devices and what is maintained from them: the organisation aggregates, their daily trend
/// points, each device's history, the staleness index, and the officers' classifications of
/// unclassified candidates (per organisation, applied to its devices' records).
///
/// Every write of a device updates its organisation's aggregate, the day's trend point, the
/// indexes and the device's history *in the same transaction*, so a summary is one read and
/// never a scan.
/// A lock held in the store against other processes sharing it, until dropped: a device
/// ([`DeviceStore::lock_device`]) or a task one collector runs at a time
/// ([`Store::try_exclusive`]).
pub struct StoreLock(#[allow(dead_code)] Option<Box<dyn Send>>);

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StoreLock(held)"
        } else {
            "StoreLock(local)"
        })
    }
}

impl StoreLock {
    /// Nothing to hold: only this process writes the store.
    pub fn local() -> StoreLock {
        StoreLock(None)
    }

    /// Holds `guard` (released by its `Drop`).
    pub fn held(guard: impl Send + 'static) -> StoreLock {
        StoreLock(Some(Box::new(guard)))
    }
}

pub trait DeviceStore: Durable {
    /// Holds `device` against writers in *other processes* on the same store until the lock
    /// drops; the collector takes its in-process lock first. A store one process owns (sled)
    /// has nothing to do.
    fn lock_device(&self, _device: &str) -> Result<StoreLock, StoreError> {
        Ok(StoreLock::local())
    }

    /// Replaces a device record at `at`, updating its organisation's aggregate, the day's
    /// trend point, the indexes and the device's history in the same transaction.
    fn put_device(&self, device: &DeviceRecord, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Removes a decommissioned device and its history, taking it out of the aggregates.
    /// Returns whether it existed.
    fn remove_device(&self, id: &str, at: OffsetDateTime) -> Result<bool, StoreError>;
    /// A device by id.
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// Devices in (organisation, device id) order after `cursor`, filtered.
    fn list_devices(
        &self,
        filter: &DeviceFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DevicePage, StoreError>;
    /// Every device id (for re-judging after a policy change).
    fn device_ids(&self) -> Result<Vec<String>, StoreError>;
    /// Devices, not yet stale, whose last report is before `reported_before`.
    fn stale_candidates(
        &self,
        reported_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// A device's last `limit` history events, oldest first.
    fn history(
        &self,
        device: &str,
        until: Option<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError>;
    /// An organisation's aggregate.
    fn org_aggregate(&self, org: &str) -> Result<Option<OrgAggregate>, StoreError>;
    /// Every organisation's aggregate.
    fn org_aggregates(&self) -> Result<Vec<(String, OrgAggregate)>, StoreError>;
    /// An organisation's end-of-day aggregates for the last `days` days with data, oldest first.
    fn daily(&self, org: &str, days: usize) -> Result<Vec<(String, OrgAggregate)>, StoreError>;
    /// Records an officer's decision about an unclassified candidate.
    fn put_classification(
        &self,
        org: &str,
        name: &str,
        c: &Classification,
    ) -> Result<(), StoreError>;
    /// Forgets an officer's decision; whether there was one.
    fn remove_classification(&self, org: &str, name: &str) -> Result<bool, StoreError>;
    /// An organisation's decisions about unclassified candidates.
    fn classifications(&self, org: &str) -> Result<Vec<(String, Classification)>, StoreError>;
}

/// Secrets by hash: organisations' enrolment tokens and people's bearer tokens. Only the
/// SHA-256 of a secret is ever stored.
pub trait TokenStore: Durable {
    /// Stores an enrolment token record under its hash.
    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<(), StoreError>;
    /// An enrolment token by hash.
    fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every enrolment token with its hash.
    fn tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError>;
    /// Stores a person's bearer token record under its hash.
    fn put_person(&self, hash: &str, person: &PersonRecord) -> Result<(), StoreError>;
    /// A person by token hash.
    fn person(&self, hash: &str) -> Result<Option<PersonRecord>, StoreError>;
    /// Every person with the hash of their token.
    fn people(&self) -> Result<Vec<(String, PersonRecord)>, StoreError>;
}

/// The audit log: append-only, read in order of position; entries leave it only by retention
/// ([`AuditStore::prune_audit`]).
pub trait AuditStore: Durable {
    /// Appends an audit entry; returns its position. There is no way to change or delete one.
    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError>;
    /// Audit entries after `after`, oldest first, at most `limit`.
    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError>;
    /// Audit entries before `before` (`u64::MAX`: the newest), newest first, at most `limit`:
    /// the newest page costs `limit` entries, not the whole log.
    fn audit_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError>;
    /// Retention, the one way entries leave the log: removes every entry older than `before`
    /// and, newest kept first, every entry beyond `max_bytes` of encoded entries. Returns how
    /// many were removed. Not durable until [`Durable::flush`].
    fn prune_audit(&self, before: OffsetDateTime, max_bytes: u64) -> Result<u64, StoreError>;
}

/// On a ministry collector, the organisation aggregates enterprises pushed, kept per
/// enterprise and apart from device data.
pub trait FederationStore: Durable {
    /// Replaces every organisation stored for `enterprise` with `rows` (organisation, record),
    /// atomically: organisations absent from `rows` are removed. Other enterprises' rows are
    /// never touched. Not durable until [`Durable::flush`].
    fn replace_federated(
        &self,
        enterprise: &str,
        rows: &[(String, FederatedRecord)],
    ) -> Result<(), StoreError>;
    /// Every federated row as (enterprise, organisation, record), ordered by enterprise then
    /// organisation.
    fn federated(&self) -> Result<Vec<(String, String, FederatedRecord)>, StoreError>;
}

/// Versions of the rules (catalog, registers, policies) applied through the API, kept so every
/// collector on the store judges by the same rules and a change can be reviewed and rolled
/// back. Append-only.
pub trait RulesStore: Durable {
    /// Stores `text` as the next version of (`kind`, `organisation`) and returns the stored
    /// version. Versions are assigned under the store's serialisation, so two collectors
    /// applying at once get two distinct versions.
    fn append_rules(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        text: &str,
        author: &str,
        note: &str,
        at: OffsetDateTime,
    ) -> Result<RulesVersion, StoreError>;
    /// Versions of (`kind`, `organisation`), newest first, at most `limit`.
    fn rules_history(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RulesVersion>, StoreError>;
    /// One version; `None` for the newest. `Ok(None)` when there is no such version.
    fn rules_version(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        version: Option<u64>,
    ) -> Result<Option<RulesVersion>, StoreError>;
    /// The newest version of every (kind, organisation) that has one.
    fn current_rules(&self) -> Result<Vec<RulesVersion>, StoreError>;
}

/// Web console sessions and one-time login links, keyed by the SHA-256 of their secret, so
/// every collector sharing the store knows every session and a logout anywhere is a logout
/// everywhere.
pub trait SessionStore: Durable {
    /// Stores (or replaces) a session.
    fn put_session(&self, hash: &str, session: &SessionRecord) -> Result<(), StoreError>;
    /// A session.
    fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Removes a session; whether there was one. Removing is how a link is used once: of two
    /// collectors removing the same link at once, one is told it was there.
    fn remove_session(&self, hash: &str) -> Result<bool, StoreError>;
    /// Removes sessions last seen before `before`; how many.
    fn prune_sessions(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The alert outbox ([`crate::alerts`]): per sink, entries in the order they were enqueued
/// (by a position the store assigns), removed once delivered or dropped. Alerts of a verdict
/// change are enqueued with the device write itself ([`Store::put_device_alerting`]).
pub trait AlertStore: Durable {
    /// Appends `entries`, each to its sink's queue. Not durable until [`Durable::flush`].
    fn enqueue_alerts(&self, entries: &[OutboxEntry]) -> Result<(), StoreError>;
    /// Appends `entries` and sets `mark` to `value`, atomically, unless `mark` already holds
    /// `value`; whether it appended. How an alert about a lasting state (an enterprise gone
    /// stale since a given push) is raised once, by whichever collector sees it first.
    fn enqueue_alerts_once(
        &self,
        mark: &str,
        value: &str,
        entries: &[OutboxEntry],
    ) -> Result<bool, StoreError>;
    /// The first `limit` entries of `sink`'s queue, oldest first, with their positions.
    fn peek_alerts(&self, sink: &str, limit: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError>;
    /// Removes the entry at `position` of `sink`'s queue (delivered, or dropped).
    fn remove_alert(&self, sink: &str, position: u64) -> Result<(), StoreError>;
    /// How many entries `sink`'s queue holds.
    fn alert_depth(&self, sink: &str) -> Result<u64, StoreError>;
}

/// What collectors sharing a store tell each other ([`Store::notify`], [`Store::notices`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A new version of the rules was stored (sent by the store itself, on commit).
    Rules,
    /// A device's verdict changed (payload: the event, as [`crate::events`] encodes it).
    Verdicts,
    /// A device's stream moved to another collector (sent by the store itself, on commit;
    /// payload: [`StreamMoved`] as JSON): the one that held it closes its stream.
    Streams,
    /// An organisation's candidate decisions changed (payload: the organisation): every
    /// collector re-reads them for its streams ([`crate::mappings`]).
    Mappings,
}

/// What [`Channel::Streams`] carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamMoved {
    /// The device.
    pub device: String,
    /// The collector that now holds its stream.
    pub node: String,
}

/// What [`Store::claim_stream`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClaim {
    /// Another live collector held the device's stream until now (it is told to close it).
    pub took_over_from: Option<String>,
    /// Takeovers of the device's stream within the window, this one included, on every
    /// collector.
    pub takeovers: usize,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [
        Channel::Rules,
        Channel::Verdicts,
        Channel::Streams,
        Channel::Mappings,
    ];

    /// The channel's name in the database.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Rules => "commscan_rules",
            Channel::Verdicts => "commscan_verdicts",
            Channel::Streams => "commscan_streams",
            Channel::Mappings => "commscan_mappings",
        }
    }
}

/// A notification from a process sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A message on a channel.
    Message {
        /// Which.
        channel: Channel,
        /// What (at most [`MAX_NOTICE_BYTES`]).
        payload: String,
    },
    /// The listening connection was lost and is back: messages may have been missed.
    Resync,
}

/// A collector whose [`Store::heartbeat`] is older than this is gone: a stream it held is not
/// taken over from it.
pub const NODE_GONE_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// Largest payload [`Store::notify`] sends (PostgreSQL's limit is 8000 bytes).
pub const MAX_NOTICE_BYTES: usize = 7900;

/// Everything the collector needs from a database: the focused stores, plus the one write
/// that spans two of them.
pub trait Store:
    DeviceStore + TokenStore + AuditStore + FederationStore + RulesStore + SessionStore + AlertStore
{
    /// [`DeviceStore::put_device`] and [`AlertStore::enqueue_alerts`] in one transaction, so
    /// a verdict change is stored with its alerts or not at all. The default (for a backend
    /// without transactions across both) writes one after the other.
    fn put_device_alerting(
        &self,
        device: &DeviceRecord,
        at: OffsetDateTime,
        alerts: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        self.put_device(device, at)?;
        if alerts.is_empty() {
            return Ok(());
        }
        self.enqueue_alerts(alerts)
    }

    /// The right to run `task` (the staleness sweep, audit retention) while the lock is held,
    /// or `None` when another collector on the same store holds it now. A store one process
    /// owns (sled) always grants it.
    fn try_exclusive(&self, _task: &str) -> Result<Option<StoreLock>, StoreError> {
        Ok(Some(StoreLock::local()))
    }

    /// Sends `payload` (at most [`MAX_NOTICE_BYTES`]) on `channel` to every process sharing
    /// the store, this one included. A store one process owns has nobody to tell.
    fn notify(&self, _channel: Channel, _payload: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Notifications from every process sharing the store; `None` for a store one process
    /// owns.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }

    /// The store's size on disk in bytes, if known.
    fn size_bytes(&self) -> Option<u64> {
        None
    }

    /// Says collector `node` is alive; one not heard of for [`NODE_GONE_AFTER`] is gone.
    fn heartbeat(&self, _node: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Records that `device`'s stream is now connection `conn` of collector `node`: if an
    /// open stream of it was held until now (by a collector still alive, this one included),
    /// that is a takeover, counted within `window` across every collector, and another holder
    /// is told to close its stream ([`Channel::Streams`]). `None` for a store one process owns
    /// (its collector's own registry sees every stream).
    fn claim_stream(
        &self,
        _device: &str,
        _node: &str,
        _conn: u64,
        _window: std::time::Duration,
    ) -> Result<Option<StreamClaim>, StoreError> {
        Ok(None)
    }

    /// Records that connection `conn` of collector `node` closed `device`'s stream (nothing,
    /// if another stream has claimed it since); its takeovers are kept.
    fn release_stream(&self, _device: &str, _node: &str, _conn: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Inserts a newly enrolled device (as [`DeviceStore::put_device`] would) and consumes one
    /// use of its organisation's enrolment token, atomically; refuses if the token can no
    /// longer be used at `now`.
    fn enroll(
        &self,
        device: &DeviceRecord,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
}
