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
//!
//! Device writes run as one sled transaction over `devices`, `by_org` and `orgs` (plus
//! `tokens` at enrolment): the old record's contribution is subtracted from the aggregate and
//! the new one's added, atomically. Organisation ids cannot contain `/`, so `<org>/` is an
//! exact prefix.

use super::records::{AuditRecord, DeviceRecord, OrgAggregate, PersonRecord, TokenRecord};
use super::{DeviceFilter, DevicePage, Store, StoreError};
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
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
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

fn org_key(device: &DeviceRecord) -> Vec<u8> {
    format!("{}/{}", device.organisation, device.device_id).into_bytes()
}

/// Writes `device` inside a transaction, moving its contribution in the aggregate.
fn write_device(
    devices: &TransactionalTree,
    by_org: &TransactionalTree,
    orgs: &TransactionalTree,
    device: &DeviceRecord,
) -> TxResult<()> {
    let key = device.device_id.as_bytes();
    let old: Option<DeviceRecord> = match devices.get(key)? {
        Some(bytes) => Some(decode(key, &bytes).map_err(ConflictableTransactionError::Abort)?),
        None => None,
    };
    let touch = |org: &str, f: &dyn Fn(&mut OrgAggregate)| -> TxResult<()> {
        let mut agg: OrgAggregate = match orgs.get(org.as_bytes())? {
            Some(b) => decode(org.as_bytes(), &b).map_err(ConflictableTransactionError::Abort)?,
            None => OrgAggregate::default(),
        };
        f(&mut agg);
        orgs.insert(org.as_bytes(), encode(&agg))?;
        Ok(())
    };
    if let Some(old) = &old {
        let c = old.contribution();
        touch(&old.organisation, &|a| a.apply(&c, false))?;
        if old.organisation != device.organisation {
            by_org.remove(org_key(old))?;
        }
    }
    let c = device.contribution();
    touch(&device.organisation, &|a| a.apply(&c, true))?;
    by_org.insert(org_key(device), &[])?;
    devices.insert(key, encode(device))?;
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let tree = |n: &str| db.open_tree(n).map_err(backend);
        Ok(SledStore {
            devices: tree("devices")?,
            by_org: tree("by_org")?,
            orgs: tree("orgs")?,
            tokens: tree("tokens")?,
            people: tree("people")?,
            audit: tree("audit")?,
            db,
        })
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
        match tree.get(key.as_bytes()).map_err(backend)? {
            Some(b) => decode(key.as_bytes(), &b).map(Some),
            None => Ok(None),
        }
    }
}

impl Store for SledStore {
    fn enroll(
        &self,
        device: &DeviceRecord,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        (&self.devices, &self.by_org, &self.orgs, &self.tokens)
            .transaction(|(d, b, o, t)| {
                // The token is checked and consumed inside the transaction: two enrolments
                // racing for its last use cannot both win.
                let token: TokenRecord = match t.get(token_hash.as_bytes())? {
                    Some(bytes) => decode(token_hash.as_bytes(), &bytes)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => {
                        return Err(ConflictableTransactionError::Abort(
                            StoreError::TokenRefused("unknown token".into()),
                        ));
                    }
                };
                if token.organisation != device.organisation {
                    return Err(ConflictableTransactionError::Abort(
                        StoreError::TokenRefused("token belongs to another organisation".into()),
                    ));
                }
                let consumed = token.consume(now).map_err(|why| {
                    ConflictableTransactionError::Abort(StoreError::TokenRefused(why))
                })?;
                t.insert(token_hash.as_bytes(), encode(&consumed))?;
                if d.get(device.device_id.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        format!("device {} exists", device.device_id),
                    )));
                }
                write_device(d, b, o, device)
            })
            .map_err(tx_err)
    }

    fn put_device(&self, device: &DeviceRecord) -> Result<(), StoreError> {
        (&self.devices, &self.by_org, &self.orgs)
            .transaction(|(d, b, o)| write_device(d, b, o, device))
            .map_err(tx_err)
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

    fn org_aggregate(&self, org: &str) -> Result<Option<OrgAggregate>, StoreError> {
        SledStore::get(&self.orgs, org)
    }

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
        self.tokens
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), decode(&k, &v)?))
            })
            .collect()
    }

    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError> {
        // sled's id generator is monotonic across restarts; +1 keeps 0 free as "from the start".
        let position = self.db.generate_id().map_err(backend)? + 1;
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
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                let position: [u8; 8] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: format!("audit/{k:?}"),
                    message: "audit key is not a u64".into(),
                })?;
                Ok((u64::from_be_bytes(position), decode(&k, &v)?))
            })
            .collect()
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

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}
