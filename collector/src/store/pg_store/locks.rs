//! Locks across collectors: session advisory locks on connections of a pool of their own.
//!
//! A device lock is held while a collector reads, judges and writes the device, as its
//! in-process lock is (every caller takes that one first, so one process never asks for the
//! same device twice at once). Every report takes one, so they are combined:
//!
//! - Devices are spread over [`SHARDS`] shards by a hash of their id. Each shard keeps one
//!   *session* (a connection taken out of the `locks` pool for good, so that it never goes
//!   back to the pool with locks held: it closes when dropped), which may hold any number of
//!   advisory locks at once.
//! - Lock requests waiting while a shard's statement runs are combined ([`Combiner`]) into the
//!   next one: `pg_try_advisory_lock` over an array of keys, one round trip for all of them.
//! - Unlocks go to the shard's task, which sends those queued meanwhile as one statement. A
//!   device always maps to the same shard, so a lock taken again before the previous holder's
//!   unlock has run stacks on the same session (advisory locks count) and the unlock only
//!   undoes its own.
//! - A lock another collector holds (the try fails) is waited for on a connection of its own,
//!   taken from the pool until the lock is dropped, so no shard ever blocks on it.
//! - A lost session loses its locks, as a lost connection of one's own would; a new session
//!   takes its place on next use, and unlocks meant for the lost one are dropped by generation,
//!   never run on the new one. The unlock queue holds at most one entry per lock held.
//!
//! Task locks ([`Store::try_exclusive`](super::super::Store::try_exclusive): the staleness
//! sweep, retention, alert delivery) are rare and long-held: each has a connection of its own.

use super::{PgStore, db, pool_err};
use crate::store::StoreError;
use crate::store::combining::Combiner;
use deadpool_postgres::{ClientWrapper, Object, Pool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Shards of device locks, each with one kept session.
pub(super) const SHARDS: usize = 4;
/// Most unlocks sent in one statement.
const MAX_UNLOCKS: usize = 1024;

/// A shard's session, with a generation that tells it from the sessions before it.
#[derive(Clone)]
struct Session {
    conn: Arc<ClientWrapper>,
    generation: u64,
}

/// One shard: its session, its combined lock requests and its unlock queue.
struct Shard {
    pool: Pool,
    session: tokio::sync::Mutex<Option<Session>>,
    /// Lock requests by device id; each gets the generation of the session that holds its
    /// lock, or `None` when another collector holds it.
    tries: Combiner<String, Result<Option<u64>, StoreError>>,
    unlocks: mpsc::UnboundedSender<(u64, String)>,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Shard {
    /// The shard's session, opened (or replaced, when its connection closed) as needed.
    async fn session(&self) -> Result<Session, StoreError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.conn.is_closed()) {
            return Ok(s.clone());
        }
        let conn = Object::take(self.pool.get().await.map_err(pool_err)?);
        let fresh = Session {
            conn: Arc::new(conn),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        };
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Tries to lock every key in one statement.
    async fn try_all(&self, keys: &[String]) -> Result<Vec<Option<u64>>, StoreError> {
        let s = self.session().await?;
        let st = s
            .conn
            .prepare_cached(
                "SELECT pg_try_advisory_lock(hashtext('device'), hashtext(k))
                 FROM unnest($1::text[]) WITH ORDINALITY AS u(k, i) ORDER BY i",
            )
            .await
            .map_err(db("lock devices"))?;
        let rows = s
            .conn
            .query(&st, &[&keys])
            .await
            .map_err(db("lock devices"))?;
        if rows.len() != keys.len() {
            return Err(StoreError::Backend(format!(
                "database: lock devices: {} answers for {} devices",
                rows.len(),
                keys.len()
            )));
        }
        Ok(rows
            .iter()
            .map(|r| r.get::<_, bool>(0).then_some(s.generation))
            .collect())
    }
}

/// Sends each shard's queued unlocks, a statement at a time.
async fn unlock_loop(shard: Arc<Shard>, mut queue: mpsc::UnboundedReceiver<(u64, String)>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_UNLOCKS {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let session = match shard.session().await {
            Ok(s) => s,
            Err(e) => {
                // No session: the one that held these locks is gone, and the locks with it.
                tracing::warn!(error = %e, "device unlocks not sent: no session");
                continue;
            }
        };
        let keys: Vec<&str> = batch
            .iter()
            .filter(|(generation, _)| *generation == session.generation)
            .map(|(_, k)| k.as_str())
            .collect();
        if keys.is_empty() {
            continue;
        }
        let sent = match session
            .conn
            .prepare_cached(
                "SELECT count(*) FROM unnest($1::text[]) AS k
                 WHERE pg_advisory_unlock(hashtext('device'), hashtext(k))",
            )
            .await
        {
            Ok(st) => session.conn.query_one(&st, &[&keys]).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            // Locks that cannot be released must not outlive this: the session is let go and
            // closes once its last holder is done, releasing its locks, as a lost connection
            // would (its other holders lose theirs with it).
            tracing::warn!(error = %e, "device unlocks failed; closing the lock session");
            let mut slot = shard.session.lock().await;
            if slot
                .as_ref()
                .is_some_and(|s| s.generation == session.generation)
            {
                *slot = None;
            }
        }
    }
}

/// Every shard of one store.
pub(super) struct DeviceLocks {
    shards: Vec<Arc<Shard>>,
    locks: Pool,
}

impl DeviceLocks {
    /// Shards over `locks`, their unlock tasks spawned on `rt`.
    pub(super) fn new(locks: Pool, rt: &tokio::runtime::Runtime) -> DeviceLocks {
        let shards = (0..SHARDS)
            .map(|_| {
                let (unlocks, queue) = mpsc::unbounded_channel();
                let shard = Arc::new(Shard {
                    pool: locks.clone(),
                    session: tokio::sync::Mutex::new(None),
                    tries: Combiner::default(),
                    unlocks,
                });
                rt.spawn(unlock_loop(shard.clone(), queue));
                shard
            })
            .collect();
        DeviceLocks { shards, locks }
    }

    /// Locks `device` for `store`'s caller, waiting while another collector holds it.
    pub(super) fn lock(
        &self,
        store: &PgStore,
        device: &str,
    ) -> Result<crate::store::StoreLock, StoreError> {
        let shard = &self.shards[shard_of(device)];
        let got = shard.tries.submit(device.to_owned(), |keys| {
            match store.run(async |_| shard.try_all(&keys).await) {
                Ok(v) => v.into_iter().map(Ok).collect(),
                Err(e) => keys.iter().map(|_| Err(e.clone())).collect(),
            }
        })?;
        if let Some(generation) = got {
            return Ok(crate::store::StoreLock::held(SharedLock {
                shard: shard.clone(),
                generation,
                key: device.to_owned(),
            }));
        }
        // Another collector holds it: wait on a connection of our own.
        let conn = store.run(async |_| {
            let c = self.locks.get().await.map_err(pool_err)?;
            let st = c
                .prepare_cached("SELECT pg_advisory_lock(hashtext('device'), hashtext($1))")
                .await
                .map_err(db("lock device"))?;
            c.execute(&st, &[&device])
                .await
                .map_err(db("lock device"))?;
            Ok(c)
        })?;
        Ok(crate::store::StoreLock::held(OwnLock {
            conn: Some(conn),
            space: "device",
            key: device.to_owned(),
            handle: store.handle(),
        }))
    }

    /// The right to run `task` on one collector at a time, or `None` while another holds it.
    pub(super) fn try_task(
        &self,
        store: &PgStore,
        task: &str,
    ) -> Result<Option<crate::store::StoreLock>, StoreError> {
        let conn = store.run(async |_| {
            let c = self.locks.get().await.map_err(pool_err)?;
            let got: bool = c
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtext('task'), hashtext($1))",
                    &[&task],
                )
                .await
                .map_err(db("try the task's lock"))?
                .get(0);
            Ok(got.then_some(c))
        })?;
        Ok(conn.map(|conn| {
            crate::store::StoreLock::held(OwnLock {
                conn: Some(conn),
                space: "task",
                key: task.to_owned(),
                handle: store.handle(),
            })
        }))
    }
}

