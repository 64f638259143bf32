//! The `[alerts]` settings: a raw serde struct ([`AlertsConfig`], unknown keys refused) and
//! [`AlertsConfig::validate`], which reads the files it names (secrets, CA certificates) and
//! returns the typed sinks, or every problem at once, each naming its key.
//!
//! ```toml
//! [[alerts.webhook]]
//! name = "soc"
//! url = "https://siem.example/hooks/commscan"
//! secret_file = "/etc/commscan/soc-webhook.secret"
//! organisations = ["acme"]            # omitted: every organisation
//! events = ["verdict_changed"]        # omitted: every kind
//!
//! [[alerts.syslog]]
//! name = "wazuh"
//! address = "wazuh.example:6514"
//! tls = true
//! tls_ca = "/etc/commscan/wazuh-ca.pem"
//! ```

use super::event::AlertKind;
use commscan_core::duration::parse_duration;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Entries one sink's outbox may hold unless its `max_outbox` says otherwise.
pub const DEFAULT_MAX_OUTBOX: u64 = 100_000;
/// The largest `max_outbox` accepted.
pub const MAX_MAX_OUTBOX: u64 = 10_000_000;
/// How long an alert that keeps failing is retried before it is dropped, by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// First retry delay, by default (doubled per failure, with full jitter).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay, by default.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
/// One attempt's bound (connect, TLS, request and answer), by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest secret accepted for webhook signatures, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Most sinks (webhooks and syslog receivers together). On PostgreSQL each sink being
/// delivered holds one of the store's lock connections, so `store.connections` must exceed the
/// count (checked with the configuration).
pub const MAX_SINKS: usize = 16;

/// `[alerts]`: where verdict changes, stale devices and stale enterprises are sent.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// `[[alerts.webhook]]`: HTTP endpoints receiving signed JSON.
    #[serde(default)]
    pub webhook: Vec<WebhookConfig>,
    /// `[[alerts.syslog]]`: RFC 5424 syslog receivers over TCP or TLS.
    #[serde(default)]
    pub syslog: Vec<SyslogConfig>,
}

/// Settings every sink has.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Organisations whose alerts this sink receives; omitted or empty: all.
    #[serde(default)]
    pub organisations: Vec<String>,
    /// Kinds of alert: `verdict_changed`, `device_stale`, `enterprise_stale`; omitted: all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Most alerts waiting for this sink; beyond it new alerts for it are dropped, counted
    /// and logged. Default 100,000.
    pub max_outbox: Option<u64>,
    /// An alert still failing this long after it was raised is dropped (counted, logged).
    /// Default `7d`.
    pub max_age: Option<String>,
    /// First retry delay (`1s`); doubled per failure with full jitter, up to `retry_max`.
    pub retry_initial: Option<String>,
    /// Longest retry delay (`5m`).
    pub retry_max: Option<String>,
    /// Bound of one attempt (`10s`).
    pub timeout: Option<String>,
}

/// `[[alerts.webhook]]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for logs and metrics, unique among sinks (`[A-Za-z0-9_-]`, at most 64).
    pub name: String,
    /// `https://HOST[:PORT]/PATH`; `http://` only to a loopback address, or with
    /// `allow_plain_http`.
    pub url: String,
    /// A file holding the HMAC-SHA256 secret (at least 16 bytes; a final newline is ignored).
    pub secret_file: PathBuf,
    /// CA certificates (PEM) the endpoint's certificate must chain to; omitted: the system's.
    pub ca_file: Option<PathBuf>,
    /// Permit `http://` to a non-loopback host (alerts then cross the network unencrypted).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Routing, bounds and retries.
    #[serde(flatten)]
    pub routing: RoutingConfig,
}

/// `[[alerts.syslog]]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// A name for logs and metrics, unique among sinks.
    pub name: String,
    /// `HOST:PORT` of the receiver (TCP).
    pub address: String,
    /// TLS (RFC 5425); the receiver's certificate is verified against `tls_ca` or the system's
    /// roots, and its name against `server_name` or the host of `address`.
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) for `tls`.
    pub tls_ca: Option<PathBuf>,
    /// The name the receiver's certificate must carry, if not the host of `address`.
    pub server_name: Option<String>,
    /// Syslog facility: `local0` … `local7`, `user`, `daemon`, `auth`, `security`… Default
    /// `local0`.
    pub facility: Option<String>,
    /// HOSTNAME field of every message; default the machine's host name.
    pub hostname: Option<String>,
    /// Routing, bounds and retries.
    #[serde(flatten)]
    pub routing: RoutingConfig,
}

