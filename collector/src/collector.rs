//! The collector's domain object: store, rules in force, CA, clock, limits, connected agents
//! and the ministry side of federation, shared by every service. Its fields are private; the
//! domain modules ([`crate::enrollment`], [`crate::ingest`], [`crate::queries`],
//! [`crate::admin`], [`crate::classify`], [`crate::rejudge`], [`crate::staleness`]...) each add
//! the methods of their concern in an `impl Collector` block and reach its parts through the
//! accessors defined here. The ministry side is a type of its own
//! ([`crate::federation::ministry::Ministry`], via [`Collector::ministry`]).
//!
//! The gRPC adapters in [`crate::grpc`] translate to and from the wire and call these methods.
//! They are synchronous (sled is), so adapters run them on the blocking pool.
//!
//! A collector is made by [`crate::layout::Layout::open`]; tests that need a controllable
//! clock or other limits set them before sharing it ([`Collector::set_clock`],
//! [`Collector::set_limiters`]).

use crate::compliance::{Compliance, Rules};
use crate::connections::Connections;
use crate::error::CollectorError;
use crate::events::VerdictEvent;
use crate::federation::ministry::Ministry;
use crate::limits::Limiters;
use crate::store::Store;
use commscan_core::pki::Authority;
use std::sync::Arc;
use time::OffsetDateTime;

/// Striped locks that serialise read-modify-write of one device record: a report, a
/// re-judgement after a policy reload, a staleness sweep, a classification or a revocation of
/// the same device never interleave, so none overwrites another's update with a stale copy.
#[derive(Debug)]
/// A device held by [`Collector::lock_device`]; the store's lock is released first.
pub(crate) struct DeviceGuard<'a> {
    _shared: crate::store::StoreLock,
    _local: std::sync::MutexGuard<'a, ()>,
}

pub(crate) struct DeviceLocks {
    stripes: Vec<std::sync::Mutex<()>>,
}

impl Default for DeviceLocks {
    fn default() -> Self {
        DeviceLocks {
            stripes: (0..256).map(|_| std::sync::Mutex::new(())).collect(),
        }
    }
}

