//! `commscan-collector`: enrols devices, stores their compliance state, judges it, answers
//! queries.
//!
//! | module | concern |
//! |---|---|
//! | [`cluster`] | collectors sharing a database kept in step: stored rules and verdict events from the others |
//! | [`collector`] | the shared domain object: store, rules in force, CA, clock, limits; private fields behind accessors |
//! | [`enrollment`] | tokens and CSRs in, device identities and certificates out |
//! | [`ingest`] | applying a device's report: within its rate, idempotent by sequence, judged, durable before ack |
//! | [`queries`] | device listings, device detail, exports (authorised, paged), organisation summaries, fleet summaries and their totals |
//! | [`rejudge`] | policy reloads: swap rules, re-judge every device from stored findings |
//! | [`catalog_signing`] | `catalog keygen` and `catalog sign`: the offline catalog key and signed catalogs (the collector holds no catalog key) |
//! | [`stored_rules`] | rules applied through the API: versions in the store, history, rollback, every collector in step |
//! | [`admin`] | enrolment tokens, device revocation, access tokens, the audit log (privileged) |
//! | [`audit`] | appending to the audit log |
//! | [`connections`] | connected agents; takeovers and duplicate identities |
//! | [`limits`] | rate limits for enrolment and reports |
//! | [`open_files`] | raising the open-files limit: one socket per connected agent |
//! | [`service`] | background work of `serve`: staleness sweeps, SIGHUP reloads |
//! | [`staleness`] | devices past their reporting window become stale without a report |
//! | [`events`] | verdict-change events for `WatchEvents` |
//! | [`alerts`] | alert hooks: verdict changes, stale devices and enterprises to webhooks and syslog, from a durable outbox |
//! | [`classify`] | officers map or dismiss unclassified candidates; applied at ingest |
//! | [`mappings`] | an organisation's candidate decisions cached for its agents' streams, reloaded on every change |
//! | [`federation`] | enterprise → ministry aggregates: issuing enterprise certificates, pushing; the ministry side (its own type) receiving, freshness |
//! | [`auth`] | bearer tokens → principals; the one authorisation function |
//! | [`compliance`] | catalog, registers and policy in force; judging a device |
//! | [`catalog_trust`] | the collector's own check of signed catalogs against `catalog_keys` |
//! | [`store`] | the storage traits (devices and aggregates; tokens and people; audit; federated rows), their records, the sled backend |
//! | [`secrets`] | token generation and hashing |
//! | [`error`] | the domain error and its wire codes |
//! | [`grpc`] | thin tonic adapters for `Enrollment`, `Reporting`, `Query`, `Admin`, `Federation`: they convert, the domain decides |
//! | [`tls`] | rustls TLS 1.3 configuration and the accept loop |
//! | [`edge`] | the network edge: idle and unanswered connections closed, unauthenticated request bytes budgeted, shutdown bounded |
//! | [`server`] | all services on one port, the edge's limits, health, reflection (v1 and v1alpha) |
//! | [`backup`] | consistent online copies of the embedded store over the control socket, and restoring them |
//! | [`config`] | the configuration file merged with flags into what `serve` runs with; every problem at its line |
//! | [`web`] | the web console: sessions, server-rendered pages and SVG charts, server-sent verdict changes, its own HTTPS listener |
//! | [`metrics`] | Prometheus metrics on `--metrics-listen`: counters as things happen, figures read at scrape |
//! | [`layout`] | the data directory: `init` and opening it |
//!
//! The domain is the plain-Rust modules above `grpc`; the adapters and the server are apart
//! from it. Visibility follows use: what only this crate uses is `pub(crate)` (the modules
//! `admin`, `audit`, `classify`, `enrollment`, `events` and `staleness` entirely); what the
//! binaries, benches, tests and load generator use is public.

#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod alerts;
pub(crate) mod audit;
pub mod auth;
pub mod backup;
pub mod catalog_signing;
pub mod catalog_trust;
pub(crate) mod classify;
pub mod cluster;
pub mod collector;
pub mod compliance;
pub mod config;
pub mod connections;
pub mod edge;
pub(crate) mod enrollment;
pub mod error;
pub(crate) mod events;
pub mod federation;
pub mod grpc;
pub mod ingest;
pub mod layout;
pub mod limits;
pub(crate) mod mappings;
pub mod metrics;
pub mod open_files;
pub mod queries;
pub mod rejudge;
pub mod secrets;
pub mod server;
pub mod service;
pub(crate) mod staleness;
pub mod store;
pub mod stored_rules;
pub mod tls;
pub mod web;
