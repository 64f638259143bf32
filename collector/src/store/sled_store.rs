//! The embedded store on sled.
//!
//! Trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `devices` | device id | [`DeviceRecord`] (JSON) |
//! | `by_org` | `<org>/<device id>` | empty: the listing order and the per-organisation index |
//! | `orgs` | organisation | [`OrgAggregate`] (JSON) |
//! | `tokens` | SHA-256 hex of an enrolment token | [`TokenRecord`] (JSON) |
//! | `people` | SHA-256 hex of a bearer token | [`PersonRecord`] (JSON) |
//! | `audit` | position, u64 big-endian (from sled's monotonic id generator) | [`AuditRecord`] (JSON) |
//! | `history` | `<device id>/<position u64 BE>` | [`HistoryRecord`] (JSON) |
//! | `daily` | `<org>/<YYYY-MM-DD>` | the organisation's [`OrgAggregate`] as last written that day |
//! | `by_last_report` | `<last report, i64 BE, sign-flipped>/<device id>` | empty: devices that may go stale |
//! | `classifications` | `<org>/<candidate name>` | [`Classification`] (JSON) |
//! | `federated` | `<enterprise>/<org>` | [`FederatedRecord`] (JSON), on a ministry collector |
//! | `sessions` | SHA-256 hex of a console session's or login link's secret | [`SessionRecord`] (JSON) |
//! | `rules` | `<kind>/<org, empty for none>/<version u64 BE>` | [`RulesVersion`] (JSON) |
//! | `alerts` | `<sink>/<position u64 BE>` (sled's monotonic ids) | [`OutboxEntry`] (JSON): the alert outbox |
//! | `alert_marks` | a mark ([`AlertStore::enqueue_alerts_once`]) | its value |
//!
//! Device writes run as one sled transaction over `devices`, `by_org`, `orgs`, `history`,
//! `daily`, `by_last_report` and `alerts` (plus `tokens` at enrolment): the old record's contribution is
//! subtracted from the aggregate and the new one's added, the day's end state recorded, the
//! history events between the two records appended, and the indexes moved, atomically. Organisation ids cannot contain `/`, so `<org>/` is an
//! exact prefix; enterprise ids cannot either, so `<enterprise>/` is one too.
//!
//! `federated` is written apart from device data: a push replaces one enterprise's rows with a
//! single atomic batch (removals of organisations it no longer reports, plus the new rows),
//! under a lock that serialises pushes so two concurrent pushes of one enterprise cannot
//! interleave their read and their batch.
//!
//! Under load, concurrent device writes are combined into one transaction ([`Combiner`]) and
//! concurrent flushes into one flush ([`GroupCommit`]). This matters more with sled than with
//! most stores: a transaction runs under sled's global write lock, and a flush holds the read
//! side of that lock while it waits for the disk, so one transaction and one flush per report
//! make every report take its turn.

use super::combining::Combiner;
use super::group_commit::GroupCommit;
use super::records::{
    AuditRecord, Classification, DeviceRecord, FederatedRecord, HistoryKind, HistoryRecord,
    OrgAggregate, OutboxEntry, PersonRecord, RulesKind, RulesVersion, SessionRecord, TokenRecord,
};
use super::{
    AlertStore, AuditStore, DeviceFilter, DevicePage, DeviceStore, Durable, FederationStore,
    RulesStore, SessionStore, Store, StoreError, TokenStore,
};
use commscan_core::verdict::Status;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::path::Path;
use time::OffsetDateTime;

/// The sled-backed store.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    devices: sled::Tree,
    by_org: sled::Tree,
    orgs: sled::Tree,
    tokens: sled::Tree,
    people: sled::Tree,
    audit: sled::Tree,
    history: sled::Tree,
    daily: sled::Tree,
    by_last_report: sled::Tree,
    classifications: sled::Tree,
    federated: sled::Tree,
    federated_writes: std::sync::Arc<std::sync::Mutex<()>>,
    rules: sled::Tree,
    sessions: sled::Tree,
    alerts: sled::Tree,
    alert_marks: sled::Tree,
    /// Serialises rules appends (read the newest version, write the next).
    rules_writes: std::sync::Arc<std::sync::Mutex<()>>,
    /// Serialises audit appends (read the last position, write the next).
    audit_writes: std::sync::Arc<std::sync::Mutex<()>>,
    /// Concurrent `flush` calls share flushes (see [`GroupCommit`]).
    group_commit: std::sync::Arc<GroupCommit>,
    /// Concurrent device writes share transactions (see [`Combiner`]).
    device_writes: std::sync::Arc<DeviceWrites>,
    /// Added to every id sled generates (audit positions, history keys). sled's generator is
    /// monotonic in one database, but a restored backup is a new database whose generator
    /// starts again at 0: the copy records, under [`ID_FLOOR_KEY`] of the `meta` tree, an id
    /// above every one it holds, so that new ids never reuse (and overwrite) a restored one.
    id_floor: u64,
    /// Store-wide marks: the id floor, the last audit position.
    meta: sled::Tree,
}

