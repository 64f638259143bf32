//! Taking over a spool an older agent kept in sled (`<data-dir>/spool/`, a directory): its
//! entries are the ones [`super::logic`] reads from the log, so they are copied as they are
//! into a new `spool.log` in one synced step, checked first by loading them, and the sled
//! directory is removed afterwards. Nothing unacknowledged is lost in an upgrade, and the
//! hello's digest and sequences carry on.
//!
//! sled stays a dependency of the agent for this alone; it is opened only when such a
//! directory exists (its threads start with it and end with the process).

use super::SpoolError;
use super::log_spool::LogSpool;
use super::logic::SpoolView;
use std::path::Path;

fn sled_error(e: sled::Error) -> SpoolError {
    match e {
        sled::Error::Io(e) => SpoolError::Backend(e.to_string()),
        other => SpoolError::Corrupt {
            what: "sled spool".into(),
            message: other.to_string(),
        },
    }
}

/// Copies the sled spool in `dir` into the new spool file `log` and removes `dir`; how many
/// entries. A sled spool that cannot be read is [`SpoolError::Corrupt`] (the caller sets it
/// aside); one locked by a running agent is [`SpoolError::Backend`].
pub(crate) fn take_over(dir: &Path, log: &Path, cap: u64) -> Result<usize, SpoolError> {
    let d = dir.to_path_buf();
    let entries = std::panic::catch_unwind(move || -> Result<_, SpoolError> {
        let db = sled::Config::new().path(&d).open().map_err(sled_error)?;
        let tree = db.open_tree("spool").map_err(sled_error)?;
        tree.iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_error)
    })
    .map_err(|_| SpoolError::Corrupt {
        what: "sled spool".into(),
        message: "the database panicked while opening".into(),
    })??;
    SpoolView::load(entries.clone(), cap)?;
    let n = entries.len();
    LogSpool::create_with(log, entries)?;
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "the old spool was taken over but not removed; it is no longer read");
    }
    tracing::info!(entries = n, from = %dir.display(), to = %log.display(), "spool taken over from an older agent");
    Ok(n)
}
