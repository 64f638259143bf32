//! Opening the spool without ever crash-looping on it: a spool that cannot be read is renamed
//! aside as `spool.corrupt-<UTC time>` in the data directory, a fresh one is started, and the
//! fresh one remembers the fact ([`super::Meta::quarantine`]) so that `commscan-agent status`
//! shows it and reports tell the collector (a `spool` entry in the scan stats, see
//! [`crate::delivery`]). Errors that a fresh spool would not fix (the lock held by another
//! running agent, a read-only disk) are returned as they are.

use super::{QuarantineNote, SledSpool, SpoolError};
use std::path::{Path, PathBuf};

/// The spool directory inside a data directory.
pub const SPOOL_DIR: &str = "spool";
/// Prefix of quarantined spool directories.
pub const QUARANTINE_PREFIX: &str = "spool.corrupt-";

/// Opens `<data>/spool`, quarantining it if it is corrupt. `now` is Unix seconds.
pub fn open_or_quarantine(data: &Path, cap: u64, now: i64) -> Result<SledSpool, SpoolError> {
    let dir = data.join(SPOOL_DIR);
    match SledSpool::open(&dir, cap) {
        Ok(s) => Ok(s),
        Err(e) if e.is_corruption() => {
            let stamp = time::OffsetDateTime::from_unix_timestamp(now)
                .map(|t| {
                    format!(
                        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                        t.year(),
                        u8::from(t.month()),
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    )
                })
                .unwrap_or_else(|_| now.to_string());
            let mut aside = data.join(format!("{QUARANTINE_PREFIX}{stamp}"));
            let mut n = 1;
            while aside.exists() {
                aside = data.join(format!("{QUARANTINE_PREFIX}{stamp}.{n}"));
                n += 1;
            }
            std::fs::rename(&dir, &aside).map_err(|io| {
                SpoolError::Backend(format!(
                    "cannot set the corrupt spool {} aside: {io}",
                    dir.display()
                ))
            })?;
            tracing::error!(error = %e, quarantined = %aside.display(), "spool corrupt; set aside, starting a fresh one");
            let fresh = SledSpool::open(&dir, cap)?;
            fresh.note_quarantine(QuarantineNote {
                at: now,
                path: aside.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok(fresh)
        }
        Err(e) => Err(e),
    }
}

/// Quarantined spool directories in a data directory, oldest first.
pub fn quarantined(data: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(data)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(QUARANTINE_PREFIX)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}
