//! The collector's configuration file, `/etc/commscan/collector.toml`, merged with the
//! command line into the [`Settings`] `serve` runs with and `validate` checks.
//!
//! Precedence, highest first: a flag, its environment variable (clap reads both), the file,
//! the built-in default. The file is optional at its default path and required when named
//! with `--config`. It is read like every data file ([`FileCheck`]): unknown keys and syntax
//! errors are refused at their line, then every value is checked and *all* problems are
//! reported at once, each with file, line and key; a flag's problem names the flag. Relative
//! paths in the file are taken from the file's directory, so a file and the policies beside
//! it move together.
//!
//! ```toml
//! data_dir = "/var/lib/commscan-collector"
//! listen = "0.0.0.0:7443"          # agents, commscanctl, federation (gRPC, mutual TLS)
//! web_listen = "0.0.0.0:7444"      # the web console; "off" serves none
//! metrics_listen = "127.0.0.1:9464" # Prometheus; "off" serves none
//!
//! [store]                          # absent: sled in the data directory
//! url = "postgres://commscan@db.example:5432/commscan?sslmode=verify-full"
//! password_file = "/etc/commscan/db.password"
//! connections = 32
//!
//! [rules]                          # absent: the embedded catalog, registers and policy
//! policy = "policy.toml"
//! catalog = "catalog.toml"
//! registers = "registers.toml"
//! catalog_keys = ["ed25519:<64 hex>"] # signed catalogs must carry a signature by one of these
//! [rules.organisations]            # a policy per organisation
//! acme = "acme.policy.toml"
//!
//! [federation]
//! upstream = "https://ministry.example:7443"  # an enterprise pushing to its ministry
//! upstream_ca = "ministry-ca.crt"
//! upstream_cert = "enterprise.crt"
//! upstream_key = "enterprise.key"
//! push_interval = "15m"
//! fetch_registers = false          # an enterprise taking its ministry's registers too
//! stale_after = "45m"              # a ministry: an enterprise silent this long is stale
//!
//! [limits]                         # the network edge (ARCHITECTURE.md, "Bounds")
//! max_connections = 18000
//! max_streams_per_connection = 16
//! unauthenticated_buffer = "32MiB"
//! tls_handshake_timeout = "10s"
//! first_request_timeout = "10s"
//! idle_timeout = "30s"
//! request_timeout = "30s"
//! keepalive_interval = "2h"         # server pings (1s..24h), to reap vanished agents' streams
//! keepalive_timeout = "20s"
//! shutdown_grace = "10s"           # at most 25s: the unit's TimeoutStopSec is 30s
//!
//! [[alerts.webhook]]               # alert hooks (crate::alerts::config, deploy/collector.toml)
//! name = "soc"
//! url = "https://soc.example/hooks/commscan"
//! secret_file = "soc-webhook.secret"
//! [[alerts.syslog]]
//! name = "siem"
//! address = "siem.example:6514"
//! tls = true
//! ```

