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

/// How a rule selects a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// The rule's `products` names the product itself.
    Named,
    /// The rule's `products` names the product's family root (the payload), not the product.
    Family(&'a str),
    /// The rule has no `products` selector; its other selectors match.
    Facts,
}

/// The rule deciding a product, and how it selected it.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// The rule.
    pub rule: &'a Rule,
    /// How it selected the product.
    pub selection: Selection<'a>,
}

impl Policy {
    /// The rule deciding `product`, or `None` when the default applies.
    pub fn rule_for(&self, product: &str) -> Option<&Rule> {
        self.decide(product).map(|d| d.rule)
    }

    /// The rule deciding `product` and how it selected it, or `None` when the default applies.
    /// File order decides, except that a rule naming the product by its own id beats an
    /// earlier rule that selects it only through its family root.
    pub fn decide(&self, product: &str) -> Option<Decision<'_>> {
        let mut selected = self.rules.iter().filter_map(|rule| {
            self.selects(rule, product)
                .map(|selection| Decision { rule, selection })
        });
        let first = selected.next()?;
        if matches!(first.selection, Selection::Family(_))
            && let Some(named) = selected.find(|d| d.selection == Selection::Named)
        {
            return Some(named);
        }
        Some(first)
    }

    fn selects(&self, rule: &Rule, product: &str) -> Option<Selection<'_>> {
        let facts = self.facts_of(product);
        let any = |list_empty: bool, hit: bool| list_empty || hit;
        let selection = if rule.products.is_empty() {
            Selection::Facts
        } else if rule.products.iter().any(|p| p == product) {
            Selection::Named
        } else {
            let root = facts.and_then(|f| f.family.as_deref())?;
            if !rule.products.iter().any(|p| p == root) {
                return None;
            }
            Selection::Family(root)
        };
        let rest = any(
            rule.registers.is_empty(),
            facts.is_some_and(|f| rule.registers.iter().any(|r| f.registers.contains(r))),
        ) && any(
            rule.categories.is_empty(),
            facts.is_some_and(|f| rule.categories.iter().any(|c| f.categories.contains(c))),
        ) && any(
            rule.countries.is_empty(),
            facts.is_some_and(|f| rule.countries.contains(&f.country)),
        ) && (rule.except_countries.is_empty()
            || facts.is_some_and(|f| !rule.except_countries.contains(&f.country)));
        rest.then_some(selection)
    }

    /// Whether a product id named in the policy (`named`) covers `product`: the product
    /// itself, or the root of its family.
    fn names(&self, named: &str, product: &str) -> bool {
        named == product
            || self
                .facts_of(product)
                .and_then(|f| f.family.as_deref())
                .is_some_and(|root| root == named)
    }

    /// The registers a rule relies on for `product` whose membership is unverified.
    fn unverified_registers<'a>(&'a self, rule: &'a Rule, product: &str) -> Vec<&'a str> {
        let Some(facts) = self.facts_of(product) else {
            return Vec::new();
        };
        rule.registers
            .iter()
            .filter(|r| facts.unverified_registers.contains(r))
            .map(String::as_str)
            .collect()
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
            let decision = self.decide(&f.product);
            let (rule_id, action, enforcement, grace) = match decision {
                Some(d) => (
                    d.rule.id.as_str(),
                    d.rule.action,
                    d.rule.enforcement,
                    d.rule.grace,
                ),
                None => (
                    "default",
                    self.default_action,
                    self.default_enforcement,
                    None,
                ),
            };
            if action == Action::Allow {
                // An allow that rests on a register listing nobody has checked against the
                // register itself is recorded, so the officer sees what the verdict relies on.
                let unverified = decision
                    .map(|d| self.unverified_registers(d.rule, &f.product))
                    .unwrap_or_default();
                if !unverified.is_empty() {
                    reasons.push(Reason {
                        product: f.product.clone(),
                        rule: rule_id.to_owned(),
                        kind: ReasonKind::Notice,
                        text: format!(
                            "{}; allowed by rule '{rule_id}' through register '{}', whose \
                             listing of it is unverified (no registry record number)",
                            describe(f),
                            unverified.join("', '")
                        ),
                    });
                }
                continue;
            }
            let first = subject.first_seen.get(&f.product).copied().unwrap_or(now);
            let base = match decision {
                None => format!("{}; denied by the policy default", describe(f)),
                Some(d) => {
                    let mut s = format!("{}; denied by rule '{rule_id}'", describe(f));
                    if let Selection::Family(root) = d.selection {
                        s.push_str(&format!(
                            " through family '{root}' ('{}' is a member)",
                            f.product
                        ));
                    }
                    let unverified = self.unverified_registers(d.rule, &f.product);
                    if !unverified.is_empty() {
                        s.push_str(&format!(
                            " (membership of register '{}' unverified: no registry record number)",
                            unverified.join("', '")
                        ));
                    }
                    s
                }
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
                    let applies = |w: &&crate::policy::Waiver| {
                        now < w.expires
                            && match &w.scope {
                                WaiverScope::Device(d) => d == subject.device_id,
                                WaiverScope::Organisation(o) => o == subject.organisation,
                            }
                    };
                    // A waiver naming the member itself is preferred to one naming its family.
                    self.waivers
                        .iter()
                        .filter(applies)
                        .find(|w| w.product == f.product)
                        .or_else(|| {
                            self.waivers
                                .iter()
                                .filter(applies)
                                .find(|w| self.names(&w.product, &f.product))
                        })
                })
                .flatten();
            let (kind, text) = match waiver {
                Some(w) => (
                    ReasonKind::Waived,
                    format!(
                        "{text}; waived{} until {} by {}: {}",
                        if w.product == f.product {
                            String::new()
                        } else {
                            format!(" through family '{}'", w.product)
                        },
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