/// The key of the id floor in the `meta` tree (big-endian u64).
const ID_FLOOR_KEY: &[u8] = b"id_floor";
/// `meta` key of the highest audit position handed out: positions never go back, even when
/// retention empties the audit tree.
const AUDIT_LAST_KEY: &[u8] = b"audit_last";

/// The trees whose keys end in a generated id (big-endian u64).
const GENERATED_TREES: [&str; 3] = ["audit", "history", "alerts"];

/// The generated id a key ends with (0 if it is shorter than one).
fn trailing_id(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|start| <[u8; 8]>::try_from(&key[start..]).ok())
        .map_or(0, u64::from_be_bytes)
}

/// One above the largest generated id in `tree`.
fn max_trailing_id(tree: &sled::Tree) -> Result<u64, StoreError> {
    let mut max = 0;
    for k in tree.iter().keys() {
        max = max.max(trailing_id(&k.map_err(backend)?).saturating_add(1));
    }
    Ok(max)
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupCounts {
    /// Trees copied.
    pub trees: usize,
    /// Entries copied, all trees together.
    pub entries: u64,
}

/// Device writes waiting to be combined, and their results.
type DeviceWrites =
    Combiner<(DeviceRecord, OffsetDateTime, Vec<OutboxEntry>), Result<(), StoreError>>;

/// A sled error as a store error: an I/O error (a full disk, a read-only or failing device)
/// is [`StoreError::Unavailable`]: sled keeps refusing every write after one until it is
/// reopened (its "global error" is only reset by opening), which
/// [`super::recovering::Recovering`] does.
fn backend(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::Unavailable(format!("disk: {io}")),
        other => StoreError::Backend(other.to_string()),
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records always serialise")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}

/// Decodes one `(key, value)` of a scan: the key after its first `prefix_len` bytes, as text,
/// and the JSON value.
fn entry<T: DeserializeOwned>(
    prefix_len: usize,
    r: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(String, T), StoreError> {
    let (k, v) = r.map_err(backend)?;
    let name = String::from_utf8_lossy(k.get(prefix_len..).unwrap_or_default()).into_owned();
    Ok((name, decode(&k, &v)?))
}

/// The key prefix of every version of (`kind`, `organisation`).
fn rules_prefix(kind: RulesKind, organisation: Option<&str>) -> Vec<u8> {
    format!("{kind}/{}/", organisation.unwrap_or_default()).into_bytes()
}

fn org_key(device: &DeviceRecord) -> Vec<u8> {
    format!("{}/{}", device.organisation, device.device_id).into_bytes()
}

/// The trees a device write touches, inside one transaction.
struct DeviceTx<'a> {
    /// Added to generated ids (see [`SledStore::id_floor`]).
    id_floor: u64,
    devices: &'a TransactionalTree,
    by_org: &'a TransactionalTree,
    orgs: &'a TransactionalTree,
    history: &'a TransactionalTree,
    daily: &'a TransactionalTree,
    by_last_report: &'a TransactionalTree,
    alerts: &'a TransactionalTree,
}

/// The key prefix of `sink`'s queue in `alerts`.
fn alert_prefix(sink: &str) -> Vec<u8> {
    format!("{sink}/").into_bytes()
}

fn alert_key(sink: &str, position: u64) -> Vec<u8> {
    let mut k = alert_prefix(sink);
    k.extend_from_slice(&position.to_be_bytes());
    k
}

/// Appends `entries` to their queues inside a transaction (positions above `id_floor`, as
/// every generated id, so a restored copy never reuses one).
fn enqueue_tx(alerts: &TransactionalTree, entries: &[OutboxEntry], id_floor: u64) -> TxResult<()> {
    for e in entries {
        let position = alerts.generate_id()? + id_floor;
        alerts.insert(alert_key(&e.sink, position), encode(e))?;
    }
    Ok(())
}

fn report_key(device: &DeviceRecord) -> Option<Vec<u8>> {
    // Stale devices leave the index: the sweeper only visits devices that may become stale.
    let at = device.last_report?;
    if device.verdict.status == Status::Stale {
        return None;
    }
    let mut k = at.unix_timestamp().to_be_bytes().to_vec();
    k[0] ^= 0x80; // order negative timestamps before positive ones
    k.push(b'/');
    k.extend_from_slice(device.device_id.as_bytes());
    Some(k)
}

fn day_key(org: &str, at: OffsetDateTime) -> Vec<u8> {
    format!("{org}/{}", at.date()).into_bytes()
}

impl DeviceTx<'_> {
    /// Writes `device` (or removes it, with `remove`), moving its contribution in the
    /// organisation aggregate, recording the day's end state, maintaining the indexes and
    /// appending the history events that lead from the stored record to the new one.
    fn write(&self, device: &DeviceRecord, at: OffsetDateTime, remove: bool) -> TxResult<()> {
        let key = device.device_id.as_bytes();
        let old: Option<DeviceRecord> = match self.devices.get(key)? {
            Some(bytes) => Some(decode(key, &bytes).map_err(ConflictableTransactionError::Abort)?),
            None => None,
        };
        let touch = |org: &str, f: &dyn Fn(&mut OrgAggregate)| -> TxResult<()> {
            let mut agg: OrgAggregate = match self.orgs.get(org.as_bytes())? {
                Some(b) => {
                    decode(org.as_bytes(), &b).map_err(ConflictableTransactionError::Abort)?
                }
                None => OrgAggregate::default(),
            };
            f(&mut agg);
            let bytes = encode(&agg);
            self.daily.insert(day_key(org, at), bytes.clone())?;
            self.orgs.insert(org.as_bytes(), bytes)?;
            Ok(())
        };
        if let Some(old) = &old {
            let c = old.contribution();
            touch(&old.organisation, &|a| a.apply(&c, false))?;
            self.by_org.remove(org_key(old))?;
            if let Some(k) = report_key(old) {
                self.by_last_report.remove(k)?;
            }
        }
        if remove {
            self.devices.remove(key)?;
            return Ok(());
        }
        let c = device.contribution();
        touch(&device.organisation, &|a| a.apply(&c, true))?;
        self.by_org.insert(org_key(device), &[])?;
        if let Some(k) = report_key(device) {
            self.by_last_report.insert(k, &[])?;
        }
        for kind in HistoryKind::between(old.as_ref(), device) {
            let mut hk = device.device_id.as_bytes().to_vec();
            hk.push(b'/');
            hk.extend_from_slice(&(self.history.generate_id()? + self.id_floor).to_be_bytes());
            self.history
                .insert(hk, encode(&HistoryRecord { at, kind }))?;
        }
        self.devices.insert(key, encode(device))?;
        Ok(())
    }
}

fn device_tx(t: &[TransactionalTree], id_floor: u64) -> DeviceTx<'_> {
    DeviceTx {
        id_floor,
        devices: &t[0],
        by_org: &t[1],
        orgs: &t[2],
        history: &t[3],
        daily: &t[4],
        by_last_report: &t[5],
        alerts: &t[6],
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        crate::layout::private_dir(dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let db = sled::Config::new().path(dir).open().map_err(|e| match e {
            sled::Error::Io(io) => {
                StoreError::Unavailable(format!("{}: disk: {io}", dir.display()))
            }
            e => StoreError::Backend(format!("{}: {e}", dir.display())),
        })?;
        // sled creates its files with the process umask; only the collector reads them.
        crate::layout::private_files(dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let tree = |n: &str| db.open_tree(n).map_err(backend);
        let meta = tree("meta")?;
        let id_floor = match meta.get(ID_FLOOR_KEY).map_err(backend)? {
            None => 0,
            Some(b) => match <[u8; 8]>::try_from(b.as_ref()) {
                Ok(b) => u64::from_be_bytes(b),
                Err(_) => {
                    // Not a reason to refuse to start: the floor can be found again.
                    let floor = GENERATED_TREES
                        .iter()
                        .map(|t| max_trailing_id(&tree(t)?))
                        .collect::<Result<Vec<u64>, StoreError>>()?
                        .into_iter()
                        .max()
                        .unwrap_or(0);
                    tracing::warn!(
                        len = b.len(),
                        floor,
                        "meta/id_floor was corrupt; recomputed from the stored ids"
                    );
                    meta.insert(ID_FLOOR_KEY, &floor.to_be_bytes())
                        .map_err(backend)?;
                    floor
                }
            },
        };
        Ok(SledStore {
            id_floor,
            meta: meta.clone(),
            devices: tree("devices")?,
            by_org: tree("by_org")?,
            orgs: tree("orgs")?,
            tokens: tree("tokens")?,
            people: tree("people")?,
            audit: tree("audit")?,
            history: tree("history")?,
            daily: tree("daily")?,
            by_last_report: tree("by_last_report")?,
            classifications: tree("classifications")?,
            federated: tree("federated")?,
            federated_writes: Default::default(),
            rules: tree("rules")?,
            sessions: tree("sessions")?,
            alerts: tree("alerts")?,
            alert_marks: tree("alert_marks")?,
            rules_writes: Default::default(),
            audit_writes: Default::default(),
            group_commit: Default::default(),
            device_writes: Default::default(),
            db,
        })
    }

    fn device_trees(&self) -> [&sled::Tree; 7] {
        [
            &self.devices,
            &self.by_org,
            &self.orgs,
            &self.history,
            &self.daily,
            &self.by_last_report,
            &self.alerts,
        ]
    }

    /// Writes devices (and their alerts) in order in one transaction; one result per device.
    /// If the batch fails (a stored record cannot be decoded), each is retried alone so it
    /// fails only itself.
    fn put_devices(
        &self,
        batch: &[(DeviceRecord, OffsetDateTime, Vec<OutboxEntry>)],
    ) -> Vec<Result<(), StoreError>> {
        let one = |device: &DeviceRecord, at: OffsetDateTime, alerts: &[OutboxEntry]| {
            self.device_trees()
                .as_slice()
                .transaction(|t| {
                    let tx = device_tx(t, self.id_floor);
                    tx.write(device, at, false)?;
                    enqueue_tx(tx.alerts, alerts, self.id_floor)
                })
                .map_err(tx_err)
        };
        if let [(device, at, alerts)] = batch {
            return vec![one(device, *at, alerts)];
        }
        let all = self.device_trees().as_slice().transaction(|t| {
            let tx = device_tx(t, self.id_floor);
            for (device, at, alerts) in batch {
                tx.write(device, *at, false)?;
                enqueue_tx(tx.alerts, alerts, self.id_floor)?;
            }
            Ok(())
        });
        match all {
            Ok(()) => batch.iter().map(|_| Ok(())).collect(),
            Err(_) => batch.iter().map(|(d, at, a)| one(d, *at, a)).collect(),
        }
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
        match tree.get(key.as_bytes()).map_err(backend)? {
            Some(b) => decode(key.as_bytes(), &b).map(Some),
            None => Ok(None),
        }
    }
}

impl SledStore {
    /// Visits every stored row, tree by tree (for `migrate`, see [`super::migrate`]).
    pub fn dump(
        &self,
        visit: &mut dyn FnMut(super::migrate::Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        use super::migrate::Row;
        let corrupt = |tree: &str, k: &[u8], message: &str| StoreError::Corrupt {
            key: format!("{tree}/{}", String::from_utf8_lossy(k)),
            message: message.to_owned(),
        };
        for r in self.devices.iter() {
            let (k, v) = r.map_err(backend)?;
            visit(Row::Device(Box::new(decode(&k, &v)?)))?;
        }
        for r in self.orgs.iter() {
            let (org, agg) = entry(0, r)?;
            visit(Row::Aggregate(org, agg))?;
        }
        let day_format = time::macros::format_description!("[year]-[month]-[day]");
        for r in self.daily.iter() {
            let (k, v) = r.map_err(backend)?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let (org, day) = key
                .split_once('/')
                .ok_or_else(|| corrupt("daily", &k, "key is not <org>/<day>"))?;
            let day = time::Date::parse(day, &day_format)
                .map_err(|e| corrupt("daily", &k, &e.to_string()))?;
            visit(Row::Daily(org.to_owned(), day, decode(&k, &v)?))?;
        }
        for r in self.history.iter() {
            let (k, v) = r.map_err(backend)?;
            // `<device id>/<u64 BE>`: the device is all but the last nine bytes.
            let device = k
                .len()
                .checked_sub(9)
                .map(|n| String::from_utf8_lossy(&k[..n]).into_owned())
                .ok_or_else(|| corrupt("history", &k, "key too short"))?;
            visit(Row::History(device, decode(&k, &v)?))?;
        }
        for r in self.classifications.iter() {
            let (k, v) = r.map_err(backend)?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let (org, name) = key
                .split_once('/')
                .ok_or_else(|| corrupt("classifications", &k, "key is not <org>/<name>"))?;
            visit(Row::Classification(
                org.to_owned(),
                name.to_owned(),
                decode(&k, &v)?,
            ))?;
        }
        for r in self.tokens.iter() {
            let (hash, t) = entry(0, r)?;
            visit(Row::Token(hash, t))?;
        }
        for r in self.people.iter() {
            let (hash, p) = entry(0, r)?;
            visit(Row::Person(hash, p))?;
        }
        for (position, e) in self.audit(0, usize::MAX)? {
            visit(Row::Audit(position, e))?;
        }
        for (e, o, r) in self.federated()? {
            visit(Row::Federated(e, o, r))?;
        }
        for r in self.rules.iter() {
            let (k, v) = r.map_err(backend)?;
            visit(Row::Rules(Box::new(decode(&k, &v)?)))?;
        }
        Ok(())
    }
}

impl SledStore {
    /// Copies every tree into a new sled database in `to` (which must not exist), with the id
    /// floor set above every generated id copied (audit positions, history ids), and flushes
    /// it. Consistent only if nothing writes meanwhile: [`super::recovering::Recovering`]
    /// holds every other call off while it runs.
    pub fn copy_to(
        &self,
        to: &Path,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<BackupCounts, StoreError> {
        let fail = |e: sled::Error| StoreError::Backend(format!("{}: {e}", to.display()));
        let target = sled::Config::new()
            .path(to)
            .create_new(true)
            .open()
            .map_err(fail)?;
        let mut counts = BackupCounts::default();
        let mut floor = self.id_floor;
        for name in self.db.tree_names() {
            let (from, into) = (
                self.db.open_tree(&name).map_err(backend)?,
                target.open_tree(&name).map_err(fail)?,
            );
            let generated = GENERATED_TREES
                .iter()
                .any(|t| name.as_ref() == t.as_bytes());
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for kv in from.iter() {
                let (k, v) = kv.map_err(backend)?;
                if generated {
                    floor = floor.max(trailing_id(&k).saturating_add(1));
                }
                batch.insert(k, v);
                in_batch += 1;
                counts.entries += 1;
                if in_batch == 10_000 {
                    into.apply_batch(std::mem::take(&mut batch)).map_err(fail)?;
                    in_batch = 0;
                    if cancelled() {
                        return Err(StoreError::Backend(
                            "backup cancelled: the collector is stopping".into(),
                        ));
                    }
                }
            }
            into.apply_batch(batch).map_err(fail)?;
            counts.trees += 1;
        }
        target
            .open_tree("meta")
            .and_then(|m| m.insert(ID_FLOOR_KEY, &floor.to_be_bytes()))
            .map_err(fail)?;
        target.flush().map_err(fail)?;
        drop(target);
        crate::layout::private_files(to)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", to.display())))?;
        Ok(counts)
    }
}

impl Durable for SledStore {
    fn backup(&self, to: &Path, cancelled: &dyn Fn() -> bool) -> Result<BackupCounts, StoreError> {
        self.flush()?;
        self.copy_to(to, cancelled)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.group_commit
            .flush(|| self.db.flush().map(|_| ()).map_err(|e| e.to_string()))
            // A flush that failed failed on the disk: sled refuses writes from then on.
            .map_err(|e| StoreError::Unavailable(format!("flush: {e}")))
    }
}

impl DeviceStore for SledStore {
    fn put_device(&self, device: &DeviceRecord, at: OffsetDateTime) -> Result<(), StoreError> {
        self.device_writes
            .submit((device.clone(), at, Vec::new()), |batch| {
                self.put_devices(&batch)
            })
    }

    fn remove_device(&self, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let Some(device) = self.device(id)? else {
            return Ok(false);
        };
        self.device_trees()
            .as_slice()
            .transaction(|t| device_tx(t, self.id_floor).write(&device, at, true))
            .map_err(tx_err)?;
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(b'/');
        for k in self.history.scan_prefix(&prefix).keys() {
            self.history.remove(k.map_err(backend)?).map_err(backend)?;
        }
        Ok(true)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        SledStore::get(&self.devices, id)
    }

    fn list_devices(
        &self,
        filter: &DeviceFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DevicePage, StoreError> {
        let prefix = filter
            .organisation
            .as_ref()
            .map(|o| format!("{o}/"))
            .unwrap_or_default();
        let start = match cursor {
            Some(c) if c.as_bytes() >= prefix.as_bytes() => {
                let mut k = c.as_bytes().to_vec();
                k.push(0); // strictly after the cursor
                k
            }
            _ => prefix.as_bytes().to_vec(),
        };
        let mut devices = Vec::new();
        for entry in self.by_org.range(start..) {
            let (key, _) = entry.map_err(backend)?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let k = String::from_utf8_lossy(&key).into_owned();
            let Some((_, id)) = k.split_once('/') else {
                continue;
            };
            if let Some(allowed) = &filter.allowed_orgs
                && !k
                    .split_once('/')
                    .is_some_and(|(org, _)| allowed.contains(org))
            {
                continue;
            }
            let Some(device) = self.device(id)? else {
                continue;
            };
            if filter.status.is_some_and(|s| s != device.verdict.status) {
                continue;
            }
            if filter.platform.is_some() && filter.platform != device.platform {
                continue;
            }
            if filter
                .product
                .as_ref()
                .is_some_and(|p| !device.findings.iter().any(|f| &f.product == p))
            {
                continue;
            }
            devices.push(device);
            if devices.len() == limit {
                return Ok(DevicePage {
                    devices,
                    next: Some(k),
                });
            }
        }
        Ok(DevicePage {
            devices,
            next: None,
        })
    }

    fn device_ids(&self) -> Result<Vec<String>, StoreError> {
        self.devices
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(backend)
            })
            .collect()
    }

    fn stale_candidates(
        &self,
        reported_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut end = reported_before.unix_timestamp().to_be_bytes().to_vec();
        end[0] ^= 0x80;
        self.by_last_report
            .range(..end)
            .keys()
            .take(limit)
            .map(|k| {
                let k = k.map_err(backend)?;
                Ok(String::from_utf8_lossy(&k[9.min(k.len())..]).into_owned())
            })
            .collect()
    }

    fn history(
        &self,
        device: &str,
        until: Option<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let mut prefix = device.as_bytes().to_vec();
        prefix.push(b'/');
        let mut out: Vec<HistoryRecord> = self
            .history
            .scan_prefix(&prefix)
            .rev()
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                decode::<HistoryRecord>(&k, &v)
            })
            // Newest first: skip what is at or after `until`.
            .filter(|r| r.as_ref().map_or(true, |h| until.is_none_or(|u| h.at < u)))
            .take(limit)
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    fn org_aggregate(&self, org: &str) -> Result<Option<OrgAggregate>, StoreError> {
        SledStore::get(&self.orgs, org)
    }

    fn org_aggregates(&self) -> Result<Vec<(String, OrgAggregate)>, StoreError> {
        self.orgs.iter().map(|r| entry(0, r)).collect()
    }

    fn daily(&self, org: &str, days: usize) -> Result<Vec<(String, OrgAggregate)>, StoreError> {
        let prefix = format!("{org}/");
        let mut out: Vec<(String, OrgAggregate)> = self
            .daily
            .scan_prefix(prefix.as_bytes())
            .rev()
            .take(days)
            .map(|r| entry(prefix.len(), r))
            .collect::<Result<_, StoreError>>()?;
        out.reverse();
        Ok(out)
    }

    fn put_classification(
        &self,
        org: &str,
        name: &str,
        c: &Classification,
    ) -> Result<(), StoreError> {
        self.classifications
            .insert(format!("{org}/{name}").as_bytes(), encode(c))
            .map_err(backend)?;
        Ok(())
    }

    fn remove_classification(&self, org: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .classifications
            .remove(format!("{org}/{name}").as_bytes())
            .map_err(backend)?
            .is_some())
    }

    fn classifications(&self, org: &str) -> Result<Vec<(String, Classification)>, StoreError> {
        let prefix = format!("{org}/");
        self.classifications
            .scan_prefix(prefix.as_bytes())
            .map(|r| entry(prefix.len(), r))
            .collect()
    }
}

impl TokenStore for SledStore {
    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<(), StoreError> {
        self.tokens
            .insert(hash.as_bytes(), encode(token))
            .map_err(backend)?;
        Ok(())
    }

    fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        SledStore::get(&self.tokens, hash)
    }

    fn tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        self.tokens.iter().map(|r| entry(0, r)).collect()
    }

    fn put_person(&self, hash: &str, person: &PersonRecord) -> Result<(), StoreError> {
        self.people
            .insert(hash.as_bytes(), encode(person))
            .map_err(backend)?;
        Ok(())
    }

    fn person(&self, hash: &str) -> Result<Option<PersonRecord>, StoreError> {
        SledStore::get(&self.people, hash)
    }

    fn people(&self) -> Result<Vec<(String, PersonRecord)>, StoreError> {
        self.people.iter().map(|r| entry(0, r)).collect()
    }
}