use crate::compliance::RulesConfig;
use crate::federation::upstream::UpstreamFlags;
use crate::server::Limits;
use crate::store::pg_store::PgConfig;
use commscan_core::textpos::{FileCheck, Problem, Problems, read_source};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where `serve` and `validate` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/commscan/collector.toml";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/commscan-collector";
/// The default gRPC address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";
/// The default console address.
pub const DEFAULT_WEB_LISTEN: &str = "0.0.0.0:7444";
/// The default metrics address: loopback, since `/metrics` is plain HTTP.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Database connections in each of a collector's two pools, by default: one for reads and
/// writes, one for locks held on a connection of their own (a device lock another collector
/// holds, each alert sink being delivered, each exclusive task). Besides them the store keeps
/// four sessions for uncontended device locks and one listening for notifications.
pub const DEFAULT_STORE_CONNECTIONS: usize = 32;
/// An enterprise pushes at least this often, by default.
pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Store connections left for everything but alert sinks' locks, at the least.
pub const MIN_SPARE_CONNECTIONS: usize = 4;
/// The longest `limits.shutdown_grace`: the shipped unit's `TimeoutStopSec` is 30 s, and the
/// collector needs a few seconds after the grace to stop its other work and flush.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// The file as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    data_dir: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    web_listen: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    federation: RawFederation,
    #[serde(default)]
    limits: RawLimits,
    alerts: Option<Spanned<crate::alerts::config::AlertsConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    connections: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    policy: Option<Spanned<String>>,
    catalog: Option<Spanned<String>>,
    registers: Option<Spanned<String>>,
    catalog_keys: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    organisations: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    upstream: Option<Spanned<String>>,
    upstream_ca: Option<Spanned<String>>,
    upstream_cert: Option<Spanned<String>>,
    upstream_key: Option<Spanned<String>>,
    push_interval: Option<Spanned<String>>,
    fetch_registers: Option<Spanned<bool>>,
    stale_after: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<Spanned<i64>>,
    max_streams_per_connection: Option<Spanned<i64>>,
    unauthenticated_buffer: Option<Spanned<String>>,
    tls_handshake_timeout: Option<Spanned<String>>,
    first_request_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    keepalive_interval: Option<Spanned<String>>,
    keepalive_timeout: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
}

/// What the command line (or the environment) says; each value given overrides the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--web-listen`.
    pub web_listen: Option<String>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<String>,
    /// `--store`.
    pub store_url: Option<String>,
    /// `--store-password-file`.
    pub store_password_file: Option<PathBuf>,
    /// `--store-connections`.
    pub store_connections: Option<usize>,
    /// `--policy`.
    pub policy: Option<PathBuf>,
    /// `--org-policy ORG=FILE`, added to (and replacing by organisation) the file's.
    pub org_policies: Vec<(String, PathBuf)>,
    /// `--catalog`.
    pub catalog: Option<PathBuf>,
    /// `--registers`.
    pub registers: Option<PathBuf>,
    /// `--catalog-key` (repeatable); given, they replace the file's.
    pub catalog_keys: Vec<String>,
    /// `--fetch-registers`.
    pub fetch_registers: Option<bool>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--upstream-ca`.
    pub upstream_ca: Option<PathBuf>,
    /// `--upstream-cert`.
    pub upstream_cert: Option<PathBuf>,
    /// `--upstream-key`.
    pub upstream_key: Option<PathBuf>,
    /// `--push-interval`.
    pub push_interval: Option<Duration>,
    /// `--federation-stale-after`.
    pub federation_stale_after: Option<Duration>,
}

/// A PostgreSQL store's settings (the password is read from its file when the store opens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `postgres://USER@HOST:PORT/DATABASE[?sslmode=...]`.
    pub url: String,
    /// A file holding the password; else `COMMSCAN_STORE_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// Most connections.
    pub connections: usize,
}

impl StoreSettings {
    /// The store's configuration, its password read from the file or the environment.
    pub fn pg_config(&self) -> Result<PgConfig, String> {
        let password = match &self.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("store password file {}: {e}", p.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => std::env::var("COMMSCAN_STORE_PASSWORD").ok(),
        };
        Ok(PgConfig {
            url: self.url.clone(),
            password,
            max_connections: self.connections,
        })
    }
}

/// Everything `serve` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The gRPC address.
    pub listen: SocketAddr,
    /// The console's address; `None` when off.
    pub web_listen: Option<SocketAddr>,
    /// The metrics address; `None` when off.
    pub metrics_listen: Option<SocketAddr>,
    /// A PostgreSQL store; `None` for sled in the data directory.
    pub store: Option<StoreSettings>,
    /// The rules files.
    pub rules: RulesConfig,
    /// Keys whose signed catalogs this collector accepts ([`crate::catalog_trust`]).
    pub catalog_keys: Vec<commscan_core::signed_catalog::CatalogPublicKey>,
    /// The ministry to push to, unresolved (its files are read when `serve` starts).
    pub upstream: UpstreamFlags,
    /// On a ministry, how long an enterprise's rows stay fresh.
    pub federation_stale_after: Duration,
    /// The network edge's limits.
    pub limits: Limits,
    /// `[alerts]`: the alert sinks, validated (their secrets and CA files read).
    pub alerts: crate::alerts::config::Sinks,
}

