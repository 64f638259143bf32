//! The PostgreSQL store: every store trait over one database, for deployments that outgrow
//! the embedded sled store (several collectors, BI tools, the operators' own backups).
//!
//! # Schema
//! [`0001_initial.sql`](schema) creates typed tables (devices, findings, history, the
//! organisation aggregates and their daily points, classifications, enrolment tokens and people
//! by hash, audit, federated rows) with indexes for every listing filter, and read-only `bi_*`
//! views for BI tools. Each row keeps the collector's record as `record jsonb` (what is
//! decoded, so a new field never needs a migration) beside typed columns extracted from it
//! (what is queried and indexed). Migrations are embedded and applied at open under an
//! advisory lock ([`schema`]); a database newer than this binary is refused.
//!
//! # Transactions
//! A device write is transactional, as in sled: the device row is locked (`FOR UPDATE`),
//! the old contribution leaves its organisation's aggregate row and the new one enters
//! (device rows are locked in id order, then aggregate rows in organisation order, so two
//! writes moving devices between the same organisations cannot deadlock), the day's point is
//! upserted, history appended, the findings rows replaced. Device writes that arrive while
//! one is being written are *combined* (as sled's are): the next transaction carries all of
//! them, at most [`MAX_BATCH`], with one statement per step whatever their number (`unnest`
//! over arrays), and one commit. A report then costs a share of one WAL flush and of about ten
//! statements instead of a flush and about seventeen statements of its own; a combined
//! transaction that fails for another reason than an unreachable database is retried one
//! write at a time, so a write the database refuses fails alone. Enrolment locks the token row, so two enrolments racing for its last
//! use cannot both win, across any number of collector processes. A federation push replaces
//! one enterprise's rows under a transaction-scoped advisory lock for that enterprise.
//! Several collector processes may share the database: [`DeviceStore::lock_device`] takes a
//! session advisory lock on the device, held while the collector reads, judges and writes the
//! device, as its in-process lock is. Locks live on connections of a pool of their own, so
//! holders never wait on each other for a working connection: an uncontended lock (nearly
//! all) is a `pg_try_advisory_lock` on one of a few shared sessions, which hold many locks at
//! once; one held by another collector is waited for on a connection of its own. [`Store::try_exclusive`] is a
//! `pg_try_advisory_lock` per task, so the staleness sweep and audit retention run on one
//! collector at a time.
//! Commits are durable (`synchronous_commit` is the server's, `on` by default), so
//! [`Durable::flush`] has nothing to do: a report is acknowledged after its commit.
//!
//! # Alert outbox
//! `alert_outbox` (migration 5) holds alerts per sink by a `bigserial` position; a verdict
//! change's alerts are inserted in the device write's transaction
//! ([`Store::put_device_alerting`]). Which collector delivers a sink's queue is decided by
//! [`Store::try_exclusive`] (one `alerts <sink>` lock), so a sink's entries leave in order and
//! only one collector sends them; a collector that dies loses its lock with its connection.
//!
//! # Blocking
//! The store traits are synchronous and the collector calls them from blocking threads
//! (`spawn_blocking`). The store runs the async driver (`tokio-postgres`, pooled by
//! `deadpool-postgres`) on a small runtime of its own and blocks the calling thread on it, so
//! it never needs the caller's runtime. Calling it from an async task would panic, as any
//! blocking call there should.
//!
//! # TLS
//! The URL's `sslmode` and `sslrootcert` are libpq's; when TLS is used the server's
//! certificate and name are always verified ([`tls`]).
//!
//! # Failures
//! A database that cannot be reached, or a connection lost mid-transaction, is
//! [`StoreError::Unavailable`]: the reporting service answers UNAVAILABLE and agents keep the
//! report in their spools. Other database errors are [`StoreError::Backend`] naming the
//! statement's purpose.

mod listen;
mod locks;
pub mod schema;
pub mod tls;

use super::combining::Combiner;
use super::records::{
    AuditRecord, Classification, DeviceRecord, FederatedRecord, HistoryKind, HistoryRecord,
    OrgAggregate, OutboxEntry, PersonRecord, RulesKind, RulesVersion, SessionRecord, TokenRecord,
};
use super::{
    AlertStore, AuditStore, DeviceFilter, DevicePage, DeviceStore, Durable, FederationStore,
    RulesStore, SessionStore, Store, StoreError, TokenStore,
};
use commscan_core::verdict::{ReasonKind, Status};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use time::OffsetDateTime;
use tokio_postgres::types::{Json, ToSql};

/// How to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user@host:port/database` (a password in it is refused: give it apart),
    /// with libpq's `sslmode` and `sslrootcert` if TLS is wanted ([`tls`]).
    pub url: String,
    /// The password, read from a file or the environment by the caller.
    pub password: Option<String>,
    /// Most connections this process opens.
    pub max_connections: usize,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The PostgreSQL-backed store.
pub struct PgStore {
    pool: Pool,
    rt: Option<tokio::runtime::Runtime>,
    /// Notifications from every collector on the database ([`listen`]).
    notices: tokio::sync::broadcast::Sender<super::Notice>,
    /// Device and task locks across collectors ([`locks`]), on connections of a pool of their
    /// own, apart from `pool`, so that lock holders never wait on each other for a connection
    /// to work with.
    device_locks: locks::DeviceLocks,
    /// Device reads waiting to be combined into one statement ([`DeviceStore::device`]).
    reads: Combiner<String, Result<Option<DeviceRecord>, StoreError>>,
    /// Classification reads waiting to be combined into one statement.
    classifications: Combiner<String, Result<Vec<(String, Classification)>, StoreError>>,
    /// Device writes waiting to be combined into one transaction ([`write_devices`]).
    writes: Combiner<PendingWrite, Result<(), StoreError>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async code may not do; this never blocks.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A database error as a store error: lost or refused connections are `Unavailable`
/// (retriable: agents keep their reports), the rest `Backend`, naming `what`.
fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        // A server error's Display is only "db error"; its message says what went wrong.
        let detail = match e.as_db_error() {
            Some(d) => format!("{}: {}", d.severity(), d.message()),
            None => e.to_string(),
        };
        if e.is_closed() || e.code().is_none() {
            StoreError::Unavailable(format!("database: {what}: {detail}"))
        } else {
            StoreError::Backend(format!("database: {what}: {detail}"))
        }
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(tls::describe(&e).unwrap_or_else(|| format!("database: {e}")))
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("records always serialise")
}

/// The answers to `keys`, asked at once by concurrent callers and read in one statement:
/// each caller gets its key's value from `found` (`missing` where the key has no rows, or
/// the statement's error); a key asked twice gets a copy.
fn answer_each<V: Clone>(
    keys: &[String],
    found: Result<HashMap<String, Result<V, StoreError>>, StoreError>,
    missing: V,
) -> Vec<Result<V, StoreError>> {
    let mut found = match found {
        Ok(found) => found,
        Err(e) => return keys.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut left: HashMap<&str, usize> = HashMap::new();
    for k in keys {
        *left.entry(k.as_str()).or_default() += 1;
    }
    keys.iter()
        .map(|k| {
            let n = left.get_mut(k.as_str()).expect("counted above");
            *n -= 1;
            let answer = if *n == 0 {
                found.remove(k)
            } else {
                found.get(k).cloned()
            };
            answer.unwrap_or_else(|| Ok(missing.clone()))
        })
        .collect()
}

/// Decodes column `idx` (`jsonb`) of `row` straight into `T`, without the intermediate JSON
/// tree [`decode`] takes (the device read and write paths: every report).
fn decode_column<T: DeserializeOwned>(
    key: &str,
    row: &tokio_postgres::Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get::<_, Json<T>>(idx)
        .map(|j| j.0)
        .map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            message: std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
        })
}

