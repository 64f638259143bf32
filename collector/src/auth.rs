//! People: bearer tokens resolved to principals, and the one authorisation function every
//! query and admin call passes through.
//!
//! A person holds grants: a role in one organisation or in all (`admin` everywhere, `officer`
//! of A, `auditor` of B...). [`authorize`] is the single decision point; it returns an
//! [`Authorized`] proof that the domain query methods require, so a query that skipped it does
//! not compile. As a second, run-time backstop, every decision (allow or deny, including a
//! failed authentication) is recorded on the request's [`DecisionMark`], and
//! [`crate::grpc::backstop`] turns any Query or Admin response whose handler made no decision
//! into PERMISSION_DENIED: fail closed.
//!
//! | access | admin | officer (org) | analyst | auditor |
//! |---|---|---|---|---|
//! | device rows and details | all | own orgs | never | granted orgs |
//! | summaries | all | own orgs | granted orgs | granted orgs |
//! | audit log | all | own orgs | never | granted orgs |
//! | enrolment tokens, revocation | all | own orgs | never | never |
//! | people's access tokens | yes | no | no | no |

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::secrets;
use crate::store::records::{Grant, Role};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when an authorisation decision was made for a request.
#[derive(Debug, Clone, Default)]
pub struct DecisionMark(Arc<AtomicBool>);

impl DecisionMark {
    /// Records that a decision was made.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a decision was made.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Their public id (the first 12 hex digits of their token's hash): unique, unlike names.
    pub id: String,
    /// Their name.
    pub name: String,
    /// Their grants.
    pub grants: Vec<Grant>,
    mark: DecisionMark,
}

impl Principal {
    /// How the audit log names them: `name [id]`, so two people of one name stay apart.
    pub fn actor(&self) -> String {
        person_actor(&self.name, &self.id)
    }
}

/// The audit actor of a person.
pub(crate) fn person_actor(name: &str, id: &str) -> String {
    format!("{name} [{id}]")
}

/// What is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Device rows and details.
    ReadDevices,
    /// Aggregates.
    ReadSummaries,
    /// The audit log.
    ReadAudit,
    /// Enrolment tokens (create, list, revoke) and device revocation.
    ManageDevices,
    /// People's access tokens.
    ManagePeople,
    /// Applying and rolling back rules (policies; the catalog and registers).
    ManagePolicy,
    /// Reading stored rules and their history.
    ReadPolicy,
}

impl Access {
    fn allowed_for(self, role: Role) -> bool {
        match role {
            Role::Admin => true,
            Role::Officer => self != Access::ManagePeople,
            Role::Analyst => self == Access::ReadSummaries,
            Role::Auditor => matches!(
                self,
                Access::ReadDevices
                    | Access::ReadSummaries
                    | Access::ReadAudit
                    | Access::ReadPolicy
            ),
        }
    }
}

/// Proof that [`authorize`] allowed an access; only it can make one.
// The private field confines construction to this module, which `#[non_exhaustive]` would
// not (it only binds other crates).
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug, Clone)]
pub(crate) struct Authorized {
    /// Organisations the access covers; `None` means all.
    pub orgs: Option<BTreeSet<String>>,
    _private: (),
}

impl Authorized {
    /// Whether the proof covers `org`.
    pub fn covers(&self, org: &str) -> bool {
        self.orgs.as_ref().is_none_or(|o| o.contains(org))
    }
}

/// Decides whether `who` may perform `access` on `organisation`; with `None`, on every
/// organisation the principal's grants reach (the proof says which). Denials name the access.
pub(crate) fn authorize(
    who: &Principal,
    access: Access,
    organisation: Option<&str>,
) -> Result<Authorized, CollectorError> {
    who.mark.set();
    let grants: Vec<&Grant> = who
        .grants
        .iter()
        .filter(|g| access.allowed_for(g.role))
        .collect();
    let everywhere = grants.iter().any(|g| g.organisation.is_none());
    let decision = match organisation {
        Some(org)
            if everywhere
                || grants
                    .iter()
                    .any(|g| g.organisation.as_deref() == Some(org)) =>
        {
            Ok(Authorized {
                orgs: Some(BTreeSet::from([org.to_owned()])),
                _private: (),
            })
        }
        None if everywhere => Ok(Authorized {
            orgs: None,
            _private: (),
        }),
        None if !grants.is_empty() => Ok(Authorized {
            orgs: Some(
                grants
                    .iter()
                    .filter_map(|g| g.organisation.clone())
                    .collect(),
            ),
            _private: (),
        }),
        _ => Err(CollectorError::PermissionDenied(format!(
            "{} may not {} in {}",
            who.actor(),
            match access {
                Access::ReadDevices => "read device rows",
                Access::ReadSummaries => "read summaries",
                Access::ReadAudit => "read the audit log",
                Access::ManageDevices => "manage enrolment tokens or devices",
                Access::ManagePeople => "manage access tokens",
                Access::ManagePolicy => "change rules",
                Access::ReadPolicy => "read rules",
            },
            organisation
                .map(|o| format!("organisation '{o}'"))
                .unwrap_or_else(|| "any organisation".into())
        ))),
    };
    match &decision {
        Ok(_) => {
            tracing::debug!(principal = %who.name, ?access, organisation = organisation.unwrap_or("*"), "allowed")
        }
        Err(e) => {
            tracing::warn!(principal = %who.name, ?access, organisation = organisation.unwrap_or("*"), error = %e, "denied")
        }
    }
    decision
}