/// Reads the configuration file: `path` when named (it must exist), else [`DEFAULT_PATH`] if
/// it exists. The name to report problems under and the text.
pub fn read(path: Option<&Path>) -> Result<Option<(PathBuf, String)>, Problems> {
    match path {
        Some(p) => read_source(p).map(|(_, text)| Some((p.to_path_buf(), text))),
        None => {
            let p = Path::new(DEFAULT_PATH);
            match std::fs::read_to_string(p) {
                Ok(text) => Ok(Some((p.to_path_buf(), text))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(_) => read_source(p).map(|(_, text)| Some((p.to_path_buf(), text))),
            }
        }
    }
}

/// Where a value came from, for its problem.
#[derive(Clone)]
enum Origin {
    /// The file, at this span.
    File(Range<usize>),
    /// The command line or environment, under this flag.
    Flag(&'static str),
}

/// The problems of one resolution: the file's (with lines) and the flags'.
struct Check<'a> {
    file: Option<FileCheck<'a>>,
    flags: Vec<Problem>,
}

impl Check<'_> {
    fn problem(&mut self, origin: Origin, key: &str, message: String) {
        let flag = match (origin, self.file.as_mut()) {
            (Origin::File(span), Some(f)) => return f.problem(span, key.to_owned(), message),
            (Origin::Flag(flag), _) => flag,
            (Origin::File(_), None) => key,
        };
        self.flags.push(Problem {
            file: "command line".into(),
            line: None,
            key: flag.to_owned(),
            message,
        });
    }

    fn finish(self) -> Result<(), Problems> {
        let mut all = match self.file.map(FileCheck::finish) {
            Some(Err(Problems(p))) => p,
            _ => Vec::new(),
        };
        all.extend(self.flags);
        if all.is_empty() {
            Ok(())
        } else {
            Err(Problems(all))
        }
    }
}

