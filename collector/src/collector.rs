//! The collector's domain object: store, rules in force, CA and clock, shared by every
//! service. The gRPC adapters in [`crate::grpc`] translate to and from the wire and call the
//! methods defined in [`crate::enrollment`], [`crate::ingest`] and [`crate::queries`]. These
//! methods are synchronous (sled is), so adapters run them on the blocking pool.

use crate::compliance::Compliance;
use crate::store::Store;
use commscan_core::pki::Authority;
use std::sync::Arc;
use time::OffsetDateTime;

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
    /// The deployment CA.
    pub authority: Authority,
    /// The trust domain named in device certificates.
    pub trust_domain: String,
    /// The clock.
    pub clock: Clock,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Now, by the collector's clock.
    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }
}
