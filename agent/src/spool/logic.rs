//! The spool's rules, without I/O: every operation changes an in-memory [`SpoolView`] and
//! returns the writes that make the same change on disk, applied by the backend as one
//! atomic batch. Keeping the rules here lets tests replay operations against a model.

use super::{Meta, Observation, Observed, Pending, Record, ReportBody, SpoolError};
use crate::device_state::{Change, State};
use commscan_core::digest;
use commscan_core::report::SEQUENCE_CEILING;
use std::collections::BTreeMap;

/// One write of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

/// The spool's content, as it is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolView {
    /// Bookkeeping.
    pub meta: Meta,
    /// The state of the latest observation.
    pub current: State,
    /// Changes not yet in a record, by key.
    pub pending: Pending,
    /// Records not yet acknowledged, by sequence.
    pub outbox: BTreeMap<u64, Record>,
    /// Bytes of pending changes plus outbox records.
    pub bytes: u64,
    /// The cap on `bytes`.
    pub cap: u64,
    sizes: BTreeMap<Vec<u8>, u64>,
}

const META: &[u8] = b"m";

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("spool values serialise")
}

fn outbox_key(seq: u64) -> Vec<u8> {
    let mut k = b"o/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, SpoolError> {
    serde_json::from_slice(bytes).map_err(|e| SpoolError::Corrupt {
        what: format!("record {}", String::from_utf8_lossy(key)),
        message: e.to_string(),
    })
}

impl SpoolView {
    /// An empty spool.
    pub(crate) fn new(cap: u64) -> SpoolView {
        SpoolView {
            meta: Meta::default(),
            current: State::default(),
            pending: Pending::new(),
            outbox: BTreeMap::new(),
            bytes: 0,
            cap,
            sizes: BTreeMap::new(),
        }
    }

    /// Rebuilds the view from stored entries; any entry that does not decode is corruption.
    pub(crate) fn load(
        entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
        cap: u64,
    ) -> Result<SpoolView, SpoolError> {
        let mut v = SpoolView::new(cap);
        let mut meta = None;
        for (k, val) in entries {
            if k == META {
                meta = Some(decode::<Meta>(&k, &val)?);
            } else if let Some(p) = k.strip_prefix(b"s/f/") {
                let f: commscan_core::scan::Finding = decode(&k, &val)?;
                v.current
                    .findings
                    .insert(String::from_utf8_lossy(p).into_owned(), f);
            } else if k == b"s/u" {
                v.current.unclassified = decode(&k, &val)?;
            } else if let Some(p) = k.strip_prefix(b"p/") {
                let c: Change = decode(&k, &val)?;
                v.pending.insert(String::from_utf8_lossy(p).into_owned(), c);
                v.sizes.insert(k.clone(), val.len() as u64);
            } else if let Some(s) = k.strip_prefix(b"o/") {
                let seq = <[u8; 8]>::try_from(s).map_err(|_| SpoolError::Corrupt {
                    what: "outbox key".into(),
                    message: format!("{} bytes, expected 8", s.len()),
                })?;
                let r: Record = decode(&k, &val)?;
                if r.sequence != u64::from_be_bytes(seq) {
                    return Err(SpoolError::Corrupt {
                        what: format!("outbox record {}", u64::from_be_bytes(seq)),
                        message: format!("holds sequence {}", r.sequence),
                    });
                }
                v.outbox.insert(r.sequence, r);
                v.sizes.insert(k.clone(), val.len() as u64);
            } else {
                return Err(SpoolError::Corrupt {
                    what: format!("key {}", String::from_utf8_lossy(&k)),
                    message: "unknown key".into(),
                });
            }
        }
        match meta {
            Some(m) if m.version == 1 => v.meta = m,
            Some(m) => {
                return Err(SpoolError::Corrupt {
                    what: "meta".into(),
                    message: format!("format version {} is not 1", m.version),
                });
            }
            None if v.pending.is_empty()
                && v.outbox.is_empty()
                && v.current.findings.is_empty() => {}
            None => {
                return Err(SpoolError::Corrupt {
                    what: "meta".into(),
                    message: "missing".into(),
                });
            }
        }
        if let Some((&last, _)) = v.outbox.last_key_value()
            && last >= v.meta.next_sequence
        {
            return Err(SpoolError::Corrupt {
                what: "meta".into(),
                message: format!(
                    "next sequence {} is not above outbox record {last}",
                    v.meta.next_sequence
                ),
            });
        }
        v.bytes = v.sizes.values().sum();
        Ok(v)
    }