/// Merges the file (`file`: its path and text, if one was read) with `flags` into the settings,
/// or every problem found.
pub fn resolve(file: Option<&(PathBuf, String)>, flags: Overrides) -> Result<Settings, Problems> {
    let name = file.map(|(p, _)| p.display().to_string());
    let (raw, file_check) = match (file, name.as_deref()) {
        (Some((_, text)), Some(name)) => {
            let (raw, check) = FileCheck::parse::<RawFile>(name, text)?;
            (raw, Some(check))
        }
        _ => (RawFile::default(), None),
    };
    // Relative paths in the file are the file's directory's.
    let base = file
        .and_then(|(p, _)| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path_of = |v: &Spanned<String>| base.join(v.get_ref());
    let mut c = Check {
        file: file_check,
        flags: Vec::new(),
    };

    let store = store(&mut c, &flags, &raw.store, &path_of);
    let rules = rules(&mut c, &flags, &raw.rules, &path_of);
    let catalog_keys = catalog_keys(&mut c, &flags, &raw.rules);
    let data_dir = flags
        .data_dir
        .or_else(|| raw.data_dir.as_ref().map(path_of))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = address(
        &mut c,
        flags.listen,
        &raw.listen,
        ("listen", "--listen"),
        DEFAULT_LISTEN,
        false,
    );
    let web_listen = address(
        &mut c,
        flags.web_listen,
        &raw.web_listen,
        ("web_listen", "--web-listen"),
        DEFAULT_WEB_LISTEN,
        true,
    );
    let metrics_listen = address(
        &mut c,
        flags.metrics_listen,
        &raw.metrics_listen,
        ("metrics_listen", "--metrics-listen"),
        DEFAULT_METRICS_LISTEN,
        true,
    );

    let day = Duration::from_secs(86_400);
    let s = Duration::from_secs;
    let fed = &raw.federation;
    let push_interval = duration(
        &mut c,
        flags.push_interval,
        &fed.push_interval,
        ("federation.push_interval", "--push-interval"),
        DEFAULT_PUSH_INTERVAL,
        (s(1), day),
    );
    let federation_stale_after = duration(
        &mut c,
        flags.federation_stale_after,
        &fed.stale_after,
        ("federation.stale_after", "--federation-stale-after"),
        crate::collector::DEFAULT_FEDERATION_STALE_AFTER,
        (s(1), 30 * day),
    );
    let file_path = |v: &Option<Spanned<String>>| v.as_ref().map(path_of);
    let upstream = UpstreamFlags {
        url: flags
            .upstream
            .or_else(|| fed.upstream.as_ref().map(|v| v.get_ref().clone())),
        ca: flags.upstream_ca.or_else(|| file_path(&fed.upstream_ca)),
        cert: flags
            .upstream_cert
            .or_else(|| file_path(&fed.upstream_cert)),
        key: flags.upstream_key.or_else(|| file_path(&fed.upstream_key)),
        interval: push_interval,
        fetch_registers: flags
            .fetch_registers
            .or_else(|| fed.fetch_registers.as_ref().map(|v| *v.get_ref()))
            .unwrap_or(false),
    };

    let l = &raw.limits;
    let d = Limits::default();
    let mut limits = d;
    let hour = s(3600);
    limits.tls_handshake_timeout = duration(
        &mut c,
        None,
        &l.tls_handshake_timeout,
        ("limits.tls_handshake_timeout", ""),
        d.tls_handshake_timeout,
        (s(1), s(60)),
    );
    limits.first_request_timeout = duration(
        &mut c,
        None,
        &l.first_request_timeout,
        ("limits.first_request_timeout", ""),
        d.first_request_timeout,
        (s(1), s(60)),
    );
    limits.idle_timeout = duration(
        &mut c,
        None,
        &l.idle_timeout,
        ("limits.idle_timeout", ""),
        d.idle_timeout,
        (s(1), hour),
    );
    limits.request_timeout = duration(
        &mut c,
        None,
        &l.request_timeout,
        ("limits.request_timeout", ""),
        d.request_timeout,
        (s(1), hour),
    );
    limits.keepalive_interval = duration(
        &mut c,
        None,
        &l.keepalive_interval,
        ("limits.keepalive_interval", ""),
        d.keepalive_interval,
        (s(1), hour * 24),
    );
    limits.keepalive_timeout = duration(
        &mut c,
        None,
        &l.keepalive_timeout,
        ("limits.keepalive_timeout", ""),
        d.keepalive_timeout,
        (s(1), hour),
    );
    limits.shutdown_grace = duration(
        &mut c,
        None,
        &l.shutdown_grace,
        ("limits.shutdown_grace", ""),
        d.shutdown_grace,
        (s(1), MAX_SHUTDOWN_GRACE),
    );
    limits.max_connections = count(
        &mut c,
        &l.max_connections,
        "limits.max_connections",
        d.max_connections,
        1_000_000,
    );
    limits.max_streams_per_connection = count(
        &mut c,
        &l.max_streams_per_connection,
        "limits.max_streams_per_connection",
        d.max_streams_per_connection as usize,
        1000,
    ) as u32;
    if let Some(v) = &l.unauthenticated_buffer {
        const RANGE: (u64, u64) = (1 << 20, 1 << 30);
        match commscan_core::size::parse_size(v.get_ref()) {
            Ok(n) if (RANGE.0..=RANGE.1).contains(&n) => {
                limits.unauthenticated_buffer_bytes = n as usize
            }
            Ok(n) => c.problem(
                Origin::File(v.span()),
                "limits.unauthenticated_buffer",
                format!("{n} bytes is outside 1MiB..=1GiB"),
            ),
            Err(m) => c.problem(Origin::File(v.span()), "limits.unauthenticated_buffer", m),
        }
    }

    let alerts = match &raw.alerts {
        None => Default::default(),
        Some(v) => {
            let mut config = v.get_ref().clone();
            config.relative_to(&base);
            match config.validate() {
                Ok(sinks) => sinks,
                Err(problems) => {
                    for p in problems.0 {
                        c.problem(Origin::File(v.span()), &p.key, p.message);
                    }
                    Default::default()
                }
            }
        }
    };

    // On PostgreSQL every sink being delivered holds a lock connection of the store's pool,
    // which ingest's per-device locks need too.
    let sinks = alerts.webhooks.len() + alerts.syslogs.len();
    if let Some(st) = &store
        && sinks > 0
        && st.connections < sinks + MIN_SPARE_CONNECTIONS
    {
        let origin = match (&flags.store_connections, &raw.store.connections) {
            (Some(_), _) | (None, None) => Origin::Flag("--store-connections"),
            (None, Some(v)) => Origin::File(v.span()),
        };
        c.problem(
            origin,
            "store.connections",
            format!(
                "{} is too few for {sinks} alert sinks (each holds one while it delivers): at least {}",
                st.connections,
                sinks + MIN_SPARE_CONNECTIONS
            ),
        );
    }

    c.finish()?;
    Ok(Settings {
        file: file.map(|(p, _)| p.clone()),
        data_dir,
        listen: listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid default")),
        web_listen,
        metrics_listen,
        store,
        rules,
        catalog_keys,
        upstream,
        federation_stale_after,
        limits,
        alerts,
    })
}

/// An address from its flag, else the file, else `default`; `None` when `off` (if allowed) or
/// wrong (a problem recorded).
fn address(
    c: &mut Check,
    flag: Option<String>,
    in_file: &Option<Spanned<String>>,
    (key, flag_name): (&str, &'static str),
    default: &str,
    may_be_off: bool,
) -> Option<SocketAddr> {
    let (text, origin) = match (flag, in_file) {
        (Some(f), _) => (f, Origin::Flag(flag_name)),
        (None, Some(v)) => (v.get_ref().clone(), Origin::File(v.span())),
        (None, None) => (default.to_owned(), Origin::Flag(flag_name)),
    };
    if may_be_off && text == "off" {
        return None;
    }
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            let want = if may_be_off {
                "an address like 0.0.0.0:7444, or `off`"
            } else {
                "an address like 0.0.0.0:7443"
            };
            c.problem(origin, key, format!("'{text}': not {want} ({e})"));
            None
        }
    }
}

