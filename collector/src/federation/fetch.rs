//! The rules a ministry publishes to its enterprises, and how an enterprise adopts them.
//!
//! ```text
//!  ministry collector                                   enterprise collector
//!  catalog in force (signed) ──FetchRules (mTLS)──▶ verify with its own catalog_keys ──▶ store_rules
//!  registers in force        ◀─ what it holds ─────  (catalog first, then registers)      │
//!                                                                                          ▼
//!                                                           its agents, over their streams (grpc::push)
//! ```
//!
//! **What is published.** The ministry's catalog in force when it is a signed one (an unsigned
//! catalog is never published: an enterprise could not tell it from a forgery), and its
//! registers. The enterprise states what it holds (the signed release in force, the SHA-256 of
//! its registers) and receives only what differs, so a quiet federation moves a few bytes.
//!
//! **Who decides.** The enterprise, never the ministry's channel alone: a catalog is adopted
//! only when it verifies against the enterprise collector's own `catalog_keys`
//! ([`crate::catalog_trust`]) and its release is above the one in force; without keys nothing
//! is adopted and a warning names the release waiting. Registers are taken only with
//! `fetch_registers` (they replace the enterprise's own). Both go through the same path as an
//! administrator's `commscanctl catalog|registers apply` ([`Collector::store_rules`]):
//! validated with everything in force (a catalog that drops a product a local policy names is
//! refused with that policy's problem), stored with history, audited as `federation <ministry
//! URL>`, re-judged, and the catalog passed on unchanged to the enterprise's agents, which
//! verify it again with their own keys.
//!
//! **Refusals are audited** (`catalog.fetch` or `registers.fetch`, refused, with the reason)
//! and remembered by the fetching task ([`Refused`]) and stated as held, so the
//! same refused release or registers text is neither downloaded nor logged again until the
//! ministry publishes another (or the collector restarts).

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::store::RulesKind;
use sha2::{Digest, Sha256};

/// What an enterprise holds, as it tells the ministry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// The signed catalog release in force or refused; 0: none.
    pub catalog_release: u64,
    /// SHA-256 of the registers in force or refused; `None`: registers are not taken.
    pub registers_sha256: Option<String>,
}

/// What the ministry publishes beyond what the enterprise holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Published {
    /// The signed catalog envelope, when newer than the enterprise's.
    pub signed_catalog: Option<Vec<u8>>,
    /// The ministry's signed release; 0: none.
    pub catalog_release: u64,
    /// The registers text, when asked for and different.
    pub registers: Option<String>,
    /// SHA-256 of the ministry's registers.
    pub registers_sha256: String,
}

/// What the fetching task refused, so it is not fetched again.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refused {
    /// The highest catalog release refused.
    pub catalog_release: u64,
    /// The digest of the registers text refused last.
    pub registers_sha256: Option<String>,
}

/// What adopting did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Adopted {
    /// The catalog release put in force.
    pub catalog_release: Option<u64>,
    /// Whether the ministry's registers were put in force.
    pub registers: bool,
}