fn decode<T: DeserializeOwned>(key: &str, v: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// The lower-case name serde gives a unit enum value (`Status`, `Platform`).
fn tag<T: Serialize>(v: &T) -> String {
    match json(v) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects, applies the embedded migrations (under an advisory lock) and checks the
    /// schema version.
    pub fn open(config: &PgConfig) -> Result<PgStore, StoreError> {
        // `sslmode` and `sslrootcert` are read as libpq reads them; see `tls`.
        let (mut pg, tls) = tls::configure(&config.url)?;
        if pg.get_password().is_some() {
            return Err(StoreError::Backend(
                "--store: a password in the URL would show in process listings; give it in a file or the environment".into(),
            ));
        }
        if let Some(p) = &config.password {
            pg.password(p.as_bytes());
        }
        pg.application_name("commscan-collector");
        pg.connect_timeout(std::time::Duration::from_secs(10));
        let manager_config = pg.clone();
        let listen_config = pg.clone();
        let manager = deadpool_postgres::Manager::from_config(
            pg,
            tls.clone(),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("commscan-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("database runtime: {e}")))?;
        let build = |manager: deadpool_postgres::Manager| {
            Pool::builder(manager)
                .max_size(config.max_connections.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(std::time::Duration::from_secs(10)))
                .create_timeout(Some(std::time::Duration::from_secs(10)))
                .build()
                .map_err(|e| StoreError::Backend(format!("database pool: {e}")))
        };
        let locks_manager = deadpool_postgres::Manager::from_config(
            manager_config,
            tls.clone(),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let (notices, _) = tokio::sync::broadcast::channel(listen::NOTICE_BUFFER);
        rt.spawn(listen::run(listen_config, tls, notices.clone()));
        let device_locks = locks::DeviceLocks::new(build(locks_manager)?, &rt);
        let store = PgStore {
            pool: build(manager)?,
            rt: Some(rt),
            notices,
            reads: Combiner::default(),
            classifications: Combiner::default(),
            writes: Combiner::default(),
            device_locks,
        };
        store.run(async |s| {
            let mut client = s.pool.get().await.map_err(pool_err)?;
            schema::migrate(&mut client).await
        })?;
        Ok(store)
    }

    /// Runs `f` on the store's runtime, blocking the calling thread: directly from a plain or
    /// `spawn_blocking` thread (the collector's way), through `block_in_place` from a task of
    /// a multi-threaded runtime (start-up code), and from a current-thread runtime (tests) on a
    /// scoped thread of its own, since neither may block on another runtime in place.
    fn run<T: Send>(
        &self,
        f: impl AsyncFnOnce(&PgStore) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => rt.block_on(f(self)),
            Ok(RuntimeFlavor::CurrentThread) => std::thread::scope(|s| {
                s.spawn(|| rt.block_on(f(self)))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            Ok(_) => tokio::task::block_in_place(|| rt.block_on(f(self))),
        }
    }

    /// A handle on the store's runtime.
    fn handle(&self) -> tokio::runtime::Handle {
        self.rt
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
            .clone()
    }

    /// Runs `f` in one transaction (committed when it returns `Ok`).
    fn tx<T: Send>(
        &self,
        f: impl for<'t> AsyncFnOnce(&'t Transaction<'t>) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        self.run(async |s| {
            let mut client = s.pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(db("begin"))?;
            let out = f(&tx).await?;
            tx.commit().await.map_err(db("commit"))?;
            Ok(out)
        })
    }

    /// Writes `device` (and its alerts) in a transaction combined with the device writes of
    /// other threads waiting meanwhile ([`Combiner`]): under load, one commit (one WAL flush)
    /// and a fixed number of statements serve a whole batch of reports. Returns after the
    /// commit. When a combined transaction fails for another reason than an unreachable
    /// database, each of its writes is retried alone, so one bad write fails only itself.
    fn write_combined(
        &self,
        device: &DeviceRecord,
        at: OffsetDateTime,
        alerts: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        let pending = PendingWrite {
            device: device.clone(),
            at,
            alerts: alerts.to_vec(),
        };
        self.writes.submit(pending, |batch| {
            let mut out = Vec::with_capacity(batch.len());
            for chunk in batch.chunks(MAX_BATCH) {
                let writes: Vec<DeviceWrite<'_>> = chunk.iter().map(PendingWrite::view).collect();
                match self.tx(async |tx| write_devices(tx, &writes).await) {
                    Ok(()) => out.extend(writes.iter().map(|_| Ok(()))),
                    Err(e) if writes.len() == 1 || matches!(e, StoreError::Unavailable(_)) => {
                        out.extend(writes.iter().map(|_| Err(e.clone())));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, writes = writes.len(), "combined device writes failed; writing each alone");
                        for w in &writes {
                            out.push(self.tx(async |tx| write_devices(tx, &[*w]).await));
                        }
                    }
                }
            }
            out
        })
    }

    /// Runs one read on a pooled connection.
    fn read<T: Send, F>(
        &self,
        f: impl FnOnce(deadpool_postgres::Object) -> F + Send,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        self.run(async |s| {
            let client = s.pool.get().await.map_err(pool_err)?;
            f(client).await
        })
    }
}

/// Runs `sql` in `tx` as a statement prepared once per connection and cached (the device
/// write path runs the same few statements for every report: planning them each time was
/// most of its cost).
async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &'static str,
) -> Result<u64, StoreError> {
    let st = tx.prepare_cached(sql).await.map_err(db(what))?;
    tx.execute(&st, params).await.map_err(db(what))
}

/// [`exec`] for a query of at most one row.
async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &'static str,
) -> Result<Option<tokio_postgres::Row>, StoreError> {
    let st = tx.prepare_cached(sql).await.map_err(db(what))?;
    tx.query_opt(&st, params).await.map_err(db(what))
}

/// Locks and returns the aggregate of `org` (creating an empty row first).
async fn lock_aggregate(tx: &Transaction<'_>, org: &str) -> Result<OrgAggregate, StoreError> {
    exec(tx, "INSERT INTO org_aggregates (organisation, devices, aggregate) VALUES ($1, 0, '{}') ON CONFLICT DO NOTHING",
        &[&org], "create aggregate").await?;
    let row = query_opt(
        tx,
        "SELECT aggregate FROM org_aggregates WHERE organisation = $1 FOR UPDATE",
        &[&org],
        "lock aggregate",
    )
    .await?
    .ok_or_else(|| StoreError::Backend("database: lock aggregate: no row".into()))?;
    let v: serde_json::Value = row.get(0);
    if v.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(OrgAggregate::default());
    }
    decode(&format!("org_aggregates/{org}"), v)
}

async fn store_aggregate(
    tx: &Transaction<'_>,
    org: &str,
    agg: &OrgAggregate,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let v = json(agg);
    let devices = i64_of(agg.devices);
    exec(
        tx,
        "UPDATE org_aggregates SET devices = $2, aggregate = $3 WHERE organisation = $1",
        &[&org, &devices, &v],
        "update aggregate",
    )
    .await?;
    exec(
        tx,
        "INSERT INTO org_daily (organisation, day, devices, aggregate) VALUES ($1, $2, $3, $4)
         ON CONFLICT (organisation, day) DO UPDATE SET devices = $3, aggregate = $4",
        &[&org, &at.date(), &devices, &v],
        "record the day's point",
    )
    .await?;
    Ok(())
}

/// Removes `device` in `tx`: its contribution leaves its organisation's aggregate, its row
/// (with its findings) and its history go.
async fn remove_device_rows(
    tx: &Transaction<'_>,
    device: &DeviceRecord,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let id = device.device_id.as_str();
    let Some(row) = query_opt(
        tx,
        "SELECT record FROM devices WHERE device_id = $1 FOR UPDATE",
        &[&id],
        "lock device",
    )
    .await?
    else {
        return Ok(());
    };
    let old: DeviceRecord = decode(&format!("devices/{id}"), row.get(0))?;
    let mut agg = lock_aggregate(tx, &old.organisation).await?;
    agg.apply(&old.contribution(), false);
    store_aggregate(tx, &old.organisation, &agg, at).await?;
    exec(
        tx,
        "DELETE FROM devices WHERE device_id = $1",
        &[&id],
        "remove device",
    )
    .await?;
    exec(
        tx,
        "DELETE FROM history WHERE device_id = $1",
        &[&id],
        "remove history",
    )
    .await?;
    Ok(())
}

