//! `commscan-runtime`: the process plumbing shared by the agent, the collector, `commscanctl`
//! and the demo, so that none of them has to link another role to get it.
//!
//! | module | concern |
//! |---|---|
//! | [`transport`] | a TLS channel to a collector (pinned CA, optional client identity, keepalive), the transport error, reconnect backoff |
//! | [`signals`] | one shutdown token: Ctrl-C, or SIGTERM on Unix |
//! | [`files`] | atomic, durable replacement of small files |
//! | `testing` | with feature `test-support` only: a tmpfs to fill, for disk-full tests; `testing::postgres`, a throw-away PostgreSQL cluster |
//! | [`bootstrap`] | a binary's `main`: logging, the rustls provider, the tokio runtime, exit codes |
//! | [`stdout`] | results on standard output: `out!`/`outln!`, a closed pipe ends the process quietly |
//! | [`docs`] | the hidden `completions SHELL` and `man DIR` subcommands every packaged binary has |
//!
//! Nothing here knows what a device, a report or a policy is: the domain lives in
//! `commscan-core`, the wire in `commscan-proto`.

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod docs;
pub mod files;
pub mod signals;
pub mod stdout;
pub mod transport;

#[cfg(feature = "test-support")]
pub mod testing;