impl DeviceLocks {
    /// Holds the lock of `device` until the guard drops.
    pub(crate) fn lock(&self, device: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        device.hash(&mut h);
        let i = (h.finish() % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The time source; tests substitute a controllable clock.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Everything the services share. Its parts are private: the domain modules reach them
/// through the methods below, adapters and tests through the few public accessors.
pub struct Collector {
    store: Arc<dyn Store>,
    /// The rules in force; read them with [`Collector::rules`].
    compliance: Compliance,
    /// Serialises changes of the rules in force (see [`crate::stored_rules`]).
    rules_changes: std::sync::Mutex<()>,
    /// The deployment CA, able to sign; `None` when its key is kept offline (enrolment and
    /// renewal are then unavailable; reporting and queries work).
    authority: Option<Authority>,
    /// The deployment CA certificate (PEM), always present.
    ca_pem: String,
    limiters: Limiters,
    connections: Connections,
    /// The trust domain named in device certificates.
    trust_domain: String,
    clock: Clock,
    /// A device that has not reported for this long is stale.
    stale_after: std::time::Duration,
    device_locks: DeviceLocks,
    /// Verdict changes, for `WatchEvents` subscribers and the federation pusher.
    events: tokio::sync::broadcast::Sender<VerdictEvent>,
    /// The ministry side of federation: receiving enterprises' pushes, their freshness.
    ministry: Ministry,
    /// What ingest cut or dropped from reports.
    bound_counters: crate::ingest::BoundCounters,
    /// Refusals of the current audit window (see [`crate::audit`]).
    refusals: crate::audit::Refusals,
    /// This process among the collectors sharing the store (random, per start).
    node: String,
    /// Whether other collectors may share the store (they hear of verdict changes).
    shared_store: bool,
    /// What `/metrics` shows.
    metrics: crate::metrics::Metrics,
    /// Where alerts go (see [`crate::alerts`]); set once, before serving.
    alerts: std::sync::OnceLock<Arc<crate::alerts::Alerts>>,
    /// Keys whose signed catalogs this collector accepts (`[rules] catalog_keys`); empty:
    /// signatures are left to the agents ([`crate::catalog_trust`]).
    catalog_keys: Vec<commscan_core::signed_catalog::CatalogPublicKey>,
    /// Organisations' candidate decisions, ready for their agents' streams.
    mappings: crate::mappings::MappingsCache,
}

/// Default staleness window: three missed hourly reports.
pub(crate) const DEFAULT_STALE_AFTER: std::time::Duration =
    std::time::Duration::from_secs(3 * 3600);

/// Default window of federated rows: three missed pushes at the default 15-minute interval
/// ([`crate::federation::push::DEFAULT_PUSH_INTERVAL`]).
pub(crate) const DEFAULT_FEDERATION_STALE_AFTER: std::time::Duration =
    std::time::Duration::from_secs(3 * 15 * 60);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector over `store`, judging by `rules`, for devices of `trust_domain`.
    /// `authority` signs device certificates (`None` when the CA key is offline); `ca_pem` is
    /// the deployment CA certificate. It starts with the system clock, the default windows
    /// and the default limits.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        rules: Rules,
        authority: Option<Authority>,
        ca_pem: String,
        trust_domain: String,
    ) -> Collector {
        let clock = system_clock();
        let shared_store = store.notices().is_some();
        let mut node = [0u8; 6];
        getrandom::fill(&mut node).expect("the OS random source works");
        Collector {
            node: hex::encode(node),
            shared_store,
            metrics: Default::default(),
            ministry: Ministry::new(
                &store,
                trust_domain.clone(),
                clock.clone(),
                DEFAULT_FEDERATION_STALE_AFTER,
            ),
            store,
            compliance: Compliance::new(rules),
            rules_changes: Default::default(),
            authority,
            ca_pem,
            limiters: Limiters::default(),
            connections: Connections::default(),
            mappings: crate::mappings::MappingsCache::default(),
            trust_domain,
            clock,
            stale_after: DEFAULT_STALE_AFTER,
            device_locks: DeviceLocks::default(),
            events: crate::events::channel(),
            bound_counters: crate::ingest::BoundCounters::default(),
            refusals: Default::default(),
            alerts: Default::default(),
            catalog_keys: Vec::new(),
        }
    }

    /// With the keys whose signed catalogs it accepts (see [`crate::catalog_trust`]).
    pub(crate) fn with_catalog_keys(
        mut self,
        keys: Vec<commscan_core::signed_catalog::CatalogPublicKey>,
    ) -> Collector {
        self.catalog_keys = keys;
        self
    }

    /// The keys whose signed catalogs it accepts; empty when none are configured.
    pub(crate) fn catalog_keys(&self) -> &[commscan_core::signed_catalog::CatalogPublicKey] {
        &self.catalog_keys
    }

    /// With `clock` (see [`Collector::set_clock`]).
    pub(crate) fn with_clock(mut self, clock: Clock) -> Collector {
        self.set_clock(clock);
        self
    }

    /// With another window for federated rows (see [`crate::federation`]).
    pub(crate) fn with_federation_stale_after(mut self, window: std::time::Duration) -> Collector {
        self.ministry = Ministry::new(
            &self.store,
            self.trust_domain.clone(),
            self.clock.clone(),
            window,
        );
        self
    }

    /// Replaces the clock, everywhere the collector reads the time. Tests set a controllable
    /// one before sharing the collector (`Arc::get_mut`).
    pub fn set_clock(&mut self, clock: Clock) {
        self.ministry.set_clock(clock.clone());
        self.clock = clock;
    }

    /// Replaces the rate limits (the load generator lifts the report limit).
    pub fn set_limiters(&mut self, limiters: Limiters) {
        self.limiters = limiters;
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.compliance.rules()
    }

    /// Puts new rules in force (see [`crate::rejudge`]).
    pub(crate) fn replace_rules(&self, rules: Rules) {
        self.compliance.replace(rules);
    }

    /// The rules files `serve` was given (or the embedded ones), before stored versions.
    pub(crate) fn base_rules(&self) -> crate::compliance::Sources {
        self.compliance.base()
    }

    /// Replaces the base rules files (see [`crate::rejudge`]).
    pub(crate) fn set_base_rules(&self, base: crate::compliance::Sources) {
        self.compliance.set_base(base);
    }

    /// Held while the rules in force change (see [`crate::stored_rules`]).
    pub(crate) fn rules_changes(&self) -> &std::sync::Mutex<()> {
        &self.rules_changes
    }

    /// The deployment CA certificate (PEM).
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The trust domain named in device certificates.
    pub(crate) fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// How long a device may go without reporting before it is stale.
    pub fn stale_after(&self) -> std::time::Duration {
        self.stale_after
    }

    /// Rate limits.
    pub(crate) fn limiters(&self) -> &Limiters {
        &self.limiters
    }

    /// Refusals of the current audit window.
    pub(crate) fn refusals(&self) -> &crate::audit::Refusals {
        &self.refusals
    }

    /// Connected agents.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Organisations' candidate decisions, as their agents' streams serve them.
    pub(crate) fn mappings(&self) -> &crate::mappings::MappingsCache {
        &self.mappings
    }

    /// What ingest cut or dropped from reports since start.
    pub fn bound_counters(&self) -> &crate::ingest::BoundCounters {
        &self.bound_counters
    }

    /// The ministry side of federation.
    pub(crate) fn ministry(&self) -> &Ministry {
        &self.ministry
    }

    /// Holds `device` until the guard drops: this process's lock ([`DeviceLocks`]), then the
    /// store's lock against other collectors on the same database.
    pub(crate) fn lock_device(&self, device: &str) -> Result<DeviceGuard<'_>, CollectorError> {
        let local = self.device_locks.lock(device);
        let shared = self.store.lock_device(device)?;
        Ok(DeviceGuard {
            _shared: shared,
            _local: local,
        })
    }