/// Most device writes one combined transaction carries; a larger queue is written as several
/// transactions in turn (each a bounded statement size: records are at most
/// [`MAX_DEVICE_RECORD_BYTES`](crate::ingest::MAX_DEVICE_RECORD_BYTES), a legitimate one a few
/// kilobytes).
const MAX_BATCH: usize = 256;

/// One device write waiting for its combined transaction ([`PgStore::put_device`]).
struct PendingWrite {
    device: DeviceRecord,
    at: OffsetDateTime,
    alerts: Vec<OutboxEntry>,
}

impl PendingWrite {
    fn view(&self) -> DeviceWrite<'_> {
        DeviceWrite {
            device: &self.device,
            at: self.at,
            alerts: &self.alerts,
        }
    }
}

/// One device write: the record, when, and the alerts its verdict change enqueues.
#[derive(Clone, Copy)]
struct DeviceWrite<'a> {
    device: &'a DeviceRecord,
    at: OffsetDateTime,
    alerts: &'a [OutboxEntry],
}

/// Writes a batch of devices in `tx` with a fixed number of statements whatever its size:
/// the same steps as [`write_device`] for each write, in order (a device written twice in one
/// batch sees its first write as the old record), with rows locked in the same order (devices
/// by id, then aggregates by organisation).
async fn write_devices(tx: &Transaction<'_>, batch: &[DeviceWrite<'_>]) -> Result<(), StoreError> {
    let mut ids: Vec<&str> = batch.iter().map(|w| w.device.device_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let st = tx
        .prepare_cached(
            "SELECT record FROM devices WHERE device_id = ANY($1) ORDER BY device_id FOR UPDATE",
        )
        .await
        .map_err(db("lock devices"))?;
    let olds = tx
        .query(&st, &[&ids])
        .await
        .map_err(db("lock devices"))?
        .into_iter()
        .map(|row| decode_column::<DeviceRecord>("devices (batch)", &row, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let mut current: HashMap<&str, &DeviceRecord> =
        olds.iter().map(|d| (d.device_id.as_str(), d)).collect();
    let mut orgs: BTreeSet<&str> = olds.iter().map(|d| d.organisation.as_str()).collect();
    orgs.extend(batch.iter().map(|w| w.device.organisation.as_str()));
    let orgs: Vec<&str> = orgs.into_iter().collect();
    exec(
        tx,
        "INSERT INTO org_aggregates (organisation, devices, aggregate)
         SELECT o, 0, '{}' FROM unnest($1::text[]) AS o ON CONFLICT DO NOTHING",
        &[&orgs],
        "create aggregates",
    )
    .await?;
    let st = tx
        .prepare_cached(
            "SELECT organisation, aggregate FROM org_aggregates WHERE organisation = ANY($1)
             ORDER BY organisation FOR UPDATE",
        )
        .await
        .map_err(db("lock aggregates"))?;
    let mut aggs: BTreeMap<String, OrgAggregate> = BTreeMap::new();
    for row in tx
        .query(&st, &[&orgs])
        .await
        .map_err(db("lock aggregates"))?
    {
        let org: String = row.get(0);
        let v: serde_json::Value = row.get(1);
        let agg = if v.as_object().is_some_and(|o| o.is_empty()) {
            OrgAggregate::default()
        } else {
            decode(&format!("org_aggregates/{org}"), v)?
        };
        aggs.insert(org, agg);
    }
    // Every day's point is the aggregate after the last write of that day in the batch.
    let mut points: BTreeMap<(&str, time::Date), OrgAggregate> = BTreeMap::new();
    let mut history: Vec<(&str, HistoryRecord)> = Vec::new();
    for w in batch {
        let (new, day) = (w.device, w.at.date());
        let old = current.get(new.device_id.as_str()).copied();
        if let Some(o) = old {
            let agg = aggs.entry(o.organisation.clone()).or_default();
            agg.apply(&o.contribution(), false);
            points.insert((o.organisation.as_str(), day), agg.clone());
        }
        let agg = aggs.entry(new.organisation.clone()).or_default();
        agg.apply(&new.contribution(), true);
        points.insert((new.organisation.as_str(), day), agg.clone());
        history.extend(
            HistoryKind::between(old, new)
                .into_iter()
                .map(|kind| (new.device_id.as_str(), HistoryRecord { at: w.at, kind })),
        );
        current.insert(new.device_id.as_str(), new);
    }
    let (a_orgs, a_devices, a_values): (Vec<&str>, Vec<i64>, Vec<serde_json::Value>) = aggs
        .iter()
        .map(|(o, a)| (o.as_str(), i64_of(a.devices), json(a)))
        .collect();
    exec(
        tx,
        "UPDATE org_aggregates AS a SET devices = u.devices, aggregate = u.aggregate
         FROM unnest($1::text[], $2::int8[], $3::jsonb[]) AS u(organisation, devices, aggregate)
         WHERE a.organisation = u.organisation",
        &[&a_orgs, &a_devices, &a_values],
        "update aggregates",
    )
    .await?;
    let (mut p_orgs, mut p_days, mut p_devices, mut p_values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((org, day), agg) in &points {
        p_orgs.push(*org);
        p_days.push(*day);
        p_devices.push(i64_of(agg.devices));
        p_values.push(json(agg));
    }
    exec(
        tx,
        "INSERT INTO org_daily (organisation, day, devices, aggregate)
         SELECT * FROM unnest($1::text[], $2::date[], $3::int8[], $4::jsonb[])
         ON CONFLICT (organisation, day) DO UPDATE SET devices = excluded.devices, aggregate = excluded.aggregate",
        &[&p_orgs, &p_days, &p_devices, &p_values],
        "record the day's points",
    )
    .await?;
    // The rows: each device's last state in the batch.
    let finals: Vec<&DeviceRecord> = ids
        .iter()
        .filter_map(|id| current.get(id).copied())
        .collect();
    upsert_device_rows(tx, &finals).await?;
    let (h_ids, h_at, h_kinds, h_records) = history.iter().fold(
        (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        |(mut i, mut a, mut k, mut r), (id, h)| {
            let record = json(h);
            k.push(
                record
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            );
            i.push(*id);
            a.push(h.at);
            r.push(record);
            (i, a, k, r)
        },
    );
    if !h_ids.is_empty() {
        exec(
            tx,
            "INSERT INTO history (device_id, at, kind, record)
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::jsonb[])",
            &[&h_ids, &h_at, &h_kinds, &h_records],
            "append history",
        )
        .await?;
    }
    let alerts: Vec<OutboxEntry> = batch
        .iter()
        .flat_map(|w| w.alerts.iter().cloned())
        .collect();
    insert_alerts(tx, &alerts).await
}

/// Writes the rows of `devices` (distinct ids) and replaces their findings rows, in three
/// statements.
async fn upsert_device_rows(
    tx: &Transaction<'_>,
    devices: &[&DeviceRecord],
) -> Result<(), StoreError> {
    let n = devices.len();
    let mut c = DeviceColumns::with_capacity(n);
    let (mut f_ids, mut f_products, mut f_versions, mut f_violating, mut f_evidence) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in devices {
        c.push(d);
        let violating: BTreeSet<&str> = d
            .verdict
            .reasons
            .iter()
            .filter(|r| r.kind == ReasonKind::Violation)
            .map(|r| r.product.as_str())
            .collect();
        let mut seen = BTreeSet::new();
        for f in &d.findings {
            // One row per product, as the single write's `ON CONFLICT DO NOTHING` keeps.
            if !seen.insert(f.product.as_str()) {
                continue;
            }
            f_ids.push(d.device_id.as_str());
            f_products.push(f.product.as_str());
            f_versions.push(f.version.as_deref());
            f_violating.push(violating.contains(f.product.as_str()));
            f_evidence.push(Json(&f.evidence));
        }
    }
    exec(
        tx,
        "INSERT INTO devices (device_id, organisation, hostname, platform, os_version, agent_version,
                              status, enrolled_at, last_report, stale_watch, revoked, record)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
                              $11::bool[], $12::jsonb[])
         ON CONFLICT (device_id) DO UPDATE SET
             organisation = excluded.organisation, hostname = excluded.hostname,
             platform = excluded.platform, os_version = excluded.os_version,
             agent_version = excluded.agent_version, status = excluded.status,
             enrolled_at = excluded.enrolled_at, last_report = excluded.last_report,
             stale_watch = excluded.stale_watch, revoked = excluded.revoked,
             record = excluded.record",
        &[
            &c.ids,
            &c.organisations,
            &c.hostnames,
            &c.platforms,
            &c.os_versions,
            &c.agent_versions,
            &c.statuses,
            &c.enrolled,
            &c.last_reports,
            &c.stale_watch,
            &c.revoked,
            &c.records,
        ],
        "write devices",
    )
    .await?;
    exec(
        tx,
        "DELETE FROM findings WHERE device_id = ANY($1)",
        &[&c.ids],
        "replace findings",
    )
    .await?;
    if !f_ids.is_empty() {
        exec(
            tx,
            "INSERT INTO findings (device_id, product, version, violating, evidence)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::jsonb[])",
            &[&f_ids, &f_products, &f_versions, &f_violating, &f_evidence],
            "write findings",
        )
        .await?;
    }
    Ok(())
}

/// The typed columns of device rows, as arrays for `unnest`.
struct DeviceColumns<'a> {
    ids: Vec<&'a str>,
    organisations: Vec<&'a str>,
    hostnames: Vec<&'a str>,
    platforms: Vec<Option<String>>,
    os_versions: Vec<&'a str>,
    agent_versions: Vec<&'a str>,
    statuses: Vec<String>,
    enrolled: Vec<OffsetDateTime>,
    last_reports: Vec<Option<OffsetDateTime>>,
    stale_watch: Vec<Option<OffsetDateTime>>,
    revoked: Vec<bool>,
    records: Vec<Json<&'a DeviceRecord>>,
}

impl<'a> DeviceColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        DeviceColumns {
            ids: Vec::with_capacity(n),
            organisations: Vec::with_capacity(n),
            hostnames: Vec::with_capacity(n),
            platforms: Vec::with_capacity(n),
            os_versions: Vec::with_capacity(n),
            agent_versions: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            enrolled: Vec::with_capacity(n),
            last_reports: Vec::with_capacity(n),
            stale_watch: Vec::with_capacity(n),
            revoked: Vec::with_capacity(n),
            records: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, d: &'a DeviceRecord) {
        self.ids.push(&d.device_id);
        self.organisations.push(&d.organisation);
        self.hostnames.push(&d.hostname);
        self.platforms.push(d.platform.map(|p| tag(&p)));
        self.os_versions.push(&d.os_version);
        self.agent_versions.push(&d.agent_version);
        self.statuses.push(tag(&d.verdict.status));
        self.enrolled.push(d.enrolled_at);
        self.last_reports.push(d.last_report);
        self.stale_watch
            .push(d.last_report.filter(|_| d.verdict.status != Status::Stale));
        self.revoked.push(d.revoked);
        self.records.push(Json(d));
    }
}