/// SHA-256 of a rules text, lower-case hex.
pub(crate) fn text_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Collector {
    /// Ministry side: what it publishes to an enterprise holding `held`.
    pub(crate) fn published_rules(&self, held: &Held) -> Published {
        let rules = self.rules();
        let registers = &rules.sources.registers.text;
        let registers_sha256 = text_sha256(registers);
        let (catalog_release, signed_catalog) = match &rules.signed_catalog {
            Some(c) => (
                c.release,
                (c.release > held.catalog_release).then(|| c.bytes.clone()),
            ),
            None => (0, None),
        };
        Published {
            signed_catalog,
            catalog_release,
            registers: held
                .registers_sha256
                .as_ref()
                .filter(|h| **h != registers_sha256)
                .map(|_| registers.clone()),
            registers_sha256,
        }
    }

    /// Enterprise side: what it tells the ministry it holds.
    pub(crate) fn held_rules(&self, take_registers: bool, refused: &Refused) -> Held {
        let rules = self.rules();
        let in_force = rules.signed_catalog.as_ref().map_or(0, |c| c.release);
        let registers_sha256 = take_registers.then(|| match &refused.registers_sha256 {
            Some(r) => r.clone(),
            None => text_sha256(&rules.sources.registers.text),
        });
        Held {
            catalog_release: in_force.max(refused.catalog_release),
            registers_sha256,
        }
    }

    /// Enterprise side: adopts what `ministry` published (see the module's rules), the catalog
    /// first. A refusal is logged, remembered in `refused` and does not stop the other part.
    pub(crate) fn adopt_published(
        &self,
        ministry: &str,
        published: &Published,
        take_registers: bool,
        refused: &mut Refused,
    ) -> Adopted {
        let actor = format!("federation {ministry}");
        let mut adopted = Adopted::default();
        if let Some(bytes) = &published.signed_catalog {
            let release = published.catalog_release;
            match self.adopt_catalog(&actor, bytes, release) {
                Ok(release) => {
                    tracing::info!(%ministry, release, "federation: the ministry's signed catalog adopted");
                    adopted.catalog_release = Some(release);
                }
                Err(e) => {
                    tracing::error!(%ministry, release, error = %e, "federation: the ministry's catalog refused");
                    self.audit_refusal(&actor, "catalog.fetch", format!("release {release}: {e}"));
                    refused.catalog_release = refused.catalog_release.max(release);
                }
            }
        }
        if let Some(text) = published.registers.as_ref().filter(|_| take_registers) {
            let note = format!("registers of {ministry}");
            match self.store_rules(&actor, RulesKind::Registers, None, text, &note, "fetch") {
                Ok(_) => {
                    tracing::info!(%ministry, "federation: the ministry's registers adopted");
                    refused.registers_sha256 = None;
                    adopted.registers = true;
                }
                Err(e) => {
                    tracing::error!(%ministry, error = %e, "federation: the ministry's registers refused");
                    self.audit_refusal(&actor, "registers.fetch", e.to_string());
                    refused.registers_sha256 = Some(text_sha256(text));
                }
            }
        }
        adopted
    }

    /// Records a refused adoption in the audit log at once (refusals of people are counted
    /// in windows; these are rare, since a refusal is not fetched again, and an officer needs
    /// to see which release waits and why).
    fn audit_refusal(&self, actor: &str, action: &str, detail: String) {
        self.metrics().refused(action);
        crate::audit::append(
            &**self.store(),
            self.now(),
            actor,
            action,
            None,
            false,
            detail,
        );
        if let Err(e) = self.store().flush() {
            tracing::error!(error = %e, action, "audit entry could not be flushed");
        }
    }

    /// Verifies and puts in force a signed catalog of the ministry (`claimed` is the release
    /// the ministry stated; the envelope's own, which its signatures cover, is what counts).
    fn adopt_catalog(
        &self,
        actor: &str,
        bytes: &[u8],
        claimed: u64,
    ) -> Result<u64, CollectorError> {
        if self.catalog_keys().is_empty() {
            return Err(CollectorError::FailedPrecondition(format!(
                "release {claimed} is waiting: this collector has no catalog_keys to verify it with ([rules] catalog_keys, --catalog-key)"
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| {
            CollectorError::InvalidArgument("signed_catalog: not UTF-8 text".into())
        })?;
        let release = crate::catalog_trust::verify(bytes, self.catalog_keys())
            .map_err(|e| CollectorError::InvalidArgument(e.to_string()))?;
        let in_force = self
            .rules()
            .signed_catalog
            .as_ref()
            .map_or(0, |c| c.release);
        if release <= in_force {
            return Err(CollectorError::FailedPrecondition(format!(
                "release {release} is not above the release in force ({in_force})"
            )));
        }
        let note = format!("signed catalog release {release} of the ministry");
        self.store_rules(actor, RulesKind::Catalog, None, text, &note, "fetch")
            .map(|_| release)
    }
}
