//! The spool in one append-only file, `<data-dir>/spool.log`: each operation's writes are one
//! checksummed batch, appended and synced (`fdatasync`) before the operation returns. An
//! in-memory [`SpoolView`] mirrors the file; an operation runs on a copy of it, and the copy
//! replaces the mirror only once its batch is on disk, so a failed write changes nothing.
//!
//! # Why not a database
//!
//! The spool is small (at most its cap, 4 MiB by default, and a few kilobytes at rest), read
//! whole at start and written a batch at a time: a log is all it needs. It replaced sled, whose
//! eight background threads and page cache were most of an idle agent's threads and heap, and
//! which makes no promise about power loss; this file's promise is stated below.
//!
//! # Format
//!
//! ```text
//! "commscan-spool-v1\n"
//! batch*:  u32 payload length, u32 CRC-32 of the payload, payload
//! payload: u32 count, then per write: u8 1 (put) | 2 (delete), u32 key length, key,
//!          and for a put: u32 value length, value
//! ```
//!
//! (integers little-endian). Keys and values are [`super::logic`]'s: JSON values under the
//! keys of the module documentation of [`super`]. Replaying the batches in order gives the
//! entries.
//!
//! # Crashes and damage
//!
//! - A crash mid-append leaves a torn last batch: one whose declared length runs past the end
//!   of the file, or whose checksum fails with nothing after it. It was never synced, so no
//!   operation returned for it: it is cut off at open (logged) and the spool is exactly as
//!   after the last completed operation.
//! - A checksum failure with more data after it, a bad header, or a batch that does not
//!   decode is damage, not a torn write: [`SpoolError::Corrupt`], which
//!   [`super::quarantine`] answers by setting the file aside.
//! - A failed append (a full disk) is cut back to the previous length when the file system
//!   allows; either way the spool is marked failed and the next operation reads the file
//!   again before writing, so what follows never lands after a partial batch.
//!
//! # Compaction
//!
//! When the file has grown past [`COMPACT_FLOOR`] and four times its size after the last
//! compaction, it is rewritten as one batch of the live entries (temporary file, fsync,
//! rename, directory fsync: either the old file or the new one, never a mix).
//!
//! # One agent per spool
//!
//! `spool.lock` beside the file is locked (an advisory lock the OS drops when the process
//! ends) for as long as the spool is open: a second agent on the same data directory is
//! refused with [`SpoolError::Backend`], never given the spool to share.

use super::logic::{SpoolView, Write};
use super::{Observation, Observed, Record, Spool, SpoolError};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The first bytes of a spool file.
const MAGIC: &[u8] = b"commscan-spool-v1\n";

/// Below this size the file is never compacted.
pub const COMPACT_FLOOR: u64 = 256 * 1024;

/// Largest spool file read at start: far above anything the cap lets the spool hold (the
/// cap bounds the live entries, compaction the rest); a larger file is damage.
fn max_file_bytes(cap: u64) -> u64 {
    (64 * 1024 * 1024u64).max(cap.saturating_mul(8))
}

/// The file-backed spool.
pub struct LogSpool {
    path: PathBuf,
    cap: u64,
    inner: Mutex<Inner>,
    /// Held while open ([`LogSpool::lock_path`]).
    _lock: File,
}

/// The open file and its mirror.
struct Inner {
    /// `None` after an I/O failure, until read again.
    file: Option<File>,
    /// Bytes in the file.
    len: u64,
    /// Bytes after the last compaction (or at open).
    base_len: u64,
    view: SpoolView,
}

impl std::fmt::Debug for LogSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSpool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> SpoolError {
    SpoolError::Backend(format!("{what} {}: {e}", path.display()))
}

fn corrupt(message: String) -> SpoolError {
    SpoolError::Corrupt {
        what: "spool file".into(),
        message,
    }
}