/// An audit entry as read from its tree: (position, entry).
fn audit_entry(
    r: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(u64, AuditRecord), StoreError> {
    let (k, v) = r.map_err(backend)?;
    let position: [u8; 8] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
        key: format!("audit/{k:?}"),
        message: "audit key is not a u64".into(),
    })?;
    Ok((u64::from_be_bytes(position), decode(&k, &v)?))
}

impl AuditStore for SledStore {
    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError> {
        // The next position after the last one, so that positions are contiguous (sled's id
        // generator jumps by a million at every restart); 0 stays free as "from the start",
        // and a restored copy continues above its floor.
        let _one_at_a_time = self.audit_writes.lock().unwrap_or_else(|p| p.into_inner());
        let last = match self.audit.last().map_err(backend)? {
            Some((k, _)) => trailing_id(&k),
            None => 0,
        };
        let handed_out = match self.meta.get(AUDIT_LAST_KEY).map_err(backend)? {
            Some(b) => <[u8; 8]>::try_from(b.as_ref()).map_or(0, u64::from_be_bytes),
            None => 0,
        };
        let position = last.max(handed_out).max(self.id_floor) + 1;
        // The mark first: a crash between the two writes leaves a gap, never a reused number.
        self.meta
            .insert(AUDIT_LAST_KEY, &position.to_be_bytes())
            .map_err(backend)?;
        self.audit
            .insert(position.to_be_bytes(), encode(entry))
            .map_err(backend)?;
        Ok(position)
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let start = after.saturating_add(1).to_be_bytes();
        self.audit
            .range(start..)
            .take(limit)
            .map(audit_entry)
            .collect()
    }

