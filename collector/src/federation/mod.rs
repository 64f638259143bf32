//! Federation (ministry tier): enterprise collectors push per-organisation aggregates, never
//! device rows, to a ministry collector, which answers fleet summaries across enterprises.
//!
//! ```text
//!  enterprise collector                                   ministry collector
//!  orgs/<org> aggregates ──push.rs──PushSummary (mTLS)──▶ ministry.rs ──▶ federated/<enterprise>/<org>
//!     (only organisations its certificate grants)          (identity from the certificate)  │
//!                                                                                            ▼
//!                                                   FleetSummary: rows with updated_at and stale
//! ```
//!
//! | module | concern |
//! |---|---|
//! | [`issue`] | the ministry operator issues an enterprise certificate, offline, from the ministry's CA |
//! | [`upstream`] | the enterprise side's settings: the ministry's URL, CA, and the enterprise certificate |
//! | [`push`] | the enterprise side: a background task pushing its aggregates, periodically and on change |
//! | [`fetch`] | the rules a ministry publishes (its signed catalog, its registers) and how an enterprise adopts them |
//! | [`ministry`] | the ministry side ([`ministry::Ministry`]): who may push what, validation, storing, freshness |
//!
//! **Identity.** An enterprise authenticates with a client certificate issued by the ministry's
//! CA (the ministry's deployment CA, so the ministry's TLS layer verifies it like a device
//! certificate). Its URI SANs name the enterprise and each organisation it may push
//! ([`commscan_core::identity::EnterpriseIdentity`]). The ministry reads both from the verified
//! certificate only; a push naming any organisation the certificate does not grant is refused
//! whole (PERMISSION_DENIED, nothing stored) and audited. Device certificates cannot push, and
//! enterprise certificates cannot report as devices: each parser refuses the other's URIs.
//!
//! **What a push is.** A snapshot of the enterprise: for every granted organisation it has,
//! devices, devices by status and, per product, devices and violating devices. No device id,
//! host name, finding or evidence exists in the message type, so none can leak. The ministry
//! replaces everything it held for that enterprise with the snapshot (organisations the
//! enterprise no longer reports disappear), keyed `<enterprise>/<org>` so one enterprise can
//! never overwrite another's rows, even for an organisation id both were granted.
//!
//! **Acknowledgement.** The ministry answers a push only after its store flushed it; the
//! enterprise counts a push as delivered only on that answer, and otherwise retries with
//! capped, fully jittered backoff. A push is idempotent (a snapshot), so a retry after a lost
//! answer does no harm.
//!
//! **Freshness.** A row's `updated_at` is when the ministry *received* it, by the ministry's
//! clock (an enterprise's clock is not trusted for this). A row is stale when no push has
//! refreshed it for `federation_stale_after` (default 45 minutes: three missed pushes at the
//! default 15-minute interval; `serve --federation-stale-after`). Stale rows keep their last
//! figures for reference, but fleet totals count all their devices as stale, never compliant.

pub(crate) mod fetch;
pub mod issue;
pub(crate) mod ministry;
pub mod push;
pub mod upstream;

use crate::store::OrgAggregate;
use time::OffsetDateTime;

/// One organisation's figures in a push.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrgSummary {
    /// The organisation.
    pub organisation: String,
    /// Devices, by status and by product (`unclassified` is never pushed).
    pub aggregate: OrgAggregate,
    /// Compliant and waived devices as a percentage, as the sender computed it.
    pub percent_compliant: f64,
}

impl OrgSummary {
    /// The summary of a local organisation's aggregate, without its unclassified candidates.
    pub fn of(organisation: String, mut aggregate: OrgAggregate) -> OrgSummary {
        aggregate.unclassified.clear();
        OrgSummary {
            percent_compliant: aggregate.percent_compliant(),
            organisation,
            aggregate,
        }
    }
}

/// What an enterprise pushes: its complete state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Push {
    /// When the enterprise read the figures, by its clock.
    pub generated_at: OffsetDateTime,
    /// One row per organisation.
    pub organisations: Vec<OrgSummary>,
}

/// The ministry's answer to a stored push.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Receipt {
    /// Organisations stored for the enterprise.
    pub organisations: usize,
    /// When the ministry received the push.
    pub received_at: OffsetDateTime,
    /// How long the rows stay fresh.
    pub stale_after: std::time::Duration,
}
