//! Privileged actions: enrolment tokens, device revocation, people's access tokens, reading the
//! audit log. Every call is authorised ([`crate::auth::authorize`], through
//! [`Collector::check`]) and every outcome, allowed or denied, is audited; an allowed action's
//! entry is on disk before it is answered ([`Collector::audited`]).
//!
//! People are known by a public id, the first 12 hex digits of their token's hash, shown in
//! the audit log beside their name (`alice [3fa9c2e1b4d0]`). Revoking or expiring a token
//! takes effect on the token's next call: principals are read from the store on every call.

use crate::auth::{Access, Principal, person_actor};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::secrets;
use crate::store::records::{Grant, PersonRecord, Role};
use crate::store::{AuditRecord, TokenRecord};
use commscan_core::identity::is_valid_organisation;
use std::time::Duration;

/// Longest enrolment token lifetime.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 86_400);
/// Default enrolment token lifetime.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// The public id of a token: the first 12 hex digits of its hash.
pub fn token_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// A person's token metadata with their public id.
#[derive(Debug, Clone)]
pub struct PersonInfo {
    /// Public id (first 12 hex digits of the token's hash).
    pub person_id: String,
    /// The record.
    pub record: PersonRecord,
}

/// Grants as `role:org` (`*` for every organisation), comma-separated.
fn grants_text(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(|g| {
            format!("{:?}:{}", g.role, g.organisation.as_deref().unwrap_or("*")).to_lowercase()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A token's metadata with its public id.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Public id.
    pub token_id: String,
    /// The record.
    pub record: TokenRecord,
}

impl Collector {
    /// Creates an enrolment token; returns its metadata and the secret (shown once).
    pub(crate) fn create_enrollment_token(
        &self,
        who: &Principal,
        org: &str,
        uses: Option<u64>,
        lifetime: Option<Duration>,
        new_organisation: bool,
    ) -> Result<(TokenInfo, String), CollectorError> {
        if !is_valid_organisation(org) {
            return Err(CollectorError::InvalidArgument(format!(
                "organisation: '{org}' is not valid (1-64 of a-z, 0-9, '-')"
            )));
        }
        self.check(who, Access::ManageDevices, Some(org), "tokens.create")?;
        if !new_organisation {
            let known = self.known_organisations()?;
            if !known.contains(org) {
                // Suggest only among organisations the caller holds a grant on.
                let visible = known
                    .iter()
                    .filter(|o| {
                        who.grants
                            .iter()
                            .any(|g| g.organisation.as_ref().is_none_or(|go| go == *o))
                    })
                    .map(String::as_str);
                return Err(CollectorError::InvalidArgument(format!(
                    "{}; ask for a new organisation to create it (commscanctl tokens create --new-org)",
                    commscan_core::suggest::unknown("organisation", org, visible)
                )));
            }
        }
        // `None` is "not given" (unlimited uses, the default lifetime); a zero given is
        // never silently turned into either.
        if uses == Some(0) {
            return Err(CollectorError::InvalidArgument(
                "uses: 0 would allow no enrolment (leave it unset for unlimited uses)".into(),
            ));
        }
        if lifetime.is_some_and(|l| l.is_zero()) {
            return Err(CollectorError::InvalidArgument(
                "expires: 0 would expire at once (leave it unset for the default lifetime)".into(),
            ));
        }
        let lifetime = lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        if lifetime > MAX_TOKEN_LIFETIME {
            return Err(CollectorError::InvalidArgument(
                "expires: at most 366 days".into(),
            ));
        }
        let now = self.now();
        let secret = secrets::generate("cse");
        let hash = secrets::hash(&secret);
        let record = TokenRecord {
            organisation: org.to_owned(),
            created_at: now,
            expires_at: Some(now + lifetime),
            uses_left: uses,
            revoked: false,
        };
        let info = TokenInfo {
            token_id: token_id(&hash),
            record,
        };
        self.audited(
            who,
            "tokens.create",
            Some(org),
            format!(
                "token {} uses={} expires={}",
                info.token_id,
                uses.map(|u| u.to_string())
                    .unwrap_or_else(|| "unlimited".into()),
                info.record.expires_at.map(audit_time).unwrap_or_default()
            ),
            || Ok(self.store().put_token(&hash, &info.record)?),
        )?;
        Ok((info, secret))
    }

    /// Lists enrolment tokens the caller may manage, newest first. Never returns secrets.
    pub(crate) fn list_enrollment_tokens(
        &self,
        who: &Principal,
        org: Option<&str>,
    ) -> Result<Vec<TokenInfo>, CollectorError> {
        let proof = self.check(who, Access::ManageDevices, org, "tokens.list")?;
        let mut out: Vec<TokenInfo> = self
            .store()
            .tokens()?
            .into_iter()
            .filter(|(_, t)| {
                proof.covers(&t.organisation) && org.is_none_or(|o| o == t.organisation)
            })
            .map(|(h, record)| TokenInfo {
                token_id: token_id(&h),
                record,
            })
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.record.created_at));
        Ok(out)
    }

    /// Revokes an enrolment token by its public id.
    pub(crate) fn revoke_enrollment_token(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(), CollectorError> {
        if id.len() < 12 {
            return Err(CollectorError::InvalidArgument(
                "token_id: give the 12-digit id from `commscanctl tokens list`".into(),
            ));
        }
        let found = self
            .store()
            .tokens()?
            .into_iter()
            .find(|(h, _)| h.starts_with(id));
        let Some((hash, mut record)) = found else {
            self.check(who, Access::ManageDevices, None, "tokens.revoke")?;
            return Err(CollectorError::NotFound(format!(
                "no enrolment token '{id}'"
            )));
        };
        self.check(
            who,
            Access::ManageDevices,
            Some(&record.organisation),
            "tokens.revoke",
        )?;
        record.revoked = true;
        self.audited(
            who,
            "tokens.revoke",
            Some(&record.organisation),
            format!("token {id} revoked"),
            || Ok(self.store().put_token(&hash, &record)?),
        )
    }

    /// Revokes a device: refused from its next RPC on; its history stays.
    pub(crate) fn revoke_device(&self, who: &Principal, id: &str) -> Result<(), CollectorError> {
        let not_found = || CollectorError::NotFound(format!("no device '{id}'"));
        let proof = self.check(who, Access::ManageDevices, None, "devices.revoke")?;
        let _device_lock = self.lock_device(id)?;
        let mut device = self.store().device(id)?.ok_or_else(not_found)?;
        if !proof.covers(&device.organisation) {
            self.audit(
                &who.actor(),
                "devices.revoke",
                Some(&device.organisation),
                false,
                format!("device {id} is outside the caller's organisations"),
            );
            return Err(not_found());
        }
        device.revoked = true;
        // Out of the organisation's figures from now on: the store subtracts what it counted.
        device.uncounted = true;
        self.audited(
            who,
            "devices.revoke",
            Some(&device.organisation),
            format!("device {id} ({}) revoked", device.hostname),
            || Ok(self.store().put_device(&device, self.now())?),
        )
    }

    /// Removes a revoked device, its history, and its share of the aggregates.
    pub(crate) fn remove_device(&self, who: &Principal, id: &str) -> Result<(), CollectorError> {
        let not_found = || CollectorError::NotFound(format!("no device '{id}'"));
        let proof = self.check(who, Access::ManageDevices, None, "devices.remove")?;
        let device = self.store().device(id)?.ok_or_else(not_found)?;
        if !proof.covers(&device.organisation) {
            self.audit(
                &who.actor(),
                "devices.remove",
                Some(&device.organisation),
                false,
                format!("device {id} is outside the caller's organisations"),
            );
            return Err(not_found());
        }
        if !device.revoked {
            return Err(CollectorError::FailedPrecondition(format!(
                "device {id} is not revoked: revoke it first (`commscanctl devices revoke {id}`) so it cannot report again"
            )));
        }
        self.audited(
            who,
            "devices.remove",
            Some(&device.organisation),
            format!("device {id} ({}) removed", device.hostname),
            || Ok(self.store().remove_device(id, self.now()).map(|_| ())?),
        )
    }

    /// Creates a person's bearer token with grants, valid for `lifetime` (`None`: until
    /// revoked); returns their public id and the secret (shown once).
    pub(crate) fn create_access_token(
        &self,
        who: &Principal,
        name: &str,
        grants: Vec<Grant>,
        lifetime: Option<Duration>,
    ) -> Result<(String, String), CollectorError> {
        self.check(who, Access::ManagePeople, None, "people.create")?;
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(CollectorError::InvalidArgument(
                "name: required, at most 128 characters, no control characters".into(),
            ));
        }
        if grants.is_empty() {
            return Err(CollectorError::InvalidArgument(
                "grants: at least one".into(),
            ));
        }
        if lifetime.is_some_and(|l| l.is_zero() || l > MAX_TOKEN_LIFETIME) {
            return Err(CollectorError::InvalidArgument(
                "expires: more than 0 seconds, at most 366 days".into(),
            ));
        }
        for g in &grants {
            if let Some(o) = &g.organisation
                && !is_valid_organisation(o)
            {
                return Err(CollectorError::InvalidArgument(format!(
                    "grants: organisation '{o}' is not valid"
                )));
            }
            if g.role == Role::Officer && g.organisation.is_none() {
                return Err(CollectorError::InvalidArgument(
                    "grants: an officer is scoped to an organisation (officer:ORG)".into(),
                ));
            }
        }
        let secret = secrets::generate("csa");
        let hash = secrets::hash(&secret);
        let id = token_id(&hash);
        let now = self.now();
        let record = PersonRecord {
            created_at: Some(now),
            created_by: who.actor(),
            expires_at: lifetime.map(|l| now + l),
            ..PersonRecord::new(name.to_owned(), grants)
        };
        self.audited(
            who,
            "people.create",
            None,
            format!(
                "access token for {} with {}{}",
                person_actor(name, &id),
                grants_text(&record.grants),
                record
                    .expires_at
                    .map(|t| format!(", expires {}", audit_time(t)))
                    .unwrap_or_default()
            ),
            || Ok(self.store().put_person(&hash, &record)?),
        )?;
        Ok((id, secret))
    }

    /// Lists people's access tokens (never their secrets), newest first.
    pub(crate) fn list_access_tokens(
        &self,
        who: &Principal,
    ) -> Result<Vec<PersonInfo>, CollectorError> {
        self.check(who, Access::ManagePeople, None, "people.list")?;
        let mut out: Vec<PersonInfo> = self
            .store()
            .people()?
            .into_iter()
            .map(|(h, record)| PersonInfo {
                person_id: token_id(&h),
                record,
            })
            .collect();
        out.sort_by(|a, b| {
            (std::cmp::Reverse(a.record.created_at), &a.person_id)
                .cmp(&(std::cmp::Reverse(b.record.created_at), &b.person_id))
        });
        Ok(out)
    }

    /// Revokes a person's access token: refused from their next call on.
    pub(crate) fn revoke_access_token(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<PersonInfo, CollectorError> {
        self.change_person(who, id, "people.revoke", |p, _| {
            p.revoked = true;
            "revoked".to_owned()
        })
    }

    /// Expires a person's access token `after` from now (zero: at once).
    pub(crate) fn expire_access_token(
        &self,
        who: &Principal,
        id: &str,
        after: Duration,
    ) -> Result<PersonInfo, CollectorError> {
        if after > MAX_TOKEN_LIFETIME {
            return Err(CollectorError::InvalidArgument(
                "expires_in_seconds: at most 366 days".into(),
            ));
        }
        self.change_person(who, id, "people.expire", |p, now| {
            let at = now + after;
            // Expiring never extends a token's life.
            let at = p.expires_at.map_or(at, |e| e.min(at));
            p.expires_at = Some(at);
            format!("expires {at}")
        })
    }

    /// Finds a person by public id, authorises, changes and stores them, audited.
    fn change_person(
        &self,
        who: &Principal,
        id: &str,
        action: &str,
        change: impl FnOnce(&mut PersonRecord, time::OffsetDateTime) -> String,
    ) -> Result<PersonInfo, CollectorError> {
        self.check(who, Access::ManagePeople, None, action)?;
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CollectorError::InvalidArgument(
                "person_id: give the 12-digit id from `commscanctl people list`".into(),
            ));
        }
        let id = id.to_ascii_lowercase();
        let found = self
            .store()
            .people()?
            .into_iter()
            .find(|(h, _)| h.starts_with(&id));
        let Some((hash, mut record)) = found else {
            return Err(CollectorError::NotFound(format!(
                "no access token '{id}' (list them with `commscanctl people list`)"
            )));
        };
        let what = change(&mut record, self.now());
        self.audited(
            who,
            action,
            None,
            format!("access token of {} {what}", person_actor(&record.name, &id)),
            || Ok(self.store().put_person(&hash, &record)?),
        )?;
        Ok(PersonInfo {
            person_id: id,
            record,
        })
    }

    /// Audit entries after `after`, oldest first, filtered to the caller's organisations.
    pub(crate) fn list_audit(
        &self,
        who: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, CollectorError> {
        self.list_audit_where(
            who,
            &AuditQuery {
                after,
                limit,
                ..AuditQuery::default()
            },
        )
    }

    /// Audit entries the caller may see that `query` selects: after its position, the oldest
    /// `limit` in order, or with `newest_first` the newest `limit`, newest first.
    pub(crate) fn list_audit_where(
        &self,
        who: &Principal,
        query: &AuditQuery,
    ) -> Result<Vec<(u64, AuditRecord)>, CollectorError> {
        let proof = self.check(who, Access::ReadAudit, None, "audit.list")?;
        if let Some(person) = &query.person {
            self.check_person_filter(person)?;
        }
        let limit = if query.limit == 0 {
            100
        } else {
            query.limit.min(1000)
        };
        let visible = |e: &AuditRecord| match (&proof.orgs, &e.organisation) {
            (None, _) => true,
            (Some(orgs), Some(o)) => orgs.contains(o),
            (Some(_), None) => false,
        };
        let mut out = Vec::new();
        // Scoped callers skip entries of other organisations: read in batches until `limit`
        // selected entries or the end. Newest first reads the log backwards from its end,
        // down to `after`, so the newest page costs about `limit` entries, not the log.
        let mut cursor = if query.newest_first {
            u64::MAX
        } else {
            query.after
        };
        loop {
            let batch = if query.newest_first {
                self.store().audit_before(cursor, AUDIT_BATCH)?
            } else {
                self.store().audit(cursor, AUDIT_BATCH)?
            };
            let done = batch.len() < AUDIT_BATCH;
            for (pos, e) in batch {
                if query.newest_first && pos <= query.after {
                    return Ok(out);
                }
                cursor = pos;
                if visible(&e) && query.selects(&e) {
                    out.push((pos, e));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }
}

/// Entries read from the store at a time while selecting audit entries.
const AUDIT_BATCH: usize = 1000;

/// A time in an audit detail: RFC 3339 to the second, as everywhere else.
fn audit_time(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Which audit entries to list, and in which order.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries after this position (0: from the start).
    pub after: u64,
    /// At most this many (0: 100; capped at 1000).
    pub limit: usize,
    /// The newest `limit` entries, newest first (else the oldest, oldest first).
    pub newest_first: bool,
    /// Only this person: a name (every person of that name), a person id or a prefix of one.
    pub person: Option<String>,
    /// Only this action (`tokens.create`), or a group of them (`tokens`).
    pub action: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<time::OffsetDateTime>,
    /// Only entries before this time.
    pub until: Option<time::OffsetDateTime>,
}

impl AuditQuery {
    /// Whether the query selects `e` (visibility aside).
    pub fn selects(&self, e: &AuditRecord) -> bool {
        self.person.as_deref().is_none_or(|p| actor_is(&e.actor, p))
            && self.action.as_deref().is_none_or(|a| {
                e.action == a || e.action.strip_prefix(a).is_some_and(|r| r.starts_with('.'))
            })
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
    }
}

impl Collector {
    /// Organisations that exist: those with devices (an aggregate) or enrolment tokens.
    fn known_organisations(&self) -> Result<std::collections::BTreeSet<String>, CollectorError> {
        let mut known: std::collections::BTreeSet<String> = self
            .store()
            .org_aggregates()?
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        known.extend(
            self.store()
                .tokens()?
                .into_iter()
                .map(|(_, t)| t.organisation),
        );
        Ok(known)
    }

    /// Refuses a person filter that is the start of several people's ids (as git refuses an
    /// ambiguous abbreviation), naming them; a name, a whole actor or a unique prefix passes.
    fn check_person_filter(&self, person: &str) -> Result<(), CollectorError> {
        let people = self.store().people()?;
        if people.iter().any(|(_, p)| p.name == person) {
            return Ok(());
        }
        let mut ids: Vec<String> = people
            .iter()
            .map(|(hash, _)| token_id(hash))
            .filter(|id| id.starts_with(person))
            .collect();
        if ids.len() > 1 {
            ids.sort();
            return Err(CollectorError::InvalidArgument(format!(
                "person: '{person}' starts {} person ids ({}); give more of the id",
                ids.len(),
                ids.join(", ")
            )));
        }
        Ok(())
    }
}

/// Whether `actor` (`name [person id]`, `device:<id>`, …) is `who`: the whole actor, the name,
/// or the person id or a prefix of it.
fn actor_is(actor: &str, who: &str) -> bool {
    if who.is_empty() {
        return false;
    }
    if actor == who {
        return true;
    }
    match actor.rsplit_once(" [") {
        Some((name, id)) => {
            let id = id.strip_suffix(']').unwrap_or(id);
            name == who || id.starts_with(who)
        }
        None => false,
    }
}

#[cfg(test)]
mod audit_query_tests {
    use super::*;

    #[test]
    fn a_person_is_found_by_name_or_by_id_prefix_and_actions_by_group() {
        assert!(actor_is("alice [3f2a0c9d1b7e]", "alice"));
        assert!(actor_is("alice [3f2a0c9d1b7e]", "3f2a"));
        assert!(!actor_is("alice [3f2a0c9d1b7e]", "ali"));
        assert!(!actor_is("alice [3f2a0c9d1b7e]", "bob"));
        assert!(actor_is("device:abc", "device:abc"));
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let e = AuditRecord {
            at,
            actor: "admin [000000000001]".into(),
            action: "tokens.create".into(),
            organisation: None,
            allowed: true,
            detail: String::new(),
        };
        let q = |action: &str| AuditQuery {
            action: Some(action.into()),
            ..AuditQuery::default()
        };
        assert!(q("tokens").selects(&e));
        assert!(q("tokens.create").selects(&e));
        assert!(!q("tok").selects(&e));
        assert!(!q("people").selects(&e));
    }
}
