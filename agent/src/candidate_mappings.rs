//! The organisation's candidate decisions, sent by the collector: kept beside the spool and
//! applied to every scan.
//!
//! An officer maps an unclassified candidate to a catalog product (or dismisses it); the
//! collector sends the organisation's whole set of decisions to its agents
//! (`CandidateMappings`), and the agent applies them to its scans with the collector's own
//! code ([`commscan_core::mappings`]), so the agent's `status`, its reports and its spool name
//! the product instead of the candidate. Decisions are data only (they relabel what the
//! sources already found; see the core module for why no signature is needed) and bounded;
//! a set that breaks a bound is refused whole and logged, and the previous one stays.
//!
//! The set in use is written to `catalog.mappings` (temporary file, fsync, rename, directory
//! fsync) before it is used, so a restart keeps it; the hello states its digest, and the
//! collector sends a set only when its own differs. At start a file larger than any set, not
//! JSON, or breaking a bound is quarantined (`catalog.mappings.quarantined-<unix time>`) and
//! no decisions are applied until the collector sends them again (at the next connection:
//! the hello then states the digest of none).

use commscan_core::mappings::{CandidateMappings, MappingsError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file the decisions in use are kept in, inside the data directory.
pub const STORED_MAPPINGS: &str = "catalog.mappings";

/// Largest stored file read: 1,000 decisions of 512-byte names, every byte escaped.
const MAX_STORED_BYTES: u64 = 4 * 1024 * 1024;

/// One decision as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    name: String,
    /// Empty: dismissed.
    product: String,
}

/// The decisions in use, and where they are kept.
#[derive(Debug)]
pub struct MappingsKeeper {
    path: PathBuf,
    current: Mutex<Arc<CandidateMappings>>,
}

/// Why a set of decisions was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MappingsRefused {
    /// It breaks a bound.
    #[error(transparent)]
    Invalid(#[from] MappingsError),
    /// It could not be stored, so it is not used (a restart would lose it).
    #[error("cannot store the candidate decisions in {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        message: String,
    },
}

impl MappingsKeeper {
    /// The keeper of `data_dir`, with the stored decisions when they pass the bounds again.
    pub fn open(data_dir: &Path) -> MappingsKeeper {
        let keeper = MappingsKeeper {
            path: data_dir.join(STORED_MAPPINGS),
            current: Mutex::new(Arc::default()),
        };
        match keeper.read() {
            Ok(Some(m)) => {
                tracing::info!(decisions = m.len(), "using the stored candidate decisions");
                *keeper.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
            }
            Ok(None) => {}
            Err(why) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let aside = keeper
                    .path
                    .with_file_name(format!("{STORED_MAPPINGS}.quarantined-{now}"));
                if let Err(e) = std::fs::rename(&keeper.path, &aside) {
                    tracing::warn!(error = %e, path = %keeper.path.display(), "cannot quarantine");
                }
                tracing::warn!(error = %why, quarantined = %aside.display(), "stored candidate decisions unusable; quarantined, none applied until the collector sends them again");
            }
        }
        keeper
    }

    fn read(&self) -> Result<Option<CandidateMappings>, String> {
        use std::io::Read;
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STORED_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > MAX_STORED_BYTES {
            return Err(format!("larger than {MAX_STORED_BYTES} bytes"));
        }
        let stored: Vec<Stored> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        CandidateMappings::from_pairs(stored.into_iter().map(|s| (s.name, s.product)))
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The decisions in use.
    pub fn current(&self) -> Arc<CandidateMappings> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the decisions sent as (name, product; empty: dismissed): checked, stored, then
    /// in use. A refusal leaves the decisions in use as they were.
    pub fn offer(
        &self,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Arc<CandidateMappings>, MappingsRefused> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let m = CandidateMappings::from_pairs(pairs)?;
        if **current == m {
            return Ok(current.clone());
        }
        let stored: Vec<Stored> = m
            .pairs()
            .map(|(name, product)| Stored {
                name: name.to_owned(),
                product: product.to_owned(),
            })
            .collect();
        let json = serde_json::to_vec(&stored).expect("decisions serialise");
        commscan_runtime::files::write_atomic(&self.path, &json, 0o600).map_err(|e| {
            MappingsRefused::Write {
                path: self.path.clone(),
                message: e.to_string(),
            }
        })?;
        *current = Arc::new(m);
        Ok(current.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::mappings::Decision;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
            .collect()
    }

    #[test]
    fn decisions_are_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = MappingsKeeper::open(dir.path());
        assert!(keeper.current().is_empty());
        let m = keeper
            .offer(pairs(&[("Telegram (Beta)", "telegram"), ("Calc", "")]))
            .unwrap();
        assert_eq!(m.len(), 2);
        let again = MappingsKeeper::open(dir.path());
        assert_eq!(again.current().digest(), m.digest());
        assert_eq!(again.current().get("Calc"), Some(&Decision::Dismissed));
    }

    #[test]
    fn a_set_breaking_a_bound_is_refused_and_the_previous_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = MappingsKeeper::open(dir.path());
        keeper.offer(pairs(&[("A", "zoom")])).unwrap();
        let e = keeper
            .offer(pairs(&[("B", "../../etc/passwd")]))
            .unwrap_err();
        assert!(e.to_string().contains("not a catalog product id"), "{e}");
        assert_eq!(keeper.current().len(), 1);
        assert_eq!(
            MappingsKeeper::open(dir.path()).current().get("A"),
            Some(&Decision::Product("zoom".into()))
        );
    }

    #[test]
    fn a_corrupt_stored_set_is_quarantined_and_none_applied() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORED_MAPPINGS), b"{not json").unwrap();
        let keeper = MappingsKeeper::open(dir.path());
        assert!(keeper.current().is_empty());
        assert!(!dir.path().join(STORED_MAPPINGS).exists());
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            aside
                .iter()
                .any(|n| n.starts_with("catalog.mappings.quarantined-")),
            "{aside:?}"
        );
        // A stored set over the bounds (written by hand) is quarantined the same way.
        let many: Vec<Stored> = (0..=commscan_core::mappings::MAX_MAPPINGS)
            .map(|i| Stored {
                name: format!("n{i}"),
                product: String::new(),
            })
            .collect();
        std::fs::write(
            dir.path().join(STORED_MAPPINGS),
            serde_json::to_vec(&many).unwrap(),
        )
        .unwrap();
        assert!(MappingsKeeper::open(dir.path()).current().is_empty());
    }
}
