//! Privileged actions: enrolment tokens, device revocation, people's access tokens, reading the
//! audit log. Every call is authorised and every outcome, allowed or denied, is audited.

use crate::auth::{Access, Principal};
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
    ) -> Result<(TokenInfo, String), CollectorError> {
        if !is_valid_organisation(org) {
            return Err(CollectorError::InvalidArgument(format!(
                "organisation: '{org}' is not valid (1-64 of a-z, 0-9, '-')"
            )));
        }
        self.check(who, Access::ManageDevices, Some(org), "tokens.create")?;
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
        self.store().put_token(&hash, &record)?;
        self.store().flush()?;
        let info = TokenInfo {
            token_id: token_id(&hash),
            record,
        };
        self.audit(
            &who.name,
            "tokens.create",
            Some(org),
            true,
            format!(
                "token {} uses={} expires={}",
                info.token_id,
                uses.map(|u| u.to_string())
                    .unwrap_or_else(|| "unlimited".into()),
                info.record
                    .expires_at
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
        );
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
        self.store().put_token(&hash, &record)?;
        self.store().flush()?;
        self.audit(
            &who.name,
            "tokens.revoke",
            Some(&record.organisation),
            true,
            format!("token {id} revoked"),
        );
        Ok(())
    }

    /// Revokes a device: refused from its next RPC on; its history stays.
    pub(crate) fn revoke_device(&self, who: &Principal, id: &str) -> Result<(), CollectorError> {
        let not_found = || CollectorError::NotFound(format!("no device '{id}'"));
        let proof = self.check(who, Access::ManageDevices, None, "devices.revoke")?;
        let _device_lock = self.lock_device(id);
        let mut device = self.store().device(id)?.ok_or_else(not_found)?;
        if !proof.covers(&device.organisation) {
            self.audit(
                &who.name,
                "devices.revoke",
                Some(&device.organisation),
                false,
                format!("device {id} is outside the caller's organisations"),
            );
            return Err(not_found());
        }
        device.revoked = true;
        self.store().put_device(&device, self.now())?;
        self.store().flush()?;
        self.audit(
            &who.name,
            "devices.revoke",
            Some(&device.organisation),
            true,
            format!("device {id} ({}) revoked", device.hostname),
        );
        Ok(())
    }

    /// Removes a revoked device, its history, and its share of the aggregates.
    pub(crate) fn remove_device(&self, who: &Principal, id: &str) -> Result<(), CollectorError> {
        let not_found = || CollectorError::NotFound(format!("no device '{id}'"));
        let proof = self.check(who, Access::ManageDevices, None, "devices.remove")?;
        let device = self.store().device(id)?.ok_or_else(not_found)?;
        if !proof.covers(&device.organisation) {
            self.audit(
                &who.name,
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
        self.store().remove_device(id, self.now())?;
        self.store().flush()?;
        self.audit(
            &who.name,
            "devices.remove",
            Some(&device.organisation),
            true,
            format!("device {id} ({}) removed", device.hostname),
        );
        Ok(())
    }

    /// Creates a person's bearer token with grants; returns the secret (shown once).
    pub(crate) fn create_access_token(
        &self,
        who: &Principal,
        name: &str,
        grants: Vec<Grant>,
    ) -> Result<String, CollectorError> {
        self.check(who, Access::ManagePeople, None, "people.create")?;
        if name.trim().is_empty() || name.len() > 128 {
            return Err(CollectorError::InvalidArgument(
                "name: required, at most 128 characters".into(),
            ));
        }
        if grants.is_empty() {
            return Err(CollectorError::InvalidArgument(
                "grants: at least one".into(),
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
        let detail = grants
            .iter()
            .map(|g| {
                format!("{:?}:{}", g.role, g.organisation.as_deref().unwrap_or("*")).to_lowercase()
            })
            .collect::<Vec<_>>()
            .join(",");
        self.store().put_person(
            &secrets::hash(&secret),
            &PersonRecord {
                name: name.to_owned(),
                grants,
            },
        )?;
        self.store().flush()?;
        self.audit(
            &who.name,
            "people.create",
            None,
            true,
            format!("access token for {name} with {detail}"),
        );
        Ok(secret)
    }

    /// Audit entries after `after`, filtered to the caller's organisations.
    pub(crate) fn list_audit(
        &self,
        who: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, CollectorError> {
        let proof = self.check(who, Access::ReadAudit, None, "audit.list")?;
        let limit = if limit == 0 { 100 } else { limit.min(1000) };
        let mut out = Vec::new();
        let mut cursor = after;
        // Scoped callers skip entries of other organisations; read in batches until full.
        loop {
            let batch = self.store().audit(cursor, 1000)?;
            let done = batch.len() < 1000;
            for (pos, e) in batch {
                cursor = pos;
                let visible = match (&proof.orgs, &e.organisation) {
                    (None, _) => true,
                    (Some(orgs), Some(o)) => orgs.contains(o),
                    (Some(_), None) => false,
                };
                if visible {
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
