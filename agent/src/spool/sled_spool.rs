//! The spool on sled: one tree, one atomic batch and one flush per operation. An in-memory
//! [`SpoolView`] mirrors the tree; an operation runs on a copy of it, and the copy replaces
//! the mirror only once its batch is on disk, so a failed write changes nothing.

use super::logic::{SpoolView, Write};
use super::{Observation, Observed, Record, Spool, SpoolError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The sled-backed spool.
pub struct SledSpool {
    path: PathBuf,
    db: sled::Db,
    pub(super) tree: sled::Tree,
    view: Mutex<SpoolView>,
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
            db,
            tree,
            view: Mutex::new(view),
        })
    }

    /// Where the spool lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), SpoolError> {
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
        self.tree.apply_batch(batch).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// Runs `op` on a copy of the view, persists its writes, then publishes the copy.
    fn run<T>(&self, op: impl FnOnce(&mut SpoolView) -> (T, Vec<Write>)) -> Result<T, SpoolError> {
        let mut guard = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = guard.clone();
        let (out, writes) = op(&mut next);
        self.commit(writes)?;
        *guard = next;
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
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
