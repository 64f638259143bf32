//! An organisation's candidate decisions ([`commscan_core::mappings`]), kept ready for its
//! agents' streams.
//!
//! The collector applies an organisation's decisions to every report ([`crate::classify`]).
//! It also passes them on to the organisation's agents, so that a running agent's own view
//! (its `status`, its spool, its reports) names the product too. Streams never read the
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
//! a decision beyond that ([`crate::classify`]). A decision outside the bounds of what agents
//! are sent (a candidate name over [`commscan_core::mappings::MAX_NAME_CHARS`] characters,
//! or an older store holding more than [`MAX_MAPPINGS`]) is left out of the set (logged) and
//! applied by the collector alone, at ingest, like every stored decision.
//!
//! A store one process owns (sled) has no notifications and needs none: every decision is
//! made through this collector. On PostgreSQL the notice is backed by the cluster's 30-second
//! re-read ([`crate::cluster::RULES_BACKSTOP`]).

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::{Channel, Classification};
use commscan_core::mappings::{CandidateMappings, Decision, MAX_MAPPINGS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// An organisation's decisions as its streams serve them, with their digest (computed once).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The decisions.
    pub mappings: CandidateMappings,
    /// [`CandidateMappings::digest`].
    pub digest: [u8; 32],
}

impl Served {
    fn of(mappings: CandidateMappings) -> Served {
        let digest = mappings.digest();
        Served { mappings, digest }
    }
}

/// Decisions of the organisations whose agents are connected.
#[derive(Debug, Default)]
pub struct MappingsCache {
    by_org: RwLock<HashMap<String, Arc<Served>>>,
    /// Held across a reload's read of the store and its update of the cache, so reloads of
    /// one organisation never land out of order (an older read replacing a newer one).
    reloading: Mutex<()>,
}

impl MappingsCache {
    /// The cached decisions of `org`.
    pub(crate) fn get(&self, org: &str) -> Option<Arc<Served>> {
        self.by_org
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(org)
            .cloned()
    }

    /// Puts `m` for `org`; whether that changed what is served.
    fn put(&self, org: &str, m: CandidateMappings) -> bool {
        let mut map = self.by_org.write().unwrap_or_else(|p| p.into_inner());
        if map.get(org).is_some_and(|old| old.mappings == m) {
            return false;
        }
        map.insert(org.to_owned(), Arc::new(Served::of(m)));
        true
    }

    /// Puts `m` for `org` unless a reload put something first (which is as new or newer).
    fn put_if_absent(&self, org: &str, m: CandidateMappings) {
        self.by_org
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(org.to_owned())
            .or_insert_with(|| Arc::new(Served::of(m)));
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

impl From<&Classification> for Decision {
    fn from(c: &Classification) -> Decision {
        match c {
            Classification::Product { product } => Decision::Product(product.clone()),
            Classification::Dismissed => Decision::Dismissed,
        }
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
        let decision = Decision::from(&c);
        if CandidateMappings::admits(&name, &decision) {
            kept.push((name, decision));
        }
    }
    if kept.len() < total {
        tracing::warn!(organisation = %org, stored = total, served = kept.len(), max = MAX_MAPPINGS, "candidate decisions outside the bounds of what agents are sent are applied by the collector alone");
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
            // Read without the reload lock: a reload that lands meanwhile read later, and wins.
            Ok(m) => self.mappings().put_if_absent(org, m),
            Err(e) => {
                tracing::warn!(organisation = %org, error = %e, "candidate decisions not read; tried again when the next of its agents connects")
            }
        }
    }

    /// Reads `org`'s decisions again; when they changed, tells every stream.
    pub(crate) fn reload_mappings(&self, org: &str) {
        let _in_order = self
            .mappings()
            .reloading
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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
                "x".repeat(commscan_core::mappings::MAX_NAME_CHARS + 1),
                Classification::Product {
                    product: "zoom".into(),
                },
            ),
        );
        let m = from_stored("acme", stored);
        assert_eq!(m.len(), MAX_MAPPINGS);
        assert!(m.iter().all(|(n, _)| n.starts_with("app ")));
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
