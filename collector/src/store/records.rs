//! The records the store keeps, serialised as JSON (readable in a debugger, versionable with
//! `#[serde(default)]` on new fields).

use commscan_core::platform::Platform;
use commscan_core::scan::{Finding, ScanStats, Unclassified};
use commscan_core::verdict::{ReasonKind, Status, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// Everything the collector knows about one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device id (UUID), from the certificate.
    pub device_id: String,
    /// Organisation, from the certificate.
    pub organisation: String,
    /// Host name as last reported.
    pub hostname: String,
    /// Platform.
    pub platform: Option<Platform>,
    /// OS name and version from enrolment.
    #[serde(default)]
    pub os_version: String,
    /// Agent version as last reported.
    pub agent_version: String,
    /// When the device enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// When it last reported.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_report: Option<OffsetDateTime>,
    /// Highest report sequence applied.
    pub last_sequence: u64,
    /// Current findings.
    pub findings: Vec<Finding>,
    /// Current unclassified candidates.
    pub unclassified: Vec<Unclassified>,
    /// Stats of the last scan.
    pub stats: ScanStats,
    /// When each currently present product was first seen.
    #[serde(default)]
    pub first_seen: BTreeMap<String, OffsetDateTime>,
    /// The current verdict.
    pub verdict: Verdict,
    /// When the verdict was computed.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub judged_at: Option<OffsetDateTime>,
    /// The policy that judged (`id`).
    #[serde(default)]
    pub policy: String,
    /// Revoked devices are refused; their history stays.
    #[serde(default)]
    pub revoked: bool,
    /// Left out of its organisation's aggregate (summary, products, fleet): set when the
    /// device is revoked. Devices revoked by an older collector, counted then, are left out
    /// when re-judged at start ([`crate::rejudge`]).
    #[serde(default)]
    pub uncounted: bool,
    /// Set when two agents use this device's identity at once (a cloned disk); reports are
    /// refused until the device is revoked and the clones re-enrolled.
    #[serde(default)]
    pub duplicate: Option<String>,
    /// Hex SHA-256 state digest (`commscan_proto::digest`) of `findings` and `unclassified`,
    /// computed when a report is applied; compared with the agent's hello to ask for a
    /// snapshot. Empty for records written before digests existed (computed on demand).
    #[serde(default)]
    pub state_digest: String,
    /// When the client certificate of its last reporting stream expires (the agent renews it
    /// 10 days before).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub certificate_expires: Option<OffsetDateTime>,
    /// The catalog the device's agent scans with, and the last signed catalog it refused, as
    /// its agent last stated them (hello or catalog state). Release 0: not stated (an agent
    /// predating signed catalogs, or a record written before).
    #[serde(default)]
    pub catalog: DeviceCatalog,
}

/// Which catalog a device's agent uses, as it stated it (cleaned and bounded on ingest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCatalog {
    /// The release in use; 0 when not stated.
    #[serde(default)]
    pub release: u64,
    /// Hex SHA-256 of the content in use; empty when not stated.
    #[serde(default)]
    pub digest: String,
    /// The release of the last signed catalog the agent refused; 0 if none.
    #[serde(default)]
    pub refused_release: u64,
    /// Why (at most 512 characters, no control characters).
    #[serde(default)]
    pub refusal: String,
}

impl DeviceRecord {
    /// A freshly enrolled device that has not reported.
    pub fn enrolled(
        device_id: String,
        organisation: String,
        hostname: String,
        platform: Option<Platform>,
        os_version: String,
        agent_version: String,
        now: OffsetDateTime,
    ) -> DeviceRecord {
        DeviceRecord {
            device_id,
            organisation,
            hostname,
            platform,
            os_version,
            agent_version,
            enrolled_at: now,
            last_report: None,
            last_sequence: 0,
            findings: Vec::new(),
            unclassified: Vec::new(),
            stats: ScanStats::default(),
            first_seen: BTreeMap::new(),
            verdict: Verdict {
                status: Status::Unknown,
                reasons: Vec::new(),
            },
            judged_at: None,
            policy: String::new(),
            revoked: false,
            uncounted: false,
            duplicate: None,
            state_digest: String::new(),
            certificate_expires: None,
            catalog: DeviceCatalog::default(),
        }
    }

