//! An organisation's candidate decisions ([`commscan_core::mappings`]), kept ready for its
//! agents' streams.
//!
//! The collector applies an organisation's decisions to every report ([`crate::classify`]).
//! It also passes them on to the organisation's agents, so that an agent's own view (its
//! `status`, a local scan, its next report) names the product too. Streams never read the
//! store on their async threads: they read this cache. An organisation's entry is read from
//! the store when one of its agents connects (on the blocking thread that admits the hello,
//! and only when absent), and read again when a decision changes on this collector
//! ([`Collector::mappings_changed`]), on another collector sharing the store (a notice on
//! [`Channel::Mappings`], see [`crate::cluster`]), and at the cluster's rules backstop. A
//! reload that changed an entry wakes every stream
//! ([`crate::connections::Connections::announce_mappings_change`]); each compares its
//! organisation's digest with what its agent holds and sends the decisions when they differ.
//!
//! Bounds: one entry per organisation whose agents connected since start (organisations are
//! created by administrators), each at most [`MAX_MAPPINGS`] decisions: the collector refuses
//! a decision beyond that ([`crate::classify`]), and an older store holding more serves the
//! first [`MAX_MAPPINGS`] by name (logged) while ingest still applies them all.

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{Channel, Classification};
use commscan_core::mappings::{CandidateMappings, Decision, MAX_MAPPINGS};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Decisions of the organisations whose agents are connected.
#[derive(Debug, Default)]
pub struct MappingsCache {
    by_org: RwLock<HashMap<String, Arc<CandidateMappings>>>,
}

impl MappingsCache {
    /// The cached decisions of `org`.
    pub(crate) fn get(&self, org: &str) -> Option<Arc<CandidateMappings>> {
        self.by_org
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(org)
            .cloned()
    }

    /// Puts `m` for `org`; whether that changed what is served.
    fn put(&self, org: &str, m: CandidateMappings) -> bool {
        let mut map = self.by_org.write().unwrap_or_else(|p| p.into_inner());
        if map.get(org).is_some_and(|old| **old == m) {
            return false;
        }
        map.insert(org.to_owned(), Arc::new(m));
        true
    }

    fn organisations(&self) -> Vec<String> {
        self.by_org
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// Stored decisions as the core type: entries that would break a bound (only a store written
/// before the bounds existed holds them) are left out, and logged.
pub(crate) fn from_stored(org: &str, stored: Vec<(String, Classification)>) -> CandidateMappings {
    let total = stored.len();
    let mut kept = Vec::with_capacity(total.min(MAX_MAPPINGS));
    for (name, c) in stored {
        if kept.len() == MAX_MAPPINGS {
            break;
        }
        let decision = match c {
            Classification::Product { product } => Decision::Product(product),
            Classification::Dismissed => Decision::Dismissed,
        };
        let entry = (name, decision);
        if CandidateMappings::new([entry.clone()]).is_ok() {
            kept.push(entry);
        }
    }
    if kept.len() < total {
        tracing::warn!(organisation = %org, stored = total, served = kept.len(), max = MAX_MAPPINGS, "candidate decisions beyond the bounds are applied by the collector only");
    }
    // Names are unique in the store and each entry passed alone.
    CandidateMappings::new(kept).unwrap_or_default()
}

impl Collector {
    /// The decisions of `org` from the store.
    pub(crate) fn stored_mappings(&self, org: &str) -> Result<CandidateMappings, CollectorError> {
        Ok(from_stored(org, self.store().classifications(org)?))
    }

    /// Makes sure `org`'s decisions are cached (a connecting agent's stream will read them).
    pub(crate) fn ensure_mappings(&self, org: &str) {
        if self.mappings().get(org).is_some() {
            return;
        }
        match self.stored_mappings(org) {
            Ok(m) => {
                self.mappings().put(org, m);
            }
            Err(e) => {
                tracing::warn!(organisation = %org, error = %e, "candidate decisions not read; agents are sent them later")
            }
        }
    }

    /// Reads `org`'s decisions again; when they changed, tells every stream.
    pub(crate) fn reload_mappings(&self, org: &str) {
        match self.stored_mappings(org) {
            Ok(m) => {
                if self.mappings().put(org, m) {
                    tracing::info!(organisation = %org, "candidate decisions changed; passed on to connected agents");
                    self.connections().announce_mappings_change();
                }
            }
            Err(e) => {
                tracing::warn!(organisation = %org, error = %e, "candidate decisions not re-read")
            }
        }
    }

    /// Reads every cached organisation's decisions again (a notice may have been missed).
    pub(crate) fn reload_all_mappings(&self) {
        for org in self.mappings().organisations() {
            self.reload_mappings(&org);
        }
    }

    /// A decision of `org` changed here: its agents here are told, and collectors sharing
    /// the store are notified to tell theirs.
    pub(crate) fn mappings_changed(&self, org: &str) {
        self.reload_mappings(org);
        if let Err(e) = self.store().notify(Channel::Mappings, org) {
            tracing::warn!(organisation = %org, error = %e, "other collectors not notified of the candidate decisions (their backstop re-reads them)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_decisions_beyond_the_bounds_are_left_out_of_what_agents_get() {
        let mut stored: Vec<(String, Classification)> = (0..MAX_MAPPINGS + 5)
            .map(|i| (format!("app {i:04}"), Classification::Dismissed))
            .collect();
        stored.insert(
            0,
            (
                "bad\u{7}".into(),
                Classification::Product {
                    product: "zoom".into(),
                },
            ),
        );
        let m = from_stored("acme", stored);
        assert_eq!(m.len(), MAX_MAPPINGS);
        assert!(m.get("bad\u{7}").is_none());
        assert_eq!(m.get("app 0000"), Some(&Decision::Dismissed));
    }

    #[test]
    fn the_cache_reports_a_change_only_when_the_decisions_differ() {
        let cache = MappingsCache::default();
        let one = || {
            CandidateMappings::new([("A".to_owned(), Decision::Product("zoom".into()))]).unwrap()
        };
        assert!(cache.put("acme", one()));
        assert!(!cache.put("acme", one()));
        assert!(cache.put("acme", CandidateMappings::default()));
        assert_eq!(cache.organisations(), ["acme"]);
    }
}