/// One batch, framed.
fn encode_batch(writes: &[Write]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for w in writes {
        match w {
            Write::Put(k, v) => {
                payload.push(1);
                payload.extend_from_slice(&(k.len() as u32).to_le_bytes());
                payload.extend_from_slice(k);
                payload.extend_from_slice(&(v.len() as u32).to_le_bytes());
                payload.extend_from_slice(v);
            }
            Write::Del(k) => {
                payload.push(2);
                payload.extend_from_slice(&(k.len() as u32).to_le_bytes());
                payload.extend_from_slice(k);
            }
        }
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads a `u32` at `*at`, advancing; `None` past the end.
fn take_u32(b: &[u8], at: &mut usize) -> Option<u32> {
    let s = b.get(*at..*at + 4)?;
    *at += 4;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn take_bytes<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let n = take_u32(b, at)? as usize;
    let s = b.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(s)
}

/// Applies one checksummed payload to `entries`.
fn apply_payload(payload: &[u8], entries: &mut Entries, offset: usize) -> Result<(), SpoolError> {
    let bad = || corrupt(format!("batch at byte {offset} does not decode"));
    let mut at = 0;
    let count = take_u32(payload, &mut at).ok_or_else(bad)?;
    for _ in 0..count {
        let op = *payload.get(at).ok_or_else(bad)?;
        at += 1;
        let key = take_bytes(payload, &mut at).ok_or_else(bad)?.to_vec();
        match op {
            1 => {
                let value = take_bytes(payload, &mut at).ok_or_else(bad)?.to_vec();
                entries.insert(key, value);
            }
            2 => {
                entries.remove(&key);
            }
            _ => return Err(bad()),
        }
    }
    if at != payload.len() {
        return Err(bad());
    }
    Ok(())
}

/// Stored entries, by key.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Replays a whole file: the entries, and the length of its intact part (shorter than the
/// file when its last batch is torn).
pub(super) fn replay(bytes: &[u8]) -> Result<(Entries, usize), SpoolError> {
    if !bytes.starts_with(MAGIC) {
        return Err(corrupt("no spool header".into()));
    }
    let mut entries = BTreeMap::new();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let start = at;
        let (Some(len), Some(crc)) = (take_u32(bytes, &mut at), take_u32(bytes, &mut at)) else {
            return Ok((entries, start));
        };
        let end = at.saturating_add(len as usize);
        let Some(payload) = bytes.get(at..end) else {
            // Runs past the end: torn.
            return Ok((entries, start));
        };
        if crc32fast::hash(payload) != crc {
            if end == bytes.len() {
                return Ok((entries, start));
            }
            return Err(corrupt(format!(
                "batch at byte {start} fails its checksum, with {} bytes after it",
                bytes.len() - end
            )));
        }
        apply_payload(payload, &mut entries, start)?;
        at = end;
    }
    Ok((entries, at))
}

/// The file's content, refusing more than `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, SpoolError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot open", path, e)),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io("cannot read", path, e))?;
    if bytes.len() as u64 > max {
        return Err(corrupt(format!("larger than {max} bytes")));
    }
    Ok(Some(bytes))
}

impl LogSpool {
    /// The lock file of the spool at `path`.
    pub fn lock_path(path: &Path) -> PathBuf {
        path.with_extension("lock")
    }