/// One problem of the configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigProblem {
    /// `alerts.webhook[0].url`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found, one a line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

/// What every sink has, validated.
#[derive(Debug, Clone)]
pub struct Routing {
    /// `None`: every organisation.
    pub organisations: Option<BTreeSet<String>>,
    /// Kinds it receives.
    pub events: BTreeSet<AlertKind>,
    /// Its outbox bound.
    pub max_outbox: u64,
    /// Age after which a failing alert is dropped.
    pub max_age: Duration,
    /// Retry delays.
    pub retry_initial: Duration,
    /// The longest.
    pub retry_max: Duration,
    /// One attempt's bound.
    pub timeout: Duration,
}

/// A webhook, validated.
#[derive(Clone)]
pub struct Webhook {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: hyper::Uri,
    /// The HMAC key.
    pub secret: Arc<[u8]>,
    /// TLS for `https`; `None` for `http`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Routing, bounds, retries.
    pub routing: Routing,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

/// A syslog receiver, validated.
#[derive(Clone)]
pub struct Syslog {
    /// Its name.
    pub name: String,
    /// `HOST:PORT`.
    pub address: String,
    /// TLS and the name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
    /// Facility number (RFC 5424 §6.2.1).
    pub facility: u8,
    /// HOSTNAME of messages (printable ASCII, at most 255).
    pub hostname: String,
    /// Routing, bounds, retries.
    pub routing: Routing,
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("facility", &self.facility)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

/// The sinks, validated.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// Webhooks.
    pub webhooks: Vec<Webhook>,
    /// Syslog receivers.
    pub syslogs: Vec<Syslog>,
}

impl Sinks {
    /// Whether no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.syslogs.is_empty()
    }
}

/// Collects problems under a key prefix.
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }
}

impl AlertsConfig {
    /// Takes relative file names (secrets, CA files) from `base`, the configuration file's
    /// directory.
    pub fn relative_to(&mut self, base: &std::path::Path) {
        for w in &mut self.webhook {
            w.secret_file = base.join(&w.secret_file);
            if let Some(ca) = &mut w.ca_file {
                *ca = base.join(&*ca);
            }
        }
        for s in &mut self.syslog {
            if let Some(ca) = &mut s.tls_ca {
                *ca = base.join(&*ca);
            }
        }
    }

