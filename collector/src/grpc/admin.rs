//! `Admin` adapter.

use super::backstop::mark_of;
use super::blocking;
use super::query::bearer;
use crate::admin::{PersonInfo, TokenInfo};
use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::records::{Grant, Role, RulesKind, RulesVersion};
use crate::stored_rules::Applied;
use commscan_proto::convert;
use commscan_proto::v1::{self, admin_server::Admin};
use std::sync::Arc;
use std::time::Duration;

/// The `Admin` service.
#[derive(Debug, Clone)]
pub struct AdminService(pub Arc<Collector>);

fn token_to_wire(t: &TokenInfo) -> v1::EnrollmentToken {
    v1::EnrollmentToken {
        token_id: t.token_id.clone(),
        organisation: t.record.organisation.clone(),
        created_at: Some(convert::timestamp(t.record.created_at)),
        expires_at: t.record.expires_at.map(convert::timestamp),
        uses_left: t.record.uses_left,
        revoked: t.record.revoked,
    }
}

fn role_to_wire(r: Role) -> v1::Role {
    match r {
        Role::Admin => v1::Role::Admin,
        Role::Officer => v1::Role::Officer,
        Role::Analyst => v1::Role::Analyst,
        Role::Auditor => v1::Role::Auditor,
    }
}

fn person_to_wire(p: &PersonInfo) -> v1::AccessToken {
    v1::AccessToken {
        person_id: p.person_id.clone(),
        name: p.record.name.clone(),
        grants: p
            .record
            .grants
            .iter()
            .map(|g| v1::Grant {
                role: role_to_wire(g.role) as i32,
                organisation: g.organisation.clone().unwrap_or_default(),
            })
            .collect(),
        created_at: p.record.created_at.map(convert::timestamp),
        created_by: p.record.created_by.clone(),
        expires_at: p.record.expires_at.map(convert::timestamp),
        revoked: p.record.revoked,
    }
}

fn role_from_wire(v: i32) -> Result<Role, CollectorError> {
    match v1::Role::try_from(v) {
        Ok(v1::Role::Admin) => Ok(Role::Admin),
        Ok(v1::Role::Officer) => Ok(Role::Officer),
        Ok(v1::Role::Analyst) => Ok(Role::Analyst),
        Ok(v1::Role::Auditor) => Ok(Role::Auditor),
        _ => Err(CollectorError::InvalidArgument(format!(
            "grants.role: {v} is not a role"
        ))),
    }
}

fn rules_kind_from_wire(v: i32) -> Result<RulesKind, CollectorError> {
    match v1::RulesKind::try_from(v) {
        Ok(v1::RulesKind::Catalog) => Ok(RulesKind::Catalog),
        Ok(v1::RulesKind::Registers) => Ok(RulesKind::Registers),
        Ok(v1::RulesKind::Policy) => Ok(RulesKind::Policy),
        _ => Err(CollectorError::InvalidArgument(format!(
            "kind: {v} is not a kind of rules (catalog, registers, policy)"
        ))),
    }
}

fn rules_kind_to_wire(k: RulesKind) -> v1::RulesKind {
    match k {
        RulesKind::Catalog => v1::RulesKind::Catalog,
        RulesKind::Registers => v1::RulesKind::Registers,
        RulesKind::Policy => v1::RulesKind::Policy,
    }
}

fn rules_version_to_wire(v: &RulesVersion) -> v1::RulesVersion {
    v1::RulesVersion {
        kind: rules_kind_to_wire(v.kind) as i32,
        organisation: v.organisation.clone().unwrap_or_default(),
        version: v.version,
        sha256: v.sha256.clone(),
        author: v.author.clone(),
        at: Some(convert::timestamp(v.at)),
        note: v.note.clone(),
    }
}

fn applied_to_wire(a: &Applied) -> v1::ApplyRulesResponse {
    v1::ApplyRulesResponse {
        version: a.version.as_ref().map(rules_version_to_wire),
        diff: a.diff.clone(),
        lines_added: a.added as u64,
        lines_removed: a.removed as u64,
        devices: a.rejudged.devices as u64,
        changed: a.rejudged.changed as u64,
    }
}

/// The organisation field: empty is none.
fn org_of(s: &str) -> Option<&str> {
    Some(s).filter(|o| !o.is_empty())
}

