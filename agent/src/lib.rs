//! `commscan-agent`: the sensor on every device.
//!
//! | module | concern |
//! |---|---|
//! | [`sources`] | one module per inventory source, each reading from a root path |
//! | [`scanner`] | runs the sources for a platform, matches items against the catalog, times it |
//! | [`output`] | the `scan` command's table and JSON output |
//! | [`state`] | the agent's data directory: identity, key, certificates, report sequence |
//! | [`enroll`] | key generation, CSR, `Enrollment.Enroll`, storing the identity |
//! | [`transport`] | TLS channels to the collector and one `Reporting.Connect` session |
//! | [`device_state`] | the reported state in canonical form, its digest, changes between states |
//! | [`spool`] | the durable spool: pending changes, unacknowledged records, sequences |
//!
//! Data flow: sources → inventory items → matcher → [`commscan_core::scan::ScanReport`] →
//! snapshot report with a sequence number → collector → ack → sequence recorded in `state`.
//! The agent never judges compliance: the collector does.

#![forbid(unsafe_code)]

pub mod device_state;
pub mod enroll;
pub mod output;
pub mod scanner;
pub mod sources;
pub mod spool;
pub mod state;
pub mod transport;