/// The shard of a device id (FNV-1a: stable, and cheap for short ids).
fn shard_of(device: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// A device lock held on its shard's session; dropping it queues the unlock.
struct SharedLock {
    shard: Arc<Shard>,
    generation: u64,
    key: String,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        // The task ends only with the store, which ends the locks too.
        let _ = self
            .shard
            .unlocks
            .send((self.generation, std::mem::take(&mut self.key)));
    }
}

/// A lock held on a connection of its own; dropping it unlocks on the store's runtime without
/// blocking (if the store is gone, closing the connection releases the lock).
struct OwnLock {
    conn: Option<Object>,
    /// The lock's namespace (`device`, `task`) and key.
    space: &'static str,
    key: String,
    handle: tokio::runtime::Handle,
}

impl Drop for OwnLock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let (space, key) = (self.space, std::mem::take(&mut self.key));
        self.handle.spawn(async move {
            let unlocked = match conn
                .prepare_cached("SELECT pg_advisory_unlock(hashtext($1), hashtext($2))")
                .await
            {
                Ok(st) => conn.execute(&st, &[&space, &key]).await,
                Err(e) => Err(e),
            };
            if let Err(e) = unlocked {
                // The connection is broken, and with it the lock: discard it.
                tracing::warn!(error = %e, "unlock failed; dropping the connection");
                let _ = Object::take(conn);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_always_maps_to_the_same_shard_and_ids_spread() {
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("7f3c9a2e-0000-4000-8000-{i:012}"))
            .collect();
        let mut counts = [0usize; SHARDS];
        for id in &ids {
            assert_eq!(shard_of(id), shard_of(&id.clone()));
            counts[shard_of(id)] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 150),
            "1000 ids over {SHARDS} shards: {counts:?}"
        );
    }
}