/// A duration from its flag (already parsed by clap), else the file, else `default`; within
/// `min..=max`, or a problem recorded and the default used.
fn duration(
    c: &mut Check,
    flag: Option<Duration>,
    in_file: &Option<Spanned<String>>,
    (key, flag_name): (&str, &'static str),
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let (value, origin) = match (flag, in_file) {
        (Some(d), _) => (d, Origin::Flag(flag_name)),
        (None, Some(v)) => match commscan_core::duration::parse_duration(v.get_ref()) {
            Ok(d) => (d, Origin::File(v.span())),
            Err(m) => {
                c.problem(Origin::File(v.span()), key, m);
                return default;
            }
        },
        (None, None) => return default,
    };
    if value < min || value > max {
        c.problem(
            origin,
            key,
            format!("{value:?} is outside {min:?}..={max:?}"),
        );
        return default;
    }
    value
}

/// A count from the file within `1..=max`, else `default` (a problem recorded if wrong).
fn count(
    c: &mut Check,
    in_file: &Option<Spanned<i64>>,
    key: &str,
    default: usize,
    max: usize,
) -> usize {
    match in_file {
        None => default,
        Some(v) => match usize::try_from(*v.get_ref()) {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                c.problem(
                    Origin::File(v.span()),
                    key,
                    format!("{} is outside 1..={max}", v.get_ref()),
                );
                default
            }
        },
    }
}

