//! A store that survives a disk that filled (or failed) once.
//!
//! sled 0.34 keeps the first I/O error of a flush as its "global error" and refuses every later
//! write with it, for as long as the database stays open: only opening it again resets it (its
//! page cache's start does). Freed space alone never brings it back. [`Recovering`] wraps the
//! backend, and:
//!
//! - the first call that fails with [`StoreError::Unavailable`] marks the store failed; from
//!   then on *every* call, reads included, answers UNAVAILABLE at once. Reads are refused too
//!   because sled's memory may hold writes that never became durable: a report applied in
//!   memory but never flushed must not be answered "already stored".
//! - [`Durable::check_health`] (polled every second by the health service) reopens the
//!   backend at most every [`RETRY_EVERY`]: it drops the failed database (waiting for calls in
//!   flight), opens it again from its files, which hold exactly what was flushed, and proves
//!   the disk takes writes with an audit entry and a flush. Until that succeeds the store
//!   stays failed and the health service says NOT_SERVING.
//!
//! Nothing acknowledged is lost: acknowledgements follow a successful flush, and a reopen
//! keeps everything flushed; what was written but not flushed is dropped, and its writer was
//! answered with an error (the agent sends the report again).

use super::records::{
    AuditRecord, Classification, DeviceRecord, FederatedRecord, HistoryRecord, OrgAggregate,
    OutboxEntry, PersonRecord, RulesKind, RulesVersion, SessionRecord, TokenRecord,
};
use super::{
    AlertStore, AuditStore, DeviceFilter, DevicePage, DeviceStore, Durable, FederationStore,
    RulesStore, SessionStore, Store, StoreError, TokenStore,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How often a failed store is reopened.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Opens the backend (again).
pub type Opener = Box<dyn Fn() -> Result<Arc<dyn Store>, StoreError> + Send + Sync>;

/// A store that reopens its backend after a disk failure; see the module documentation.
pub struct Recovering {
    current: RwLock<Option<Arc<dyn Store>>>,
    failed: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    open: Opener,
}

impl std::fmt::Debug for Recovering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovering")
            .field("failed", &self.failed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Recovering {
    /// Opens the backend with `open`, which is called again to recover.
    pub fn open(open: Opener) -> Result<Recovering, StoreError> {
        let store = open()?;
        Ok(Recovering {
            current: RwLock::new(Some(store)),
            failed: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
            open,
        })
    }

    /// Whether the store is in the failed state.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable(
            "the disk under the store failed (full?); recovering, retry shortly".into(),
        )
    }

    /// Runs `f` on the backend, unless the store failed; a disk failure marks it failed.
    fn with<T>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.is_failed() {
            return Err(Self::unavailable());
        }
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        let Some(store) = guard.as_deref() else {
            return Err(Self::unavailable());
        };
        let result = f(store);
        if let Err(StoreError::Unavailable(why)) = &result
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::error!(error = %why, "store failed: refusing every call until it is reopened");
        }
        result
    }

    /// Reopens the backend and proves it takes writes; leaves the store failed if not.
    fn recover(&self) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        // The failed database must be gone before it is opened again (sled locks its file).
        drop(current.take());
        let proved = (self.open)().and_then(|store| {
            store.append_audit(&AuditRecord {
                at: OffsetDateTime::now_utc(),
                actor: "collector".into(),
                action: "store.recover".into(),
                organisation: None,
                allowed: true,
                detail: "the store was reopened after a disk failure and takes writes again".into(),
            })?;
            store.flush()?;
            Ok(store)
        });
        match proved {
            Ok(store) => {
                *current = Some(store);
                self.failed.store(false, Ordering::SeqCst);
                tracing::info!("store recovered: the disk takes writes again");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "store still failing; retrying in {RETRY_EVERY:?}");
                false
            }
        }
    }
}

impl Durable for Recovering {
    fn flush(&self) -> Result<(), StoreError> {
        self.with(|s| s.flush())
    }

    /// Holds every other call off (the write side of the lock each call reads under) while
    /// the backend copies itself: the copy is of one instant.
    fn backup(
        &self,
        to: &std::path::Path,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<super::sled_store::BackupCounts, StoreError> {
        if self.is_failed() {
            return Err(Self::unavailable());
        }
        let current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let result = match current.as_deref() {
            Some(store) => store.backup(to, cancelled),
            None => Err(Self::unavailable()),
        };
        // A disk failure during the flush or the copy marks the store failed, as any call's.
        if let Err(StoreError::Unavailable(why)) = &result
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::error!(error = %why, "store failed: refusing every call until it is reopened");
        }
        result
    }

