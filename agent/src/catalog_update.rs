//! Signed catalogs pushed by the collector: verify, keep, and never go back.
//!
//! The agent starts with the catalog embedded in its build (release
//! [`EMBEDDED_CATALOG_RELEASE`]). The collector may push a newer signed catalog
//! ([`commscan_core::signed_catalog`]) on the reporting stream; [`CatalogKeeper::offer`]
//! accepts it only when all of these hold, in this order, so unsigned bytes never reach the
//! catalog parser:
//!
//! 1. at most [`MAX_SIGNED_CATALOG_BYTES`];
//! 2. a well-formed envelope whose content matches its SHA-256;
//! 3. a valid signature by one of the keys in the agent's `catalog_keys` (and no invalid one
//!    by such a key);
//! 4. a valid catalog (the validator and limits of the embedded one: data only);
//! 5. a release above the one in use and above the embedded one (no downgrade, no replay).
//!
//! An accepted catalog is written beside the spool as `catalog.signed` (temporary file,
//! fsync, rename, directory fsync) *before* it is used, so a restart keeps the newest accepted
//! catalog. At start, [`CatalogKeeper::open`] checks that file again exactly like a pushed one
//! (keys may have changed since); a file that fails is quarantined (renamed to
//! `catalog.signed.quarantined-<unix time>`, logged) and the embedded catalog is used.
//!
//! A refusal changes nothing but the refusal note: the agent keeps scanning with the catalog it
//! had, logs the refusal, and states it to the collector (hello and `CatalogState`), where an
//! officer sees it with `commscanctl catalog versions`. Refusals are not persisted: after a
//! restart (perhaps with a corrected key list) a refused release is offered again.

use commscan_core::catalog::Catalog;
use commscan_core::signed_catalog::{
    CatalogPublicKey, EMBEDDED_CATALOG_RELEASE, EnvelopeError, MAX_SIGNED_CATALOG_BYTES,
    SignedCatalog, check_newer, embedded_identity,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file an accepted signed catalog is kept in, inside the data directory.
pub const STORED_CATALOG: &str = "catalog.signed";

/// Longest refusal kept and stated to the collector.
const MAX_REFUSAL: usize = 512;

/// What the agent states about its catalog (hello and after each offer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogStatus {
    /// The release in use.
    pub release: u64,
    /// SHA-256 of the content in use.
    pub digest: [u8; 32],
    /// The last release refused; 0 if none.
    pub refused_release: u64,
    /// Why.
    pub refusal: String,
}

/// Why a stored catalog could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The stored file could not be written.
    #[error("cannot store the catalog at {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

/// Which catalog the agent uses, and the checks a new one must pass.
#[derive(Debug)]
pub struct CatalogKeeper {
    keys: Vec<CatalogPublicKey>,
    path: PathBuf,
    status: Mutex<CatalogStatus>,
    /// Held across an offer's check, write and switch, so two offers (a session's left
    /// running and the next session's) can neither both pass the release check against the
    /// same floor nor interleave their writes.
    offering: Mutex<()>,
}

impl CatalogKeeper {
    /// The keeper of `data_dir`, and the stored catalog when one passes every check again;
    /// `None` means: scan with the embedded catalog. A stored file that fails is quarantined.
    pub fn open(data_dir: &Path, keys: Vec<CatalogPublicKey>) -> (CatalogKeeper, Option<Catalog>) {
        let (release, digest) = embedded_identity();
        let keeper = CatalogKeeper {
            keys,
            path: data_dir.join(STORED_CATALOG),
            status: Mutex::new(CatalogStatus {
                release,
                digest,
                ..CatalogStatus::default()
            }),
            offering: Mutex::new(()),
        };
        let bytes = match std::fs::read(&keeper.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (keeper, None),
            Err(e) => {
                tracing::warn!(path = %keeper.path.display(), error = %e, "stored catalog unreadable; using the embedded catalog");
                return (keeper, None);
            }
        };
        match keeper.check(&bytes, EMBEDDED_CATALOG_RELEASE) {
            Ok((envelope, catalog)) => {
                tracing::info!(
                    release = envelope.release,
                    products = catalog.products().len(),
                    "using the stored signed catalog"
                );
                keeper.set_in_use(&envelope);
                (keeper, Some(catalog))
            }
            Err(error) => {
                let aside = keeper.quarantine();
                tracing::warn!(%error, reason = error.code(), quarantined = %aside.display(), "stored catalog refused and quarantined; using the embedded catalog");
                (keeper, None)
            }
        }
    }

    /// What to state to the collector.
    pub fn status(&self) -> CatalogStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks an offered signed catalog; when it passes, stores it durably and returns it to
    /// scan with. A refusal is noted (for the collector) and logged; nothing else changes.
    pub fn offer(&self, bytes: &[u8]) -> Result<Catalog, OfferError> {
        let _one_at_a_time = self.offering.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.status().release;
        let result = self
            .check(bytes, current)
            .map_err(OfferError::Refused)
            .and_then(|(envelope, catalog)| {
                commscan_runtime::files::write_atomic(&self.path, bytes, 0o600).map_err(|e| {
                    OfferError::Keep(KeepError::Write {
                        path: self.path.clone(),
                        message: e.to_string(),
                    })
                })?;
                self.set_in_use(&envelope);
                Ok((envelope, catalog))
            });
        match result {
            Ok((envelope, catalog)) => {
                tracing::info!(
                    release = envelope.release,
                    previous = current,
                    products = catalog.products().len(),
                    "signed catalog accepted"
                );
                Ok(catalog)
            }
            Err(e) => {
                let offered = SignedCatalog::parse(bytes).map_or(0, |e| e.release);
                let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                s.refused_release = offered;
                s.refusal = e.to_string().chars().take(MAX_REFUSAL).collect();
                tracing::warn!(error = %e, reason = e.code(), offered, in_use = s.release, "signed catalog refused; keeping the catalog in use");
                Err(e)
            }
        }
    }

    fn check(&self, bytes: &[u8], current: u64) -> Result<(SignedCatalog, Catalog), EnvelopeError> {
        if bytes.len() > MAX_SIGNED_CATALOG_BYTES {
            return Err(EnvelopeError::Oversize {
                size: bytes.len(),
                max: MAX_SIGNED_CATALOG_BYTES,
            });
        }
        let envelope = SignedCatalog::parse(bytes)?;
        // The release is signed: a replayed or older one is refused before its catalog is
        // parsed (a forged release fails the signature check after this one).
        check_newer(envelope.release, current)?;
        let catalog = envelope.verify(&self.keys)?;
        Ok((envelope, catalog))
    }

    fn set_in_use(&self, envelope: &SignedCatalog) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.release = envelope.release;
        s.digest = envelope.digest;
        s.refused_release = 0;
        s.refusal.clear();
    }

    /// Renames the stored catalog aside; returns where it went.
    fn quarantine(&self) -> PathBuf {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let aside = self
            .path
            .with_file_name(format!("{STORED_CATALOG}.quarantined-{now}"));
        if let Err(e) = std::fs::rename(&self.path, &aside) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot quarantine the stored catalog");
        }
        aside
    }
}

/// Why an offered catalog is not in use.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// It failed a check.
    #[error(transparent)]
    Refused(EnvelopeError),
    /// It passed but could not be stored, so it is not used (a restart would lose it).
    #[error(transparent)]
    Keep(KeepError),
}

impl OfferError {
    /// A stable one-word reason.
    pub fn code(&self) -> &'static str {
        match self {
            OfferError::Refused(e) => e.code(),
            OfferError::Keep(_) => "not-stored",
        }
    }
}

#[cfg(test)]
mod tests;