    /// Opens (or creates) the spool file `path` with a cap on unacknowledged bytes. Damage
    /// is an error for which [`SpoolError::is_corruption`] holds; a spool another agent has
    /// open is refused with [`SpoolError::Backend`].
    pub fn open(path: &Path, cap: u64) -> Result<LogSpool, SpoolError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        }
        let lock_path = LogSpool::lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Backend(format!(
                    "the spool {} is in use by another running agent (lock {})",
                    path.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", &lock_path, e)),
        }
        let inner = LogSpool::load(path, cap)?;
        Ok(LogSpool {
            path: path.to_path_buf(),
            cap,
            inner: Mutex::new(inner),
            _lock: lock,
        })
    }

    /// Reads the file (creating it when absent), cuts a torn last batch, opens it for
    /// appending.
    fn load(path: &Path, cap: u64) -> Result<Inner, SpoolError> {
        let bytes = match read_bounded(path, max_file_bytes(cap))? {
            Some(b) => b,
            None => {
                commscan_runtime::files::write_atomic(path, MAGIC, 0o600)
                    .map_err(|e| SpoolError::Backend(format!("cannot create the spool: {e}")))?;
                MAGIC.to_vec()
            }
        };
        let (entries, intact) = replay(&bytes)?;
        let view = SpoolView::load(entries, cap)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io("cannot open", path, e))?;
        if intact < bytes.len() {
            tracing::warn!(path = %path.display(), cut = bytes.len() - intact, "the spool's last write was torn (a crash while writing); cut off");
            file.set_len(intact as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| io("cannot cut the torn end of", path, e))?;
        }
        Ok(Inner {
            file: Some(file),
            len: intact as u64,
            base_len: intact as u64,
            view,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After an I/O failure, reads the file again (exactly what was synced).
    fn recover(&self, inner: &mut Inner) -> Result<(), SpoolError> {
        if inner.file.is_some() {
            return Ok(());
        }
        *inner = LogSpool::load(&self.path, self.cap)?;
        tracing::info!(path = %self.path.display(), "spool read again after a disk failure");
        Ok(())
    }

    /// Where the spool lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the file occupies.
    pub fn size_on_disk(&self) -> u64 {
        self.lock().len
    }

    fn commit(&self, inner: &mut Inner, writes: &[Write]) -> Result<(), SpoolError> {
        if writes.is_empty() {
            return Ok(());
        }
        let batch = encode_batch(writes);
        let Some(file) = inner.file.as_mut() else {
            return Err(SpoolError::Backend("spool not open".into()));
        };
        let written = file.write_all(&batch).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut a partial batch off now if the file system lets us; the next operation
            // reads the file again either way.
            let _ = file.set_len(inner.len);
            inner.file = None;
            return Err(io("cannot write", &self.path, e));
        }
        inner.len += batch.len() as u64;
        if inner.len > COMPACT_FLOOR && inner.len > inner.base_len.saturating_mul(4) {
            self.compact(inner);
        }
        Ok(())
    }

    /// Rewrites the file as its live entries; a failure leaves the old file in use (logged).
    fn compact(&self, inner: &mut Inner) {
        let before = inner.len;
        let rewritten = read_bounded(&self.path, max_file_bytes(self.cap))
            .and_then(|b| b.ok_or_else(|| corrupt("the file vanished".into())))
            .and_then(|b| replay(&b))
            .and_then(|(entries, _)| {
                let puts: Vec<Write> = entries.into_iter().map(|(k, v)| Write::Put(k, v)).collect();
                let mut bytes = MAGIC.to_vec();
                bytes.extend_from_slice(&encode_batch(&puts));
                // Closed first: Windows does not replace a file that is open.
                inner.file = None;
                commscan_runtime::files::write_atomic(&self.path, &bytes, 0o600)
                    .map_err(|e| SpoolError::Backend(e.to_string()))?;
                Ok(bytes.len() as u64)
            });
        let reopened = OpenOptions::new().append(true).open(&self.path);
        match (rewritten, reopened) {
            (Ok(len), Ok(file)) => {
                tracing::debug!(before, after = len, "spool compacted");
                inner.file = Some(file);
                inner.len = len;
                inner.base_len = len;
            }
            (Err(e), Ok(file)) => {
                tracing::warn!(error = %e, "spool compaction failed; the file grows on");
                inner.file = Some(file);
                // Not retried at every write: only after as much growth again.
                inner.base_len = inner.len;
            }
            (_, Err(e)) => {
                // The next operation reads the file again.
                tracing::warn!(error = %e, "spool file not reopened after compaction");
                inner.file = None;
            }
        }
    }

    /// Runs `op` on a copy of the view, appends its writes, then publishes the copy.
    fn run<T>(&self, op: impl FnOnce(&mut SpoolView) -> (T, Vec<Write>)) -> Result<T, SpoolError> {
        let mut inner = self.lock();
        self.recover(&mut inner)?;
        let mut next = inner.view.clone();
        let (out, writes) = op(&mut next);
        self.commit(&mut inner, &writes)?;
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

    /// Starts the spool file `path` with `entries` (an older spool's, taken over), in one
    /// synced step; refuses to replace an existing file.
    pub(crate) fn create_with(
        path: &Path,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), SpoolError> {
        if path.exists() {
            return Err(SpoolError::Backend(format!(
                "{} exists already",
                path.display()
            )));
        }
        let puts: Vec<Write> = entries.into_iter().map(|(k, v)| Write::Put(k, v)).collect();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&encode_batch(&puts));
        commscan_runtime::files::write_atomic(path, &bytes, 0o600)
            .map_err(|e| SpoolError::Backend(format!("cannot write {}: {e}", path.display())))
    }
}