    fn audit_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        self.audit
            .range(..before.to_be_bytes())
            .rev()
            .take(limit)
            .map(audit_entry)
            .collect()
    }

    fn prune_audit(&self, before: OffsetDateTime, max_bytes: u64) -> Result<u64, StoreError> {
        // Newest first: the first entry too old, or past the byte budget, is the newest to go.
        let mut bytes = 0u64;
        let mut cut = None;
        for r in self.audit.iter().rev() {
            let (k, v) = r.map_err(backend)?;
            bytes += (k.len() + v.len()) as u64;
            let old = decode::<AuditRecord>(&k, &v).is_ok_and(|e| e.at < before);
            if old || bytes > max_bytes {
                cut = Some(k);
                break;
            }
        }
        let Some(cut) = cut else {
            return Ok(0);
        };
        let mut removed = 0u64;
        let mut batch = sled::Batch::default();
        for k in self.audit.range(..=cut).keys() {
            batch.remove(k.map_err(backend)?);
            removed += 1;
            if removed.is_multiple_of(10_000) {
                self.audit
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(backend)?;
            }
        }
        self.audit.apply_batch(batch).map_err(backend)?;
        Ok(removed)
    }
}

impl FederationStore for SledStore {
    fn replace_federated(
        &self,
        enterprise: &str,
        rows: &[(String, FederatedRecord)],
    ) -> Result<(), StoreError> {
        let prefix = format!("{enterprise}/");
        // A poisoned lock only means another push panicked; the tree itself is consistent.
        let _serial = self
            .federated_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        for k in self.federated.scan_prefix(prefix.as_bytes()).keys() {
            batch.remove(k.map_err(backend)?);
        }
        // Inserts after removals: a key in both ends up inserted.
        for (org, record) in rows {
            batch.insert(format!("{prefix}{org}").as_bytes(), encode(record));
        }
        self.federated.apply_batch(batch).map_err(backend)
    }

