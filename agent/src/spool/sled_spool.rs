//! The spool on sled: one tree, one atomic batch and one flush per operation. An in-memory
//! [`SpoolView`] mirrors the tree; an operation runs on a copy of it, and the copy replaces
//! the mirror only once its batch is on disk, so a failed write changes nothing.
//!
//! A full disk: sled 0.34 keeps the first I/O error of a flush and refuses every later write
//! until the database is opened again, so freeing space alone never helps. After an I/O
//! failure the next operation drops the database and opens it again from its files (exactly
//! what was flushed), reloading the mirror from them; until that works every operation fails
//! with a retriable [`SpoolError::Backend`]. What was never flushed was never acknowledged or
//! sent, and the next scan observes it again.

use super::logic::{SpoolView, Write};
use super::{Observation, Observed, Record, Spool, SpoolError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The sled-backed spool.
pub struct SledSpool {
    path: PathBuf,
    cap: u64,
    inner: Mutex<Inner>,
}

/// The open database and its mirror; `failed` after an I/O error, until reopened.
struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    view: SpoolView,
    failed: bool,
}

impl std::fmt::Debug for SledSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledSpool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend(e: sled::Error) -> SpoolError {
    match e {
        // I/O problems (a full disk, a lock held by another running agent) are not fixed by
        // starting afresh; everything else sled reports means the files are unusable.
        sled::Error::Io(e) => SpoolError::Backend(e.to_string()),
        other => SpoolError::Corrupt {
            what: "database".into(),
            message: other.to_string(),
        },
    }
}

impl SledSpool {
    /// Opens (or creates) the spool in `dir` with a cap on unacknowledged bytes. Corrupt
    /// content is an error for which [`SpoolError::is_corruption`] holds; a panic inside
    /// the database while opening counts as corruption too.
    pub fn open(dir: &Path, cap: u64) -> Result<SledSpool, SpoolError> {
        // sled's background flusher holds a closed database's file lock for a moment; a
        // reopen in the same process (tests, an embedding that restarts the agent) waits for
        // it. A lock held by another running agent is still refused, two seconds later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match SledSpool::open_once(dir, cap) {
                Err(SpoolError::Backend(m))
                    if m.contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(dir: &Path, cap: u64) -> Result<SledSpool, SpoolError> {
        let d = dir.to_path_buf();
        let opened = std::panic::catch_unwind(move || -> Result<_, SpoolError> {
            let db = sled::Config::new()
                .path(&d)
                .cache_capacity(4 * 1024 * 1024)
                .flush_every_ms(Some(1000))
                .open()
                .map_err(backend)?;
            let tree = db.open_tree("spool").map_err(backend)?;
            let entries = tree
                .iter()
                .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            let view = SpoolView::load(entries, cap)?;
            Ok((db, tree, view))
        })
        .map_err(|panic| SpoolError::Corrupt {
            what: "database".into(),
            message: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the database panicked while opening".into()),
        })??;
        let (db, tree, view) = opened;
        Ok(SledSpool {
            path: dir.to_path_buf(),
            cap,
            inner: Mutex::new(Inner {
                db,
                tree,
                view,
                failed: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spool's tree, for tests that damage it.
    #[cfg(test)]
    pub(super) fn tree(&self) -> sled::Tree {
        self.lock().tree.clone()
    }

    /// After an I/O failure, opens the database again from its files and reloads the mirror.
    fn recover(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        if !inner.failed {
            return Ok(());
        }
        // Release this handle's file lock before opening again: a placeholder in-memory
        // database takes the failed one's place meanwhile.
        let placeholder = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(backend)?;
        let tree = placeholder.open_tree("spool").map_err(backend)?;
        drop(std::mem::replace(&mut inner.db, placeholder));
        drop(std::mem::replace(&mut inner.tree, tree));
        let fresh = SledSpool::open(&self.path, self.cap)?;
        let reopened = fresh.inner.into_inner().unwrap_or_else(|p| p.into_inner());
        inner.db = reopened.db;
        inner.tree = reopened.tree;
        inner.view = reopened.view;
        inner.failed = false;
        tracing::info!(path = %self.path.display(), "spool reopened after a disk failure");
        Ok(())
    }

    /// Where the spool lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.lock().db.size_on_disk().unwrap_or(0)
    }

    fn commit(inner: &Inner, writes: Vec<Write>) -> Result<(), SpoolError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for w in writes {
            match w {
                Write::Put(k, v) => batch.insert(k, v),
                Write::Del(k) => batch.remove(k),
            }
        }
        inner.tree.apply_batch(batch).map_err(backend)?;
        inner.db.flush().map_err(backend)?;
        Ok(())
    }

    /// Runs `op` on a copy of the view, persists its writes, then publishes the copy. An I/O
    /// failure marks the database failed; the next call reopens it first.
    fn run<T>(&self, op: impl FnOnce(&mut SpoolView) -> (T, Vec<Write>)) -> Result<T, SpoolError> {
        let mut inner = self.lock();
        self.recover(&mut inner)?;
        let mut next = inner.view.clone();
        let (out, writes) = op(&mut next);
        if let Err(e) = SledSpool::commit(&inner, writes) {
            if matches!(e, SpoolError::Backend(_)) {
                inner.failed = true;
            }
            return Err(e);
        }
        inner.view = next;
        Ok(out)
    }

    /// Records a quarantine note in this (fresh) spool.
    pub(crate) fn note_quarantine(&self, note: super::QuarantineNote) -> Result<(), SpoolError> {
        self.run(|v| {
            v.meta.quarantine = Some(note);
            (
                (),
                vec![Write::Put(
                    b"m".to_vec(),
                    serde_json::to_vec(&v.meta).expect("meta"),
                )],
            )
        })
    }
}

impl Spool for SledSpool {
    fn view(&self) -> SpoolView {
        self.lock().view.clone()
    }

    fn observe(&self, obs: Observation) -> Result<Observed, SpoolError> {
        self.run(|v| v.observe(obs))
    }

    fn next_record(&self) -> Result<Option<Record>, SpoolError> {
        self.run(|v| v.next_record())
    }

    fn acknowledge(&self, sequence: u64) -> Result<(), SpoolError> {
        self.run(|v| ((), v.acknowledge(sequence)))
    }

    fn welcome(&self, stored_sequence: u64, want_snapshot: bool) -> Result<(), SpoolError> {
        self.run(|v| ((), v.welcome(stored_sequence, want_snapshot)))
    }

    fn resync(&self) -> Result<(), SpoolError> {
        self.run(|v| ((), v.resync()))
    }

    fn flush(&self) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        self.recover(&mut inner)?;
        let flushed = inner.db.flush().map(|_| ()).map_err(backend);
        if flushed.is_err() {
            inner.failed = true;
        }
        flushed
    }
}
