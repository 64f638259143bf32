//! The agent's configuration file, `/etc/commscan/agent.toml`.
//!
//! Read in three steps: the file parses into [`RawConfig`] (every field optional, unknown
//! fields refused), [`RawConfig::validate`] checks every field and reports *all* problems at
//! once, each naming its key, and yields the typed [`AgentConfig`]. `commscan-agent validate`
//! runs exactly this (systemd's `ExecStartPre`), and exits 64 on any problem; command-line
//! flags of `run` override the file.
//!
//! ```toml
//! data_dir = "/var/lib/commscan-agent"   # identity, certificates, spool, status
//! full_scan_interval = "1h"               # periodic full scan, jittered by up to a tenth
//! process_sample_interval = "30s"         # cheap process-only sample ("0s" disables)
//! watch = true                            # rescan when package databases or app dirs change
//! watch_debounce = "2s"                   # quiet time after the last change before a rescan
//! spool_cap = "4MiB"                      # bytes of unacknowledged changes kept offline
//! backoff_initial = "1s"                  # first reconnect delay (full jitter)
//! backoff_max = "5m"                      # reconnect delay cap
//! keepalive_interval = "15m"              # HTTP/2 ping interval of an idle collector link
//! keepalive_interval_min = "2m"           # floor when the interval halves after an idle link died
//! keepalive_timeout = "10s"               # a ping unanswered this long means the link is dead
//! ack_timeout = "60s"                     # the hello or a report unacknowledged this long ends
//!                                         # the session (a dead link with something to send)
//! collectors = []                         # addresses to fail over between (default: enrolment's)
//! shutdown_grace = "10s"                  # SIGTERM: time allowed to finish and flush
//! processes = true                        # read the process table
//! root = "/"                              # scan this tree instead (testing, disk images)
//! catalog_keys = ["ed25519:<64 hex>"]     # catalog keys whose signed catalogs are accepted
//! ```
//!
//! `catalog_keys` are the public keys printed by `commscan-collector catalog keygen`. Without
//! any, the agent scans with its embedded catalog (or the newest signed one it accepted
//! earlier) and refuses every catalog the collector pushes, reporting why.

use commscan_core::signed_catalog::CatalogPublicKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `run`, `status` and `validate` look without `--config`.
#[cfg(not(windows))]
pub const DEFAULT_PATH: &str = "/etc/commscan/agent.toml";
/// The default data directory.
#[cfg(not(windows))]
pub const DEFAULT_DATA_DIR: &str = "/var/lib/commscan-agent";
/// Where `run`, `status` and `validate` look without `--config`: under `%ProgramData%`, whose
/// default location is taken (a constant cannot read the environment).
#[cfg(windows)]
pub const DEFAULT_PATH: &str = r"C:\ProgramData\commscan\agent.toml";
/// The default data directory, under `%ProgramData%`.
#[cfg(windows)]
pub const DEFAULT_DATA_DIR: &str = r"C:\ProgramData\commscan\agent";

/// Most keys in `catalog_keys`.
pub const MAX_CATALOG_KEYS: usize = 16;

/// Most collector addresses in `collectors`.
pub const MAX_COLLECTORS: usize = 16;

