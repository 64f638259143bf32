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

/// A timestamp as RFC 3339 to the second, or `-`.
pub(crate) fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    commscan_ctl::output::time_text(t).unwrap_or_else(|| "-".into())
}

/// A device id as typed: a whole id, or a prefix of exactly one device the caller may see
/// (as git takes abbreviated commits). An ambiguous prefix is refused with its matches.
pub(crate) async fn resolve_device(conn: &Conn, id: &str) -> anyhow::Result<String> {
    // A whole UUID needs no listing (and a revoked or foreign device is the collector's call).
    if id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4 {
        return Ok(id.to_owned());
    }
    let mut client = conn.connection()?.query().await?;
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_devices(commscan_proto::v1::ListDevicesRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(page.devices.into_iter().map(|d| d.device_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    use commscan_core::suggest::{Prefix, resolve_prefix};
    let shown = commscan_ctl::output::text(id);
    match resolve_prefix(id, ids.iter().map(String::as_str)) {
        Prefix::One(whole) => Ok(whole.to_owned()),
        Prefix::None => anyhow::bail!("no device id starts with '{shown}'"),
        Prefix::Ambiguous(matches) => anyhow::bail!(
            "'{shown}' is ambiguous: {} devices start with it: {}",
            matches.len(),
            matches.join(", ")
        ),
    }
}

/// The organisations the caller knows of: those with devices or summaries (the fleet view)
/// and those with enrolment tokens. Either listing may be refused by role; what the other
/// gives is used.
pub(crate) async fn known_organisations(
    conn: &Conn,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let c = conn.connection()?;
    let mut known = std::collections::BTreeSet::new();
    if let Ok(r) = c
        .query()
        .await?
        .fleet_summary(commscan_proto::v1::FleetSummaryRequest::default())
        .await
    {
        known.extend(
            r.into_inner()
                .rows
                .into_iter()
                .filter(|r| r.enterprise.is_empty())
                .map(|r| r.organisation),
        );
    }
    if let Ok(r) = c
        .admin()
        .await?
        .list_enrollment_tokens(commscan_proto::v1::ListEnrollmentTokensRequest::default())
        .await
    {
        known.extend(r.into_inner().tokens.into_iter().map(|t| t.organisation));
    }
    Ok(known)
}

/// A time given on the command line: RFC 3339, a date (`YYYY-MM-DD`, midnight UTC), or an age
/// (`2h`, `7d`: that long ago).
pub(crate) fn parse_when(s: &str) -> Result<time::OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date) {
        return Ok(d.midnight().assume_utc());
    }
    match commscan_core::duration::parse_duration(s) {
        Ok(age) => time::Duration::try_from(age)
            .ok()
            .and_then(|age| time::OffsetDateTime::now_utc().checked_sub(age))
            .ok_or_else(|| format!("'{}' reaches too far back", commscan_ctl::output::text(s))),
        Err(_) => Err(format!(
            "'{s}' is not a time (RFC 3339, YYYY-MM-DD, or an age such as 2h or 7d)"
        )),
    }
}