    fn check_health(&self) -> bool {
        if !self.is_failed() {
            return true;
        }
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.recover()
    }
}

impl DeviceStore for Recovering {
    fn put_device(&self, device: &DeviceRecord, at: OffsetDateTime) -> Result<(), StoreError> {
        self.with(|s| s.put_device(device, at))
    }
    fn remove_device(&self, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.with(|s| s.remove_device(id, at))
    }
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.with(|s| s.device(id))
    }
    fn list_devices(
        &self,
        filter: &DeviceFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DevicePage, StoreError> {
        self.with(|s| s.list_devices(filter, cursor, limit))
    }
    fn device_ids(&self) -> Result<Vec<String>, StoreError> {
        self.with(|s| s.device_ids())
    }
    fn stale_candidates(
        &self,
        reported_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.with(|s| s.stale_candidates(reported_before, limit))
    }
    fn history(
        &self,
        device: &str,
        until: Option<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        self.with(|s| s.history(device, until, limit))
    }
    fn org_aggregate(&self, org: &str) -> Result<Option<OrgAggregate>, StoreError> {
        self.with(|s| s.org_aggregate(org))
    }
    fn org_aggregates(&self) -> Result<Vec<(String, OrgAggregate)>, StoreError> {
        self.with(|s| s.org_aggregates())
    }
    fn daily(&self, org: &str, days: usize) -> Result<Vec<(String, OrgAggregate)>, StoreError> {
        self.with(|s| s.daily(org, days))
    }
    fn put_classification(
        &self,
        org: &str,
        name: &str,
        c: &Classification,
    ) -> Result<(), StoreError> {
        self.with(|s| s.put_classification(org, name, c))
    }
    fn remove_classification(&self, org: &str, name: &str) -> Result<bool, StoreError> {
        self.with(|s| s.remove_classification(org, name))
    }
    fn classifications(&self, org: &str) -> Result<Vec<(String, Classification)>, StoreError> {
        self.with(|s| s.classifications(org))
    }
}

impl TokenStore for Recovering {
    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<(), StoreError> {
        self.with(|s| s.put_token(hash, token))
    }
    fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|s| s.token(hash))
    }
    fn tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        self.with(|s| s.tokens())
    }
    fn put_person(&self, hash: &str, person: &PersonRecord) -> Result<(), StoreError> {
        self.with(|s| s.put_person(hash, person))
    }
    fn person(&self, hash: &str) -> Result<Option<PersonRecord>, StoreError> {
        self.with(|s| s.person(hash))
    }
    fn people(&self) -> Result<Vec<(String, PersonRecord)>, StoreError> {
        self.with(|s| s.people())
    }
}

impl AuditStore for Recovering {
    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError> {
        self.with(|s| s.append_audit(entry))
    }
    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        self.with(|s| s.audit(after, limit))
    }
    fn audit_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        self.with(|s| s.audit_before(before, limit))
    }
    fn prune_audit(&self, before: OffsetDateTime, max_bytes: u64) -> Result<u64, StoreError> {
        self.with(|s| s.prune_audit(before, max_bytes))
    }
}

impl FederationStore for Recovering {
    fn replace_federated(
        &self,
        enterprise: &str,
        rows: &[(String, FederatedRecord)],
    ) -> Result<(), StoreError> {
        self.with(|s| s.replace_federated(enterprise, rows))
    }
    fn federated(&self) -> Result<Vec<(String, String, FederatedRecord)>, StoreError> {
        self.with(|s| s.federated())
    }
}