impl Durable for PgStore {
    fn flush(&self) -> Result<(), StoreError> {
        // Every write committed before it returned.
        Ok(())
    }

    fn check_health(&self) -> bool {
        self.read(async |c| {
            c.simple_query("SELECT 1").await.map_err(db("health"))?;
            Ok(())
        })
        .is_ok()
    }
}

impl DeviceStore for PgStore {
    fn lock_device(&self, device: &str) -> Result<super::StoreLock, StoreError> {
        self.device_locks.lock(self, device)
    }

    fn put_device(&self, device: &DeviceRecord, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write_combined(device, at, &[])
    }

    fn remove_device(&self, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let Some(device) = self.device(id)? else {
            return Ok(false);
        };
        self.tx(async |tx| remove_device_rows(tx, &device, at).await)?;
        Ok(true)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        // Every report reads its device: reads waiting meanwhile share one statement.
        self.reads.submit(id.to_owned(), |ids| {
            let rows = self.read(async |c| {
                let st = c
                    .prepare_cached(
                        "SELECT device_id, record FROM devices WHERE device_id = ANY($1)",
                    )
                    .await
                    .map_err(db("read devices"))?;
                c.query(&st, &[&ids]).await.map_err(db("read devices"))
            });
            let found = rows.map(|rows| {
                rows.iter()
                    .map(|row| {
                        let id: String = row.get(0);
                        let record = decode_column(&format!("devices/{id}"), row, 1).map(Some);
                        (id, record)
                    })
                    .collect()
            });
            answer_each(&ids, found, None)
        })
    }