    /// Validates every sink, reading secret and CA files; every problem at once.
    pub fn validate(&self) -> Result<Sinks, ConfigProblems> {
        let mut p = Problems(Vec::new());
        let count = self.webhook.len() + self.syslog.len();
        if count > MAX_SINKS {
            p.add(
                "alerts".to_owned(),
                format!("{count} sinks; at most {MAX_SINKS} (webhooks and syslog together)"),
            );
        }
        let mut names = BTreeSet::new();
        let mut sinks = Sinks::default();
        for (i, w) in self.webhook.iter().enumerate() {
            let key = format!("alerts.webhook[{i}]");
            check_name(&mut p, &key, &w.name, &mut names);
            let routing = routing(&mut p, &key, &w.routing);
            let secret = match std::fs::read(&w.secret_file) {
                Ok(mut s) => {
                    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        s.pop();
                    }
                    if s.len() < MIN_SECRET_BYTES {
                        p.add(
                            format!("{key}.secret_file"),
                            format!(
                                "{}: the secret is {} bytes, fewer than {MIN_SECRET_BYTES}",
                                w.secret_file.display(),
                                s.len()
                            ),
                        );
                    }
                    Some(s)
                }
                Err(e) => {
                    p.add(
                        format!("{key}.secret_file"),
                        format!("{}: cannot read: {e}", w.secret_file.display()),
                    );
                    None
                }
            };
            let url = match w.url.parse::<hyper::Uri>() {
                Ok(u) => Some(u),
                Err(e) => {
                    p.add(format!("{key}.url"), format!("not a URL: {e}"));
                    None
                }
            };
            let mut tls = None;
            if let Some(u) = &url {
                match (u.scheme_str(), u.host()) {
                    (_, None) => p.add(format!("{key}.url"), "no host"),
                    (Some("https"), Some(_)) => match client_tls(w.ca_file.as_deref()) {
                        Ok(c) => tls = Some(c),
                        Err(e) => p.add(format!("{key}.ca_file"), e),
                    },
                    (Some("http"), Some(host)) => {
                        if !is_loopback(host) && !w.allow_plain_http {
                            p.add(format!("{key}.url"), format!("plain http to {host}, not a loopback address: use https, or set allow_plain_http = true"));
                        }
                        if w.ca_file.is_some() {
                            p.add(format!("{key}.ca_file"), "given for an http:// URL");
                        }
                    }
                    (s, _) => p.add(
                        format!("{key}.url"),
                        format!("scheme {s:?}: use https:// (or http:// to loopback)"),
                    ),
                }
            }
            if let (Some(url), Some(secret), Some(routing)) = (url, secret, routing) {
                sinks.webhooks.push(Webhook {
                    name: w.name.clone(),
                    url,
                    secret: secret.into(),
                    tls,
                    routing,
                });
            }
        }
        for (i, s) in self.syslog.iter().enumerate() {
            let key = format!("alerts.syslog[{i}]");
            check_name(&mut p, &key, &s.name, &mut names);
            let routing = routing(&mut p, &key, &s.routing);
            let host = match s.address.rsplit_once(':') {
                Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0) => {
                    Some(h.trim_start_matches('[').trim_end_matches(']').to_owned())
                }
                _ => {
                    p.add(format!("{key}.address"), "not HOST:PORT");
                    None
                }
            };
            let facility = match s.facility.as_deref().map(facility).unwrap_or(Some(16)) {
                Some(f) => f,
                None => {
                    p.add(
                        format!("{key}.facility"),
                        "not a facility: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, security, console, local0 … local7",
                    );
                    16
                }
            };
            let hostname = match &s.hostname {
                Some(h)
                    if !h.is_empty()
                        && h.len() <= 255
                        && h.bytes().all(|b| (33..=126).contains(&b)) =>
                {
                    h.clone()
                }
                Some(_) => {
                    p.add(
                        format!("{key}.hostname"),
                        "must be 1 to 255 printable ASCII characters without spaces",
                    );
                    "-".into()
                }
                None => machine_hostname(),
            };
            let mut tls = None;
            if s.tls {
                let name = s.server_name.clone().or(host.clone()).unwrap_or_default();
                match rustls_pki_types::ServerName::try_from(name.clone()) {
                    Ok(_) => match client_tls(s.tls_ca.as_deref()) {
                        Ok(c) => tls = Some((c, name)),
                        Err(e) => p.add(format!("{key}.tls_ca"), e),
                    },
                    Err(e) => p.add(
                        format!("{key}.server_name"),
                        format!("{name:?} is not a DNS name or IP address: {e}"),
                    ),
                }
            } else if s.tls_ca.is_some() || s.server_name.is_some() {
                p.add(
                    format!("{key}.tls"),
                    "tls_ca or server_name given without tls = true",
                );
            }
            if let (Some(_), Some(routing)) = (host, routing) {
                sinks.syslogs.push(Syslog {
                    name: s.name.clone(),
                    address: s.address.clone(),
                    tls,
                    facility,
                    hostname,
                    routing,
                });
            }
        }
        if p.0.is_empty() {
            Ok(sinks)
        } else {
            Err(ConfigProblems(p.0))
        }
    }
}

fn check_name(p: &mut Problems, key: &str, name: &str, seen: &mut BTreeSet<String>) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        p.add(
            format!("{key}.name"),
            format!("{name:?}: use 1 to 64 of A-Z a-z 0-9 - _"),
        );
    } else if !seen.insert(name.to_owned()) {
        p.add(
            format!("{key}.name"),
            format!("{name:?} names another sink too"),
        );
    }
}

