//! Moving a site from the embedded sled store to PostgreSQL
//! (`commscan-collector migrate --to postgres://…`).
//!
//! Everything is copied as stored, not recomputed: devices with their findings, organisation
//! aggregates and their daily points, history, classifications, enrolment tokens and people
//! (hashes), the audit log (with its positions), federated rows, the stored versions of rules. The sled store is read while
//! the collector is stopped (sled's lock refuses a second opener); the database must hold no
//! devices, tokens, people or audit entries yet, so a copy is never merged into a live site.
//! Rows are written in transactions of [`BATCH`]; a failure leaves the database to be emptied
//! (drop and recreate it) and the copy run again. The counts of both sides are returned for
//! the operator to compare, and compared here: a mismatch is an error.

use super::StoreError;
use super::pg_store::PgStore;
use super::records::{
    AuditRecord, Classification, DeviceRecord, FederatedRecord, HistoryRecord, OrgAggregate,
    PersonRecord, RulesVersion, TokenRecord,
};
use super::sled_store::SledStore;
use std::collections::BTreeMap;

/// Rows per transaction.
pub const BATCH: usize = 1_000;

/// One stored row, as the sled store holds it.
#[derive(Debug, Clone)]
pub enum Row {
    /// A device.
    Device(Box<DeviceRecord>),
    /// An organisation's aggregate.
    Aggregate(String, OrgAggregate),
    /// An organisation's end-of-day aggregate (day as `YYYY-MM-DD`).
    Daily(String, time::Date, OrgAggregate),
    /// A device's history event.
    History(String, HistoryRecord),
    /// An officer's classification.
    Classification(String, String, Classification),
    /// An enrolment token by hash.
    Token(String, TokenRecord),
    /// A person by token hash.
    Person(String, PersonRecord),
    /// An audit entry at its position.
    Audit(u64, AuditRecord),
    /// A federated row (enterprise, organisation).
    Federated(String, String, FederatedRecord),
    /// A stored version of a rules file.
    Rules(Box<RulesVersion>),
}

impl Row {
    /// The table the row goes to, which names it in the counts.
    pub fn table(&self) -> &'static str {
        match self {
            Row::Device(_) => "devices",
            Row::Aggregate(..) => "org_aggregates",
            Row::Daily(..) => "org_daily",
            Row::History(..) => "history",
            Row::Classification(..) => "classifications",
            Row::Token(..) => "enrolment_tokens",
            Row::Person(..) => "people",
            Row::Audit(..) => "audit",
            Row::Federated(..) => "federated",
            Row::Rules(_) => "rules_versions",
        }
    }
}

/// Rows per table.
pub type Counts = BTreeMap<&'static str, u64>;

/// Copies `from` into the empty `to`; returns (rows read from sled, rows in PostgreSQL).
pub fn copy(from: &SledStore, to: &PgStore) -> Result<(Counts, Counts), StoreError> {
    let before = to.counts()?;
    let busy: Vec<String> = ["devices", "enrolment_tokens", "people", "audit"]
        .iter()
        .filter(|t| before.get(**t).copied().unwrap_or(0) > 0)
        .map(|t| format!("{t} ({})", before[*t]))
        .collect();
    if !busy.is_empty() {
        return Err(StoreError::Conflict(format!(
            "the database already holds {}: migrate into an empty database",
            busy.join(", ")
        )));
    }
    let mut read = Counts::new();
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
    from.dump(&mut |row| {
        *read.entry(row.table()).or_default() += 1;
        batch.push(row);
        if batch.len() == BATCH {
            to.import(&std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    to.import(&batch)?;
    to.finish_import()?;
    let written = to.counts()?;
    let differ: Vec<String> = read
        .iter()
        .filter(|(t, n)| written.get(*t) != Some(n))
        .map(|(t, n)| {
            format!(
                "{t}: {n} read, {} in the database",
                written.get(t).copied().unwrap_or(0)
            )
        })
        .collect();
    if !differ.is_empty() {
        return Err(StoreError::Backend(format!(
            "the copy does not match: {}",
            differ.join("; ")
        )));
    }
    Ok((read, written))
}
