//! The collector's domain object: store, rules in force, CA and clock, shared by every
//! service. The gRPC adapters in [`crate::grpc`] translate to and from the wire and call the
//! methods defined in [`crate::enrollment`], [`crate::ingest`] and [`crate::queries`]. These
//! methods are synchronous (sled is), so adapters run them on the blocking pool.

use crate::compliance::Compliance;
use crate::error::CollectorError;
use crate::store::Store;
use commscan_core::pki::Authority;
use std::sync::Arc;
use time::OffsetDateTime;

/// Striped locks that serialise read-modify-write of one device record: a report, a
/// re-judgement after a policy reload, a staleness sweep, a classification or a revocation of
/// the same device never interleave, so none overwrites another's update with a stale copy.
#[derive(Debug)]
pub struct DeviceLocks {
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
    pub fn lock(&self, device: &str) -> std::sync::MutexGuard<'_, ()> {
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
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Everything the services share.
pub struct Collector {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The rules in force.
    pub compliance: Compliance,
    /// The deployment CA, able to sign; `None` when its key is kept offline (enrolment and
    /// renewal are then unavailable; reporting and queries work).
    pub authority: Option<Authority>,
    /// The deployment CA certificate (PEM), always present.
    pub ca_pem: String,
    /// Rate limits.
    pub limiters: crate::limits::Limiters,
    /// Connected agents.
    pub connections: crate::connections::Connections,
    /// The trust domain named in device certificates.
    pub trust_domain: String,
    /// The clock.
    pub clock: Clock,
    /// A device that has not reported for this long is stale.
    pub stale_after: std::time::Duration,
    /// Per-device locks for read-modify-write of device records.
    pub device_locks: DeviceLocks,
    /// Verdict changes, for `WatchEvents` subscribers.
    pub events: tokio::sync::broadcast::Sender<crate::events::VerdictEvent>,
    /// On a ministry collector, an enterprise's rows not refreshed by a push for this long are
    /// stale (see [`crate::federation`]).
    pub federation_stale_after: std::time::Duration,
}

/// Default staleness window: three missed hourly reports.
pub const DEFAULT_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// Default window of federated rows: three missed pushes at the default 15-minute interval
/// ([`crate::federation::push::DEFAULT_PUSH_INTERVAL`]).
pub const DEFAULT_FEDERATION_STALE_AFTER: std::time::Duration =
    std::time::Duration::from_secs(3 * 15 * 60);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// The signing CA, or UNAVAILABLE when its key is offline.
    pub fn signer(&self) -> Result<&Authority, CollectorError> {
        self.authority.as_ref().ok_or_else(|| {
            CollectorError::Unavailable("enrolment is closed: the CA key is kept offline (put pki/ca.key back and restart to enrol devices)".into())
        })
    }

    /// Judges `device` under the rules in force at `now`.
    pub fn judge(&self, device: &mut crate::store::DeviceRecord, now: OffsetDateTime) {
        self.compliance.rules().judge(device, now, self.stale_after);
    }

    /// Stores a device changed at `now` and publishes a verdict change, if any, to watchers.
    pub fn store_device(
        &self,
        device: &crate::store::DeviceRecord,
        before: commscan_core::verdict::Status,
        now: OffsetDateTime,
    ) -> Result<(), CollectorError> {
        self.store.put_device(device, now)?;
        if before != device.verdict.status {
            // Nobody listening is fine.
            let _ = self
                .events
                .send(crate::events::VerdictEvent::of(device, before, now));
        }
        Ok(())
    }

    /// Now, by the collector's clock.
    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }
}