    /// What this device adds to its organisation's aggregate.
    pub fn contribution(&self) -> Contribution {
        let violating: BTreeSet<String> = self
            .verdict
            .reasons
            .iter()
            .filter(|r| r.kind == ReasonKind::Violation)
            .map(|r| r.product.clone())
            .collect();
        Contribution {
            counted: !self.uncounted,
            status: self.verdict.status,
            products: self.findings.iter().map(|f| f.product.clone()).collect(),
            violating,
            unclassified: self
                .unclassified
                .iter()
                .map(|u| {
                    (
                        u.name.clone(),
                        (u.source.clone(), u.detail.clone(), u.looks_like.clone()),
                    )
                })
                .collect(),
        }
    }
}

/// A device's share of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// Whether it is counted at all (a revoked device is not).
    pub counted: bool,
    /// Its status.
    pub status: Status,
    /// Products found.
    pub products: BTreeSet<String>,
    /// Products in violation.
    pub violating: BTreeSet<String>,
    /// Unclassified candidates by name, with a sample `(source, detail, looks_like)`.
    pub unclassified: BTreeMap<String, (String, String, Option<String>)>,
}

/// Per-product counts in an aggregate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCounts {
    /// Devices where the product is found.
    pub devices: u64,
    /// Of those, devices where it is a violation.
    pub violating: u64,
}

/// An organisation's counts, maintained incrementally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgAggregate {
    /// Enrolled devices.
    pub devices: u64,
    /// Devices per status.
    pub by_status: BTreeMap<Status, u64>,
    /// Counts per product.
    pub by_product: BTreeMap<String, ProductCounts>,
    /// Devices per unclassified candidate name.
    #[serde(default)]
    pub unclassified: BTreeMap<String, CandidateCounts>,
}

/// One organisation of an enterprise, as its collector last pushed it to this (ministry)
/// collector. Counts only: the aggregate's `unclassified` map is always empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedRecord {
    /// Devices, by status and by product.
    pub aggregate: OrgAggregate,
    /// When the enterprise read the figures, by its clock.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// When this collector received and stored them, by its clock: freshness counts from here.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

/// How many devices report an unclassified candidate, with a sample of what they said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateCounts {
    /// Devices reporting it.
    pub devices: u64,
    /// A sample source.
    pub source: String,
    /// A sample reason.
    pub detail: String,
    /// The catalogued product a reporting device said it looks like (a near miss); empty when
    /// none did. Absent from aggregates stored before near misses existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub looks_like: String,
}

impl OrgAggregate {
    /// Adds (`sign = 1`) or removes (`sign = -1`) a device's contribution.
    pub fn apply(&mut self, c: &Contribution, add: bool) {
        if !c.counted {
            return;
        }
        fn step(v: &mut u64, add: bool) {
            *v = if add { *v + 1 } else { v.saturating_sub(1) };
        }
        step(&mut self.devices, add);
        step(self.by_status.entry(c.status).or_default(), add);
        for p in &c.products {
            let e = self.by_product.entry(p.clone()).or_default();
            step(&mut e.devices, add);
            if c.violating.contains(p) {
                step(&mut e.violating, add);
            }
        }
        for (name, (source, detail, looks_like)) in &c.unclassified {
            let e = self.unclassified.entry(name.clone()).or_default();
            step(&mut e.devices, add);
            if add && e.source.is_empty() {
                e.source.clone_from(source);
                e.detail.clone_from(detail);
            }
            if let (true, true, Some(p)) = (add, e.looks_like.is_empty(), looks_like) {
                e.looks_like.clone_from(p);
            }
        }
        self.by_status.retain(|_, v| *v > 0);
        self.by_product
            .retain(|_, v| v.devices > 0 || v.violating > 0);
        self.unclassified.retain(|_, v| v.devices > 0);
    }

    /// Compliant and waived devices as a percentage of all devices.
    pub fn percent_compliant(&self) -> f64 {
        if self.devices == 0 {
            return 0.0;
        }
        let ok = self.by_status.get(&Status::Compliant).copied().unwrap_or(0)
            + self.by_status.get(&Status::Waived).copied().unwrap_or(0);
        100.0 * ok as f64 / self.devices as f64
    }
}

/// An enrolment token, stored under the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Organisation devices enrol into.
    pub organisation: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working; `None` never.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    /// Uses left; `None` unlimited.
    pub uses_left: Option<u64>,
    /// Revoked tokens never work.
    #[serde(default)]
    pub revoked: bool,
}