/// `[store]` and the `--store*` flags.
fn store(
    c: &mut Check,
    flags: &Overrides,
    raw: &RawStore,
    path_of: &dyn Fn(&Spanned<String>) -> PathBuf,
) -> Option<StoreSettings> {
    let (url, origin) = match (&flags.store_url, &raw.url) {
        (Some(u), _) => (u.clone(), Origin::Flag("--store")),
        (None, Some(u)) => (u.get_ref().clone(), Origin::File(u.span())),
        (None, None) => {
            if let Some(v) = &raw.password_file {
                c.problem(
                    Origin::File(v.span()),
                    "store.password_file",
                    "given without store.url".into(),
                );
            }
            if flags.store_password_file.is_some() {
                c.problem(
                    Origin::Flag("--store-password-file"),
                    "",
                    "given without a store URL (--store or store.url)".into(),
                );
            }
            if flags.store_connections.is_some() {
                c.problem(
                    Origin::Flag("--store-connections"),
                    "",
                    "given without a store URL (--store or store.url)".into(),
                );
            }
            return None;
        }
    };
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        c.problem(
            origin,
            "store.url",
            format!("'{url}': want postgres://USER@HOST:PORT/DATABASE"),
        );
        return None;
    }
    let connections = match (flags.store_connections, &raw.connections) {
        (Some(n), _) if (1..=1000).contains(&n) => n,
        (Some(n), _) => {
            c.problem(
                Origin::Flag("--store-connections"),
                "store.connections",
                format!("{n} is outside 1..=1000"),
            );
            DEFAULT_STORE_CONNECTIONS
        }
        (None, Some(v)) => match usize::try_from(*v.get_ref()) {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                c.problem(
                    Origin::File(v.span()),
                    "store.connections",
                    format!("{} is outside 1..=1000", v.get_ref()),
                );
                DEFAULT_STORE_CONNECTIONS
            }
        },
        (None, None) => DEFAULT_STORE_CONNECTIONS,
    };
    Some(StoreSettings {
        url,
        password_file: flags
            .store_password_file
            .clone()
            .or_else(|| raw.password_file.as_ref().map(path_of)),
        connections,
    })
}

/// `[rules]` and the rules flags. An organisation's policy from the command line replaces the
/// file's for that organisation.
/// Most keys in `catalog_keys` (as for agents).
pub const MAX_CATALOG_KEYS: usize = 16;

/// `--catalog-key` flags, else `[rules] catalog_keys`; each must read `ed25519:<64 hex>`.
fn catalog_keys(
    c: &mut Check,
    flags: &Overrides,
    raw: &RawRules,
) -> Vec<commscan_core::signed_catalog::CatalogPublicKey> {
    let (given, origin): (Vec<String>, Origin) = if !flags.catalog_keys.is_empty() {
        (flags.catalog_keys.clone(), Origin::Flag("--catalog-key"))
    } else if let Some(v) = &raw.catalog_keys {
        (v.get_ref().clone(), Origin::File(v.span()))
    } else {
        return Vec::new();
    };
    if given.len() > MAX_CATALOG_KEYS {
        c.problem(
            origin.clone(),
            "rules.catalog_keys",
            format!("{} keys, more than {MAX_CATALOG_KEYS}", given.len()),
        );
        return Vec::new();
    }
    let mut keys = Vec::new();
    for (i, k) in given.iter().enumerate() {
        match k.parse() {
            Ok(key) if !keys.contains(&key) => keys.push(key),
            Ok(_) => {}
            Err(e) => c.problem(origin.clone(), &format!("rules.catalog_keys[{i}]"), e),
        }
    }
    keys
}

