//! `commscan-agent status`: what the agent is doing, read from the data directory alone.
//!
//! The running agent writes `<data-dir>/status.json` (replaced by rename, never half
//! written) whenever something worth knowing happens: a scan, a connection, an
//! acknowledgement, a fallback, a quarantine. `status` reads it together with the identity,
//! the certificate's expiry and any quarantined spools; it never contacts the
//! collector, and it works while the agent runs (the spool itself is locked by the agent).

use crate::spool::QuarantineNote;
use crate::state::{DataDir, Identity, StateError};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::PathBuf;

/// The status file's name.
pub const STATUS_FILE: &str = "status.json";

/// The last scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanNote {
    /// When it finished (Unix seconds).
    pub at: i64,
    /// `full`, `sample`, `watch` or `rescan`.
    pub kind: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Changes against the previous state.
    pub changes: usize,
}

/// The last acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckNote {
    /// When (Unix seconds).
    pub at: i64,
    /// The sequence acknowledged.
    pub sequence: u64,
}

/// The spool's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolNote {
    /// Pending changes (coalesced per product).
    pub pending_changes: usize,
    /// Records sent or frozen, not yet acknowledged.
    pub unacked_records: usize,
    /// Bytes of both.
    pub bytes: u64,
    /// The cap.
    pub cap: u64,
    /// The next record will be a snapshot.
    pub snapshot_needed: bool,
    /// Times the cap forced a snapshot.
    pub fallbacks: u64,
    /// The latest such fallback.
    pub last_fallback: Option<String>,
    /// Last acknowledged sequence.
    pub acked_sequence: u64,
}

/// What the running agent writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    /// The agent's process id.
    pub pid: u32,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// When this file was written (Unix seconds).
    pub updated_at: i64,
    /// Whether a stream to the collector is open.
    pub connected: bool,
    /// The last delivery error, if the last session ended with one.
    pub last_error: Option<String>,
    /// The last scan.
    pub last_scan: Option<ScanNote>,
    /// The last acknowledgement.
    pub last_ack: Option<AckNote>,
    /// The spool.
    pub spool: SpoolNote,
    /// Set when the spool in use replaced a corrupt one.
    pub quarantine: Option<QuarantineNote>,
    /// Set when the agent stopped (SIGTERM) cleanly.
    pub stopped: bool,
    /// The catalog in use and the last signed catalog refused.
    #[serde(default)]
    pub catalog: Option<CatalogNote>,
}

/// The catalog the agent scans with ([`crate::catalog_update`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogNote {
    /// The release in use (the embedded catalog's unless a signed one was accepted).
    pub release: u64,
    /// The last release refused; 0 if none since the agent started.
    pub refused_release: u64,
    /// Why.
    pub refusal: String,
    /// How many of the organisation's candidate decisions are applied
    /// ([`crate::candidate_mappings`]).
    #[serde(default)]
    pub candidate_decisions: usize,
}

impl StatusFile {
    /// Writes the file (rename into place; not synced: it is a report, not state).
    pub fn write(&self, data: &DataDir) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(self).expect("status serialises");
        Ok(commscan_runtime::files::write_replace(
            &data.file(STATUS_FILE),
            &json,
            0o644,
        )?)
    }

    /// Reads the file; `None` if the agent never ran here.
    pub fn read(data: &DataDir) -> Option<Result<StatusFile, String>> {
        let bytes = std::fs::read(data.file(STATUS_FILE)).ok()?;
        Some(serde_json::from_slice(&bytes).map_err(|e| format!("{STATUS_FILE}: {e}")))
    }
}

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The identity, if enrolled.
    pub identity: Option<Identity>,
    /// The device certificate's expiry (RFC 3339), if readable.
    pub certificate_expires: Option<String>,
    /// Days until then.
    pub certificate_days_left: Option<i64>,
    /// The running agent's report.
    pub agent: Option<StatusFile>,
    /// Quarantined spools (files; directories from older agents).
    pub quarantined: Vec<PathBuf>,
    /// Problems reading any of this.
    pub problems: Vec<String>,
}

fn when(t: i64, now: i64) -> String {
    let s = time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string());
    let ago = now - t;
    let ago = if ago < 120 {
        format!("{ago}s ago")
    } else if ago < 7200 {
        format!("{}m ago", ago / 60)
    } else {
        format!("{}h ago", ago / 3600)
    };
    format!("{s} ({ago})")
}

