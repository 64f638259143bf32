//! `commscan-ctl`: the client side of the Query and Admin APIs, as `commscanctl` and the demo
//! use it. It depends on the contract, the domain and `commscan-runtime` only: building the
//! CLI never builds the collector, its store or the agent.
//!
//! | module | concern |
//! |---|---|
//! | [`connection`] | how to reach a collector (URL, pinned CA, bearer token) and the authenticated clients |
//! | [`output`] | rendering results as a table, JSON or CSV |
//!
//! The command line itself (`src/main.rs` and `src/cmd/`, one file per command group) is the
//! binary's.

#![forbid(unsafe_code)]

pub mod connection;
pub mod output;

pub use connection::{Connection, CtlError, resolve_token};
