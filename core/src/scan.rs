//! The scan result: what an agent found and would send, the `commscan-agent scan --output json`
//! contract.
//!
//! ```json
//! { "platform": "linux",
//!   "findings": [ { "product": "zoom", "installed": true, "running": false, "version": "6.1.0",
//!                   "evidence": [ { "source": "dpkg", "detail": "package zoom 6.1.0", "signature": "dpkg" } ] } ],
//!   "unclassified": [ { "name": "...", "source": "desktop", "detail": "...", "looks_like": "whatsapp" } ],
//!   "stats": { "duration_ms": 12, "items_seen": 812, "sources": { "dpkg": "ok", "snap": "absent" } } }
//! ```
//!
//! Field names are stable: add fields, never rename or remove them. `stats.sources` tells "not
//! collected" apart from "not installed": every source the agent knows for the platform appears
//! with `ok`, `absent`, `skipped` or `failed: <why>`. A source that reads one of several formats
//! says which one it read: `ok (<format>)`, e.g. `"rpm": "ok (bdb)"`.

use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One matched item: which source saw what, and which signature kind matched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Source name, e.g. `dpkg`, `process`.
    pub source: String,
    /// Short description, e.g. `package zoom 6.1.0`.
    pub detail: String,
    /// The signature kind that matched, e.g. `dpkg`, `linux_exe`.
    #[serde(default)]
    pub signature: String,
}

/// One catalogued product found on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Catalog product id.
    pub product: String,
    /// An installation was seen.
    pub installed: bool,
    /// A process was running.
    pub running: bool,
    /// Installed version, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What matched, strongest first.
    pub evidence: Vec<Evidence>,
}

/// Communication-like software the catalog does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Unclassified {
    /// The name it gives itself.
    pub name: String,
    /// The source that saw it.
    pub source: String,
    /// Why it looks communication-like.
    pub detail: String,
    /// The catalogued product whose name it carries although none of its identifiers are known
    /// (a near miss, e.g. an app named "WhatsApp" with an unknown bundle id), so an officer can
    /// map it in one step. A product id; not part of the state digest (see [`crate::digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub looks_like: Option<String>,
}

/// How one source fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceOutcome {
    /// Read completely.
    Ok,
    /// Read completely, from the named form of the source: the rpm database format (`sqlite`,
    /// `ndb`, `bdb`). Shown as `ok (<form>)`.
    OkFrom(String),
    /// Not present on this device.
    Absent,
    /// Deliberately not read.
    Skipped,
    /// Present but unreadable; the message says why.
    Failed(String),
}

impl SourceOutcome {
    /// Read completely (`ok`, with or without the form read).
    pub fn is_ok(&self) -> bool {
        matches!(self, SourceOutcome::Ok | SourceOutcome::OkFrom(_))
    }
}

impl fmt::Display for SourceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceOutcome::Ok => f.write_str("ok"),
            SourceOutcome::OkFrom(form) => write!(f, "ok ({form})"),
            SourceOutcome::Absent => f.write_str("absent"),
            SourceOutcome::Skipped => f.write_str("skipped"),
            SourceOutcome::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl Serialize for SourceOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SourceOutcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "ok" => SourceOutcome::Ok,
            "absent" => SourceOutcome::Absent,
            "skipped" => SourceOutcome::Skipped,
            other if other.starts_with("ok (") && other.ends_with(')') => {
                SourceOutcome::OkFrom(other["ok (".len()..other.len() - 1].to_owned())
            }
            other => {
                SourceOutcome::Failed(other.strip_prefix("failed: ").unwrap_or(other).to_owned())
            }
        })
    }
}

/// Figures of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStats {
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Items looked at before matching.
    pub items_seen: u64,
    /// Outcome per source.
    pub sources: BTreeMap<String, SourceOutcome>,
}

/// A complete scan result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// The platform scanned.
    pub platform: Platform,
    /// Catalogued products found, ordered by product id.
    pub findings: Vec<Finding>,
    /// Unclassified candidates, ordered by name.
    #[serde(default)]
    pub unclassified: Vec<Unclassified>,
    /// Figures.
    #[serde(default)]
    pub stats: ScanStats,
}

#[cfg(test)]
mod tests {
    use super::SourceOutcome;

    #[test]
    fn outcomes_round_trip_through_their_text() {
        for (outcome, text) in [
            (SourceOutcome::Ok, "ok"),
            (SourceOutcome::OkFrom("bdb".into()), "ok (bdb)"),
            (SourceOutcome::Absent, "absent"),
            (SourceOutcome::Skipped, "skipped"),
            (
                SourceOutcome::Failed("/var/lib/rpm/Packages: bdb: truncated".into()),
                "failed: /var/lib/rpm/Packages: bdb: truncated",
            ),
        ] {
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<SourceOutcome>(&json).unwrap(),
                outcome
            );
        }
        assert!(SourceOutcome::OkFrom("ndb".into()).is_ok());
        assert!(!SourceOutcome::Failed("x".into()).is_ok());
    }
}
