//! Syslog delivery: RFC 5424 messages over TCP with octet-counting framing (RFC 6587 §3.4.1,
//! `<length> <message>`), optionally in TLS (RFC 5425), on one connection per sink kept open
//! and opened again after any failure (the outbox's backoff paces reconnects).
//!
//! A message:
//!
//! ```text
//! <PRI>1 2026-05-01T10:00:00.000000Z HOST commscan PID verdict_changed [commscan@32473 id="…" kind="…" organisation="…" device_id="…" hostname="…" from="…" to="…" products="…"] device pc-1 (…) of acme: compliant -> noncompliant (zoom)
//! ```
//!
//! MSGID is the alert's kind; the structured data element `commscan@32473` carries every field
//! (32473 is the example enterprise number of RFC 5612: receivers match on the SD-ID as a
//! whole). Every value from a device or an enterprise is hostile: control characters are
//! removed, values cut to [`MAX_VALUE_CHARS`], and `"`, `\` and `]` escaped with a backslash as
//! RFC 5424 §6.3.3 requires. The free-text MSG is cleaned of control characters too, so no
//! value can start another line or frame.
//!
//! What "delivered" means here: the frame was written to the socket and flushed. TCP syslog has
//! no acknowledgement, so frames in the kernel's buffers when a receiver dies unseen are lost;
//! a failed write is retried, so a message is sent at least once but may be lost in that
//! window (RELP would close it; rsyslog, syslog-ng and most SIEM collectors speak it).

use super::config::Syslog;
use super::event::Alert;
use super::transport::{Io, connect_tcp};
use tokio::io::AsyncWriteExt;

/// Longest structured-data value, in characters.
pub const MAX_VALUE_CHARS: usize = 512;
/// The structured data element's id.
pub const SD_ID: &str = "commscan@32473";

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    /// TCP or TLS.
    #[error("connect: {0}")]
    Connect(String),
    /// Writing the frame.
    #[error("write: {0}")]
    Write(String),
    /// Not within the sink's timeout.
    #[error("not sent within {0:?}")]
    Timeout(std::time::Duration),
}

/// A syslog receiver and its connection, if open.
pub struct SyslogSender {
    sink: Syslog,
    conn: Option<Box<dyn Io>>,
}

impl std::fmt::Debug for SyslogSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSender")
            .field("sink", &self.sink.name)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl SyslogSender {
    /// A sender to `sink`, not connected yet.
    pub fn new(sink: Syslog) -> SyslogSender {
        SyslogSender { sink, conn: None }
    }

    /// Sends `alert` once; a failure closes the connection (the next attempt opens another).
    pub async fn send(&mut self, alert: &Alert) -> Result<(), SyslogError> {
        let timeout = self.sink.routing.timeout;
        let message = format(&self.sink, alert, std::process::id());
        let frame = format!("{} {message}", message.len());
        let result = tokio::time::timeout(timeout, self.write(frame.as_bytes()))
            .await
            .unwrap_or(Err(SyslogError::Timeout(timeout)));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn write(&mut self, frame: &[u8]) -> Result<(), SyslogError> {
        if self.conn.is_none() {
            let (host, port) = self
                .sink
                .address
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| SyslogError::Connect("address is not HOST:PORT".into()))?;
            let conn = connect_tcp(&host, port, self.sink.tls.as_ref())
                .await
                .map_err(SyslogError::Connect)?;
            tracing::info!(sink = %self.sink.name, address = %self.sink.address, tls = self.sink.tls.is_some(), "syslog connected");
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.write_all(frame)
            .await
            .map_err(|e| SyslogError::Write(e.to_string()))?;
        conn.flush()
            .await
            .map_err(|e| SyslogError::Write(e.to_string()))
    }
}

/// `s` without control characters, at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// An SD-PARAM value: cleaned, cut, then `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
pub fn sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(s, MAX_VALUE_CHARS).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 5424's TIMESTAMP: UTC, microseconds (at most six fractional digits).
fn timestamp(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// The RFC 5424 message of `alert` (without framing).
pub fn format(sink: &Syslog, alert: &Alert, pid: u32) -> String {
    let pri = u16::from(sink.facility) * 8 + u16::from(alert.severity());
    let mut params: Vec<(&str, String)> = vec![
        ("id", alert.id.clone()),
        ("kind", alert.kind.as_str().to_owned()),
        ("organisation", alert.organisations.join(",")),
    ];
    if let Some(d) = &alert.device {
        params.extend([
            ("device_id", d.device_id.clone()),
            ("hostname", d.hostname.clone()),
            ("from", d.from.as_str().to_owned()),
            ("to", d.to.as_str().to_owned()),
            ("products", d.products.join(",")),
        ]);
    }
    if let Some(e) = &alert.enterprise {
        params.extend([
            ("enterprise", e.enterprise.clone()),
            ("last_push", timestamp(e.last_push)),
        ]);
    }
    let sd: String = params
        .iter()
        .map(|(k, v)| format!(" {k}=\"{}\"", sd_value(v)))
        .collect();
    format!(
        "<{pri}>1 {} {} commscan {pid} {} [{SD_ID}{sd}] {}",
        timestamp(alert.at),
        sink.hostname,
        alert.kind.as_str(),
        clean(&alert.summary(), 2048)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::{Routing, Syslog};
    use crate::alerts::event::{AlertKind, DeviceChange};
    use commscan_core::verdict::Status;

    fn sink() -> Syslog {
        Syslog {
            name: "s".into(),
            address: "127.0.0.1:1".into(),
            tls: None,
            facility: 16,
            hostname: "collector-1".into(),
            routing: Routing {
                organisations: None,
                events: AlertKind::ALL.into_iter().collect(),
                max_outbox: 10,
                max_age: std::time::Duration::from_secs(60),
                retry_initial: std::time::Duration::from_secs(1),
                retry_max: std::time::Duration::from_secs(2),
                timeout: std::time::Duration::from_secs(1),
            },
        }
    }

    #[test]
    fn a_hostile_host_name_cannot_break_out_of_its_value_or_the_line() {
        let alert = Alert {
            id: "id-1".into(),
            kind: AlertKind::VerdictChanged,
            at: time::macros::datetime!(2026-05-01 10:00:00.123456789 UTC),
            organisations: vec!["acme".into()],
            device: Some(DeviceChange {
                device_id: "d1".into(),
                hostname: "evil\"] [x@1 a=\"b\\\n<13>1 forged".into(),
                from: Status::Compliant,
                to: Status::Noncompliant,
                products: vec!["zoom".into()],
            }),
            enterprise: None,
        };
        let m = format(&sink(), &alert, 42);
        assert!(
            m.starts_with("<132>1 2026-05-01T10:00:00.123456Z collector-1 commscan 42 verdict_changed [commscan@32473 id=\"id-1\""),
            "{m}"
        );
        assert!(
            m.contains(r#"hostname="evil\"\] [x@1 a=\"b\\<13>1 forged""#),
            "{m}"
        );
        assert!(!m.contains('\n'));
        // The first unescaped `]` ends the one SD element, right before the MSG.
        let end = m
            .char_indices()
            .find(|(i, c)| *c == ']' && !m[..*i].ends_with('\\'))
            .map(|(i, _)| i)
            .unwrap();
        assert!(m[end..].starts_with("] device evil"), "{m}");
    }

    #[test]
    fn values_are_cut_and_control_characters_removed() {
        let v = sd_value(&format!("a\u{7}b\u{1b}[31m{}", "x".repeat(2000)));
        assert!(v.starts_with("ab[31m"));
        assert_eq!(v.chars().count(), MAX_VALUE_CHARS);
    }
}