    fn put(&mut self, w: &mut Vec<Write>, key: Vec<u8>, val: Vec<u8>, counted: bool) {
        if counted {
            let old = self
                .sizes
                .insert(key.clone(), val.len() as u64)
                .unwrap_or(0);
            self.bytes = self.bytes - old + val.len() as u64;
        }
        w.push(Write::Put(key, val));
    }

    fn del(&mut self, w: &mut Vec<Write>, key: Vec<u8>) {
        if let Some(old) = self.sizes.remove(&key) {
            self.bytes -= old;
        }
        w.push(Write::Del(key));
    }

    fn put_meta(&mut self, w: &mut Vec<Write>) {
        let m = json(&self.meta);
        self.put(w, META.to_vec(), m, false);
    }

    /// Drops every pending change and outbox record; the next record is a snapshot.
    fn drop_unacknowledged(&mut self, w: &mut Vec<Write>) {
        for k in std::mem::take(&mut self.pending).into_keys() {
            self.del(w, format!("p/{k}").into_bytes());
        }
        for s in std::mem::take(&mut self.outbox).into_keys() {
            self.del(w, outbox_key(s));
        }
        self.meta.snapshot_needed = true;
    }

    pub(crate) fn observe(&mut self, obs: Observation) -> (Observed, Vec<Write>) {
        let mut w = Vec::new();
        let changes = self.current.changes_to(&obs.state);
        if changes.is_empty() && !obs.report {
            // A sample that changes nothing writes nothing (samples run every 30 s).
            let sendable = self.sendable();
            return (
                Observed {
                    changes: 0,
                    fell_back: false,
                    sendable,
                },
                w,
            );
        }
        for c in &changes {
            self.current.apply(c);
            match c {
                Change::Upsert(f) => {
                    let v = json(f);
                    self.put(&mut w, format!("s/f/{}", f.product).into_bytes(), v, false);
                }
                Change::Remove(p) => w.push(Write::Del(format!("s/f/{p}").into_bytes())),
                Change::Unclassified(u) => {
                    let v = json(u);
                    self.put(&mut w, b"s/u".to_vec(), v, false);
                }
            }
            // A snapshot will carry the whole state: no need to keep deltas for it.
            if !self.meta.snapshot_needed {
                let key = c.key();
                let v = json(c);
                self.pending.insert(key.clone(), c.clone());
                self.put(&mut w, format!("p/{key}").into_bytes(), v, true);
            }
        }
        let mut fell_back = false;
        if self.bytes > self.cap {
            let msg = format!(
                "spool cap of {} bytes reached ({} bytes pending); unacknowledged changes replaced by a snapshot",
                self.cap, self.bytes
            );
            tracing::warn!(
                cap = self.cap,
                bytes = self.bytes,
                "spool cap reached; falling back to a snapshot"
            );
            self.drop_unacknowledged(&mut w);
            self.meta.fallbacks += 1;
            self.meta.last_fallback = Some(format!("{} at {}", msg, obs.scanned_at));
            // The record acknowledged next may be one we dropped: its digest is unknown.
            fell_back = true;
        }
        self.meta.observed_changes += changes.len() as u64;
        self.meta.report_due |= obs.report;
        self.meta.stats = obs.stats;
        self.meta.scanned_at = Some(obs.scanned_at);
        self.put_meta(&mut w);
        let sendable = self.sendable();
        (
            Observed {
                changes: changes.len(),
                fell_back,
                sendable,
            },
            w,
        )
    }

    /// Whether [`SpoolView::next_record`] would return a record.
    pub fn sendable(&self) -> bool {
        !self.outbox.is_empty()
            || self.meta.snapshot_needed && self.meta.scanned_at.is_some()
            || !self.pending.is_empty()
            || self.meta.report_due
    }

