//! A throw-away PostgreSQL deployment holding the simulated fleet, for the `ingest-pg`
//! scenarios.
//!
//! [`PgDeployment::start`] starts a cluster of its own with the test harness
//! ([`PgCluster`]: `initdb` in a temporary directory, loopback only, `fsync` and
//! `synchronous_commit` on, as in production) and puts the fleet in it the way an operator
//! moves a site: the fleet's initialised sled data directory (CA, server certificate, admin
//! and enrolment tokens, every device enrolled) is copied into the empty database by
//! [`migrate::copy`], the code of `commscan-collector migrate --to postgres://…`. Collectors
//! then serve the same data directory (for its PKI) with `--store` naming the database, each
//! with its own connection pool, as `commscan-collector serve --store` does.
//!
//! The database's work is part of what a report costs, so [`PgDeployment::cpu_seconds`]
//! reads the CPU time of the postmaster and every backend from `/proc`.
//!
//! Dropping it stops the server (`pg_ctl stop -m immediate`, bounded) and deletes it; that
//! blocks, so drop it on a blocking thread when inside a runtime.

use crate::LoadgenError;
use commscan_collector::layout::Layout;
use commscan_collector::store::migrate;
use commscan_collector::store::pg_store::{PgConfig, PgStore};
use commscan_collector::store::sled_store::SledStore;
use commscan_runtime::testing::postgres::PgCluster;
use std::path::Path;

/// Database connections per collector process, as `commscan-collector serve` opens by default
/// (`--store-connections`).
pub const COLLECTOR_CONNECTIONS: usize = 32;

/// A running cluster holding a copy of a fleet's store.
#[derive(Debug)]
pub struct PgDeployment {
    cluster: PgCluster,
}

impl PgDeployment {
    /// Starts a cluster and copies the sled store of `layout` (an initialised data directory,
    /// not being served) into it. `Ok(None)` when the PostgreSQL server binaries are missing
    /// (the harness printed why). Blocks for a few seconds (`initdb`, the copy).
    pub fn start(name: &str, layout: &Layout) -> Result<Option<PgDeployment>, LoadgenError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| LoadgenError::Setup(format!("{what}: {e}"));
        // The harness panics (with the server's log) when a cluster that should start does
        // not; a bench run reports that as an error rather than unwinding through it.
        let cluster = std::panic::catch_unwind(|| PgCluster::start(name))
            .map_err(|_| LoadgenError::Setup("PostgreSQL did not start (see above)".into()))?;
        let Some(cluster) = cluster else {
            return Ok(None);
        };
        let d = PgDeployment { cluster };
        let from = SledStore::open(&layout.path("store")).map_err(|e| setup("sled store", &e))?;
        let to = PgStore::open(&d.config(4)).map_err(|e| setup("database", &e))?;
        migrate::copy(&from, &to).map_err(|e| setup("copying the fleet", &e))?;
        Ok(Some(d))
    }

    /// The store settings of a collector with at most `max_connections` connections.
    pub fn config(&self, max_connections: usize) -> PgConfig {
        PgConfig {
            url: self.cluster.url(),
            password: Some(self.cluster.password().to_owned()),
            max_connections,
        }
    }

    /// `postgres://commscan@127.0.0.1:PORT/commscan` (no password in it).
    pub fn url(&self) -> String {
        self.cluster.url()
    }

    /// A file holding the password (for `--store-password-file`).
    pub fn password_file(&self) -> &Path {
        self.cluster.password_file()
    }

    /// The postmaster's process id, from `postmaster.pid` in the data directory.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let data = self.cluster.log_file().parent()?;
        std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// CPU seconds used so far by the server: the postmaster and its children (backends,
    /// WAL writer, checkpointer, autovacuum), live or exited. `NaN` if it cannot be read.
    pub fn cpu_seconds(&self) -> f64 {
        self.postmaster_pid()
            .and_then(crate::procfs::cpu_with_children)
            .unwrap_or(f64::NAN)
    }

    /// Runs `sql` as the deployment's role; psql's unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String, LoadgenError> {
        self.cluster
            .psql(&self.cluster.url(), sql)
            .map_err(LoadgenError::Setup)
    }
}
