//! Test-only helpers that other crates' tests need from the agent: the registry hive writer
//! the agent's own tests use ([`hive_writer`]) and a reader of `.reg` exports
//! ([`reg_export`]) that turns what `reg export` wrote into a hive, so a registry filled on a
//! live system (Wine's) can be scanned offline.
//!
//! Built only with the `test-support` feature (and for the crate's own unit tests); the
//! feature is turned on by dev-dependencies only, so release builds never carry this module
//! or the `commscan-hive-from-reg` binary.

#[path = "../tests/support/hive_writer.rs"]
pub mod hive_writer;
pub mod reg_export;