    fn federated(&self) -> Result<Vec<(String, String, FederatedRecord)>, StoreError> {
        let mut out = self
            .federated
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let (enterprise, org) = key.split_once('/').ok_or_else(|| StoreError::Corrupt {
                    key: format!("federated/{key}"),
                    message: "key is not <enterprise>/<organisation>".into(),
                })?;
                Ok((enterprise.to_owned(), org.to_owned(), decode(&k, &v)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Key order puts `e1-x/` before `e1/` ('-' < '/'); callers want (enterprise, org).
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }
}

impl RulesStore for SledStore {
    fn append_rules(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        text: &str,
        author: &str,
        note: &str,
        at: OffsetDateTime,
    ) -> Result<RulesVersion, StoreError> {
        let _one_at_a_time = self.rules_writes.lock().unwrap_or_else(|p| p.into_inner());
        let last = self.rules_version(kind, organisation, None)?;
        let stored = RulesVersion {
            kind,
            organisation: organisation.map(str::to_owned),
            version: last.map_or(1, |v| v.version + 1),
            text: text.to_owned(),
            sha256: crate::secrets::hash(text),
            author: author.to_owned(),
            at,
            note: note.to_owned(),
        };
        let mut key = rules_prefix(kind, organisation);
        key.extend_from_slice(&stored.version.to_be_bytes());
        self.rules.insert(key, encode(&stored)).map_err(backend)?;
        Ok(stored)
    }

    fn rules_history(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RulesVersion>, StoreError> {
        self.rules
            .scan_prefix(rules_prefix(kind, organisation))
            .rev()
            .take(limit)
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                decode(&k, &v)
            })
            .collect()
    }

    fn rules_version(
        &self,
        kind: RulesKind,
        organisation: Option<&str>,
        version: Option<u64>,
    ) -> Result<Option<RulesVersion>, StoreError> {
        let prefix = rules_prefix(kind, organisation);
        let found = match version {
            None => self.rules.scan_prefix(&prefix).next_back(),
            Some(v) => {
                let mut key = prefix;
                key.extend_from_slice(&v.to_be_bytes());
                self.rules
                    .get(&key)
                    .map(|o| o.map(|v| (sled::IVec::from(key), v)))
                    .transpose()
            }
        };
        match found {
            None => Ok(None),
            Some(r) => {
                let (k, v) = r.map_err(backend)?;
                decode(&k, &v).map(Some)
            }
        }
    }

    fn current_rules(&self) -> Result<Vec<RulesVersion>, StoreError> {
        // Keys sort by (kind, organisation, version): the last of each run is the newest.
        let mut out: Vec<RulesVersion> = Vec::new();
        for r in self.rules.iter() {
            let (k, v) = r.map_err(backend)?;
            let row: RulesVersion = decode(&k, &v)?;
            match out.last_mut() {
                Some(last) if last.kind == row.kind && last.organisation == row.organisation => {
                    *last = row
                }
                _ => out.push(row),
            }
        }
        Ok(out)
    }
}

impl SessionStore for SledStore {
    fn put_session(&self, hash: &str, session: &SessionRecord) -> Result<(), StoreError> {
        self.sessions
            .insert(hash.as_bytes(), encode(session))
            .map_err(backend)?;
        Ok(())
    }

    fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        SledStore::get(&self.sessions, hash)
    }

    fn remove_session(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .sessions
            .remove(hash.as_bytes())
            .map_err(backend)?
            .is_some())
    }

    fn prune_sessions(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut removed = 0;
        for r in self.sessions.iter() {
            let (k, v) = r.map_err(backend)?;
            // An undecodable session is no session: removed with the old ones.
            let old = decode::<SessionRecord>(&k, &v).map_or(true, |s| s.last_seen < before);
            if old && self.sessions.remove(&k).map_err(backend)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl AlertStore for SledStore {
    fn enqueue_alerts(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.alerts
            .transaction(|t| enqueue_tx(t, entries, self.id_floor))
            .map_err(tx_err)
    }

    fn enqueue_alerts_once(
        &self,
        mark: &str,
        value: &str,
        entries: &[OutboxEntry],
    ) -> Result<bool, StoreError> {
        (&self.alerts, &self.alert_marks)
            .transaction(|(alerts, marks)| {
                if marks.get(mark.as_bytes())?.as_deref() == Some(value.as_bytes()) {
                    return Ok(false);
                }
                marks.insert(mark.as_bytes(), value.as_bytes())?;
                enqueue_tx(alerts, entries, self.id_floor)?;
                Ok(true)
            })
            .map_err(tx_err)
    }

    fn peek_alerts(&self, sink: &str, limit: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        let prefix = alert_prefix(sink);
        self.alerts
            .scan_prefix(&prefix)
            .take(limit)
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                let position = k
                    .get(prefix.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        message: "not an outbox position".into(),
                    })?;
                Ok((position, decode(&k, &v)?))
            })
            .collect()
    }

    fn remove_alert(&self, sink: &str, position: u64) -> Result<(), StoreError> {
        self.alerts
            .remove(alert_key(sink, position))
            .map_err(backend)?;
        Ok(())
    }

    fn alert_depth(&self, sink: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in self.alerts.scan_prefix(alert_prefix(sink)).keys() {
            k.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }
}

