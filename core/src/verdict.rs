//! Verdicts: a device's findings judged under a policy, with reasons an officer can read.
//!
//! [`Policy::judge`] is a pure function of the policy, the findings, when each product was first
//! seen on the device, and `now`. Time is an argument, so staged enforcement and waiver expiry
//! are tested with a controllable clock and a collector can re-judge every device after a
//! policy change without a rescan.

use crate::policy::{Action, Counts, Enforcement, Policy, Rule, WaiverScope};
use crate::scan::Finding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A device's compliance status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing the policy denies was found.
    Compliant,
    /// At least one unwaived violation.
    Noncompliant,
    /// Violations, every one covered by a waiver.
    Waived,
    /// Missed its reporting window; never compliant.
    Stale,
    /// Never reported.
    Unknown,
}

impl Status {
    /// All statuses.
    pub const ALL: [Status; 5] = [
        Status::Compliant,
        Status::Noncompliant,
        Status::Waived,
        Status::Stale,
        Status::Unknown,
    ];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Compliant => "compliant",
            Status::Noncompliant => "noncompliant",
            Status::Waived => "waived",
            Status::Stale => "stale",
            Status::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status '{s}' (compliant, noncompliant, waived, stale, unknown)")
            })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reason says about its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonKind {
    /// Breaks the policy.
    Violation,
    /// Would break it, but a waiver covers it.
    Waived,
    /// Recorded only (notify, or warn within its grace period).
    Notice,
}

/// One reason behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The product.
    pub product: String,
    /// The deciding rule, or `default`.
    pub rule: String,
    /// Violation, waived or notice.
    pub kind: ReasonKind,
    /// The sentence.
    pub text: String,
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The status.
    pub status: Status,
    /// Why, violations first.
    pub reasons: Vec<Reason>,
}

impl Verdict {
    /// Products named by violation or waived reasons.
    pub fn products(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .reasons
            .iter()
            .filter(|r| r.kind != ReasonKind::Notice)
            .map(|r| r.product.clone())
            .collect();
        v.dedup();
        v
    }
}

/// Who is judged: the device, its organisation, and when each product was first seen on it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Device id (for device-scoped waivers).
    pub device_id: &'a str,
    /// Organisation (for organisation-scoped waivers).
    pub organisation: &'a str,
    /// First sighting per product; a product missing here is taken as first seen `now`.
    pub first_seen: &'a BTreeMap<String, OffsetDateTime>,
}

fn date(t: OffsetDateTime) -> String {
    t.date().to_string()
}

fn describe(f: &Finding) -> String {
    let state = match (f.installed, f.running) {
        (true, true) => "installed and running",
        (true, false) => "installed",
        _ => "running",
    };
    match f.evidence.first() {
        Some(e) => format!("{} {state} ({}: {})", f.product, e.source, e.detail),
        None => format!("{} {state}", f.product),
    }
}

impl Policy {
    /// The rule deciding `product`, or `None` when the default applies.
    pub fn rule_for(&self, product: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| self.selects(r, product))
    }

    fn selects(&self, rule: &Rule, product: &str) -> bool {
        let facts = self.facts_of(product);
        let any = |list_empty: bool, hit: bool| list_empty || hit;
        any(
            rule.products.is_empty(),
            rule.products.iter().any(|p| p == product),
        ) && any(
            rule.registers.is_empty(),
            facts.is_some_and(|f| rule.registers.iter().any(|r| f.2.contains(r))),
        ) && any(
            rule.categories.is_empty(),
            facts.is_some_and(|f| rule.categories.iter().any(|c| f.1.contains(c))),
        ) && any(
            rule.countries.is_empty(),
            facts.is_some_and(|f| rule.countries.contains(f.0)),
        ) && (rule.except_countries.is_empty()
            || facts.is_some_and(|f| !rule.except_countries.contains(f.0)))
    }

    /// Judges a device's findings at `now`.
    pub fn judge(
        &self,
        subject: Subject<'_>,
        findings: &[Finding],
        now: OffsetDateTime,
    ) -> Verdict {
        let mut reasons = Vec::new();
        for f in findings {
            let counts = match self.counts {
                Counts::Installed => f.installed || f.running,
                Counts::Running => f.running,
            };
            if !counts {
                continue;
            }
            let (rule_id, action, enforcement, grace) = match self.rule_for(&f.product) {
                Some(r) => (r.id.as_str(), r.action, r.enforcement, r.grace),
                None => (
                    "default",
                    self.default_action,
                    self.default_enforcement,
                    None,
                ),
            };
            if action == Action::Allow {
                continue;
            }
            let first = subject.first_seen.get(&f.product).copied().unwrap_or(now);
            let base = if rule_id == "default" {
                format!("{}; denied by the policy default", describe(f))
            } else {
                format!("{}; denied by rule '{rule_id}'", describe(f))
            };
            let (kind, text) = match enforcement {
                Enforcement::Notify => (
                    ReasonKind::Notice,
                    format!("{base} (notify only), seen since {}", date(first)),
                ),
                Enforcement::Warn => {
                    let due = first + grace.unwrap_or_default();
                    if now < due {
                        (
                            ReasonKind::Notice,
                            format!(
                                "{base}, seen since {}; noncompliant from {} unless removed",
                                date(first),
                                date(due)
                            ),
                        )
                    } else {
                        (
                            ReasonKind::Violation,
                            format!(
                                "{base} since {} (grace period ended {})",
                                date(first),
                                date(due)
                            ),
                        )
                    }
                }
                Enforcement::Enforce => (
                    ReasonKind::Violation,
                    format!("{base} since {}", date(first)),
                ),
            };
            let waiver = (kind == ReasonKind::Violation)
                .then(|| {
                    self.waivers.iter().find(|w| {
                        w.product == f.product
                            && now < w.expires
                            && match &w.scope {
                                WaiverScope::Device(d) => d == subject.device_id,
                                WaiverScope::Organisation(o) => o == subject.organisation,
                            }
                    })
                })
                .flatten();
            let (kind, text) = match waiver {
                Some(w) => (
                    ReasonKind::Waived,
                    format!(
                        "{text}; waived until {} by {}: {}",
                        w.expires.format(&Rfc3339).unwrap_or_default(),
                        w.approver,
                        w.reason
                    ),
                ),
                None => (kind, text),
            };
            reasons.push(Reason {
                product: f.product.clone(),
                rule: rule_id.to_owned(),
                kind,
                text,
            });
        }
        let rank = |k: ReasonKind| match k {
            ReasonKind::Violation => 0,
            ReasonKind::Waived => 1,
            ReasonKind::Notice => 2,
        };
        reasons.sort_by_key(|r| rank(r.kind));
        let status = if reasons.iter().any(|r| r.kind == ReasonKind::Violation) {
            Status::Noncompliant
        } else if reasons.iter().any(|r| r.kind == ReasonKind::Waived) {
            Status::Waived
        } else {
            Status::Compliant
        };
        Verdict { status, reasons }
    }
}
