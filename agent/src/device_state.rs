//! The device state the agent reports: findings keyed by product plus the unclassified list,
//! always in the canonical form the collector stores (`commscan_proto::convert`), so that
//! both sides compute the same [digest](commscan_core::digest).
//!
//! A scan becomes a [`State`]; the difference between two states is a list of [`Change`]s,
//! one per product (plus one for the whole unclassified list). Changes are what the spool
//! keeps and coalesces: a later change of a product replaces an earlier one.

use commscan_core::digest::{StateDigest, state_digest};
use commscan_core::report::{canonical_finding, canonical_unclassified};
use commscan_core::scan::{Finding, ScanReport, Unclassified};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a device has, as the collector would store it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Findings by product id.
    pub findings: BTreeMap<String, Finding>,
    /// Unclassified candidates, sorted, without duplicates.
    pub unclassified: Vec<Unclassified>,
}

/// One change to a [`State`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A product appeared or changed (installed/running, version, evidence).
    Upsert(Finding),
    /// A product is no longer found.
    Remove(String),
    /// The unclassified list changed; this is the whole new list.
    Unclassified(Vec<Unclassified>),
}

impl Change {
    /// What the change is about: two changes with the same key coalesce (the later wins).
    pub fn key(&self) -> String {
        match self {
            Change::Upsert(f) => format!("f/{}", f.product),
            Change::Remove(p) => format!("f/{p}"),
            Change::Unclassified(_) => "u".to_owned(),
        }
    }
}

impl State {
    /// The state a scan found.
    pub fn from_report(report: &ScanReport) -> State {
        State::from_parts(report.findings.clone(), report.unclassified.clone())
    }

    /// A state from findings and candidates, canonicalised.
    pub fn from_parts(findings: Vec<Finding>, unclassified: Vec<Unclassified>) -> State {
        let findings = findings
            .into_iter()
            .map(|f| {
                let f = canonical_finding(f);
                (f.product.clone(), f)
            })
            .collect();
        let mut unclassified: Vec<Unclassified> = unclassified
            .into_iter()
            .map(canonical_unclassified)
            .collect();
        unclassified.sort();
        unclassified.dedup();
        State {
            findings,
            unclassified,
        }
    }

    /// The state digest (`Hello.state_digest`, `Report.state_digest`).
    pub fn digest(&self) -> StateDigest {
        state_digest(self.findings.values(), &self.unclassified)
    }

    /// The changes that turn `self` into `new`, in key order.
    pub fn changes_to(&self, new: &State) -> Vec<Change> {
        let mut out = Vec::new();
        for (p, f) in &new.findings {
            if self.findings.get(p) != Some(f) {
                out.push(Change::Upsert(f.clone()));
            }
        }
        for p in self.findings.keys() {
            if !new.findings.contains_key(p) {
                out.push(Change::Remove(p.clone()));
            }
        }
        if self.unclassified != new.unclassified {
            out.push(Change::Unclassified(new.unclassified.clone()));
        }
        out
    }

    /// Applies one change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Upsert(f) => {
                self.findings.insert(f.product.clone(), f.clone());
            }
            Change::Remove(p) => {
                self.findings.remove(p);
            }
            Change::Unclassified(u) => self.unclassified = u.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::scan::Evidence;

    pub(crate) fn finding(product: &str, version: &str, running: bool) -> Finding {
        Finding {
            product: product.into(),
            installed: true,
            running,
            version: Some(version.into()),
            evidence: vec![Evidence {
                source: "dpkg".into(),
                detail: format!("package {product} {version}"),
                signature: "dpkg".into(),
            }],
        }
    }

    #[test]
    fn applying_the_changes_between_two_states_gives_the_second() {
        let a = State::from_parts(
            vec![finding("zoom", "6", false), finding("skype", "8", false)],
            vec![],
        );
        let b = State::from_parts(
            vec![finding("zoom", "6", true), finding("teams", "1", false)],
            vec![Unclassified {
                name: "Chatty".into(),
                source: "desktop".into(),
                detail: "Categories=Chat".into(),
                looks_like: None,
            }],
        );
        let changes = a.changes_to(&b);
        assert_eq!(changes.len(), 4, "{changes:?}");
        let mut c = a.clone();
        for ch in &changes {
            c.apply(ch);
        }
        assert_eq!(c, b);
        assert_eq!(c.digest(), b.digest());
        assert!(b.changes_to(&b).is_empty());
    }

    #[test]
    fn control_characters_are_removed_as_the_collector_would() {
        let mut f = finding("zoom", "6\u{7}", false);
        f.evidence[0].detail = "package\u{0} zoom".into();
        let s = State::from_parts(vec![f], vec![]);
        assert_eq!(s.findings["zoom"].version.as_deref(), Some("6"));
        assert_eq!(s.findings["zoom"].evidence[0].detail, "package zoom");
    }
}