fn rules(
    c: &mut Check,
    flags: &Overrides,
    raw: &RawRules,
    path_of: &dyn Fn(&Spanned<String>) -> PathBuf,
) -> RulesConfig {
    let mut org_policies: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (org, file) in &raw.organisations {
        if commscan_core::identity::is_valid_organisation(org) {
            org_policies.insert(org.clone(), path_of(file));
        } else {
            c.problem(
                Origin::File(file.span()),
                &format!("rules.organisations.{org}"),
                format!("'{org}' is not a valid organisation id"),
            );
        }
    }
    for (org, file) in &flags.org_policies {
        org_policies.insert(org.clone(), file.clone());
    }
    RulesConfig {
        catalog: flags
            .catalog
            .clone()
            .or_else(|| raw.catalog.as_ref().map(path_of)),
        registers: flags
            .registers
            .clone()
            .or_else(|| raw.registers.as_ref().map(path_of)),
        policy: flags
            .policy
            .clone()
            .or_else(|| raw.policy.as_ref().map(path_of)),
        org_policies: org_policies.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (PathBuf, String) {
        (
            PathBuf::from("/etc/commscan/collector.toml"),
            text.to_owned(),
        )
    }

    #[test]
    fn no_file_and_no_flags_give_the_documented_defaults() {
        let s = resolve(None, Overrides::default()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            s.web_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_WEB_LISTEN)
        );
        assert_eq!(
            s.metrics_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_METRICS_LISTEN)
        );
        assert_eq!(s.store, None);
        assert_eq!(s.limits.max_connections, Limits::default().max_connections);
        assert_eq!(s.upstream.url, None);
    }

    #[test]
    fn the_shipped_example_reads_as_the_defaults() {
        let f = file(include_str!("../../deploy/collector.toml"));
        let s = resolve(Some(&f), Overrides::default()).unwrap();
        let d = resolve(None, Overrides::default()).unwrap();
        assert_eq!(
            format!(
                "{:?}",
                (
                    s.data_dir,
                    s.listen,
                    s.web_listen,
                    s.metrics_listen,
                    s.store,
                    s.limits
                )
            ),
            format!(
                "{:?}",
                (
                    d.data_dir,
                    d.listen,
                    d.web_listen,
                    d.metrics_listen,
                    d.store,
                    d.limits
                )
            )
        );
    }

    #[test]
    fn the_file_sets_values_with_paths_from_its_directory_and_flags_override_it() {
        let f = file(
            "data_dir = \"/srv/c\"\nlisten = \"127.0.0.1:9000\"\nweb_listen = \"off\"\n\
             [store]\nurl = \"postgres://c@db/c\"\npassword_file = \"db.password\"\n\
             [rules]\npolicy = \"policy.toml\"\n[rules.organisations]\nacme = \"/p/acme.toml\"\n\
             [limits]\nmax_connections = 500\nshutdown_grace = \"5s\"\n",
        );
        let s = resolve(Some(&f), Overrides::default()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/c"));
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.web_listen, None);
        let store = s.store.unwrap();
        assert_eq!(
            store.password_file,
            Some(PathBuf::from("/etc/commscan/db.password"))
        );
        assert_eq!(store.connections, DEFAULT_STORE_CONNECTIONS);
        assert_eq!(
            s.rules.policy,
            Some(PathBuf::from("/etc/commscan/policy.toml"))
        );
        assert_eq!(
            s.rules.org_policies,
            vec![("acme".to_owned(), PathBuf::from("/p/acme.toml"))]
        );
        assert_eq!(s.limits.max_connections, 500);
        assert_eq!(s.limits.shutdown_grace, Duration::from_secs(5));

        let flags = Overrides {
            listen: Some("127.0.0.1:9001".into()),
            web_listen: Some("127.0.0.1:9002".into()),
            org_policies: vec![("acme".into(), PathBuf::from("/q/acme.toml"))],
            ..Overrides::default()
        };
        let s = resolve(Some(&f), flags).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(
            s.web_listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9002")
        );
        assert_eq!(
            s.rules.org_policies,
            vec![("acme".to_owned(), PathBuf::from("/q/acme.toml"))]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_line_and_key() {
        let f = file(
            "listen = \"nowhere\"\n\n[limits]\nmax_connections = 0\nshutdown_grace = \"40s\"\n\
             idle_timeout = \"soon\"\n[store]\nurl = \"mysql://x\"\n[rules.organisations]\n\"Bad Org\" = \"x.toml\"\n",
        );
        let err = resolve(
            Some(&f),
            Overrides {
                metrics_listen: Some("here".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        let text = err.to_string();
        for want in [
            "collector.toml:1: listen: 'nowhere'",
            "collector.toml:4: limits.max_connections: 0 is outside 1..=1000000",
            "collector.toml:5: limits.shutdown_grace: 40s is outside 1s..=25s",
            "collector.toml:6: limits.idle_timeout:",
            "collector.toml:8: store.url: 'mysql://x'",
            "collector.toml:10: rules.organisations.Bad Org:",
            "command line: --metrics-listen: 'here'",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(err.0.len(), 7, "{text}");
    }

    #[test]
    fn catalog_keys_come_from_the_file_or_the_flags_and_a_bad_one_is_named_at_its_line() {
        let good = format!("ed25519:{}", "ab".repeat(32));
        let other = format!("ed25519:{}", "cd".repeat(32));
        let f = file(&format!(
            "[rules]\ncatalog_keys = [\"{good}\"]\n[federation]\nfetch_registers = true\n"
        ));
        let s = resolve(Some(&f), Overrides::default()).unwrap();
        assert_eq!(s.catalog_keys, vec![good.parse().unwrap()]);
        assert!(s.upstream.fetch_registers);
        let s = resolve(
            Some(&f),
            Overrides {
                catalog_keys: vec![other.clone()],
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.catalog_keys, vec![other.parse().unwrap()]);
        let err = resolve(
            Some(&file("\n[rules]\ncatalog_keys = [\"ed25519:00\"]\n")),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, Some(3), "{err}");
        assert_eq!(err.0[0].key, "rules.catalog_keys[0]", "{err}");
    }

    #[test]
    fn an_unknown_key_is_refused_at_its_line() {
        let err = resolve(
            Some(&file(
                "listen = \"0.0.0.0:1\"\n[limits]\nmax_conections = 5\n",
            )),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, Some(3), "{err}");
        assert!(err.0[0].message.contains("max_conections"), "{err}");
    }

    #[test]
    fn a_postgres_pool_must_hold_a_lock_for_every_alert_sink_and_spare() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "a-webhook-secret-0123456789").unwrap();
        let text = |connections: usize| {
            format!(
                "[store]\nurl = \"postgres://c@db/c\"\nconnections = {connections}\n\
                 [[alerts.webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"secret\"\n\
                 [[alerts.syslog]]\nname = \"b\"\naddress = \"127.0.0.1:514\"\n"
            )
        };
        let f = |n| (dir.path().join("collector.toml"), text(n));
        let err = resolve(Some(&f(5)), Overrides::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("collector.toml:3: store.connections: 5 is too few for 2 alert sinks"),
            "{err}"
        );
        assert!(resolve(Some(&f(6)), Overrides::default()).is_ok());
    }

    #[test]
    fn a_named_file_must_exist_and_the_default_one_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("collector.toml");
        let err = read(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("collector.toml"), "{err}");
        std::fs::write(&missing, "listen = \"127.0.0.1:1\"\n").unwrap();
        let (p, text) = read(Some(&missing)).unwrap().unwrap();
        assert_eq!((p, text.as_str()), (missing, "listen = \"127.0.0.1:1\"\n"));
    }
}
