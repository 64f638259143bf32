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
//! 5. a release above the one in use and above the embedded one, and not below the highest
//!    release this agent ever accepted (no downgrade, no replay).
//!
//! An accepted catalog is written beside the spool as `catalog.signed` (temporary file,
//! fsync, rename, directory fsync) *before* it is used, so a restart keeps the newest accepted
//! catalog. At start, [`CatalogKeeper::open`] checks that file again exactly like a pushed one
//! (keys may have changed since), its size before reading it; a file that fails is quarantined
//! (renamed to `catalog.signed.quarantined-<unix time>`, logged) and the embedded catalog is
//! used.
//!
//! **The replay floor is kept apart** (`catalog.floor`: the highest release accepted and its
//! digest, written after the catalog). Quarantining the stored catalog (a key rotation, a
//! corrupt disk) puts the embedded catalog in use, but not the embedded release back as the
//! floor: an older release still signed by a trusted key stays refused. The floor's own
//! release is accepted again only with the same content (the collector re-sending what the
//! agent lost, or the same catalog re-signed by a new key). A floor file that cannot be read
//! is quarantined like the catalog, and the stored catalog (if it passes) sets the floor.
//!
//! A refusal changes nothing but the refusal note: the agent keeps scanning with the catalog it
//! had, logs the refusal, and states it to the collector (hello and `CatalogState`), where an
//! officer sees it with `commscanctl catalog versions`. Refusals are not persisted: after a
//! restart (perhaps with a corrected key list) a refused release is offered again. A catalog
//! that passed but could not be stored (a full disk) is not a refusal of that release: the
//! refusal is stated without its release, so the collector offers it again next session.

use commscan_core::catalog::Catalog;
use commscan_core::signed_catalog::{
    CatalogPublicKey, EMBEDDED_CATALOG_RELEASE, EnvelopeError, MAX_SIGNED_CATALOG_BYTES,
    SignedCatalog, check_newer, embedded_identity,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file an accepted signed catalog is kept in, inside the data directory.
pub const STORED_CATALOG: &str = "catalog.signed";

/// The file the replay floor is kept in: the highest release accepted, and its digest.
pub const CATALOG_FLOOR: &str = "catalog.floor";

/// The highest release ever accepted here, and its content's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Floor {
    release: u64,
    digest: [u8; 32],
}

impl Floor {
    fn encode(&self) -> String {
        format!(
            "release {}\nsha256 {}\n",
            self.release,
            hex::encode(self.digest)
        )
    }

    fn decode(text: &str) -> Option<Floor> {
        let mut lines = text.lines();
        let release = lines.next()?.strip_prefix("release ")?.parse().ok()?;
        let h = lines.next()?.strip_prefix("sha256 ")?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(h, &mut digest).ok()?;
        lines.next().is_none().then_some(Floor { release, digest })
    }

