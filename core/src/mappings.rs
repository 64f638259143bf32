//! An organisation's decisions on unclassified candidates, applied the same way by the
//! collector (to every report) and by agents (to every scan).
//!
//! An officer maps a candidate an agent reported (`Telegram (Beta)` from a desktop entry) to
//! a catalog product, or dismisses it. [`CandidateMappings::apply`] turns a mapped candidate
//! into an installed finding of the product, with the agent's evidence and the officer's
//! decision named in it ([`officer_signature`]), and drops a dismissed one.
//!
//! Mappings are **data only** and cannot widen what an agent reads: they relabel candidates
//! its sources already found, by their exact name. That is why agents accept them from the
//! collector over the mutually authenticated stream without a catalog signature: a collector
//! already decides what a device's report means (it applies the same mappings at ingest), so
//! a mapping gives it nothing it did not have. The collector also takes every mapping out of
//! a report before applying its own decisions ([`take_out_mappings`]), so it stays the
//! authority: a mapping an agent holds after an officer changed it is undone at ingest. Sets
//! sent to agents are bounded ([`MAX_MAPPINGS`] entries, names of at most [`MAX_NAME_CHARS`]
//! characters, products as catalog slugs) and identified by a
//! [`CandidateMappings::digest`] both sides compute over the canonical form:
//!
//! ```text
//! "commscan-mappings-v1\n"
//! u32 number of entries, then for each in name order: str name, str product ("" dismissed)
//! ```
//!
//! (`u32` big-endian; `str` a `u32` byte length and UTF-8 bytes, as in [`crate::digest`]).

use crate::catalog::is_slug;
use crate::scan::{Evidence, Finding, Unclassified};
use crate::text::MAX_TEXT;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// Most decisions one organisation's agents are sent (and the collector keeps per
/// organisation).
pub const MAX_MAPPINGS: usize = 1_000;

/// Longest candidate name (in characters) in a set sent to agents: with the decision around
/// it, the evidence a mapping adds stays within what the collector stores
/// ([`MAX_TEXT`]). A longer name's decision is applied by the collector alone.
pub const MAX_NAME_CHARS: usize = 256;

/// Longest product id in a set sent to agents.
pub const MAX_PRODUCT_BYTES: usize = 128;

/// Most evidence entries mappings add to one finding: the finding is installed either way,
/// and a report stays within the collector's bound on evidence per finding.
pub const MAX_MAPPED_EVIDENCE: usize = 16;

/// What evidence added by an officer's mapping is signed with, then `#` and the first 16
/// bytes of the SHA-256 of the candidate's name in hex: fixed length, so the signature
/// survives the collector's bound on signatures whatever the name.
pub const OFFICER_SIGNATURE: &str = "officer_classification";

/// The evidence source of a running process (the agent's `process` source): evidence of
/// running, not of installation.
pub const PROCESS_SOURCE: &str = "process";

/// An officer's decision on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It is this catalog product.
    Product(String),
    /// Not communication software, or not of interest: dropped from reports.
    Dismissed,
}

/// A set of mappings that breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingsError {
    /// More entries than [`MAX_MAPPINGS`].
    #[error("{count} candidate mappings, at most {MAX_MAPPINGS}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// An empty, oversized or control-character name.
    #[error("candidate mapping {index}: the name must be 1 to {MAX_NAME_CHARS} characters of text")]
    BadName {
        /// Its position.
        index: usize,
    },
    /// A product that is not a catalog slug.
    #[error("candidate mapping {index}: product '{product}' is not a catalog product id")]
    BadProduct {
        /// Its position.
        index: usize,
        /// The product given (cut to 64 characters).
        product: String,
    },
    /// The same name twice.
    #[error("candidate mapping {index}: '{name}' is decided twice")]
    Duplicate {
        /// Its position.
        index: usize,
        /// The name.
        name: String,
    },
}

/// An organisation's decisions, by candidate name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidateMappings {
    entries: BTreeMap<String, Decision>,
}

/// Whether one decision is within the bounds of a set sent to agents.
fn check_entry(index: usize, name: &str, decision: &Decision) -> Result<(), MappingsError> {
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(MappingsError::BadName { index });
    }
    if let Decision::Product(p) = decision
        && (p.len() > MAX_PRODUCT_BYTES || !is_slug(p))
    {
        return Err(MappingsError::BadProduct {
            index,
            product: p.chars().take(64).collect(),
        });
    }
    Ok(())
}

