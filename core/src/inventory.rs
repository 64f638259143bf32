//! Inventory items: what a source saw, before matching.
//!
//! Every agent source (dpkg, rpm, app bundles, registry, processes...) reduces what it reads to
//! [`InventoryItem`]s: a handful of identifiers, each tagged with the [`SignatureKind`] it can
//! be compared against, plus a short display string for evidence. Items stay on the device:
//! only matched items become evidence, and only communication-like unmatched items become
//! unclassified candidates.

use crate::catalog::SignatureKind;

/// Whether an item shows an installation or a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Installed (package, bundle, registry entry, web app).
    Installed,
    /// Running (a process).
    Running,
}

/// One thing a source saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryItem {
    /// The source name, e.g. `dpkg`.
    pub source: &'static str,
    /// Installed or running.
    pub presence: Presence,
    /// Identifiers to match, e.g. `(Dpkg, "zoom")`.
    pub ids: Vec<(SignatureKind, String)>,
    /// Version, where the source knows it.
    pub version: Option<String>,
    /// Short description for evidence, e.g. `package zoom 6.1.0`.
    pub detail: String,
    /// Set when the item looks like communication software; reported only if nothing matches.
    pub candidate: Option<Candidate>,
    /// The name the software gives itself (a bundle's display name, an uninstall entry's
    /// DisplayName), where the source reads one. Never matched as an identifier: it only lets
    /// the matcher report a near miss ([`crate::matcher`]).
    pub name: Option<String>,
}

impl InventoryItem {
    /// A running process with one identifier.
    pub fn running(
        source: &'static str,
        kind: SignatureKind,
        id: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        InventoryItem {
            presence: Presence::Running,
            ..InventoryItem::installed(source, kind, id, detail)
        }
    }

    /// Adds another identifier.
    pub fn with_id(mut self, kind: SignatureKind, id: impl Into<String>) -> Self {
        self.ids.push((kind, id.into()));
        self
    }

    /// An installed item with one identifier.
    pub fn installed(
        source: &'static str,
        kind: SignatureKind,
        id: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        InventoryItem {
            source,
            presence: Presence::Installed,
            ids: vec![(kind, id.into())],
            version: None,
            detail: detail.into(),
            candidate: None,
            name: None,
        }
    }

    /// Sets the name the software gives itself.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

/// Why an item looks like communication software although no catalog signature matched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The name the software gives itself.
    pub name: String,
    /// Why it looks communication-like, e.g. `Categories=Network;InstantMessaging;`.
    pub reason: String,
}

impl InventoryItem {
    /// Marks the item as an unclassified candidate, reported if no signature matches it.
    pub fn with_candidate(mut self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.candidate = Some(Candidate {
            name: name.into(),
            reason: reason.into(),
        });
        self
    }
}
