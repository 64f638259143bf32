//! The storage baseline: raw sled writes with the collector's flush policy (a write is
//! acknowledged only after a flush covering it returned), without transactions, indexes,
//! aggregates or JSON.
//!
//! Three ways, each for a fixed time: one writer (insert, flush, repeat); `threads` writers each
//! flushing after its own insert (what concurrent ingest threads do with a plain
//! `Db::flush`); and the same writers sharing flushes through the collector's
//! [`GroupCommit`]. Values are the size of a stored device record; keys cycle over
//! `keys` devices, so the tree stays the size of a fleet; every value differs from the one it
//! replaces (sled skips writing an equal value, which would make flushes free).

use crate::LoadgenError;
use commscan_collector::store::group_commit::GroupCommit;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Durable writes per second, each way.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SledFigures {
    /// One writer, a flush after every insert.
    pub serial_per_second: f64,
    /// `threads` writers, each flushing after its insert.
    pub concurrent_per_second: f64,
    /// `threads` writers sharing flushes (group commit).
    pub grouped_per_second: f64,
    /// Writers in the concurrent cases.
    pub threads: usize,
    /// Value size in bytes.
    pub value_bytes: usize,
}

/// How each writer makes its write durable.
#[derive(Clone, Copy)]
enum Flush<'a> {
    Own,
    Grouped(&'a GroupCommit),
}

fn run(
    db: &sled::Db,
    threads: usize,
    keys: u64,
    value: &[u8],
    how: Flush<'_>,
    time: Duration,
) -> Result<f64, LoadgenError> {
    let done = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let failed = std::sync::Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let (done, writes, failed) = (&done, &writes, &failed);
            s.spawn(move || {
                let mut k = t;
                let mut value = value.to_vec();
                while !done.load(Relaxed) {
                    // A new value each time: sled skips writing a value equal to the stored one.
                    value[..8].copy_from_slice(&k.to_be_bytes());
                    let flush = || db.flush().map(|_| ()).map_err(|e| e.to_string());
                    let r = db
                        .insert(format!("device-{:08}", k % keys), value.as_slice())
                        .map_err(|e| e.to_string())
                        .and_then(|_| match how {
                            Flush::Own => flush(),
                            Flush::Grouped(g) => g.flush(flush),
                        });
                    if let Err(e) = r {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                    writes.fetch_add(1, Relaxed);
                    k += threads as u64;
                }
            });
        }
        std::thread::sleep(time);
        done.store(true, Relaxed);
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(LoadgenError::Setup(format!("sled: {e}")));
    }
    Ok(writes.load(Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Measures the three ways for `time` each, in a fresh database under `dir`.
pub fn measure(
    dir: &Path,
    threads: usize,
    value_bytes: usize,
    keys: u64,
    time: Duration,
) -> Result<SledFigures, LoadgenError> {
    let db = sled::Config::new()
        .path(dir)
        .open()
        .map_err(|e| LoadgenError::Setup(format!("sled: {e}")))?;
    // Not compressible into nothing, not random either: a JSON-ish record.
    let value: Vec<u8> = (0..value_bytes)
        .map(|i| b"{\"product\":\"zoom\",\"v\":1}"[i % 24])
        .collect();
    let group = GroupCommit::default();
    // Warm up: fill the key space once.
    run(&db, 1, keys, &value, Flush::Own, Duration::from_millis(300))?;
    Ok(SledFigures {
        serial_per_second: run(&db, 1, keys, &value, Flush::Own, time)?,
        concurrent_per_second: run(&db, threads, keys, &value, Flush::Own, time)?,
        grouped_per_second: run(&db, threads, keys, &value, Flush::Grouped(&group), time)?,
        threads,
        value_bytes,
    })
}