impl CandidateMappings {
    /// Checks and collects `entries` (name, decision), refusing what breaks a bound.
    pub fn new(
        entries: impl IntoIterator<Item = (String, Decision)>,
    ) -> Result<CandidateMappings, MappingsError> {
        let mut map = BTreeMap::new();
        for (index, (name, decision)) in entries.into_iter().enumerate() {
            if index >= MAX_MAPPINGS {
                return Err(MappingsError::TooMany { count: index + 1 });
            }
            check_entry(index, &name, &decision)?;
            if map.contains_key(&name) {
                return Err(MappingsError::Duplicate { index, name });
            }
            map.insert(name, decision);
        }
        Ok(CandidateMappings { entries: map })
    }

    /// From `(name, product)` pairs, the form the wire and the agent's file carry: an empty
    /// product is a dismissal.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<CandidateMappings, MappingsError> {
        CandidateMappings::new(pairs.into_iter().map(|(name, product)| {
            let d = if product.is_empty() {
                Decision::Dismissed
            } else {
                Decision::Product(product)
            };
            (name, d)
        }))
    }

    /// The decisions as `(name, product)` pairs in name order, an empty product for a
    /// dismissal ([`CandidateMappings::from_pairs`] reads them back).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, d)| {
            let product = match d {
                Decision::Product(p) => p.as_str(),
                Decision::Dismissed => "",
            };
            (n.as_str(), product)
        })
    }

    /// Whether a decision on `name` could be part of a set sent to agents.
    pub fn admits(name: &str, decision: &Decision) -> bool {
        check_entry(0, name, decision).is_ok()
    }

    /// No decisions.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many decisions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The decisions, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Decision)> {
        self.entries.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// The decision on `name`.
    pub fn get(&self, name: &str) -> Option<&Decision> {
        self.entries.get(name)
    }

    /// SHA-256 of the canonical form (see the module's documentation).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"commscan-mappings-v1\n");
        h.update((self.entries.len() as u32).to_be_bytes());
        for (name, product) in self.pairs() {
            for s in [name, product] {
                h.update((s.len() as u32).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
        h.finalize().into()
    }

    /// Turns mapped candidates into installed findings of their product (merged into an
    /// existing finding of it) and drops dismissed ones; findings stay in product order.
    pub fn apply(&self, findings: &mut Vec<Finding>, unclassified: &mut Vec<Unclassified>) {
        if self.entries.is_empty() || unclassified.is_empty() {
            return;
        }
        let mut keep = Vec::with_capacity(unclassified.len());
        for u in std::mem::take(unclassified) {
            match self.entries.get(&u.name) {
                None => keep.push(u),
                Some(d) => apply_decision(&u, d, findings),
            }
        }
        *unclassified = keep;
    }
}

/// Applies one decision to candidate `u` (which the caller takes out of the candidates): a
/// mapping adds (or marks installed) a finding of its product, in product order, with the
/// officer's evidence; a dismissal adds nothing.
pub fn apply_decision(u: &Unclassified, decision: &Decision, findings: &mut Vec<Finding>) {
    let Decision::Product(product) = decision else {
        return;
    };
    let evidence = officer_evidence(u, product);
    match findings.iter_mut().find(|f| &f.product == product) {
        Some(f) => {
            f.installed = true;
            let mapped = f
                .evidence
                .iter()
                .filter(|e| e.signature.starts_with(OFFICER_SIGNATURE))
                .count();
            if mapped < MAX_MAPPED_EVIDENCE {
                f.evidence.push(evidence);
            }
        }
        None => {
            let at = findings.partition_point(|f| f.product < *product);
            findings.insert(
                at,
                Finding {
                    product: product.clone(),
                    installed: true,
                    running: false,
                    version: None,
                    evidence: vec![evidence],
                },
            );
        }
    }
}

/// The evidence a mapping of `u` to `product` adds: the agent's source, the candidate's name
/// and detail, the decision. The candidate's detail is cut so the whole stays within
/// [`MAX_TEXT`] characters (what the collector stores), keeping the text
/// [`officer_mapped`] reads back.
fn officer_evidence(u: &Unclassified, product: &str) -> Evidence {
    let tail = format!("), classified as {product} by an officer");
    let used = u.name.chars().count() + 2 + tail.chars().count();
    let detail: String = u
        .detail
        .chars()
        .take(MAX_TEXT.saturating_sub(used))
        .collect();
    Evidence {
        source: u.source.clone(),
        detail: format!("{} ({detail}{tail}", u.name),
        signature: officer_signature(&u.name),
    }
}

/// The evidence signature of an officer's mapping of `name`: it identifies the candidate
/// whole (so undoing the mapping of `Telegram` never touches one of `Telegram (Beta)`) in a
/// fixed length.
pub fn officer_signature(name: &str) -> String {
    let h = Sha256::digest(name.as_bytes());
    format!("{OFFICER_SIGNATURE}#{}", hex::encode(&h[..16]))
}

/// `(name, candidate detail)` when `e` is evidence an officer's mapping added; `None` for
/// anything else, and for such evidence whose name cannot be told exactly (stored before
/// names were identified in the signature).
pub fn officer_candidate(e: &Evidence) -> Option<(&str, &str)> {
    let rest = e.signature.strip_prefix(OFFICER_SIGNATURE)?;
    if rest.starts_with('#') {
        // The name is the prefix of the detail before one of its " (" whose hash matches.
        return e
            .detail
            .match_indices(" (")
            .map(|(i, _)| &e.detail[..i])
            .find(|name| officer_signature(name) == e.signature)
            .and_then(|name| Some((name, officer_mapped(e, name)?)));
    }
    // The previous form named the candidate in the signature.
    let name = rest.strip_prefix('/')?;
    Some((name, officer_mapped(e, name)?))
}

/// The candidate's own detail, when `e` is the evidence an officer's mapping of `name` added
/// (see [`CandidateMappings::apply`]).
pub fn officer_mapped<'a>(e: &'a Evidence, name: &str) -> Option<&'a str> {
    let rest = match e.signature.strip_prefix(OFFICER_SIGNATURE)? {
        r if r.starts_with('#') => {
            if e.signature != officer_signature(name) {
                return None;
            }
            e.detail.strip_prefix(name)?
        }
        // Named in the signature (evidence stored before the fixed-length form): exact.
        r if r.strip_prefix('/') == Some(name) => e.detail.strip_prefix(name)?,
        r if r.starts_with('/') => return None,
        // Stored before mappings were named in the signature: read from the text, which
        // cannot tell `Telegram` from `Telegram (Beta)`.
        "" => e.detail.strip_prefix(name)?,
        _ => return None,
    };
    let rest = rest.strip_prefix(" (")?;
    let end = rest.rfind("), classified as ")?;
    Some(&rest[..end])
}

