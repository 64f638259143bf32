//! A report's content in domain terms, the same type on both sides of the wire: the agent's
//! spool keeps [`ReportBody`] records and the collector's ingest applies them. A finding or
//! candidate is stored and digested in its canonical form ([`canonical_finding`],
//! [`canonical_unclassified`]): text cleaned and cut to the limits of [`crate::text`], so the
//! agent and the collector compute the same [`crate::digest`] over the same bytes.

use crate::scan::{Finding, Unclassified};
use crate::text::{MAX_SOURCE, MAX_TEXT, MAX_VERSION, clean_text};
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
    }
}