    fn list_devices(
        &self,
        filter: &DeviceFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DevicePage, StoreError> {
        let (after_org, after_id) = match cursor.and_then(|c| c.split_once('/')) {
            Some((o, d)) => (Some(o.to_owned()), d.to_owned()),
            None => (None, String::new()),
        };
        let status = filter.status.map(|s| tag(&s));
        let platform = filter.platform.map(|p| tag(&p));
        let allowed: Option<Vec<String>> = filter
            .allowed_orgs
            .as_ref()
            .map(|a| a.iter().cloned().collect());
        let rows = self.read(async |c| {
            c.query(
                "SELECT organisation, device_id, record FROM devices d
                 WHERE ($1::text IS NULL OR (organisation, device_id) > ($1, $2))
                   AND ($3::text IS NULL OR organisation = $3)
                   AND ($4::text IS NULL OR status = $4)
                   AND ($5::text IS NULL OR platform = $5)
                   AND ($6::text IS NULL OR EXISTS (
                        SELECT 1 FROM findings f WHERE f.device_id = d.device_id AND f.product = $6))
                   AND ($7::text[] IS NULL OR organisation = ANY($7))
                 ORDER BY organisation, device_id
                 LIMIT $8",
                &[
                    &after_org,
                    &after_id,
                    &filter.organisation,
                    &status,
                    &platform,
                    &filter.product,
                    &allowed,
                    &limit_of(limit),
                ],
            )
            .await
            .map_err(db("list devices"))
        })?;
        let mut devices = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows {
            let (org, id): (String, String) = (row.get(0), row.get(1));
            devices.push(decode(&format!("devices/{id}"), row.get(2))?);
            last = Some(format!("{org}/{id}"));
        }
        let next = if devices.len() == limit { last } else { None };
        Ok(DevicePage { devices, next })
    }

    fn device_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(async |c| {
            let rows = c
                .query("SELECT device_id FROM devices ORDER BY device_id", &[])
                .await
                .map_err(db("list device ids"))?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn stale_candidates(
        &self,
        reported_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(async |c| {
            let rows = c
                .query(
                    "SELECT device_id FROM devices WHERE stale_watch < $1
                     ORDER BY stale_watch, device_id LIMIT $2",
                    &[&reported_before, &limit_of(limit)],
                )
                .await
                .map_err(db("find stale candidates"))?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn history(
        &self,
        device: &str,
        until: Option<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let rows = self.read(async |c| {
            c.query(
                "SELECT record FROM history WHERE device_id = $1 AND ($3::timestamptz IS NULL OR at < $3)
                 ORDER BY position DESC LIMIT $2",
                &[&device, &limit_of(limit), &until],
            )
            .await
            .map_err(db("read history"))
        })?;
        let mut out: Vec<HistoryRecord> = rows
            .into_iter()
            .map(|r| decode(&format!("history/{device}"), r.get(0)))
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    fn org_aggregate(&self, org: &str) -> Result<Option<OrgAggregate>, StoreError> {
        let row = self.read(async |c| {
            c.query_opt(
                "SELECT aggregate FROM org_aggregates WHERE organisation = $1",
                &[&org],
            )
            .await
            .map_err(db("read aggregate"))
        })?;
        row.map(|r| decode(&format!("org_aggregates/{org}"), r.get(0)))
            .transpose()
    }

    fn org_aggregates(&self) -> Result<Vec<(String, OrgAggregate)>, StoreError> {
        let rows = self.read(async |c| {
            c.query(
                "SELECT organisation, aggregate FROM org_aggregates ORDER BY organisation",
                &[],
            )
            .await
            .map_err(db("read aggregates"))
        })?;
        keyed(rows, "org_aggregates")
    }

    fn daily(&self, org: &str, days: usize) -> Result<Vec<(String, OrgAggregate)>, StoreError> {
        let rows = self.read(async |c| {
            c.query(
                "SELECT day, aggregate FROM org_daily WHERE organisation = $1
                 ORDER BY day DESC LIMIT $2",
                &[&org, &limit_of(days)],
            )
            .await
            .map_err(db("read the trend"))
        })?;
        let mut out = rows
            .into_iter()
            .map(|r| {
                let day: time::Date = r.get(0);
                let agg = decode(&format!("org_daily/{org}/{day}"), r.get(1))?;
                Ok((day.to_string(), agg))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.reverse();
        Ok(out)
    }

    fn put_classification(
        &self,
        org: &str,
        name: &str,
        c: &Classification,
    ) -> Result<(), StoreError> {
        self.read(async |db_| upsert_classification(&db_, org, name, c).await)
    }

    fn remove_classification(&self, org: &str, name: &str) -> Result<bool, StoreError> {
        let removed = self.read(async |c| {
            c.execute(
                "DELETE FROM classifications WHERE organisation = $1 AND name = $2",
                &[&org, &name],
            )
            .await
            .map_err(db("remove classification"))
        })?;
        Ok(removed > 0)
    }

    fn classifications(&self, org: &str) -> Result<Vec<(String, Classification)>, StoreError> {
        // Read for every delta report: reads waiting meanwhile share one statement.
        self.classifications.submit(org.to_owned(), |orgs| {
            let rows = self.read(async |c| {
                let st = c
                    .prepare_cached(
                        "SELECT organisation, name, record FROM classifications
                         WHERE organisation = ANY($1) ORDER BY organisation, name",
                    )
                    .await
                    .map_err(db("read classifications"))?;
                c.query(&st, &[&orgs])
                    .await
                    .map_err(db("read classifications"))
            });
            let found = rows.map(|rows| {
                let mut by_org: HashMap<String, Result<Vec<(String, Classification)>, StoreError>> =
                    HashMap::new();
                for row in &rows {
                    let (org, name): (String, String) = (row.get(0), row.get(1));
                    let c = decode_column(&format!("classifications/{org}/{name}"), row, 2);
                    let entry = by_org.entry(org).or_insert_with(|| Ok(Vec::new()));
                    match (entry, c) {
                        (Ok(list), Ok(c)) => list.push((name, c)),
                        (entry, Err(e)) => *entry = Err(e),
                        (Err(_), Ok(_)) => {}
                    }
                }
                by_org
            });
            answer_each(&orgs, found, Vec::new())
        })
    }
}

/// The tables keyed by the SHA-256 of a secret.
const HASHED: [&str; 2] = ["enrolment_tokens", "people"];

impl PgStore {
    /// The record under `hash` in `table` (one of [`HASHED`]).
    fn hashed_one<T: DeserializeOwned + Send>(
        &self,
        table: &'static str,
        hash: &str,
    ) -> Result<Option<T>, StoreError> {
        debug_assert!(HASHED.contains(&table));
        let sql = format!("SELECT record FROM {table} WHERE hash = $1");
        let row = self.read(async |c| c.query_opt(&sql, &[&hash]).await.map_err(db(table)))?;
        row.map(|r| decode(&format!("{table}/{hash}"), r.get(0)))
            .transpose()
    }

    /// Every `(hash, record)` of `table` (one of [`HASHED`]), by hash.
    fn hashed_all<T: DeserializeOwned + Send>(
        &self,
        table: &'static str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        debug_assert!(HASHED.contains(&table));
        let sql = format!("SELECT hash, record FROM {table} ORDER BY hash");
        let rows = self.read(async |c| c.query(&sql, &[]).await.map_err(db(table)))?;
        keyed(rows, table)
    }
}

async fn upsert_token(
    c: &impl GenericClient,
    hash: &str,
    token: &TokenRecord,
) -> Result<(), StoreError> {
    let uses: Option<i64> = token.uses_left.map(i64_of);
    c.execute(
        "INSERT INTO enrolment_tokens (hash, organisation, created_at, expires_at, uses_left, revoked, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (hash) DO UPDATE SET organisation = $2, created_at = $3, expires_at = $4,
             uses_left = $5, revoked = $6, record = $7",
        &[
            &hash,
            &token.organisation,
            &token.created_at,
            &token.expires_at,
            &uses,
            &token.revoked,
            &json(token),
        ],
    )
    .await
    .map_err(db("write enrolment token"))?;
    Ok(())
}

/// A person's row, inserted or replaced.
async fn upsert_person(
    c: &impl GenericClient,
    hash: &str,
    person: &PersonRecord,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO people (hash, name, expires_at, revoked, record) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (hash) DO UPDATE SET name = $2, expires_at = $3, revoked = $4, record = $5",
        &[
            &hash,
            &person.name,
            &person.expires_at,
            &person.revoked,
            &json(person),
        ],
    )
    .await
    .map_err(db("write person"))?;
    Ok(())
}

/// An officer's classification, inserted or replaced.
async fn upsert_classification(
    c: &impl GenericClient,
    org: &str,
    name: &str,
    classification: &Classification,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO classifications (organisation, name, record) VALUES ($1, $2, $3)
         ON CONFLICT (organisation, name) DO UPDATE SET record = $3",
        &[&org, &name, &json(classification)],
    )
    .await
    .map_err(db("write classification"))?;
    Ok(())
}

/// One enterprise's row for one organisation.
async fn insert_federated(
    c: &impl GenericClient,
    enterprise: &str,
    org: &str,
    r: &FederatedRecord,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO federated (enterprise, organisation, generated_at, received_at, devices, aggregate)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &enterprise,
            &org,
            &r.generated_at,
            &r.received_at,
            &i64_of(r.aggregate.devices),
            &json(&r.aggregate),
        ],
    )
    .await
    .map_err(db("write federated row"))?;
    Ok(())
}

/// A device's history event; `kind` is the event's tag, for queries.
async fn insert_history(
    c: &impl GenericClient,
    device: &str,
    h: &HistoryRecord,
) -> Result<(), StoreError> {
    let record = json(h);
    let kind = record
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    c.execute(
        "INSERT INTO history (device_id, at, kind, record) VALUES ($1, $2, $3, $4)",
        &[&device, &h.at, &kind, &record],
    )
    .await
    .map_err(db("append history"))?;
    Ok(())
}

/// An audit entry at `position`, or at the next one; returns its position. `bytes` is what
/// sled counts for the retention budget: an 8-byte key and the JSON.
async fn insert_audit(
    c: &impl GenericClient,
    position: Option<u64>,
    e: &AuditRecord,
) -> Result<u64, StoreError> {
    let record = json(e);
    let bytes = i32::try_from(8 + record.to_string().len()).unwrap_or(i32::MAX);
    let row = c
        .query_one(
            "INSERT INTO audit (position, at, actor, action, organisation, bytes, record)
             VALUES (COALESCE($1, nextval(pg_get_serial_sequence('audit', 'position'))),
                     $2, $3, $4, $5, $6, $7)
             RETURNING position",
            &[
                &position.map(i64_of),
                &e.at,
                &e.actor,
                &e.action,
                &e.organisation,
                &bytes,
                &record,
            ],
        )
        .await
        .map_err(db("append audit"))?;
    let position: i64 = row.get(0);
    Ok(u64::try_from(position).unwrap_or_default())
}

/// Rows of `(key text, record jsonb)` decoded as `(key, T)`; `what` names them in errors.
fn keyed<T: DeserializeOwned>(
    rows: Vec<tokio_postgres::Row>,
    what: &str,
) -> Result<Vec<(String, T)>, StoreError> {
    rows.into_iter()
        .map(|r| {
            let key: String = r.get(0);
            let v = decode(&format!("{what}/{key}"), r.get(1))?;
            Ok((key, v))
        })
        .collect()
}

impl TokenStore for PgStore {
    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<(), StoreError> {
        self.read(async |c| upsert_token(&c, hash, token).await)
    }

    fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.hashed_one("enrolment_tokens", hash)
    }

    fn tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        self.hashed_all("enrolment_tokens")
    }

    fn put_person(&self, hash: &str, person: &PersonRecord) -> Result<(), StoreError> {
        self.read(async |c| upsert_person(&c, hash, person).await)
    }

    fn person(&self, hash: &str) -> Result<Option<PersonRecord>, StoreError> {
        self.hashed_one("people", hash)
    }

    fn people(&self) -> Result<Vec<(String, PersonRecord)>, StoreError> {
        self.hashed_all("people")
    }
}

/// Audit rows (`position, record`) as entries.
fn audit_entries(rows: Vec<tokio_postgres::Row>) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
    rows.into_iter()
        .map(|r| {
            let position: i64 = r.get(0);
            let e = decode(&format!("audit/{position}"), r.get(1))?;
            Ok((u64::try_from(position).unwrap_or_default(), e))
        })
        .collect()
}

impl AuditStore for PgStore {
    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError> {
        self.read(async |c| insert_audit(&c, None, entry).await)
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let rows = self.read(async |c| {
            c.query(
                "SELECT position, record FROM audit WHERE position > $1 ORDER BY position LIMIT $2",
                &[&i64_of(after), &limit_of(limit)],
            )
            .await
            .map_err(db("read audit"))
        })?;
        audit_entries(rows)
    }

    fn audit_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let rows = self.read(async |c| {
            c.query(
                "SELECT position, record FROM audit WHERE position < $1 ORDER BY position DESC LIMIT $2",
                &[&i64_of(before), &limit_of(limit)],
            )
            .await
            .map_err(db("read audit"))
        })?;
        audit_entries(rows)
    }

    fn prune_audit(&self, before: OffsetDateTime, max_bytes: u64) -> Result<u64, StoreError> {
        self.tx(async |tx| {
            // Newest first: the first entry too old, or past the byte budget, is the newest
            // to go; everything before it goes too.
            let cut: Option<i64> = tx
                .query_opt(
                    "SELECT position FROM (
                         SELECT position, at,
                                sum(bytes) OVER (ORDER BY position DESC) AS total
                         FROM audit) newest_first
                     WHERE at < $1 OR total > $2
                     ORDER BY position DESC LIMIT 1",
                    &[&before, &i64_of(max_bytes)],
                )
                .await
                .map_err(db("find the audit cut"))?
                .map(|r| r.get(0));
            let Some(cut) = cut else {
                return Ok(0);
            };
            let removed = tx
                .execute("DELETE FROM audit WHERE position <= $1", &[&cut])
                .await
                .map_err(db("prune audit"))?;
            Ok(removed)
        })
    }
}