    pub(crate) fn next_record(&mut self) -> (Option<Record>, Vec<Write>) {
        if let Some(r) = self.outbox.values().next() {
            return (Some(r.clone()), Vec::new());
        }
        // Nothing observed yet: a snapshot of nothing would wipe the collector's state.
        let Some(scanned_at) = self.meta.scanned_at else {
            return (None, Vec::new());
        };
        if !self.sendable() {
            return (None, Vec::new());
        }
        let mut w = Vec::new();
        let body = if self.meta.snapshot_needed {
            ReportBody::Snapshot {
                findings: self.current.findings.values().cloned().collect(),
                unclassified: self.current.unclassified.clone(),
            }
        } else {
            let (mut upserted, mut removed, mut unclassified) = (Vec::new(), Vec::new(), None);
            for c in self.pending.values() {
                match c {
                    Change::Upsert(f) => upserted.push(f.clone()),
                    Change::Remove(p) => removed.push(p.clone()),
                    Change::Unclassified(u) => unclassified = Some(u.clone()),
                }
            }
            ReportBody::Delta {
                upserted,
                removed,
                unclassified,
            }
        };
        for k in std::mem::take(&mut self.pending).into_keys() {
            self.del(&mut w, format!("p/{k}").into_bytes());
        }
        let record = Record {
            sequence: self.meta.next_sequence,
            body,
            stats: self.meta.stats.clone(),
            scanned_at,
            state_digest: digest::hex(&self.current.digest()),
        };
        self.meta.next_sequence = self.meta.next_sequence.saturating_add(1);
        self.meta.snapshot_needed = false;
        self.meta.report_due = false;
        let v = json(&record);
        self.put(&mut w, outbox_key(record.sequence), v, true);
        self.outbox.insert(record.sequence, record.clone());
        self.put_meta(&mut w);
        (Some(record), w)
    }

    pub(crate) fn acknowledge(&mut self, sequence: u64) -> Vec<Write> {
        let mut w = Vec::new();
        if sequence >= SEQUENCE_CEILING {
            // No report of ours ever had it: acknowledging it would count past the end and
            // make every later record look acknowledged already. Keep everything unacked.
            tracing::error!(
                sequence,
                "the collector acknowledged an impossible sequence; ignored"
            );
            return w;
        }
        let done: Vec<u64> = self.outbox.range(..=sequence).map(|(s, _)| *s).collect();
        if let Some(last) = done.last() {
            self.meta.acked_digest = Some(self.outbox[last].state_digest.clone());
        } else if sequence > self.meta.acked_sequence {
            // A record we no longer hold (dropped by a fallback): what the collector now
            // has is unknown, so the next hello asks for a snapshot.
            self.meta.acked_digest = None;
        }
        for s in done {
            self.outbox.remove(&s);
            self.del(&mut w, outbox_key(s));
        }
        self.meta.acked_sequence = self.meta.acked_sequence.max(sequence);
        self.meta.next_sequence = self.meta.next_sequence.max(sequence.saturating_add(1));
        self.put_meta(&mut w);
        w
    }

    pub(crate) fn welcome(&mut self, stored: u64, want_snapshot: bool) -> Vec<Write> {
        let mut w = Vec::new();
        if stored >= SEQUENCE_CEILING {
            // A collector storing a sequence no agent can count past (accepted before
            // sequences were bounded): adopting it would wrap, and every later report would
            // look already stored. Keep our own count and send the whole state instead.
            tracing::error!(
                stored,
                next = self.meta.next_sequence,
                "the collector stores an impossible sequence; not adopting it, sending a snapshot"
            );
            self.drop_unacknowledged(&mut w);
            self.put_meta(&mut w);
            return w;
        }
        self.meta.next_sequence = self.meta.next_sequence.max(stored + 1);
        if want_snapshot {
            self.drop_unacknowledged(&mut w);
        } else {
            // The collector's state is the one we last had acknowledged, yet it stores a
            // sequence at or above an outbox record: it cannot have applied that record (it
            // would then hold the record's state). Send it again under a fresh sequence.
            let stale: Vec<u64> = self.outbox.range(..=stored).map(|(s, _)| *s).collect();
            for s in stale {
                let mut r = self.outbox.remove(&s).expect("listed");
                self.del(&mut w, outbox_key(s));
                r.sequence = self.meta.next_sequence;
                self.meta.next_sequence = self.meta.next_sequence.saturating_add(1);
                let v = json(&r);
                self.put(&mut w, outbox_key(r.sequence), v, true);
                self.outbox.insert(r.sequence, r);
            }
            self.meta.acked_sequence = self.meta.acked_sequence.max(stored);
        }
        self.put_meta(&mut w);
        w
    }

    pub(crate) fn resync(&mut self) -> Vec<Write> {
        let mut w = Vec::new();
        self.drop_unacknowledged(&mut w);
        self.put_meta(&mut w);
        w
    }
}