    /// A subscription to verdict changes from now on.
    pub(crate) fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<VerdictEvent> {
        self.events.subscribe()
    }

    /// The signing CA, or UNAVAILABLE when its key is offline.
    pub(crate) fn signer(&self) -> Result<&Authority, CollectorError> {
        self.authority.as_ref().ok_or_else(|| {
            CollectorError::Unavailable("enrolment is closed: the CA key is kept offline (put pki/ca.key back and restart to enrol devices)".into())
        })
    }

    /// Judges `device` under the rules in force at `now`.
    pub(crate) fn judge(&self, device: &mut crate::store::DeviceRecord, now: OffsetDateTime) {
        self.compliance.rules().judge(device, now, self.stale_after);
    }

    /// Gives the collector its alert sinks ([`crate::alerts`]): from then on every verdict
    /// change is written to their outbox with the device. Once, before serving; `false` if
    /// they were set already.
    pub fn set_alerts(&self, alerts: Arc<crate::alerts::Alerts>) -> bool {
        self.alerts.set(alerts).is_ok()
    }

    /// The alert sinks, if any.
    pub(crate) fn alerts(&self) -> Option<&Arc<crate::alerts::Alerts>> {
        self.alerts.get().filter(|a| !a.is_empty())
    }

    /// Stores a device changed at `now` and publishes a verdict change, if any, to watchers;
    /// its alerts enter the outbox in the same transaction as the device.
    pub(crate) fn store_device(
        &self,
        device: &crate::store::DeviceRecord,
        before: commscan_core::verdict::Status,
        now: OffsetDateTime,
    ) -> Result<(), CollectorError> {
        let changed = before != device.verdict.status;
        let outbox = match self.alerts() {
            Some(alerts) if changed => {
                let alert =
                    crate::alerts::event::Alert::of_verdict(&VerdictEvent::of(device, before, now));
                alerts.entries(self, &alert)
            }
            _ => Vec::new(),
        };
        self.store.put_device_alerting(device, now, &outbox)?;
        if let Some(alerts) = self.alerts() {
            alerts.enqueued(self, &outbox);
        }
        if changed {
            let event = VerdictEvent::of(device, before, now);
            if self.shared_store {
                // The write is committed; a lost notification loses a watcher's line, not data.
                if let Err(e) = self
                    .store
                    .notify(crate::store::Channel::Verdicts, &event.encode(&self.node))
                {
                    tracing::warn!(error = %e, device = %device.device_id, "verdict change not passed to the other collectors");
                }
            }
            // Nobody listening is fine.
            let _ = self.events.send(event);
        }
        Ok(())
    }

    /// The metrics `/metrics` shows.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// This process's id among the collectors sharing the store.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Puts a verdict change another collector announced on this one's channel (see
    /// [`crate::cluster`]); this collector's own, echoed back by the database, are skipped.
    pub(crate) fn receive_verdict(&self, payload: &str) {
        match VerdictEvent::decode(payload) {
            Ok((node, _)) if node == self.node => {}
            Ok((_, event)) => {
                let _ = self.events.send(event);
            }
            Err(e) => tracing::warn!(error = %e, "undecodable verdict notification ignored"),
        }
    }

    /// Now, by the collector's clock.
    pub(crate) fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }
}