impl FederationStore for PgStore {
    fn replace_federated(
        &self,
        enterprise: &str,
        rows: &[(String, FederatedRecord)],
    ) -> Result<(), StoreError> {
        self.tx(async |tx| {
            // Serialises pushes of one enterprise across every collector on the database.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('federated'), hashtext($1))",
                &[&enterprise],
            )
            .await
            .map_err(db("lock the enterprise's rows"))?;
            tx.execute(
                "DELETE FROM federated WHERE enterprise = $1",
                &[&enterprise],
            )
            .await
            .map_err(db("replace federated rows"))?;
            for (org, r) in rows {
                insert_federated(tx, enterprise, org, r).await?;
            }
            Ok(())
        })
    }

    fn federated(&self) -> Result<Vec<(String, String, FederatedRecord)>, StoreError> {
        let rows = self.read(async |c| {
            c.query(
                "SELECT enterprise, organisation, generated_at, received_at, aggregate
                 FROM federated ORDER BY enterprise, organisation",
                &[],
            )
            .await
            .map_err(db("read federated rows"))
        })?;
        rows.into_iter()
            .map(|r| {
                let (e, o): (String, String) = (r.get(0), r.get(1));
                let aggregate = decode(&format!("federated/{e}/{o}"), r.get(4))?;
                Ok((
                    e,
                    o,
                    FederatedRecord {
                        aggregate,
                        generated_at: r.get(2),
                        received_at: r.get(3),
                    },
                ))
            })
            .collect()
    }
}

/// The columns [`rules_row`] decodes.
const RULES_COLUMNS: &str = "kind, organisation, version, text, sha256, author, at, note";

fn rules_row(r: &tokio_postgres::Row) -> Result<RulesVersion, StoreError> {
    let kind: String = r.get(0);
    let organisation: String = r.get(1);
    let version: i64 = r.get(2);
    Ok(RulesVersion {
        kind: RulesKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
            key: format!("rules_versions/{kind}/{organisation}/{version}"),
            message: format!("unknown kind '{kind}'"),
        })?,
        organisation: Some(organisation).filter(|o| !o.is_empty()),
        version: u64::try_from(version).unwrap_or_default(),
        text: r.get(3),
        sha256: r.get(4),
        author: r.get(5),
        at: r.get(6),
        note: r.get(7),
    })
}

async fn insert_rules(tx: &Transaction<'_>, v: &RulesVersion) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO rules_versions (kind, organisation, version, text, sha256, author, at, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &v.kind.as_str(),
            &v.organisation.as_deref().unwrap_or_default(),
            &i64_of(v.version),
            &v.text,
            &v.sha256,
            &v.author,
            &v.at,
            &v.note,
        ],
    )
    .await
    .map_err(db("store rules version"))?;
    Ok(())
}

