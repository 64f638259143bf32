//! The audit log: every privileged action and every denial, appended to the store. Writing an
//! audit entry never fails the action it records (a store error is logged instead), but an
//! action is never performed silently: the entry is written before the answer is sent.
//! [`append`] is the one writer; [`Collector::audit`] and the ministry side
//! ([`crate::federation::ministry::Ministry`]) stamp entries with their clock and call it.

use crate::collector::Collector;
use crate::store::{AuditRecord, AuditStore};
use time::OffsetDateTime;

/// Appends an entry at `at` to `log`; a failure is logged, not returned.
pub(crate) fn append(
    log: &dyn AuditStore,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    organisation: Option<&str>,
    allowed: bool,
    detail: String,
) {
    let entry = AuditRecord {
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        organisation: organisation.map(str::to_owned),
        allowed,
        detail,
    };
    if let Err(e) = log.append_audit(&entry) {
        tracing::error!(error = %e, actor, action, "audit entry could not be written");
    }
}

impl Collector {
    /// Appends an audit entry.
    pub(crate) fn audit(
        &self,
        actor: &str,
        action: &str,
        organisation: Option<&str>,
        allowed: bool,
        detail: impl Into<String>,
    ) {
        append(
            &**self.store(),
            self.now(),
            actor,
            action,
            organisation,
            allowed,
            detail.into(),
        );
    }
}
