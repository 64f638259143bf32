//! `commscan-core`: the domain of commscan, free of gRPC and of any operating system.
//!
//! | module | concern |
//! |---|---|
//! | [`platform`] | the operating system families a device can be |
//! | [`catalog`] | the catalog of communication products and their signatures, loaded and validated from TOML |
//! | [`register`] | named registers: lists of product ids approved by an authority |
//! | [`inventory`] | inventory items, the neutral input every agent source produces |
//! | [`matcher`] | the precompiled matcher turning inventory items into findings with evidence |
//! | [`mappings`] | an organisation's decisions on unclassified candidates, applied alike by collector and agents |
//! | [`scan`] | the scan result: findings, unclassified candidates, per-source status (the `scan --output json` contract) |
//! | [`policy`] | the policy language and its evaluation into a verdict with readable reasons |
//! | [`verdict`] | judging findings under a policy at a given time: status and reasons |
//! | [`pki`] | the deployment CA, server certificates, device certificate signing, enterprise certificates |
//! | [`identity`] | device and enterprise identities and their SPIFFE-style URIs in client certificates |
//! | [`duration`] | human durations (`14d`) in config and policy files |
//! | [`size`] | human sizes (`4MiB`) in config files |
//! | [`suggest`] | "did you mean" for mistyped names, and ids given as unambiguous prefixes |
//! | [`text`] | hostile text from endpoints: length limits, control characters removed, CSV quoting |
//! | [`report`] | a report's body (snapshot or delta) and the canonical form of findings |
//! | [`signed_catalog`] | signed catalog envelopes: release, digest, Ed25519 signatures by catalog keys; parsing, signing, verification |
//! | [`digest`] | the state digest both sides compute over the canonical state |
//! | [`textpos`] | the validation every data file shares ([`textpos::FileCheck`]): problems that name file, line and key |
//!
//! The agent uses `catalog`, `matcher` and `scan`; the collector uses `policy`, `pki` and
//! `identity`; both use the rest. Nothing here performs network I/O.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod digest;
pub mod duration;
pub mod identity;
pub mod inventory;
pub mod mappings;
pub mod matcher;
pub mod pki;
pub mod platform;
pub mod policy;
pub mod register;
pub mod report;
pub mod scan;
pub mod signed_catalog;
pub mod size;
pub mod suggest;
pub mod text;
pub mod textpos;
pub mod verdict;

/// The version of commscan, shared by every binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