/// The file as written: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Data directory: identity, key, certificates, spool, status file.
    pub data_dir: Option<PathBuf>,
    /// Interval between full scans (e.g. "1h"); each is jittered by up to a tenth.
    pub full_scan_interval: Option<String>,
    /// Interval between process-only samples (e.g. "30s"); "0s" disables them.
    pub process_sample_interval: Option<String>,
    /// Rescan when package databases or application directories change.
    pub watch: Option<bool>,
    /// Quiet time after the last file change before the rescan (e.g. "2s").
    pub watch_debounce: Option<String>,
    /// Cap on unacknowledged bytes in the spool: a number of bytes or "512KiB", "4MiB", "4MB".
    pub spool_cap: Option<String>,
    /// First reconnect delay (e.g. "1s"); doubles per failure, with full jitter.
    pub backoff_initial: Option<String>,
    /// Longest reconnect delay (e.g. "5m").
    pub backoff_max: Option<String>,
    /// HTTP/2 keepalive ping interval of an idle link (e.g. "15m").
    pub keepalive_interval: Option<String>,
    /// The least the ping interval halves to after links found dead while idle (e.g. "2m").
    pub keepalive_interval_min: Option<String>,
    /// How long a keepalive ping may go unanswered (e.g. "10s").
    pub keepalive_timeout: Option<String>,
    /// How long to wait for a report's acknowledgement before giving the session up.
    pub ack_timeout: Option<String>,
    /// Collector addresses to report to, tried in turn after a failed session (several
    /// collectors on one database); empty: the address given at enrolment.
    pub collectors: Option<Vec<String>>,
    /// Time allowed on SIGTERM to finish and flush before exiting.
    pub shutdown_grace: Option<String>,
    /// Read the process table.
    pub processes: Option<bool>,
    /// Scan this directory tree instead of this machine.
    pub root: Option<PathBuf>,
    /// Public keys (`ed25519:<64 hex>`) whose signed catalogs this agent accepts.
    pub catalog_keys: Option<Vec<String>>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Scheduling of scans.
    pub triggers: Triggers,
    /// Delivery to the collector.
    pub delivery: Delivery,
    /// Spool cap in bytes.
    pub spool_cap: u64,
    /// SIGTERM grace.
    pub shutdown_grace: Duration,
    /// Read the process table.
    pub processes: bool,
    /// Scan this tree instead of this machine.
    pub root: Option<PathBuf>,
    /// Keys whose signed catalogs are accepted; empty: every pushed catalog is refused.
    pub catalog_keys: Vec<CatalogPublicKey>,
}

/// When to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    /// Full scan interval (jittered by up to a tenth).
    pub full_scan_interval: Duration,
    /// Process sample interval; `None` disables samples.
    pub process_sample_interval: Option<Duration>,
    /// File-watch triggers on.
    pub watch: bool,
    /// Debounce of file-watch triggers.
    pub watch_debounce: Duration,
}

/// How to talk to the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Reconnect delay cap.
    pub backoff_max: Duration,
    /// HTTP/2 keepalive ping interval of an idle link, before any halving
    /// ([`crate::delivery`]'s keepalive module).
    pub keepalive_interval: Duration,
    /// The least the idle ping interval halves to.
    pub keepalive_interval_min: Duration,
    /// HTTP/2 keepalive timeout.
    pub keepalive_timeout: Duration,
    /// Acknowledgement timeout.
    pub ack_timeout: Duration,
    /// Collector addresses to fail over between; empty means the enrolment's.
    pub collectors: Vec<String>,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            full_scan_interval: Duration::from_secs(3600),
            process_sample_interval: Some(Duration::from_secs(30)),
            watch: true,
            watch_debounce: Duration::from_secs(2),
        }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(15 * 60),
            keepalive_interval_min: Duration::from_secs(2 * 60),
            keepalive_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(60),
            collectors: Vec::new(),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            triggers: Triggers::default(),
            delivery: Delivery::default(),
            spool_cap: crate::spool::DEFAULT_CAP_BYTES,
            shutdown_grace: Duration::from_secs(10),
            processes: true,
            root: None,
            catalog_keys: Vec::new(),
        }
    }
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key (`spool_cap`), or `file` for the file as a whole.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<Problem>);

pub use commscan_core::size::parse_size;

