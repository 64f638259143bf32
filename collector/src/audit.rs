//! The audit log: every privileged action and every denial, appended to the store. Writing an
//! audit entry never fails the action it records (a store error is logged instead), but an
//! action is never performed silently: the entry is written before the answer is sent.

use crate::collector::Collector;
use crate::store::AuditRecord;

impl Collector {
    /// Appends an audit entry.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        organisation: Option<&str>,
        allowed: bool,
        detail: impl Into<String>,
    ) {
        let entry = AuditRecord {
            at: self.now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            organisation: organisation.map(str::to_owned),
            allowed,
            detail: detail.into(),
        };
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::error!(error = %e, actor, action, "audit entry could not be written");
        }
    }
}