macro_rules! authed {
    ($self:ident, $request:ident, |$c:ident, $who:ident, $body:ident| $call:expr) => {{
        let (token, mark) = (bearer(&$request), mark_of(&$request));
        let $body = $request.into_inner();
        blocking(&$self.0, move |$c| {
            let $who = $c.authenticate(token.as_deref(), mark)?;
            $call
        })
        .await
    }};
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_enrollment_token(
        &self,
        request: tonic::Request<v1::CreateEnrollmentTokenRequest>,
    ) -> Result<tonic::Response<v1::CreateEnrollmentTokenResponse>, tonic::Status> {
        let (info, secret) = authed!(self, request, |c, who, r| {
            let uses = (r.uses > 0).then_some(r.uses);
            let lifetime =
                (r.expires_in_seconds > 0).then(|| Duration::from_secs(r.expires_in_seconds));
            c.create_enrollment_token(&who, &r.organisation, uses, lifetime, r.new_organisation)
        })?;
        Ok(tonic::Response::new(v1::CreateEnrollmentTokenResponse {
            token: Some(token_to_wire(&info)),
            secret,
        }))
    }

    async fn list_enrollment_tokens(
        &self,
        request: tonic::Request<v1::ListEnrollmentTokensRequest>,
    ) -> Result<tonic::Response<v1::ListEnrollmentTokensResponse>, tonic::Status> {
        let tokens = authed!(self, request, |c, who, r| {
            let org = Some(r.organisation).filter(|o| !o.is_empty());
            c.list_enrollment_tokens(&who, org.as_deref())
        })?;
        Ok(tonic::Response::new(v1::ListEnrollmentTokensResponse {
            tokens: tokens.iter().map(token_to_wire).collect(),
        }))
    }

    async fn revoke_enrollment_token(
        &self,
        request: tonic::Request<v1::RevokeEnrollmentTokenRequest>,
    ) -> Result<tonic::Response<v1::RevokeEnrollmentTokenResponse>, tonic::Status> {
        authed!(self, request, |c, who, r| c
            .revoke_enrollment_token(&who, &r.token_id))?;
        Ok(tonic::Response::new(v1::RevokeEnrollmentTokenResponse {}))
    }

    async fn revoke_device(
        &self,
        request: tonic::Request<v1::RevokeDeviceRequest>,
    ) -> Result<tonic::Response<v1::RevokeDeviceResponse>, tonic::Status> {
        authed!(self, request, |c, who, r| c
            .revoke_device(&who, &r.device_id))?;
        Ok(tonic::Response::new(v1::RevokeDeviceResponse {}))
    }

    async fn remove_device(
        &self,
        request: tonic::Request<v1::RemoveDeviceRequest>,
    ) -> Result<tonic::Response<v1::RemoveDeviceResponse>, tonic::Status> {
        authed!(self, request, |c, who, r| c
            .remove_device(&who, &r.device_id))?;
        Ok(tonic::Response::new(v1::RemoveDeviceResponse {}))
    }

    async fn create_access_token(
        &self,
        request: tonic::Request<v1::CreateAccessTokenRequest>,
    ) -> Result<tonic::Response<v1::CreateAccessTokenResponse>, tonic::Status> {
        let (person_id, secret) = authed!(self, request, |c, who, r| {
            let lifetime =
                (r.expires_in_seconds > 0).then(|| Duration::from_secs(r.expires_in_seconds));
            let grants = r
                .grants
                .into_iter()
                .map(|g| {
                    Ok(Grant {
                        role: role_from_wire(g.role)?,
                        organisation: Some(g.organisation).filter(|o| !o.is_empty()),
                    })
                })
                .collect::<Result<Vec<_>, CollectorError>>();
            // Authorise before reporting input errors, so an unauthorised caller learns nothing.
            match grants {
                Ok(grants) => c.create_access_token(&who, &r.name, grants, lifetime),
                Err(e) => {
                    crate::auth::authorize(&who, crate::auth::Access::ManagePeople, None)?;
                    Err(e)
                }
            }
        })?;
        Ok(tonic::Response::new(v1::CreateAccessTokenResponse {
            secret,
            person_id,
        }))
    }

    async fn list_access_tokens(
        &self,
        request: tonic::Request<v1::ListAccessTokensRequest>,
    ) -> Result<tonic::Response<v1::ListAccessTokensResponse>, tonic::Status> {
        let people = authed!(self, request, |c, who, _r| c.list_access_tokens(&who))?;
        Ok(tonic::Response::new(v1::ListAccessTokensResponse {
            tokens: people.iter().map(person_to_wire).collect(),
        }))
    }

    async fn revoke_access_token(
        &self,
        request: tonic::Request<v1::RevokeAccessTokenRequest>,
    ) -> Result<tonic::Response<v1::RevokeAccessTokenResponse>, tonic::Status> {
        let p = authed!(self, request, |c, who, r| c
            .revoke_access_token(&who, &r.person_id))?;
        Ok(tonic::Response::new(v1::RevokeAccessTokenResponse {
            token: Some(person_to_wire(&p)),
        }))
    }

    async fn expire_access_token(
        &self,
        request: tonic::Request<v1::ExpireAccessTokenRequest>,
    ) -> Result<tonic::Response<v1::ExpireAccessTokenResponse>, tonic::Status> {
        let p = authed!(self, request, |c, who, r| c.expire_access_token(
            &who,
            &r.person_id,
            Duration::from_secs(r.expires_in_seconds)
        ))?;
        Ok(tonic::Response::new(v1::ExpireAccessTokenResponse {
            token: Some(person_to_wire(&p)),
        }))
    }

    async fn list_audit(
        &self,
        request: tonic::Request<v1::ListAuditRequest>,
    ) -> Result<tonic::Response<v1::ListAuditResponse>, tonic::Status> {
        let entries = authed!(self, request, |c, who, r| {
            let time = |t: Option<prost_types::Timestamp>, what: &str| {
                t.map(|t| {
                    convert::from_timestamp(&t)
                        .map_err(|e| CollectorError::InvalidArgument(format!("{what}: {e}")))
                })
                .transpose()
            };
            let query = crate::admin::AuditQuery {
                after: r.after,
                limit: r.limit as usize,
                newest_first: r.newest_first,
                person: Some(r.person).filter(|s| !s.is_empty()),
                action: Some(r.action).filter(|s| !s.is_empty()),
                since: time(r.since, "since")?,
                until: time(r.until, "until")?,
            };
            c.list_audit_where(&who, &query)
        })?;
        Ok(tonic::Response::new(v1::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|(position, e)| v1::AuditEntry {
                    position,
                    at: Some(convert::timestamp(e.at)),
                    actor: e.actor,
                    action: e.action,
                    organisation: e.organisation.unwrap_or_default(),
                    allowed: e.allowed,
                    detail: e.detail,
                })
                .collect(),
        }))
    }

    async fn apply_rules(
        &self,
        request: tonic::Request<v1::ApplyRulesRequest>,
    ) -> Result<tonic::Response<v1::ApplyRulesResponse>, tonic::Status> {
        let applied = authed!(self, request, |c, who, r| {
            let kind = rules_kind_from_wire(r.kind)?;
            c.apply_rules(&who, kind, org_of(&r.organisation), &r.text, &r.note)
        })?;
        Ok(tonic::Response::new(applied_to_wire(&applied)))
    }

    async fn rollback_rules(
        &self,
        request: tonic::Request<v1::RollbackRulesRequest>,
    ) -> Result<tonic::Response<v1::ApplyRulesResponse>, tonic::Status> {
        let applied = authed!(self, request, |c, who, r| {
            let kind = rules_kind_from_wire(r.kind)?;
            c.rollback_rules(&who, kind, org_of(&r.organisation), r.version)
        })?;
        Ok(tonic::Response::new(applied_to_wire(&applied)))
    }

    async fn rules_history(
        &self,
        request: tonic::Request<v1::RulesHistoryRequest>,
    ) -> Result<tonic::Response<v1::RulesHistoryResponse>, tonic::Status> {
        let versions = authed!(self, request, |c, who, r| {
            let kind = rules_kind_from_wire(r.kind)?;
            c.rules_history(&who, kind, org_of(&r.organisation), r.limit as usize)
        })?;
        Ok(tonic::Response::new(v1::RulesHistoryResponse {
            versions: versions.iter().map(rules_version_to_wire).collect(),
        }))
    }

    async fn get_rules(
        &self,
        request: tonic::Request<v1::GetRulesRequest>,
    ) -> Result<tonic::Response<v1::GetRulesResponse>, tonic::Status> {
        let (source, stored) = authed!(self, request, |c, who, r| {
            let kind = rules_kind_from_wire(r.kind)?;
            let version = (r.version > 0).then_some(r.version);
            c.rules_text(&who, kind, org_of(&r.organisation), version)
        })?;
        Ok(tonic::Response::new(v1::GetRulesResponse {
            name: source.name,
            text: source.text,
            version: stored.as_ref().map(rules_version_to_wire),
        }))
    }

    async fn create_login_link(
        &self,
        request: tonic::Request<v1::CreateLoginLinkRequest>,
    ) -> Result<tonic::Response<v1::CreateLoginLinkResponse>, tonic::Status> {
        let (code, name) = authed!(self, request, |c, who, r| c
            .create_login_link(&who, &r.person_id))?;
        Ok(tonic::Response::new(v1::CreateLoginLinkResponse {
            code,
            name,
            expires_in_seconds: crate::web::session::LINK_LIFETIME.as_secs(),
        }))
    }
}