impl RawConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            ConfigError(vec![Problem {
                key: "file".into(),
                message: e.to_string().trim().replace('\n', " "),
            }])
        })
    }

    /// Reads a file; a missing file at the default path reads as empty (all defaults).
    pub fn load(path: &Path, explicit: bool) -> Result<RawConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => RawConfig::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(RawConfig::default())
            }
            Err(e) => Err(ConfigError(vec![Problem {
                key: "file".into(),
                message: format!("{}: {e}", path.display()),
            }])),
        }
    }

    /// Checks every field; all problems are returned at once.
    pub fn validate(&self) -> Result<AgentConfig, ConfigError> {
        let mut problems = Vec::new();
        let d = AgentConfig::default();
        let mut dur = |key: &str, v: &Option<String>, default: Duration, min: Duration| match v {
            None => default,
            Some(s) => match commscan_core::duration::parse_duration(s) {
                Ok(x) if x >= min => x,
                Ok(_) => {
                    problems.push(Problem {
                        key: key.into(),
                        message: format!("'{s}' is shorter than the minimum {min:?}"),
                    });
                    default
                }
                Err(m) => {
                    problems.push(Problem {
                        key: key.into(),
                        message: m,
                    });
                    default
                }
            },
        };
        let s = Duration::from_secs;
        let full = dur(
            "full_scan_interval",
            &self.full_scan_interval,
            d.triggers.full_scan_interval,
            s(60),
        );
        let sample = dur(
            "process_sample_interval",
            &self.process_sample_interval,
            s(30),
            s(0),
        );
        let debounce = dur(
            "watch_debounce",
            &self.watch_debounce,
            d.triggers.watch_debounce,
            s(0),
        );
        let backoff_initial = dur(
            "backoff_initial",
            &self.backoff_initial,
            d.delivery.backoff_initial,
            s(1),
        );
        let backoff_max = dur(
            "backoff_max",
            &self.backoff_max,
            d.delivery.backoff_max,
            s(1),
        );
        let keepalive_interval = dur(
            "keepalive_interval",
            &self.keepalive_interval,
            d.delivery.keepalive_interval,
            s(1),
        );
        let keepalive_interval_min = dur(
            "keepalive_interval_min",
            &self.keepalive_interval_min,
            d.delivery.keepalive_interval_min,
            s(1),
        );
        let keepalive_timeout = dur(
            "keepalive_timeout",
            &self.keepalive_timeout,
            d.delivery.keepalive_timeout,
            s(1),
        );
        let ack_timeout = dur(
            "ack_timeout",
            &self.ack_timeout,
            d.delivery.ack_timeout,
            s(1),
        );
        let grace = dur(
            "shutdown_grace",
            &self.shutdown_grace,
            d.shutdown_grace,
            s(0),
        );
        if sample > s(0) && sample < s(5) {
            problems.push(Problem {
                key: "process_sample_interval".into(),
                message: "must be 0s (off) or at least 5s".into(),
            });
        }
        if backoff_max < backoff_initial {
            problems.push(Problem {
                key: "backoff_max".into(),
                message: format!("{backoff_max:?} is shorter than backoff_initial"),
            });
        }
        let spool_cap = match &self.spool_cap {
            None => d.spool_cap,
            Some(v) => match parse_size(v) {
                Ok(n) if n >= 64 * 1024 => n,
                Ok(_) => {
                    problems.push(Problem {
                        key: "spool_cap".into(),
                        message: format!("'{v}' is below the minimum of 64KiB"),
                    });
                    d.spool_cap
                }
                Err(m) => {
                    problems.push(Problem {
                        key: "spool_cap".into(),
                        message: m,
                    });
                    d.spool_cap
                }
            },
        };
        if keepalive_interval_min > keepalive_interval {
            problems.push(Problem {
                key: "keepalive_interval_min".into(),
                message: format!(
                    "{keepalive_interval_min:?} is more than keepalive_interval ({keepalive_interval:?})"
                ),
            });
        }
        let collectors = self.collectors.clone().unwrap_or_default();
        if collectors.len() > MAX_COLLECTORS {
            problems.push(Problem {
                key: "collectors".into(),
                message: format!("{} addresses; at most {MAX_COLLECTORS}", collectors.len()),
            });
        }
        for c in &collectors {
            if !c.starts_with("https://") || c.len() > 256 {
                problems.push(Problem {
                    key: "collectors".into(),
                    message: format!("'{c}' is not an https:// address of at most 256 characters"),
                });
            }
        }
        let keys = self.catalog_keys.clone().unwrap_or_default();
        if keys.len() > MAX_CATALOG_KEYS {
            problems.push(Problem {
                key: "catalog_keys".into(),
                message: format!("{} keys; at most {MAX_CATALOG_KEYS}", keys.len()),
            });
        }
        let mut catalog_keys = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match k.parse::<CatalogPublicKey>() {
                Ok(k) => catalog_keys.push(k),
                Err(m) => problems.push(Problem {
                    key: format!("catalog_keys[{i}]"),
                    message: m,
                }),
            }
        }
        for (key, p) in [("data_dir", &self.data_dir), ("root", &self.root)] {
            if let Some(p) = p
                && !p.is_absolute()
            {
                problems.push(Problem {
                    key: key.into(),
                    message: format!("'{}' must be an absolute path", p.display()),
                });
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(AgentConfig {
            data_dir: self.data_dir.clone().unwrap_or(d.data_dir),
            triggers: Triggers {
                full_scan_interval: full,
                process_sample_interval: (sample > s(0)).then_some(sample),
                watch: self.watch.unwrap_or(true),
                watch_debounce: debounce,
            },
            delivery: Delivery {
                backoff_initial,
                backoff_max,
                keepalive_interval,
                keepalive_interval_min,
                keepalive_timeout,
                ack_timeout,
                collectors,
            },
            spool_cap,
            shutdown_grace: grace,
            processes: self.processes.unwrap_or(true),
            root: self.root.clone(),
            catalog_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_addresses_must_be_https_and_few() {
        let ok = RawConfig::parse("collectors = [\"https://a:7443\", \"https://b:7443\"]")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(ok.delivery.collectors.len(), 2);
        let e = RawConfig::parse("collectors = [\"http://a:7443\"]")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.0.iter()
                .any(|p| p.key == "collectors" && p.message.contains("http://a:7443")),
            "{e:?}"
        );
        let many: Vec<String> = (0..17).map(|i| format!("\"https://c{i}:7443\"")).collect();
        let e = RawConfig::parse(&format!("collectors = [{}]", many.join(",")))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.0.iter()
                .any(|p| p.key == "collectors" && p.message.contains("at most 16")),
            "{e:?}"
        );
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = RawConfig::parse("").unwrap().validate().unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.triggers.full_scan_interval, Duration::from_secs(3600));
        assert_eq!(
            c.triggers.process_sample_interval,
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let err = RawConfig::parse(
            "full_scan_interval = \"soon\"\nspool_cap = \"12 parsecs\"\nbackoff_initial = \"10m\"\nbackoff_max = \"1m\"\ndata_dir = \"relative\"\n",
        )
        .unwrap()
        .validate()
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["full_scan_interval", "backoff_max", "spool_cap", "data_dir"],
            "{err}"
        );
    }

    #[test]
    fn the_idle_ping_defaults_to_15_minutes_and_its_floor_may_not_exceed_it() {
        let d = Delivery::default();
        assert_eq!(d.keepalive_interval, Duration::from_secs(900));
        assert_eq!(d.keepalive_interval_min, Duration::from_secs(120));
        let ok = RawConfig::parse("keepalive_interval = \"30m\"\nkeepalive_interval_min = \"5m\"")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(ok.delivery.keepalive_interval, Duration::from_secs(1800));
        assert_eq!(ok.delivery.keepalive_interval_min, Duration::from_secs(300));
        let e = RawConfig::parse("keepalive_interval = \"1m\"\nkeepalive_interval_min = \"5m\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.0.iter().any(|p| p.key == "keepalive_interval_min"),
            "{e:?}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = RawConfig::parse("spool_kap = \"4MiB\"\n").unwrap_err();
        assert!(err.to_string().contains("spool_kap"), "{err}");
    }

    #[test]
    fn a_missing_default_file_means_defaults_but_a_missing_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        assert!(RawConfig::load(&p, false).is_ok());
        assert!(RawConfig::load(&p, true).is_err());
    }
}