impl StatusReport {
    /// Gathers the report at `now` (Unix seconds).
    pub fn gather(data: &DataDir, now: i64) -> StatusReport {
        let mut problems = Vec::new();
        let identity = match data.identity() {
            Ok(i) => Some(i),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let (mut expires, mut days) = (None, None);
        if identity.is_some() {
            match std::fs::read_to_string(data.file("device.crt"))
                .map_err(|e| e.to_string())
                .and_then(|pem| commscan_core::pki::not_after(&pem).map_err(|e| e.to_string()))
            {
                Ok(t) => {
                    expires = t
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok();
                    days = Some((t.unix_timestamp() - now).div_euclid(86_400));
                }
                Err(e) => problems.push(format!("device.crt: {e}")),
            }
        }
        let agent = match StatusFile::read(data) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                problems.push(e);
                None
            }
        };
        StatusReport {
            data_dir: data.root().to_path_buf(),
            identity,
            certificate_expires: expires,
            certificate_days_left: days,
            agent,
            quarantined: crate::spool::quarantine::quarantined(data.root()),
            problems,
        }
    }

    /// The report for a person.
    pub fn render(&self, now: i64) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "data directory:   {}", self.data_dir.display());
        match &self.identity {
            Some(i) => {
                let _ = writeln!(
                    o,
                    "device:           {} (organisation {})",
                    i.device_id, i.organisation
                );
                let _ = writeln!(o, "collector:        {}", i.collector);
            }
            None => {
                let _ = writeln!(o, "device:           not enrolled");
            }
        }
        if let (Some(e), Some(d)) = (&self.certificate_expires, self.certificate_days_left) {
            let warn = if d < 10 { "  (renewal due)" } else { "" };
            let _ = writeln!(o, "certificate:      expires {e}, in {d} days{warn}");
        }
        match &self.agent {
            None => {
                let _ = writeln!(o, "agent:            has not run with this data directory");
            }
            Some(s) => {
                let state = if s.stopped {
                    "stopped".to_owned()
                } else if s.connected {
                    "running, connected".to_owned()
                } else {
                    "running, not connected".to_owned()
                };
                let _ = writeln!(
                    o,
                    "agent:            {state} (pid {}, updated {})",
                    s.pid,
                    when(s.updated_at, now)
                );
                if let Some(e) = &s.last_error {
                    let _ = writeln!(o, "last error:       {e}");
                }
                match &s.last_scan {
                    Some(sc) => {
                        let _ = writeln!(
                            o,
                            "last scan:        {} {}, {} ms, {} changes",
                            sc.kind,
                            when(sc.at, now),
                            sc.duration_ms,
                            sc.changes
                        );
                    }
                    None => {
                        let _ = writeln!(o, "last scan:        none yet");
                    }
                }
                match &s.last_ack {
                    Some(a) => {
                        let _ = writeln!(
                            o,
                            "last ack:         sequence {} {}",
                            a.sequence,
                            when(a.at, now)
                        );
                    }
                    // After a restart, before the first acknowledgement of this run: the spool
                    // still knows the last acknowledged sequence.
                    None if s.spool.acked_sequence > 0 => {
                        let _ = writeln!(
                            o,
                            "last ack:         sequence {} (before the agent last started)",
                            s.spool.acked_sequence
                        );
                    }
                    None => {
                        let _ = writeln!(o, "last ack:         none yet");
                    }
                }
                let sp = &s.spool;
                let _ = writeln!(
                    o,
                    "spool:            {} pending changes, {} unacknowledged records, {} of {} bytes{}",
                    sp.pending_changes,
                    sp.unacked_records,
                    sp.bytes,
                    sp.cap,
                    if sp.snapshot_needed {
                        ", snapshot next"
                    } else {
                        ""
                    }
                );
                if sp.fallbacks > 0 {
                    let _ = writeln!(
                        o,
                        "spool fallbacks:  {} (last: {})",
                        sp.fallbacks,
                        sp.last_fallback.as_deref().unwrap_or("?")
                    );
                }
                if let Some(c) = &s.catalog {
                    let _ = writeln!(
                        o,
                        "catalog:          release {}, {} candidate decisions of the organisation",
                        c.release, c.candidate_decisions
                    );
                    if c.refused_release > 0 {
                        let _ = writeln!(
                            o,
                            "CATALOG REFUSED:  release {}: {}",
                            c.refused_release,
                            commscan_core::text::terminal_safe(&c.refusal)
                        );
                    }
                }
                if let Some(q) = &s.quarantine {
                    let _ = writeln!(
                        o,
                        "QUARANTINED:      corrupt spool set aside {} at {}: {}",
                        when(q.at, now),
                        q.path,
                        q.reason
                    );
                }
            }
        }
        for q in &self.quarantined {
            let _ = writeln!(o, "quarantined dir:  {}", q.display());
        }
        for p in &self.problems {
            let _ = writeln!(o, "problem:          {p}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(agent: StatusFile) -> StatusReport {
        StatusReport {
            data_dir: PathBuf::from("/var/lib/commscan"),
            identity: None,
            certificate_expires: None,
            certificate_days_left: None,
            agent: Some(agent),
            quarantined: Vec::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn after_a_restart_the_last_ack_comes_from_the_spool() {
        let restarted = StatusFile {
            spool: SpoolNote {
                acked_sequence: 42,
                ..SpoolNote::default()
            },
            ..StatusFile::default()
        };
        let text = report(restarted).render(1_000);
        assert!(
            text.contains("last ack:         sequence 42 (before the agent last started)"),
            "{text}"
        );
        assert!(!text.contains("none yet\n") || text.contains("last scan:        none yet"));
        let fresh = report(StatusFile::default()).render(1_000);
        assert!(fresh.contains("last ack:         none yet"), "{fresh}");
    }
}
