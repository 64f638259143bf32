//! The command groups of `commscanctl`, one module each, each with its own arguments and
//! `run`; and what they share: the connection flags and whether to colour.

pub(crate) mod audit;
pub(crate) mod candidates;
pub(crate) mod catalog;
pub(crate) mod devices;
pub(crate) mod events;
pub(crate) mod people;
pub(crate) mod policy;
pub(crate) mod registers;
pub(crate) mod rules;
pub(crate) mod summaries;
pub(crate) mod tokens;

use anyhow::Context;
use clap::Args;
use commscan_ctl::output::Format;
use commscan_ctl::{Connection, resolve_token};
use std::io::IsTerminal;
use std::path::PathBuf;

/// How to reach the collector, as flags or `COMMSCAN_*` variables.
#[derive(Args, Clone)]
pub(crate) struct Conn {
    /// Collector URL.
    #[arg(
        long,
        env = "COMMSCAN_COLLECTOR",
        default_value = "https://127.0.0.1:7443"
    )]
    collector: String,
    /// The deployment CA certificate (the collector's pki/ca.crt).
    #[arg(long, env = "COMMSCAN_CA")]
    ca: Option<PathBuf>,
    /// File holding your bearer token (or set COMMSCAN_TOKEN).
    #[arg(long, env = "COMMSCAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,
}

impl Conn {
    /// The collector's URL as given.
    pub(crate) fn collector_url(&self) -> String {
        self.collector.clone()
    }

    pub(crate) fn connection(&self) -> anyhow::Result<Connection> {
        let ca = self.ca.clone().context(
            "no CA certificate: set COMMSCAN_CA (or --ca) to the collector's pki/ca.crt",
        )?;
        let token = resolve_token(
            self.token_file.as_ref(),
            std::env::var("COMMSCAN_TOKEN").ok(),
        )?;
        Ok(Connection {
            collector: self.collector.clone(),
            ca,
            token,
        })
    }
}

/// Whether statuses are coloured: only on a terminal.
pub(crate) fn colour() -> bool {
    std::io::stdout().is_terminal()
}

/// A timestamp as RFC 3339, or `-`.
pub(crate) fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| commscan_proto::convert::from_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}
