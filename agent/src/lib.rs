//! `commscan-agent`: the sensor on every device.
//!
//! | module | concern |
//! |---|---|
//! | [`sources`] | one module per inventory source, each reading from a root path |
//! | [`scanner`] | runs the sources for a platform, matches items against the catalog, times it |
//! | [`output`] | the `scan` command's table and JSON output |
//! | [`state`] | the agent's data directory: identity, key, certificates, report sequence |
//! | [`enroll`] | key generation, CSR, `Enrollment.Enroll`, storing the identity |
//! | [`device_state`] | the reported state in canonical form, its digest, changes between states |
//! | [`spool`] | the durable spool: pending changes, unacknowledged records, sequences |
//! | [`delivery`] | the running agent: triggers → scans → spool → stream → acks, reconnects |
//! | [`candidate_mappings`] | the organisation's candidate decisions sent by the collector: kept beside the spool, applied to every scan |
//! | [`catalog_update`] | signed catalogs pushed by the collector: verified against `catalog_keys`, kept beside the spool, never downgraded |
//! | [`config`] | `/etc/commscan/agent.toml`: raw → validated → typed |
//! | [`status`] | `status.json` written by the running agent, read by `commscan-agent status` |
//! | [`systemd`] | `sd_notify` without libsystemd |
//! | [`service`] | the Windows service (SCM glue, directory ACLs) and the enrolment wait a service needs |
//! | `test_support` | test-only (feature `test-support`): the hive writer and a `.reg` export reader |
//!
//! The channel to the collector, backoff, signals and atomic file writes come from
//! `commscan-runtime`, shared with the collector and `commscanctl`.
//!
//! Data flow: sources → inventory items → matcher → [`commscan_core::scan::ScanReport`] →
//! [`device_state::State`] → changes in the [`spool`] → a record with a sequence number →
//! collector → ack → record forgotten.
//! The agent never judges compliance: the collector does.

// Denied everywhere; the one exception is the Windows service glue (`service::windows`,
// `service::acl`), whose FFI is commented at each call.
#![deny(unsafe_code)]

pub mod candidate_mappings;
pub mod catalog_update;
pub mod config;
pub mod delivery;
pub(crate) mod device_state;
pub mod enroll;
pub mod memory;
pub mod output;
pub mod scanner;
pub mod service;
pub mod sources;
pub mod spool;
pub mod state;
pub mod status;
pub(crate) mod systemd;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
