//! Versioned migrations, embedded in the binary and applied at open.
//!
//! `schema_version` holds one row: the version the database is at. Opening takes a
//! session-level advisory lock (so several collectors starting together migrate once, in
//! turn), refuses a database at a version newer than [`MIGRATIONS`] knows (an older collector
//! must not write a schema it does not understand), applies each missing migration in its own
//! transaction, and releases the lock.

use super::{StoreError, db};
use deadpool_postgres::Object;

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("0001_initial.sql"),
    include_str!("0002_rules.sql"),
    include_str!("0003_streams.sql"),
    include_str!("0004_sessions.sql"),
    include_str!("0005_alerts.sql"),
];

/// The advisory lock key of migrations (`commscan` in ASCII, as a number).
const LOCK: i64 = 0x636f_6d6d_7363_616e;

/// The schema version this binary writes.
pub fn current() -> i32 {
    i32::try_from(MIGRATIONS.len()).expect("few migrations")
}

/// Brings the database to [`current`], or refuses one newer than it.
pub async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await
        .map_err(db("take the migration lock"))?;
    let result = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await
        .map_err(db("release the migration lock"));
    result.and(unlocked.map(|_| ()))
}

async fn apply(client: &mut Object) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .await
        .map_err(db("create schema_version"))?;
    let found: i32 = client
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(db("read schema_version"))?
        .map_or(0, |r| r.get(0));
    if found > current() {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {found}, newer than this collector knows ({}): upgrade the collector",
            current()
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i32::try_from(i + 1).expect("few migrations");
        let tx = client.transaction().await.map_err(db("begin migration"))?;
        tx.batch_execute(sql).await.map_err(db("apply migration"))?;
        tx.execute("DELETE FROM schema_version", &[])
            .await
            .map_err(db("record schema version"))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db("record schema version"))?;
        tx.commit().await.map_err(db("commit migration"))?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}