fn routing(p: &mut Problems, key: &str, r: &RoutingConfig) -> Option<Routing> {
    let before = p.0.len();
    let mut duration = |field: &str, v: &Option<String>, default: Duration| match v {
        None => default,
        Some(s) => match parse_duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                p.add(format!("{key}.{field}"), "must be longer than zero");
                default
            }
            Err(e) => {
                p.add(format!("{key}.{field}"), e);
                default
            }
        },
    };
    let max_age = duration("max_age", &r.max_age, DEFAULT_MAX_AGE);
    let retry_initial = duration("retry_initial", &r.retry_initial, DEFAULT_RETRY_INITIAL);
    let retry_max = duration("retry_max", &r.retry_max, DEFAULT_RETRY_MAX);
    let timeout = duration("timeout", &r.timeout, DEFAULT_TIMEOUT);
    if retry_max < retry_initial {
        p.add(format!("{key}.retry_max"), "shorter than retry_initial");
    }
    let max_outbox = r.max_outbox.unwrap_or(DEFAULT_MAX_OUTBOX);
    if !(1..=MAX_MAX_OUTBOX).contains(&max_outbox) {
        p.add(
            format!("{key}.max_outbox"),
            format!("must be 1 to {MAX_MAX_OUTBOX}"),
        );
    }
    for (j, o) in r.organisations.iter().enumerate() {
        if !commscan_core::identity::is_valid_organisation(o) {
            p.add(
                format!("{key}.organisations[{j}]"),
                format!("{o:?} is not an organisation id"),
            );
        }
    }
    let events = match &r.events {
        None => AlertKind::ALL.into_iter().collect(),
        Some(list) => {
            let mut set = BTreeSet::new();
            for (j, e) in list.iter().enumerate() {
                match e.parse::<AlertKind>() {
                    Ok(k) => {
                        set.insert(k);
                    }
                    Err(m) => p.add(format!("{key}.events[{j}]"), m),
                }
            }
            if list.is_empty() {
                p.add(
                    format!("{key}.events"),
                    "empty: the sink would receive nothing",
                );
            }
            set
        }
    };
    (p.0.len() == before).then(|| Routing {
        organisations: (!r.organisations.is_empty())
            .then(|| r.organisations.iter().cloned().collect()),
        events,
        max_outbox,
        max_age,
        retry_initial,
        retry_max,
        timeout,
    })
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A TLS client configuration verifying against `ca_file` or the system's roots.
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in crate::tls::read_certs(path).map_err(|e| e.to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("the system trust store is empty: name a CA file".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// RFC 5424 facility numbers by name.
fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 16] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
    ];
    if let Some(n) = name.strip_prefix("local") {
        return n.parse::<u8>().ok().filter(|n| *n <= 7).map(|n| 16 + n);
    }
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// The machine's host name (Linux), or `-` (RFC 5424's nil value). `/proc/sys` is hidden by
/// the shipped unit (`ProcSubset=pid`), so `/etc/hostname` is read next.
fn machine_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| (33..=126).contains(&b)))
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AlertsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<AlertsConfig>("[[webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\nsecret_file = \"/x\"\nsecrett = 1\n")
            .unwrap_err();
        assert!(e.to_string().contains("secrett"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let c = parse(&format!(
            r#"
            [[webhook]]
            name = "soc"
            url = "http://siem.example/hook"
            secret_file = "{}"
            organisations = ["Bad Org"]
            events = ["verdict_changed", "coffee"]
            retry_initial = "10m"
            retry_max = "1m"
            [[webhook]]
            name = "soc"
            url = "ftp://x/"
            secret_file = "/nonexistent/secret"
            [[syslog]]
            name = "wazuh"
            address = "nohost"
            facility = "local9"
            tls_ca = "/x.pem"
            "#,
            short.display()
        ));
        let problems = c.validate().unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "alerts.webhook[0].secret_file",
            "alerts.webhook[0].url",
            "alerts.webhook[0].organisations[0]",
            "alerts.webhook[0].events[1]",
            "alerts.webhook[0].retry_max",
            "alerts.webhook[1].name",
            "alerts.webhook[1].url",
            "alerts.webhook[1].secret_file",
            "alerts.syslog[0].address",
            "alerts.syslog[0].facility",
            "alerts.syslog[0].tls",
        ] {
            assert!(keys.contains(&want), "{want} missing from {problems:#?}");
        }
    }

    #[test]
    fn a_loopback_http_hook_and_a_plain_syslog_receiver_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
        let c = parse(&format!(
            r#"
            [[webhook]]
            name = "local"
            url = "http://127.0.0.1:8080/hook"
            secret_file = "{}"
            [[syslog]]
            name = "rsyslog"
            address = "127.0.0.1:1514"
            facility = "local3"
            hostname = "collector-1"
            "#,
            secret.display()
        ));
        let sinks = c.validate().unwrap();
        assert_eq!(&*sinks.webhooks[0].secret, b"0123456789abcdef0123");
        assert!(sinks.webhooks[0].routing.organisations.is_none());
        assert_eq!(sinks.webhooks[0].routing.events.len(), AlertKind::ALL.len());
        assert_eq!(sinks.syslogs[0].facility, 19);
        assert!(!format!("{:?}", sinks.webhooks[0]).contains("0123456789"));
    }
}