impl RulesStore for PgStore {
    fn append_rules(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        text: &str,
        author: &str,
        note: &str,
        at: OffsetDateTime,
    ) -> Result<RulesVersion, StoreError> {
        let org = organisation.unwrap_or_default();
        self.tx(async |tx| {
            // Two collectors applying the same file at once get two versions, in turn.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('rules'), hashtext($1 || '/' || $2))",
                &[&kind.as_str(), &org],
            )
            .await
            .map_err(db("lock the rules' versions"))?;
            let last: i64 = tx
                .query_one(
                    "SELECT COALESCE(max(version), 0) FROM rules_versions WHERE kind = $1 AND organisation = $2",
                    &[&kind.as_str(), &org],
                )
                .await
                .map_err(db("read the newest rules version"))?
                .get(0);
            let stored = RulesVersion {
                kind,
                organisation: organisation.map(str::to_owned),
                version: u64::try_from(last).unwrap_or_default() + 1,
                text: text.to_owned(),
                sha256: crate::secrets::hash(text),
                author: author.to_owned(),
                at,
                note: note.to_owned(),
            };
            insert_rules(tx, &stored).await?;
            // Delivered to every listening collector when (and only if) this commits.
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&super::Channel::Rules.name(), &kind.as_str()],
            )
                .await
                .map_err(db("announce the rules change"))?;
            Ok(stored)
        })
    }

    fn rules_history(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RulesVersion>, StoreError> {
        let org = organisation.unwrap_or_default().to_owned();
        let rows = self.read(async |c| {
            c.query(
                &format!(
                    "SELECT {RULES_COLUMNS} FROM rules_versions WHERE kind = $1 AND organisation = $2
                     ORDER BY version DESC LIMIT $3"
                ),
                &[&kind.as_str(), &org, &limit_of(limit)],
            )
            .await
            .map_err(db("read rules history"))
        })?;
        rows.iter().map(rules_row).collect()
    }

    fn rules_version(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        version: Option<u64>,
    ) -> Result<Option<RulesVersion>, StoreError> {
        let org = organisation.unwrap_or_default().to_owned();
        let version = version.map(i64_of);
        let row = self.read(async |c| {
            c.query_opt(
                &format!(
                    "SELECT {RULES_COLUMNS} FROM rules_versions WHERE kind = $1 AND organisation = $2
                     AND ($3::bigint IS NULL OR version = $3) ORDER BY version DESC LIMIT 1"
                ),
                &[&kind.as_str(), &org, &version],
            )
            .await
            .map_err(db("read a rules version"))
        })?;
        row.as_ref().map(rules_row).transpose()
    }

    fn current_rules(&self) -> Result<Vec<RulesVersion>, StoreError> {
        let rows = self.read(async |c| {
            c.query(
                &format!(
                    "SELECT DISTINCT ON (kind, organisation) {RULES_COLUMNS} FROM rules_versions
                     ORDER BY kind, organisation, version DESC"
                ),
                &[],
            )
            .await
            .map_err(db("read the rules in force"))
        })?;
        rows.iter().map(rules_row).collect()
    }
}

impl SessionStore for PgStore {
    fn put_session(&self, hash: &str, session: &SessionRecord) -> Result<(), StoreError> {
        self.read(async |c| {
            c.execute(
                "INSERT INTO sessions (hash, person, last_seen, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hash) DO UPDATE SET person = $2, last_seen = $3, record = $4",
                &[&hash, &session.person, &session.last_seen, &json(session)],
            )
            .await
            .map_err(db("store session"))?;
            Ok(())
        })
    }

    fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = self.read(async |c| {
            c.query_opt("SELECT record FROM sessions WHERE hash = $1", &[&hash])
                .await
                .map_err(db("read session"))
        })?;
        row.map(|r| decode(&format!("sessions/{hash}"), r.get(0)))
            .transpose()
    }

    fn remove_session(&self, hash: &str) -> Result<bool, StoreError> {
        self.read(async |c| {
            let n = c
                .execute("DELETE FROM sessions WHERE hash = $1", &[&hash])
                .await
                .map_err(db("remove session"))?;
            Ok(n > 0)
        })
    }

    fn prune_sessions(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.read(async |c| {
            c.execute("DELETE FROM sessions WHERE last_seen < $1", &[&before])
                .await
                .map_err(db("prune sessions"))
        })
    }
}

/// Inserts `entries` into the outbox in `tx`.
async fn insert_alerts(tx: &Transaction<'_>, entries: &[OutboxEntry]) -> Result<(), StoreError> {
    for e in entries {
        exec(
            tx,
            "INSERT INTO alert_outbox (sink, event_id, enqueued_at, payload) VALUES ($1, $2, $3, $4)",
            &[&e.sink, &e.event_id, &e.enqueued_at, &e.payload],
            "enqueue alert",
        )
        .await?;
    }
    Ok(())
}

impl AlertStore for PgStore {
    fn enqueue_alerts(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.tx(async |tx| insert_alerts(tx, entries).await)
    }

    fn enqueue_alerts_once(
        &self,
        mark: &str,
        value: &str,
        entries: &[OutboxEntry],
    ) -> Result<bool, StoreError> {
        self.tx(async |tx| {
            // The upsert locks the mark's row: of two collectors raising the same alert, the
            // second waits, then finds the value set and appends nothing.
            let changed = exec(
                tx,
                "INSERT INTO alert_marks (mark, value) VALUES ($1, $2)
                 ON CONFLICT (mark) DO UPDATE SET value = $2 WHERE alert_marks.value <> $2",
                &[&mark, &value],
                "set alert mark",
            )
            .await?;
            if changed == 0 {
                return Ok(false);
            }
            insert_alerts(tx, entries).await?;
            Ok(true)
        })
    }

    fn peek_alerts(&self, sink: &str, limit: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        let limit = limit_of(limit);
        self.read(async move |c| {
            let rows = c
                .query(
                    "SELECT position, event_id, enqueued_at, payload FROM alert_outbox
                     WHERE sink = $1 ORDER BY position LIMIT $2",
                    &[&sink, &limit],
                )
                .await
                .map_err(db("read alerts"))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let position: i64 = r.get(0);
                    (
                        u64::try_from(position).unwrap_or_default(),
                        OutboxEntry {
                            sink: sink.to_owned(),
                            event_id: r.get(1),
                            enqueued_at: r.get(2),
                            payload: r.get(3),
                        },
                    )
                })
                .collect())
        })
    }

    fn remove_alert(&self, sink: &str, position: u64) -> Result<(), StoreError> {
        let position = i64_of(position);
        self.read(async move |c| {
            c.execute(
                "DELETE FROM alert_outbox WHERE sink = $1 AND position = $2",
                &[&sink, &position],
            )
            .await
            .map_err(db("remove alert"))?;
            Ok(())
        })
    }

    fn alert_depth(&self, sink: &str) -> Result<u64, StoreError> {
        self.read(async move |c| {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM alert_outbox WHERE sink = $1",
                    &[&sink],
                )
                .await
                .map_err(db("count alerts"))?
                .get(0);
            Ok(u64::try_from(n).unwrap_or_default())
        })
    }
}

impl Store for PgStore {
    fn put_device_alerting(
        &self,
        device: &DeviceRecord,
        at: OffsetDateTime,
        alerts: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        self.write_combined(device, at, alerts)
    }

    fn notify(&self, channel: super::Channel, payload: &str) -> Result<(), StoreError> {
        if payload.len() > super::MAX_NOTICE_BYTES {
            return Err(StoreError::Backend(format!(
                "notification of {} bytes on {}: more than {}",
                payload.len(),
                channel.name(),
                super::MAX_NOTICE_BYTES
            )));
        }
        self.read(async |c| {
            c.execute("SELECT pg_notify($1, $2)", &[&channel.name(), &payload])
                .await
                .map_err(db("notify the other collectors"))?;
            Ok(())
        })
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<super::Notice>> {
        Some(self.notices.subscribe())
    }

    fn size_bytes(&self) -> Option<u64> {
        self.read(async |c| {
            c.query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(db("database size"))
        })
        .ok()
        .and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok())
    }

    fn heartbeat(&self, node: &str) -> Result<(), StoreError> {
        self.read(async |c| {
            c.execute(
                "INSERT INTO cluster_nodes (node, seen) VALUES ($1, now())
                 ON CONFLICT (node) DO UPDATE SET seen = now()",
                &[&node],
            )
            .await
            .map_err(db("heartbeat"))?;
            Ok(())
        })
    }