impl Collector {
    /// Resolves a bearer token to a principal, marking the request as decided either way.
    /// The person is read from the store on every call (nothing is cached), so a revoked or
    /// expired token is refused from the next call on.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        mark: DecisionMark,
    ) -> Result<Principal, CollectorError> {
        mark.set();
        let denied = |why: &str| {
            self.audit("anonymous", "authenticate", None, false, why);
            CollectorError::Unauthenticated(why.to_owned())
        };
        let token = bearer.ok_or_else(|| denied("missing `authorization: Bearer <token>`"))?;
        self.authenticate_hash(&secrets::hash(token), mark)
    }

    /// [`Collector::authenticate`] for a person known by their token's hash (a web console
    /// session holds the hash, never the token).
    pub(crate) fn authenticate_hash(
        &self,
        hash: &str,
        mark: DecisionMark,
    ) -> Result<Principal, CollectorError> {
        mark.set();
        let denied = |why: &str| {
            self.audit("anonymous", "authenticate", None, false, why);
            CollectorError::Unauthenticated(why.to_owned())
        };
        let hash = hash.to_owned();
        let person = self
            .store()
            .person(&hash)?
            .ok_or_else(|| denied("unknown bearer token"))?;
        let id = crate::admin::token_id(&hash);
        if let Some(why) = person.refused(self.now()) {
            self.audit(
                &person_actor(&person.name, &id),
                "authenticate",
                None,
                false,
                why,
            );
            return Err(CollectorError::Unauthenticated(why.to_owned()));
        }
        Ok(Principal {
            id,
            name: person.name,
            grants: person.grants,
            mark,
        })
    }
}

impl Collector {
    /// [`authorize`], with denials written to the audit log under `action`.
    pub(crate) fn check(
        &self,
        who: &Principal,
        access: Access,
        organisation: Option<&str>,
        action: &str,
    ) -> Result<Authorized, CollectorError> {
        authorize(who, access, organisation)
            .inspect_err(|e| self.audit(&who.actor(), action, organisation, false, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(grants: &[(Role, Option<&str>)]) -> Principal {
        Principal {
            id: "0123456789ab".into(),
            name: "p".into(),
            grants: grants
                .iter()
                .map(|(r, o)| Grant {
                    role: *r,
                    organisation: o.map(str::to_owned),
                })
                .collect(),
            mark: DecisionMark::default(),
        }
    }

    #[test]
    fn roles_per_organisation() {
        let officer_a_auditor_b = who(&[(Role::Officer, Some("a")), (Role::Auditor, Some("b"))]);
        assert!(authorize(&officer_a_auditor_b, Access::ManageDevices, Some("a")).is_ok());
        assert!(authorize(&officer_a_auditor_b, Access::ManageDevices, Some("b")).is_err());
        assert!(authorize(&officer_a_auditor_b, Access::ReadDevices, Some("b")).is_ok());
        assert!(authorize(&officer_a_auditor_b, Access::ReadDevices, Some("c")).is_err());
        let all = authorize(&officer_a_auditor_b, Access::ReadDevices, None).unwrap();
        assert_eq!(
            all.orgs,
            Some(BTreeSet::from(["a".to_string(), "b".to_string()]))
        );
        let analyst = who(&[(Role::Analyst, None)]);
        assert!(authorize(&analyst, Access::ReadDevices, Some("a")).is_err());
        assert!(authorize(&analyst, Access::ReadSummaries, Some("a")).is_ok());
        let auditor = who(&[(Role::Auditor, None)]);
        assert!(authorize(&auditor, Access::ManageDevices, Some("a")).is_err());
        assert!(authorize(&who(&[]), Access::ReadSummaries, None).is_err());
    }

    #[test]
    fn every_decision_marks_the_request() {
        let p = who(&[]);
        assert!(!p.mark.is_set());
        let _ = authorize(&p, Access::ReadDevices, Some("a"));
        assert!(p.mark.is_set());
    }
}