impl Spool for LogSpool {
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
        // Every operation synced its batch before returning.
        let mut inner = self.lock();
        self.recover(&mut inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Write {
        Write::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn file(batches: &[Vec<Write>]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        for w in batches {
            b.extend_from_slice(&encode_batch(w));
        }
        b
    }

    #[test]
    fn batches_replay_in_order() {
        let b = file(&[
            vec![put("a", "1"), put("b", "2")],
            vec![Write::Del(b"a".to_vec()), put("b", "3")],
        ]);
        let (entries, intact) = replay(&b).unwrap();
        assert_eq!(intact, b.len());
        assert_eq!(
            entries.into_iter().collect::<Vec<_>>(),
            vec![(b"b".to_vec(), b"3".to_vec())]
        );
    }

    #[test]
    fn a_torn_last_batch_is_cut_at_every_length() {
        let whole = file(&[vec![put("a", "1")], vec![put("a", "2"), put("c", "x")]]);
        let first = MAGIC.len() + encode_batch(&[put("a", "1")]).len();
        for cut in first..whole.len() {
            let (entries, intact) = replay(&whole[..cut]).unwrap();
            assert_eq!(intact, first, "cut at {cut}");
            assert_eq!(entries[&b"a"[..]], b"1");
        }
        // A last batch whose bytes were garbled (not yet synced when the power went).
        let mut garbled = whole.clone();
        *garbled.last_mut().unwrap() ^= 0xff;
        assert_eq!(replay(&garbled).unwrap().1, first);
    }

    #[test]
    fn damage_before_the_end_is_corruption_not_a_torn_write() {
        let mut b = file(&[vec![put("a", "1")], vec![put("b", "2")]]);
        b[MAGIC.len() + 9] ^= 0xff;
        let e = replay(&b).unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(e.to_string().contains("fails its checksum"), "{e}");
        let e = replay(b"not a spool").unwrap_err();
        assert!(e.to_string().contains("no spool header"), "{e}");
    }

    #[test]
    fn a_second_agent_on_the_same_spool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.log");
        let first = LogSpool::open(&path, 1 << 20).unwrap();
        let e = LogSpool::open(&path, 1 << 20).unwrap_err();
        assert!(!e.is_corruption(), "{e}");
        assert!(e.to_string().contains("another running agent"), "{e}");
        drop(first);
        LogSpool::open(&path, 1 << 20).expect("free again once closed");
    }

    #[test]
    fn compaction_keeps_the_content_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.log");
        let s = LogSpool::open(&path, 1 << 20).unwrap();
        let value = "v".repeat(1000);
        let mut inner = s.lock();
        for i in 0..600u32 {
            let writes = vec![
                Write::Put(b"m".to_vec(), format!("{i}{value}").into_bytes()),
                Write::Put(
                    format!("k{}", i % 3).into_bytes(),
                    value.clone().into_bytes(),
                ),
            ];
            s.commit(&mut inner, &writes).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, inner.len);
        assert!(len < COMPACT_FLOOR + 4096, "{len} bytes: never compacted");
        drop(inner);
        let (entries, intact) = replay(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(intact as u64, len);
        assert_eq!(entries.len(), 4);
        assert!(entries[&b"m"[..]].starts_with(b"599"));
    }
}