impl RulesStore for Recovering {
    fn append_rules(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        text: &str,
        author: &str,
        note: &str,
        at: OffsetDateTime,
    ) -> Result<RulesVersion, StoreError> {
        self.with(|s| s.append_rules(kind, organisation, text, author, note, at))
    }
    fn rules_history(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RulesVersion>, StoreError> {
        self.with(|s| s.rules_history(kind, organisation, limit))
    }
    fn rules_version(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        version: Option<u64>,
    ) -> Result<Option<RulesVersion>, StoreError> {
        self.with(|s| s.rules_version(kind, organisation, version))
    }
    fn current_rules(&self) -> Result<Vec<RulesVersion>, StoreError> {
        self.with(|s| s.current_rules())
    }
}

impl SessionStore for Recovering {
    fn put_session(&self, hash: &str, session: &SessionRecord) -> Result<(), StoreError> {
        self.with(|s| s.put_session(hash, session))
    }
    fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.with(|s| s.session(hash))
    }
    fn remove_session(&self, hash: &str) -> Result<bool, StoreError> {
        self.with(|s| s.remove_session(hash))
    }
    fn prune_sessions(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.with(|s| s.prune_sessions(before))
    }
}

impl AlertStore for Recovering {
    fn enqueue_alerts(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.with(|s| s.enqueue_alerts(entries))
    }
    fn enqueue_alerts_once(
        &self,
        mark: &str,
        value: &str,
        entries: &[OutboxEntry],
    ) -> Result<bool, StoreError> {
        self.with(|s| s.enqueue_alerts_once(mark, value, entries))
    }
    fn peek_alerts(&self, sink: &str, limit: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        self.with(|s| s.peek_alerts(sink, limit))
    }
    fn remove_alert(&self, sink: &str, position: u64) -> Result<(), StoreError> {
        self.with(|s| s.remove_alert(sink, position))
    }
    fn alert_depth(&self, sink: &str) -> Result<u64, StoreError> {
        self.with(|s| s.alert_depth(sink))
    }
}

impl Store for Recovering {
    fn put_device_alerting(
        &self,
        device: &DeviceRecord,
        at: OffsetDateTime,
        alerts: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        self.with(|s| s.put_device_alerting(device, at, alerts))
    }

    fn size_bytes(&self) -> Option<u64> {
        self.with(|s| Ok(s.size_bytes())).ok().flatten()
    }

    fn enroll(
        &self,
        device: &DeviceRecord,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|s| s.enroll(device, token_hash, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use commscan_runtime::testing::{Tmpfs, fill};

    fn token(i: u64) -> TokenRecord {
        TokenRecord {
            organisation: format!("org-{i}"),
            created_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            uses_left: Some(i),
            revoked: false,
        }
    }

    #[test]
    fn a_disk_that_filled_once_recovers_by_itself_and_keeps_what_was_flushed() {
        let Some(fs) = Tmpfs::mount("24m") else {
            return;
        };
        let started = Instant::now();
        let dir = fs.path().join("store");
        let d = dir.clone();
        let store = Recovering::open(Box::new(move || {
            SledStore::open(&d).map(|s| Arc::new(s) as Arc<dyn Store>)
        }))
        .unwrap();
        let filler = fs.path().join("filler");
        fill(&filler);
        // Write until the disk refuses; remember what was acknowledged (flushed).
        let mut acknowledged = Vec::new();
        let blob = "x".repeat(4096);
        let mut i = 0u64;
        let failure = loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the disk never filled"
            );
            i += 1;
            let mut t = token(i);
            t.organisation = format!("org-{i}-{blob}");
            match store
                .put_token(&format!("h{i}"), &t)
                .and_then(|_| store.flush())
            {
                Ok(()) => acknowledged.push(i),
                Err(e) => break e,
            }
        };
        assert!(matches!(failure, StoreError::Unavailable(_)), "{failure}");
        // Failed: every call refused, health false while the disk is full.
        assert!(store.is_failed());
        assert!(matches!(store.token("h1"), Err(StoreError::Unavailable(_))));
        std::thread::sleep(RETRY_EVERY);
        assert!(!store.check_health(), "recovered on a full disk");
        // Space comes back: recovered within a minute, by health checks alone.
        std::fs::remove_file(&filler).unwrap();
        let freed = Instant::now();
        while !store.check_health() {
            assert!(
                freed.elapsed() < Duration::from_secs(60),
                "not recovered within a minute of space coming back"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Nothing acknowledged lost; writes work again.
        for i in &acknowledged {
            assert!(
                store.token(&format!("h{i}")).unwrap().is_some(),
                "token {i} lost"
            );
        }
        store.put_token("after", &token(0)).unwrap();
        store.flush().unwrap();
        assert!(store.token("after").unwrap().is_some());
        assert!(
            store
                .audit(0, 100)
                .unwrap()
                .iter()
                .any(|(_, e)| e.action == "store.recover")
        );
    }
}