    fn claim_stream(
        &self,
        device: &str,
        node: &str,
        conn: u64,
        window: std::time::Duration,
    ) -> Result<Option<super::StreamClaim>, StoreError> {
        let window_s = window.as_secs_f64();
        let gone_s = super::NODE_GONE_AFTER.as_secs_f64();
        self.tx(async |tx| {
            tx.execute(
                "INSERT INTO live_streams (device_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&device],
            )
            .await
            .map_err(db("record the device's stream"))?;
            // The holder, whether it counts (a live collector), and the takeovers still in
            // the window, read under the row's lock.
            let row = tx
                .query_one(
                    "SELECT s.node,
                            s.node IS NOT NULL AND (s.node = $2 OR EXISTS (
                                SELECT 1 FROM cluster_nodes n WHERE n.node = s.node
                                AND n.seen > now() - make_interval(secs => $3))),
                            ARRAY(SELECT t FROM unnest(s.takeovers) t
                                  WHERE t > now() - make_interval(secs => $4))
                     FROM live_streams s WHERE s.device_id = $1 FOR UPDATE",
                    &[&device, &node, &gone_s, &window_s],
                )
                .await
                .map_err(db("read the device's stream"))?;
            let holder: Option<String> = row.get(0);
            let took_over: bool = row.get(1);
            let recent: Vec<OffsetDateTime> = row.get(2);
            let takeovers = recent.len() + usize::from(took_over);
            tx.execute(
                "UPDATE live_streams SET node = $2, conn = $3, since = now(),
                     takeovers = CASE WHEN $4 THEN $5::timestamptz[] || now()
                                      ELSE $5::timestamptz[] END
                 WHERE device_id = $1",
                &[&device, &node, &i64_of(conn), &took_over, &recent],
            )
            .await
            .map_err(db("claim the device's stream"))?;
            let took_over_from = holder.filter(|h| took_over && h != node);
            if let Some(from) = &took_over_from {
                let moved = super::StreamMoved {
                    device: device.to_owned(),
                    node: node.to_owned(),
                };
                // Delivered to the previous holder when (and only if) this commits.
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&super::Channel::Streams.name(), &json(&moved).to_string()],
                )
                .await
                .map_err(db("tell the previous holder"))?;
                tracing::info!(device, from = %from, "stream taken over from another collector");
            }
            Ok(Some(super::StreamClaim {
                took_over_from,
                takeovers,
            }))
        })
    }

    fn release_stream(&self, device: &str, node: &str, conn: u64) -> Result<(), StoreError> {
        self.read(async |c| {
            c.execute(
                "UPDATE live_streams SET node = NULL, conn = NULL
                 WHERE device_id = $1 AND node = $2 AND conn = $3",
                &[&device, &node, &i64_of(conn)],
            )
            .await
            .map_err(db("release the device's stream"))?;
            Ok(())
        })
    }

    fn try_exclusive(&self, task: &str) -> Result<Option<super::StoreLock>, StoreError> {
        self.device_locks.try_task(self, task)
    }

    fn enroll(
        &self,
        device: &DeviceRecord,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.tx(async |tx| {
            // The token row is locked: two enrolments racing for its last use, on any
            // collectors, cannot both win.
            let token: TokenRecord = match tx
                .query_opt(
                    "SELECT record FROM enrolment_tokens WHERE hash = $1 FOR UPDATE",
                    &[&token_hash],
                )
                .await
                .map_err(db("lock enrolment token"))?
            {
                Some(row) => decode(&format!("enrolment_tokens/{token_hash}"), row.get(0))?,
                None => return Err(StoreError::TokenRefused("unknown token".into())),
            };
            let consumed = token
                .consume_for(&device.organisation, now)
                .map_err(StoreError::TokenRefused)?;
            upsert_token(tx, token_hash, &consumed).await?;
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM devices WHERE device_id = $1",
                    &[&device.device_id],
                )
                .await
                .map_err(db("check device"))?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!(
                    "device {} exists",
                    device.device_id
                )));
            }
            write_devices(
                tx,
                &[DeviceWrite {
                    device,
                    at: now,
                    alerts: &[],
                }],
            )
            .await
        })
    }
}

/// The tables [`PgStore::counts`] counts.
const TABLES: [&str; 11] = [
    "devices",
    "findings",
    "org_aggregates",
    "org_daily",
    "history",
    "classifications",
    "enrolment_tokens",
    "people",
    "audit",
    "federated",
    "rules_versions",
];

impl PgStore {
    /// Rows per table (`migrate` compares them with what it read).
    pub fn counts(&self) -> Result<super::migrate::Counts, StoreError> {
        self.read(async |c| {
            let mut out = super::migrate::Counts::new();
            for t in TABLES {
                // The names are the constants above, not input.
                let row = c
                    .query_one(&format!("SELECT count(*) FROM {t}"), &[])
                    .await
                    .map_err(db("count rows"))?;
                let n: i64 = row.get(0);
                out.insert(t, u64::try_from(n).unwrap_or_default());
            }
            Ok(out)
        })
    }

    /// Writes `rows` as stored (nothing recomputed) in one transaction (`migrate`).
    pub fn import(&self, rows: &[super::migrate::Row]) -> Result<(), StoreError> {
        use super::migrate::Row;
        if rows.is_empty() {
            return Ok(());
        }
        self.tx(async |tx| {
            for row in rows {
                match row {
                    Row::Device(d) => upsert_device_rows(tx, &[d]).await?,
                    Row::Aggregate(org, agg) => {
                        tx.execute(
                            "INSERT INTO org_aggregates (organisation, devices, aggregate) VALUES ($1, $2, $3)",
                            &[org, &i64_of(agg.devices), &json(agg)],
                        )
                        .await
                        .map_err(db("import aggregate"))?;
                    }
                    Row::Daily(org, day, agg) => {
                        tx.execute(
                            "INSERT INTO org_daily (organisation, day, devices, aggregate) VALUES ($1, $2, $3, $4)",
                            &[org, day, &i64_of(agg.devices), &json(agg)],
                        )
                        .await
                        .map_err(db("import trend point"))?;
                    }
                    Row::History(device, h) => insert_history(tx, device, h).await?,
                    Row::Classification(org, name, c) => {
                        upsert_classification(tx, org, name, c).await?
                    }
                    Row::Token(hash, t) => upsert_token(tx, hash, t).await?,
                    Row::Person(hash, p) => upsert_person(tx, hash, p).await?,
                    Row::Audit(position, e) => {
                        insert_audit(tx, Some(*position), e).await?;
                    }
                    Row::Federated(e, o, r) => insert_federated(tx, e, o, r).await?,
                    Row::Rules(v) => insert_rules(tx, v).await?,
                }
            }
            Ok(())
        })
    }

    /// After an import with explicit audit positions: new entries continue after the last.
    pub fn finish_import(&self) -> Result<(), StoreError> {
        self.read(async |c| {
            c.execute(
                "SELECT setval(pg_get_serial_sequence('audit', 'position'),
                               GREATEST((SELECT max(position) FROM audit), 1),
                               (SELECT max(position) FROM audit) IS NOT NULL)",
                &[],
            )
            .await
            .map_err(db("continue audit positions"))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_caller_of_a_combined_read_gets_its_own_answer() {
        let keys: Vec<String> = ["a", "b", "a", "c"].iter().map(|k| k.to_string()).collect();
        let found = HashMap::from([
            ("a".to_owned(), Ok(1)),
            (
                "c".to_owned(),
                Err(StoreError::Corrupt {
                    key: "c".into(),
                    message: "bad".into(),
                }),
            ),
        ]);
        let answers = answer_each(&keys, Ok(found), 0);
        assert_eq!(answers[0].as_ref().ok(), Some(&1), "a, asked first");
        assert_eq!(answers[1].as_ref().ok(), Some(&0), "b has no rows");
        assert_eq!(answers[2].as_ref().ok(), Some(&1), "a, asked again");
        assert!(
            matches!(answers[3], Err(StoreError::Corrupt { .. })),
            "only c's record is corrupt"
        );
        let failed = answer_each::<u8>(&keys, Err(StoreError::Unavailable("down".into())), 0);
        assert!(
            failed
                .iter()
                .all(|a| matches!(a, Err(StoreError::Unavailable(_))))
        );
    }
}