/// Takes every officer's mapping out of `findings` whose candidate can be told: its evidence
/// turns back into a candidate in `unclassified` (once per name), a finding left with only a
/// running process is no longer installed, one left without evidence goes. The collector
/// does this to each report before applying its own decisions, so a mapping an agent still
/// holds after an officer changed it never outlives the change. Whether anything changed.
pub fn take_out_mappings(
    findings: &mut Vec<Finding>,
    unclassified: &mut Vec<Unclassified>,
) -> bool {
    take_out(findings, unclassified, |e| {
        officer_candidate(e).map(|(n, d)| (n.to_owned(), d.to_owned()))
    })
}

/// [`take_out_mappings`] for the mapping of `name` alone (an officer undid or changed it).
pub fn take_out_mapping_of(
    name: &str,
    findings: &mut Vec<Finding>,
    unclassified: &mut Vec<Unclassified>,
) -> bool {
    take_out(findings, unclassified, |e| {
        officer_mapped(e, name).map(|d| (name.to_owned(), d.to_owned()))
    })
}

/// Takes out the evidence `pick` names a candidate for (name, detail).
fn take_out(
    findings: &mut Vec<Finding>,
    unclassified: &mut Vec<Unclassified>,
    pick: impl Fn(&Evidence) -> Option<(String, String)>,
) -> bool {
    let mut changed = false;
    for f in findings.iter_mut() {
        if !f
            .evidence
            .iter()
            .any(|e| e.signature.starts_with(OFFICER_SIGNATURE))
        {
            continue;
        }
        let before = f.evidence.len();
        f.evidence.retain(|e| match pick(e) {
            Some((name, detail)) => {
                if !unclassified.iter().any(|u| u.name == name) {
                    unclassified.push(Unclassified {
                        name,
                        source: e.source.clone(),
                        detail,
                        looks_like: None,
                    });
                }
                false
            }
            None => true,
        });
        // The mapping marked its product installed; what is left decides again: a running
        // process alone is not an installation.
        if f.evidence.len() != before {
            changed = true;
            f.installed = f.evidence.iter().any(|e| e.source != PROCESS_SOURCE);
        }
    }
    findings.retain(|f| !f.evidence.is_empty());
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, detail: &str) -> Unclassified {
        Unclassified {
            name: name.into(),
            source: "desktop".into(),
            detail: detail.into(),
            looks_like: None,
        }
    }

    fn mappings(entries: &[(&str, Option<&str>)]) -> CandidateMappings {
        CandidateMappings::new(entries.iter().map(|(n, p)| {
            (
                (*n).to_owned(),
                p.map_or(Decision::Dismissed, |p| Decision::Product(p.into())),
            )
        }))
        .unwrap()
    }

    #[test]
    fn a_mapped_candidate_becomes_an_installed_finding_and_a_dismissed_one_goes() {
        let m = mappings(&[("Telegram (Beta)", Some("telegram")), ("Calc", None)]);
        let mut findings = vec![Finding {
            product: "zoom".into(),
            installed: true,
            running: false,
            version: None,
            evidence: Vec::new(),
        }];
        let mut unclassified = vec![
            candidate("Telegram (Beta)", "Categories=Chat"),
            candidate("Calc", "Categories=Office"),
            candidate("Other", "x"),
        ];
        m.apply(&mut findings, &mut unclassified);
        assert_eq!(unclassified, vec![candidate("Other", "x")]);
        let products: Vec<&str> = findings.iter().map(|f| f.product.as_str()).collect();
        assert_eq!(products, ["telegram", "zoom"]);
        let e = &findings[0].evidence[0];
        assert!(findings[0].installed && !findings[0].running);
        assert_eq!(e.signature, officer_signature("Telegram (Beta)"));
        assert_eq!(e.signature.len(), OFFICER_SIGNATURE.len() + 33);
        assert_eq!(
            officer_mapped(e, "Telegram (Beta)"),
            Some("Categories=Chat")
        );
        assert_eq!(officer_mapped(e, "Telegram"), None);
    }

    fn mapped(name: &str, detail: &str, signature: String) -> Evidence {
        Evidence {
            source: "desktop".into(),
            detail: format!("{name} ({detail}), classified as telegram by an officer"),
            signature,
        }
    }

    #[test]
    fn a_mapping_is_recognised_by_its_whole_candidate_name() {
        let beta = mapped(
            "Telegram (Beta)",
            "app",
            officer_signature("Telegram (Beta)"),
        );
        let plain = mapped("Telegram", "app", officer_signature("Telegram"));
        assert_eq!(officer_mapped(&beta, "Telegram"), None);
        assert_eq!(officer_mapped(&beta, "Telegram (Beta)"), Some("app"));
        assert_eq!(officer_mapped(&plain, "Telegram"), Some("app"));
        assert_eq!(officer_mapped(&plain, "Telegram (Beta)"), None);
        // Evidence stored before the name was in the signature is still read from its text.
        let old = mapped("Telegram", "app", OFFICER_SIGNATURE.into());
        assert_eq!(officer_mapped(&old, "Telegram"), Some("app"));
        // An agent's own evidence is never an officer's mapping.
        let agent = mapped("Telegram", "app", "dpkg".into());
        assert_eq!(officer_mapped(&agent, "Telegram"), None);
    }

    #[test]
    fn a_mapping_taken_out_gives_back_the_candidate_even_with_a_long_name() {
        let long = "Корпоративный мессенджер (Beta) для удалённой работы и видеосвязи";
        let m = mappings(&[(long, Some("telegram")), ("Short", Some("zoom"))]);
        let mut findings = vec![Finding {
            product: "zoom".into(),
            installed: false,
            running: true,
            version: None,
            evidence: vec![Evidence {
                source: "process".into(),
                detail: "process zoom".into(),
                signature: "linux_exe".into(),
            }],
        }];
        let original = vec![candidate(long, "Categories=Chat"), candidate("Short", "x")];
        let mut unclassified = original.clone();
        m.apply(&mut findings, &mut unclassified);
        assert!(unclassified.is_empty());
        // What the collector stores of a report: signatures cut to 64 characters.
        for f in &mut findings {
            *f = crate::report::canonical_finding(f.clone());
        }
        assert!(take_out_mappings(&mut findings, &mut unclassified));
        unclassified.sort();
        let mut want = original;
        want.sort();
        assert_eq!(unclassified, want);
        // zoom keeps its running process and is no longer installed; telegram is gone.
        assert_eq!(findings.len(), 1);
        assert!(findings[0].running && !findings[0].installed);
        assert!(!take_out_mappings(&mut findings, &mut unclassified));
    }

    #[test]
    fn mappings_add_a_bounded_number_of_evidence_entries_to_one_finding() {
        let names: Vec<String> = (0..40).map(|i| format!("Chat {i}")).collect();
        let m = CandidateMappings::new(
            names
                .iter()
                .map(|n| (n.clone(), Decision::Product("telegram".into()))),
        )
        .unwrap();
        let (mut findings, mut unclassified) = (
            Vec::new(),
            names.iter().map(|n| candidate(n, "x")).collect::<Vec<_>>(),
        );
        m.apply(&mut findings, &mut unclassified);
        assert!(unclassified.is_empty());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].evidence.len(), MAX_MAPPED_EVIDENCE);
    }

    #[test]
    fn undoing_one_mapping_leaves_a_similarly_named_one() {
        let (mut findings, mut unclassified) = (Vec::new(), Vec::new());
        findings.push(Finding {
            product: "telegram".into(),
            installed: true,
            running: false,
            version: None,
            evidence: vec![
                mapped("Telegram", "a", officer_signature("Telegram")),
                mapped("Telegram (Beta)", "b", officer_signature("Telegram (Beta)")),
            ],
        });
        findings.push(Finding {
            product: "zoom".into(),
            installed: true,
            running: true,
            version: None,
            evidence: vec![
                Evidence {
                    source: "process".into(),
                    detail: "process zoom".into(),
                    signature: "zoom".into(),
                },
                mapped("Zoom Beta", "c", officer_signature("Zoom Beta")),
            ],
        });
        take_out_mapping_of("Zoom Beta", &mut findings, &mut unclassified);
        // Only the running process is left of zoom: running, no longer installed.
        assert!(findings[1].running && !findings[1].installed);
        take_out_mapping_of("Telegram", &mut findings, &mut unclassified);
        assert!(findings[0].installed);
        assert_eq!(findings[0].evidence.len(), 1);
        assert!(
            findings[0].evidence[0]
                .detail
                .starts_with("Telegram (Beta)")
        );
        let names: Vec<&str> = unclassified.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["Zoom Beta", "Telegram"]);
        assert_eq!(unclassified[1].detail, "a");
    }

    #[test]
    fn evidence_of_a_long_candidate_stays_within_what_the_collector_stores() {
        let m = mappings(&[("App", Some("telegram"))]);
        let (mut findings, mut unclassified) =
            (Vec::new(), vec![candidate("App", &"é".repeat(600))]);
        m.apply(&mut findings, &mut unclassified);
        let e = &findings[0].evidence[0];
        assert_eq!(e.detail.chars().count(), MAX_TEXT);
        assert!(officer_mapped(e, "App").is_some_and(|d| d.starts_with("éé")));
    }

    #[test]
    fn the_digest_is_of_the_content_not_the_order_given() {
        let a = mappings(&[("A", Some("zoom")), ("B", None)]);
        let b = mappings(&[("B", None), ("A", Some("zoom"))]);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), mappings(&[("A", Some("zoom"))]).digest());
        assert_ne!(
            a.digest(),
            mappings(&[("A", Some("skype")), ("B", None)]).digest()
        );
        // "A" dismissed and "" mapped cannot collide: names are never empty.
        assert_ne!(
            CandidateMappings::default().digest(),
            mappings(&[("A", None)]).digest()
        );
    }

    #[test]
    fn bounds_are_refused_with_the_entry_named() {
        let d = || Decision::Dismissed;
        let too_many = (0..=MAX_MAPPINGS).map(|i| (format!("n{i}"), d()));
        assert!(matches!(
            CandidateMappings::new(too_many),
            Err(MappingsError::TooMany { .. })
        ));
        // Characters are counted, not bytes: 256 Cyrillic letters are a valid name.
        assert!(CandidateMappings::new([("ж".repeat(MAX_NAME_CHARS), d())]).is_ok());
        for bad in [String::new(), "x".repeat(MAX_NAME_CHARS + 1), "a\nb".into()] {
            assert_eq!(
                CandidateMappings::new([(bad, d())]),
                Err(MappingsError::BadName { index: 0 })
            );
        }
        let e = CandidateMappings::new([
            ("ok".into(), d()),
            ("x".into(), Decision::Product("../etc".into())),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "candidate mapping 1: product '../etc' is not a catalog product id"
        );
        assert!(matches!(
            CandidateMappings::new([("a".into(), d()), ("a".into(), d())]),
            Err(MappingsError::Duplicate { index: 1, .. })
        ));
    }
}