    /// Refuses `envelope` below the floor, or at it with other content.
    fn admits(&self, envelope: &SignedCatalog) -> Result<(), EnvelopeError> {
        if envelope.release > self.release
            || (envelope.release == self.release && envelope.digest == self.digest)
        {
            Ok(())
        } else {
            Err(EnvelopeError::Downgrade {
                offered: envelope.release,
                current: self.release,
            })
        }
    }
}

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
    floor_path: PathBuf,
    /// The highest release accepted; `None` before the first.
    floor: Mutex<Option<Floor>>,
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
            floor_path: data_dir.join(CATALOG_FLOOR),
            floor: Mutex::new(None),
            status: Mutex::new(CatalogStatus {
                release,
                digest,
                ..CatalogStatus::default()
            }),
            offering: Mutex::new(()),
        };
        *keeper.floor.lock().unwrap_or_else(|p| p.into_inner()) = keeper.read_floor();
        let bytes = match read_bounded(&keeper.path) {
            Ok(Some(b)) => b,
            Ok(None) => return (keeper, None),
            Err(Unreadable::Oversize(size)) => {
                let aside = keeper.quarantine(&keeper.path);
                tracing::warn!(size, max = MAX_SIGNED_CATALOG_BYTES, quarantined = %aside.display(), "stored catalog larger than any catalog; quarantined, using the embedded catalog");
                return (keeper, None);
            }
            Err(Unreadable::Io(e)) => {
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
                keeper.raise_floor(&envelope);
                (keeper, Some(catalog))
            }
            Err(error) => {
                let aside = keeper.quarantine(&keeper.path);
                tracing::warn!(%error, reason = error.code(), quarantined = %aside.display(), "stored catalog refused and quarantined; using the embedded catalog");
                (keeper, None)
            }
        }
    }

    /// The floor file's content; `None` when absent, or unreadable (then quarantined).
    fn read_floor(&self) -> Option<Floor> {
        // Never more than a floor can hold is read (a release and a digest: under 128 bytes).
        let read = std::fs::File::open(&self.floor_path).and_then(|f| {
            use std::io::Read;
            let mut b = Vec::new();
            f.take(257).read_to_end(&mut b).map(|_| b)
        });
        let text = match read {
            Ok(b) if b.len() <= 256 => String::from_utf8(b).ok(),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.floor_path.display(), error = %e, "catalog floor unreadable");
                return None;
            }
        };
        let floor = text.as_deref().and_then(Floor::decode);
        if floor.is_none() {
            let aside = self.quarantine(&self.floor_path);
            tracing::warn!(quarantined = %aside.display(), "catalog floor corrupt; quarantined (the stored catalog, if it passes, sets it again)");
        }
        floor
    }

    /// Raises the floor to `envelope` (never lowers it) and writes it; a failed write is
    /// logged (the stored catalog still carries the floor across a restart).
    fn raise_floor(&self, envelope: &SignedCatalog) {
        let mut floor = self.floor.lock().unwrap_or_else(|p| p.into_inner());
        if floor.is_some_and(|f| f.release >= envelope.release) {
            return;
        }
        let new = Floor {
            release: envelope.release,
            digest: envelope.digest,
        };
        if let Err(e) =
            commscan_runtime::files::write_atomic(&self.floor_path, new.encode().as_bytes(), 0o600)
        {
            tracing::warn!(path = %self.floor_path.display(), error = %e, "cannot write the catalog floor");
        }
        *floor = Some(new);
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
                self.raise_floor(&envelope);
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
                // A catalog that passed but could not be stored is not refused for good:
                // stated without its release, the collector offers it again.
                s.refused_release = match &e {
                    OfferError::Keep(_) => 0,
                    OfferError::Refused(_) => offered,
                };
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
        if let Some(floor) = *self.floor.lock().unwrap_or_else(|p| p.into_inner()) {
            floor.admits(&envelope)?;
        }
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

    /// Renames `path` (the stored catalog or the floor) aside; returns where it went.
    fn quarantine(&self, path: &Path) -> PathBuf {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(STORED_CATALOG);
        let aside = path.with_file_name(format!("{name}.quarantined-{now}"));
        if let Err(e) = std::fs::rename(path, &aside) {
            tracing::warn!(error = %e, path = %path.display(), "cannot quarantine");
        }
        aside
    }
}

/// Why a stored file was not read.
enum Unreadable {
    /// Larger than any signed catalog (its size).
    Oversize(u64),
    /// An I/O error.
    Io(std::io::Error),
}

/// Reads `path` if it is at most [`MAX_SIGNED_CATALOG_BYTES`], never reading more; `None`
/// when absent.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, Unreadable> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Unreadable::Io(e)),
    };
    let max = MAX_SIGNED_CATALOG_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(Unreadable::Io)?;
    if bytes.len() as u64 > max {
        let size = std::fs::metadata(path).map_or(max + 1, |m| m.len());
        return Err(Unreadable::Oversize(size));
    }
    Ok(Some(bytes))
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
