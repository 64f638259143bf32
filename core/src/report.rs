//! A report's content in domain terms, the same type on both sides of the wire: the agent's
//! spool keeps [`ReportBody`] records and the collector's ingest applies them. A finding or
//! candidate is stored and digested in its canonical form ([`canonical_finding`],
//! [`canonical_unclassified`]): text cleaned and cut to the limits of [`crate::text`], so the
//! agent and the collector compute the same [`crate::digest`] over the same bytes.

use crate::catalog::is_slug;
use crate::scan::{Finding, ScanStats, SourceOutcome, Unclassified};
use crate::text::{MAX_SIGNATURE, MAX_SOURCE, MAX_SOURCES, MAX_TEXT, MAX_VERSION, clean_text};

/// How far ahead of the sequence a collector stores a report's sequence may be. Sequences
/// grow by one per report; a jump this large is not an agent counting but a bug or an attack,
/// and storing it would leave no room to count on. The collector refuses it.
pub const MAX_SEQUENCE_STEP: u64 = 1_000_000;

/// No sequence at or above this is ever valid (2^53: exact in every JSON reader, and at one
/// report a second, 285 million years away). The collector refuses reports above it and
/// forgets a stored sequence above it (written before this bound existed); an agent told of
/// one does not adopt it (it would have to wrap) and sends a snapshot instead.
pub const SEQUENCE_CEILING: u64 = 1 << 53;
use serde::{Deserialize, Serialize};

/// The body of a report, as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportBody {
    /// The whole state.
    Snapshot {
        /// Findings, by product.
        findings: Vec<Finding>,
        /// Unclassified candidates.
        unclassified: Vec<Unclassified>,
    },
    /// Changes since the previous report.
    Delta {
        /// Findings that appeared or changed.
        upserted: Vec<Finding>,
        /// Products no longer found.
        removed: Vec<String>,
        /// The new unclassified list, if it changed.
        unclassified: Option<Vec<Unclassified>>,
    },
}

impl ReportBody {
    /// `snapshot` or `delta`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ReportBody::Snapshot { .. } => "snapshot",
            ReportBody::Delta { .. } => "delta",
        }
    }
}

/// A finding in the form the collector stores it: text without control characters, cut to
/// the limits above. The agent applies the same form before computing a state digest, so both
/// sides digest the same bytes.
pub fn canonical_finding(mut f: Finding) -> Finding {
    for e in &mut f.evidence {
        e.detail = clean_text(&e.detail, MAX_TEXT);
        e.source = clean_text(&e.source, MAX_SOURCE);
        e.signature = clean_text(&e.signature, MAX_SIGNATURE);
    }
    f.version = f
        .version
        .map(|v| clean_text(&v, MAX_VERSION))
        .filter(|v| !v.is_empty());
    f
}

/// An unclassified candidate in the form the collector stores it.
pub fn canonical_unclassified(u: Unclassified) -> Unclassified {
    Unclassified {
        name: clean_text(&u.name, MAX_TEXT),
        source: clean_text(&u.source, MAX_SOURCE),
        detail: clean_text(&u.detail, MAX_TEXT),
        looks_like: u.looks_like.filter(|p| p.len() <= MAX_SOURCE && is_slug(p)),
    }
}

/// Scan stats in the form the collector stores them: at most [`MAX_SOURCES`] sources (the
/// first by name), names and the form read cut to [`MAX_SOURCE`] and failure messages to
/// [`MAX_TEXT`], all without control characters. Stats are not part of the state digest.
pub fn canonical_stats(s: ScanStats) -> ScanStats {
    let mut sources = std::collections::BTreeMap::new();
    for (name, outcome) in s.sources {
        if sources.len() >= MAX_SOURCES {
            break;
        }
        let outcome = match outcome {
            SourceOutcome::Failed(m) => SourceOutcome::Failed(clean_text(&m, MAX_TEXT)),
            SourceOutcome::OkFrom(form) => SourceOutcome::OkFrom(clean_text(&form, MAX_SOURCE)),
            other => other,
        };
        sources.insert(clean_text(&name, MAX_SOURCE), outcome);
    }
    ScanStats {
        duration_ms: s.duration_ms,
        items_seen: s.items_seen,
        sources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Evidence;

    #[test]
    fn every_evidence_string_is_bounded() {
        let f = canonical_finding(Finding {
            product: "zoom".into(),
            installed: true,
            running: false,
            version: Some("1".repeat(10_000)),
            evidence: vec![Evidence {
                source: "s".repeat(10_000),
                detail: "d".repeat(10_000),
                signature: "x\x1b[2J".repeat(1_000_000),
            }],
        });
        let e = &f.evidence[0];
        assert_eq!(e.signature.chars().count(), MAX_SIGNATURE);
        assert!(!e.signature.contains('\x1b'));
        assert_eq!(e.source.len(), MAX_SOURCE);
        assert_eq!(e.detail.len(), MAX_TEXT);
        assert_eq!(f.version.unwrap().len(), MAX_VERSION);
    }

    #[test]
    fn a_near_miss_hint_is_kept_only_when_it_is_a_product_id() {
        let u = |hint: &str| {
            canonical_unclassified(Unclassified {
                name: "WhatsApp".into(),
                source: "macos_app".into(),
                detail: "app".into(),
                looks_like: Some(hint.into()),
            })
            .looks_like
        };
        // (hint sent, hint stored)
        let cases = [
            ("whatsapp", Some("whatsapp")),
            ("kontur-tolk", Some("kontur-tolk")),
            ("<script>alert(1)</script>", None),
            ("zoom\x1b[31m", None),
            ("WhatsApp", None),
            ("", None),
        ];
        for (sent, stored) in cases {
            assert_eq!(u(sent).as_deref(), stored, "{sent:?}");
        }
        assert_eq!(u(&"a".repeat(MAX_SOURCE + 1)), None);
    }

    #[test]
    fn stats_sources_are_cleaned_and_bounded() {
        let mut sources = std::collections::BTreeMap::new();
        sources.insert(
            "dpkg\x1b]0;owned\x07".to_owned(),
            SourceOutcome::Failed(format!("\x1b[2J\x1b[1A{}", "m".repeat(100_000))),
        );
        for i in 0..1000 {
            sources.insert(format!("src{i:04}"), SourceOutcome::Ok);
        }
        let s = canonical_stats(ScanStats {
            duration_ms: 1,
            items_seen: 2,
            sources,
        });
        assert_eq!(s.sources.len(), MAX_SOURCES);
        assert!(s.sources.contains_key("dpkg]0;owned"));
        match &s.sources["dpkg]0;owned"] {
            SourceOutcome::Failed(m) => {
                assert!(!m.chars().any(char::is_control));
                assert_eq!(m.chars().count(), MAX_TEXT);
            }
            other => panic!("{other:?}"),
        }
    }
}