impl TokenRecord {
    /// [`TokenRecord::consume`] by a device of `organisation`: a token of another organisation
    /// cannot be used.
    pub fn consume_for(
        &self,
        organisation: &str,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, String> {
        if self.organisation != organisation {
            return Err("token belongs to another organisation".into());
        }
        self.consume(now)
    }

    /// The record after one more use at `now`, or why the token cannot be used.
    pub fn consume(&self, now: OffsetDateTime) -> Result<TokenRecord, String> {
        if self.revoked {
            return Err("token revoked".into());
        }
        if self.expires_at.is_some_and(|e| now >= e) {
            return Err("token expired".into());
        }
        let uses_left = match self.uses_left {
            Some(0) => return Err("token has no uses left".into()),
            Some(n) => Some(n - 1),
            None => None,
        };
        Ok(TokenRecord {
            uses_left,
            ..self.clone()
        })
    }
}

/// A person, stored under the SHA-256 of their bearer token. Their public id is the first 12
/// hex digits of that hash (as for enrolment tokens): two people with one name are two ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRecord {
    /// Who, as shown in the audit log (with the id).
    pub name: String,
    /// What they may do, where.
    pub grants: Vec<Grant>,
    /// When the token was created; `None` for records older than this field.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub created_at: Option<OffsetDateTime>,
    /// Who created it (their audit actor); empty for the first admin of `init`.
    #[serde(default)]
    pub created_by: String,
    /// When it stops working; `None` never.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    /// Revoked tokens never work again.
    #[serde(default)]
    pub revoked: bool,
}

impl PersonRecord {
    /// A new person's record.
    pub fn new(name: String, grants: Vec<Grant>) -> PersonRecord {
        PersonRecord {
            name,
            grants,
            created_at: None,
            created_by: String::new(),
            expires_at: None,
            revoked: false,
        }
    }

    /// Why the token does not work at `now`, if it does not.
    pub fn refused(&self, now: OffsetDateTime) -> Option<&'static str> {
        if self.revoked {
            Some("access token revoked")
        } else if self.expires_at.is_some_and(|e| now >= e) {
            Some("access token expired")
        } else {
            None
        }
    }
}

/// One role in one organisation, or in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The organisation; `None` means every organisation.
    #[serde(default)]
    pub organisation: Option<String>,
}

/// What a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Devices, summaries, enrolment tokens and revocation in their organisations.
    Officer,
    /// Aggregates across organisations; never device rows.
    Analyst,
    /// Read-only: devices, summaries, audit; never tokens.
    Auditor,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "officer" => Ok(Role::Officer),
            "analyst" => Ok(Role::Analyst),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!(
                "unknown role '{other}' (admin, officer, analyst, auditor)"
            )),
        }
    }
}

/// One entry of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which organisation.
    #[serde(default)]
    pub organisation: Option<String>,
    /// Allowed or denied.
    pub allowed: bool,
    /// Why.
    pub detail: String,
}

/// One event of a device's history, stored under `<device id>/<position>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: HistoryKind,
}

/// What happened to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryKind {
    /// The device enrolled.
    Enrolled,
    /// A product was found that was not there before.
    ProductSeen {
        /// The product.
        product: String,
    },
    /// A product that was there is gone.
    ProductRemoved {
        /// The product.
        product: String,
    },
    /// The compliance status changed.
    StatusChanged {
        /// Before.
        from: Status,
        /// After.
        to: Status,
    },
    /// The device was revoked.
    Revoked,
}

impl HistoryKind {
    /// The events that take a device from `old` (or nothing) to `new`.
    pub fn between(old: Option<&DeviceRecord>, new: &DeviceRecord) -> Vec<HistoryKind> {
        let mut out = Vec::new();
        let Some(old) = old else {
            out.push(HistoryKind::Enrolled);
            return out;
        };
        let before: BTreeSet<&str> = old.findings.iter().map(|f| f.product.as_str()).collect();
        let after: BTreeSet<&str> = new.findings.iter().map(|f| f.product.as_str()).collect();
        out.extend(after.difference(&before).map(|p| HistoryKind::ProductSeen {
            product: (*p).to_owned(),
        }));
        out.extend(
            before
                .difference(&after)
                .map(|p| HistoryKind::ProductRemoved {
                    product: (*p).to_owned(),
                }),
        );
        if old.verdict.status != new.verdict.status {
            out.push(HistoryKind::StatusChanged {
                from: old.verdict.status,
                to: new.verdict.status,
            });
        }
        if new.revoked && !old.revoked {
            out.push(HistoryKind::Revoked);
        }
        out
    }
}

