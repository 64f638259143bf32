//! Opening the spool without ever crash-looping on it: a spool that cannot be read is renamed
//! aside as `spool.corrupt-<UTC time>` in the data directory, a fresh one is started, and the
//! fresh one remembers the fact ([`super::Meta::quarantine`]) so that `commscan-agent status`
//! shows it and reports tell the collector (a `spool` entry in the scan stats, see
//! [`crate::delivery`]). Errors that a fresh spool would not fix (the lock held by another
//! running agent, a read-only disk) are returned as they are. A spool an older agent kept in
//! sled is taken over first ([`super::from_sled`]); one that cannot be read is set aside the
//! same way.

use super::{LogSpool, QuarantineNote, SpoolError, from_sled};
use std::path::{Path, PathBuf};

/// The spool file inside a data directory.
pub const SPOOL_FILE: &str = "spool.log";
/// The directory older agents kept their (sled) spool in.
pub const SLED_SPOOL_DIR: &str = "spool";
/// Prefix of quarantined spools.
pub const QUARANTINE_PREFIX: &str = "spool.corrupt-";

/// Renames the unreadable spool `path` aside in `data`, logs it, and returns the note the
/// fresh spool keeps of it.
fn quarantine(
    data: &Path,
    path: &Path,
    now: i64,
    error: &SpoolError,
) -> Result<QuarantineNote, SpoolError> {
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
    std::fs::rename(path, &aside).map_err(|io| {
        SpoolError::Backend(format!(
            "cannot set the corrupt spool {} aside: {io}",
            path.display()
        ))
    })?;
    tracing::error!(%error, spool = %path.display(), quarantined = %aside.display(), "spool unreadable; set aside, starting a fresh one");
    Ok(QuarantineNote {
        at: now,
        path: aside.display().to_string(),
        reason: error.to_string(),
    })
}

/// Opens `<data>/spool.log`, quarantining it if it is corrupt. `now` is Unix seconds.
pub fn open_or_quarantine(data: &Path, cap: u64, now: i64) -> Result<LogSpool, SpoolError> {
    let log = data.join(SPOOL_FILE);
    let old = data.join(SLED_SPOOL_DIR);
    let mut note = None;
    if old.is_dir() && !log.exists() {
        match from_sled::take_over(&old, &log, cap) {
            Ok(_) => {}
            Err(e) if e.is_corruption() => note = Some(quarantine(data, &old, now, &e)?),
            Err(e) => return Err(e),
        }
    }
    let spool = match LogSpool::open(&log, cap) {
        Ok(s) => s,
        Err(e) if e.is_corruption() => {
            note = Some(quarantine(data, &log, now, &e)?);
            LogSpool::open(&log, cap)?
        }
        Err(e) => return Err(e),
    };
    if let Some(note) = note {
        spool.note_quarantine(note)?;
    }
    Ok(spool)
}

/// Quarantined spools in a data directory, oldest first.
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