impl Store for SledStore {
    fn put_device_alerting(
        &self,
        device: &DeviceRecord,
        at: OffsetDateTime,
        alerts: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        self.device_writes
            .submit((device.clone(), at, alerts.to_vec()), |batch| {
                self.put_devices(&batch)
            })
    }

    fn size_bytes(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }

    fn enroll(
        &self,
        device: &DeviceRecord,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let trees = [
            &self.devices,
            &self.by_org,
            &self.orgs,
            &self.history,
            &self.daily,
            &self.by_last_report,
            &self.alerts,
            &self.tokens,
        ];
        trees
            .as_slice()
            .transaction(|t| {
                let tokens = &t[7];
                // The token is checked and consumed inside the transaction: two enrolments
                // racing for its last use cannot both win.
                let token: TokenRecord = match tokens.get(token_hash.as_bytes())? {
                    Some(bytes) => decode(token_hash.as_bytes(), &bytes)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => {
                        return Err(ConflictableTransactionError::Abort(
                            StoreError::TokenRefused("unknown token".into()),
                        ));
                    }
                };
                let consumed = token
                    .consume_for(&device.organisation, now)
                    .map_err(|why| {
                        ConflictableTransactionError::Abort(StoreError::TokenRefused(why))
                    })?;
                tokens.insert(token_hash.as_bytes(), encode(&consumed))?;
                if t[0].get(device.device_id.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        format!("device {} exists", device.device_id),
                    )));
                }
                device_tx(t, self.id_floor).write(device, now, false)
            })
            .map_err(tx_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditStore;

    fn entry(action: &str) -> AuditRecord {
        AuditRecord {
            at: OffsetDateTime::now_utc(),
            actor: "test".into(),
            action: action.into(),
            organisation: None,
            allowed: true,
            detail: String::new(),
        }
    }

    #[test]
    fn a_corrupt_id_floor_is_recomputed_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old = store.append_audit(&entry("old")).unwrap();
        store
            .db
            .open_tree("meta")
            .unwrap()
            .insert(ID_FLOOR_KEY, b"bad")
            .unwrap();
        store.db.flush().unwrap();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert!(
            store.id_floor > old,
            "floor {} not above {old}",
            store.id_floor
        );
        assert!(store.append_audit(&entry("new")).unwrap() > old);
    }

    #[test]
    fn audit_positions_never_go_back_after_retention_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let handed: Vec<u64> = (0..3)
            .map(|i| store.append_audit(&entry(&format!("e{i}"))).unwrap())
            .collect();
        assert_eq!(handed, [1, 2, 3], "contiguous from 1");
        // Everything is older than the cut: the log is emptied.
        let future = OffsetDateTime::now_utc() + time::Duration::days(1);
        assert_eq!(store.prune_audit(future, u64::MAX).unwrap(), 3);
        assert_eq!(store.append_audit(&entry("after")).unwrap(), 4);
        assert_eq!(store.prune_audit(future, u64::MAX).unwrap(), 1);
        store.db.flush().unwrap();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.append_audit(&entry("reopened")).unwrap(),
            5,
            "a reader paging with --after 4 must see it"
        );
    }

    /// A restored copy is a new database whose id generator starts low again; without the
    /// floor, the entries it appends would land among (and overwrite) the restored ones of a
    /// store that had been reopened more often.
    #[test]
    fn a_copy_appends_after_every_restored_audit_entry() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        // Every open moves sled's generator on by a large step: a long-lived store's ids are high.
        for _ in 0..6 {
            drop(SledStore::open(&source).unwrap());
        }
        let store = SledStore::open(&source).unwrap();
        let old: Vec<u64> = (0..3)
            .map(|i| store.append_audit(&entry(&format!("old-{i}"))).unwrap())
            .collect();
        store.copy_to(&dir.path().join("copy"), &|| false).unwrap();
        drop(store);

        let copy = SledStore::open(&dir.path().join("copy")).unwrap();
        let new = copy.append_audit(&entry("new")).unwrap();
        assert!(
            new > *old.iter().max().unwrap(),
            "new position {new} among the restored {old:?}"
        );
        let listed: Vec<String> = copy
            .audit(0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.action)
            .collect();
        assert_eq!(listed, ["old-0", "old-1", "old-2", "new"]);
    }
}