/// An officer's decision about an unclassified candidate in their organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Classification {
    /// It is this catalog product.
    Product {
        /// The product id.
        product: String,
    },
    /// Not of interest: no longer listed.
    Dismissed,
}

/// Which rules file a stored version replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RulesKind {
    /// The catalog of products.
    Catalog,
    /// The registers (approved lists) checked against the catalog.
    Registers,
    /// A policy: the default one, or an organisation's.
    Policy,
}

impl RulesKind {
    /// The name used in the store, the audit log and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RulesKind::Catalog => "catalog",
            RulesKind::Registers => "registers",
            RulesKind::Policy => "policy",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<RulesKind> {
        [RulesKind::Catalog, RulesKind::Registers, RulesKind::Policy]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for RulesKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored version of a rules file. Versions count from 1 per (kind, organisation) and are
/// never rewritten: a rollback stores the old text again as a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesVersion {
    /// What it replaces.
    pub kind: RulesKind,
    /// The organisation a policy is for; `None` for the default policy, the catalog and the
    /// registers.
    #[serde(default)]
    pub organisation: Option<String>,
    /// 1, 2, 3… within (kind, organisation).
    pub version: u64,
    /// The file's text as applied.
    pub text: String,
    /// SHA-256 of `text`, hex.
    pub sha256: String,
    /// Who applied it (audit actor form).
    pub author: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The name the author's file had, or `rollback to vN`.
    pub note: String,
}

/// A web console session, or a one-time login link not used yet, stored under the SHA-256 of
/// its secret (the cookie's value, or the link's code), never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The person: SHA-256 hex of their bearer token (as [`PersonRecord`]s are keyed).
    pub person: String,
    /// A one-time login link (exchanged for a session on first use), not a session.
    #[serde(default)]
    pub link: bool,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last used (a session's idle expiry counts from here).
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The session's CSRF token, sent with every form.
    pub csrf: String,
}

/// One alert waiting in the outbox for one sink (see [`crate::alerts`]). The payload is the
/// alert as JSON, fixed when it was enqueued: every attempt sends the same bytes with the same
/// idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The sink's name (`[[alerts.webhook]] name`, `[[alerts.syslog]] name`).
    pub sink: String,
    /// The alert's id, its idempotency key (the same in every sink the alert went to).
    pub event_id: String,
    /// The alert, as JSON.
    pub payload: String,
    /// When it entered the outbox: an entry older than the sink's `max_age` that still
    /// fails is dropped.
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stored_before_near_misses_still_decode() {
        // An aggregate's candidate counts and a device's candidate as stored before
        // `looks_like` existed.
        let counts: CandidateCounts =
            serde_json::from_str(r#"{"devices":2,"source":"desktop","detail":"Categories=Chat"}"#)
                .unwrap();
        assert_eq!(counts.looks_like, "");
        let u: Unclassified =
            serde_json::from_str(r#"{"name":"Chatty","source":"desktop","detail":"x"}"#).unwrap();
        assert_eq!(u.looks_like, None);
        // And what is stored now leaves the field out when there is no hint.
        assert!(
            !serde_json::to_string(&counts)
                .unwrap()
                .contains("looks_like")
        );
    }

    #[test]
    fn an_aggregate_keeps_the_hint_any_reporting_device_gave() {
        let contribution = |looks_like: Option<&str>| Contribution {
            counted: true,
            status: Status::Compliant,
            products: BTreeSet::new(),
            violating: BTreeSet::new(),
            unclassified: BTreeMap::from([(
                "WhatsApp".to_owned(),
                (
                    "macos_app".to_owned(),
                    "app WhatsApp.app".to_owned(),
                    looks_like.map(str::to_owned),
                ),
            )]),
        };
        let mut agg = OrgAggregate::default();
        // (device's hint, devices after, hint after)
        let steps = [
            (None, 1, ""),
            (Some("whatsapp"), 2, "whatsapp"),
            (None, 3, "whatsapp"),
        ];
        for (hint, devices, kept) in steps {
            agg.apply(&contribution(hint), true);
            let c = &agg.unclassified["WhatsApp"];
            assert_eq!((c.devices, c.looks_like.as_str()), (devices, kept));
        }
    }
}
