//! The fleet simulator behind `commscan-loadgen`: many simulated agents holding real mutual-TLS
//! `Reporting.Connect` streams to a collector on loopback, and the baselines it is compared with.
//!
//! | module | concern |
//! |---|---|
//! | [`fleet`] | the simulated fleet on disk: a collector data directory with every device enrolled, each device's own key and certificate; built once, cached |
//! | [`agent`] | one simulated agent: connect from a chosen source address, hello, snapshot, deltas, reconnect with the real agent's backoff |
//! | [`pool`] | many agents in one process, the load phase they follow, and the counters they share |
//! | [`echo`] | the bare baseline: a `Reporting` service that answers every report at once, on the same TLS and HTTP/2 settings |
//! | [`postgres`] | a throw-away PostgreSQL cluster holding a copy of the fleet (the `ingest-pg` scenarios) |
//! | [`sled_baseline`] | the storage baseline: raw sled writes with the collector's flush policy |
//! | [`histogram`] | ack latencies, mergeable across processes |
//! | [`procfs`] | a process's memory and CPU time from `/proc` |
//!
//! A simulated agent speaks the wire protocol exactly as `commscan-agent run` does (hello with
//! its device id, a snapshot at the start of every session, one report in flight, an ack before
//! the next, the agent's HTTP/2 keepalive and full-jitter backoff), but does not scan: reports
//! are synthetic (three catalogued findings, deltas bumping one version), so the simulator
//! measures the collector, not the scanner. Everything is bounded: agents stop when their pool
//! stops, and the `commscan-loadgen` binary bounds every phase in time.

pub mod agent;
pub mod echo;
pub mod fleet;
pub mod histogram;
pub mod pool;
pub mod postgres;
pub mod procfs;
pub mod sled_baseline;

/// A simulator failure.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The collector's library refused something during setup.
    #[error("setup: {0}")]
    Setup(String),
    /// The connection could not be made.
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The collector answered with an error.
    #[error("collector: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The collector broke the protocol (or the stream ended).
    #[error("protocol: {0}")]
    Protocol(String),
}

impl LoadgenError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadgenError {
        let what = what.into();
        move |source| LoadgenError::Io { what, source }
    }
}

/// Nanoseconds since the Unix epoch: comparable between the simulator's processes.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
