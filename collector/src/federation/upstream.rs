//! Where an enterprise collector pushes, and as whom: the `serve --upstream*` flags, checked
//! at start so a mistake is a configuration error (exit 64) naming the flag or file, not a
//! push failing every interval. The enterprise's identity and the organisations it may push are
//! read from its own certificate.

use super::push::{DEFAULT_CHANGE_POLL, DEFAULT_FETCH_INTERVAL};
use commscan_core::identity::EnterpriseIdentity;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the upstream settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Some, but not all, of the four upstream flags were given.
    #[error(
        "{missing} missing: federation needs all of --upstream, --upstream-ca, --upstream-cert and --upstream-key (or none)"
    )]
    Incomplete {
        /// The missing flags.
        missing: String,
    },
    /// A file is unusable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate is not an enterprise certificate.
    #[error("upstream certificate: {0}")]
    Certificate(String),
    /// The key does not fit the certificate.
    #[error("upstream key: {0}")]
    Key(String),
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// The upstream flags of `serve`, as given.
#[derive(Debug, Clone, Default)]
pub struct UpstreamFlags {
    /// `--upstream`: the ministry collector's URL.
    pub url: Option<String>,
    /// `--upstream-ca`: the ministry's CA certificate.
    pub ca: Option<PathBuf>,
    /// `--upstream-cert`: this enterprise's certificate, issued by the ministry.
    pub cert: Option<PathBuf>,
    /// `--upstream-key`: its key.
    pub key: Option<PathBuf>,
    /// `--push-interval`.
    pub interval: Duration,
    /// `--fetch-registers`: take the ministry's registers.
    pub fetch_registers: bool,
}

impl UpstreamFlags {
    /// The upstream, `None` when no flag was given. Reads and checks the files.
    pub fn resolve(&self) -> Result<Option<Upstream>, UpstreamError> {
        let given = [
            ("--upstream", self.url.is_some()),
            ("--upstream-ca", self.ca.is_some()),
            ("--upstream-cert", self.cert.is_some()),
            ("--upstream-key", self.key.is_some()),
        ];
        if given.iter().all(|(_, g)| !g) {
            return Ok(None);
        }
        let missing: Vec<&str> = given.iter().filter(|(_, g)| !g).map(|(f, _)| *f).collect();
        let (Some(url), Some(ca), Some(cert), Some(key)) =
            (&self.url, &self.ca, &self.cert, &self.key)
        else {
            return Err(UpstreamError::Incomplete {
                missing: missing.join(", "),
            });
        };
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| UpstreamError::File {
                path: p.to_path_buf(),
                message: format!("cannot read: {e}"),
            })
        };
        let (ca_pem, cert_pem, key_pem) = (read(ca)?, read(cert)?, read(key)?);
        commscan_core::pki::first_cert_der(&ca_pem).map_err(|e| UpstreamError::File {
            path: ca.clone(),
            message: e.to_string(),
        })?;
        let mut upstream = Upstream::from_pem(url, &ca_pem, &cert_pem, &key_pem, self.interval)
            .map_err(|e| match e {
                UpstreamError::Certificate(message) => UpstreamError::File {
                    path: cert.clone(),
                    message,
                },
                UpstreamError::Key(message) => UpstreamError::File {
                    path: key.clone(),
                    message,
                },
                e => e,
            })?;
        upstream.fetch_registers = self.fetch_registers;
        Ok(Some(upstream))
    }
}

/// Where and as whom to push.
#[derive(Clone)]
pub struct Upstream {
    /// The ministry collector's URL.
    pub url: String,
    /// The ministry's CA certificate (PEM), pinned.
    pub ca_pem: String,
    /// This enterprise's certificate (PEM).
    pub cert_pem: String,
    /// Its key (PEM).
    pub key_pem: String,
    /// Who the certificate says this enterprise is, and what it may push.
    pub identity: EnterpriseIdentity,
    /// Interval between pushes when nothing changes.
    pub interval: Duration,
    /// Interval between checks for changes.
    pub change_poll: Duration,
    /// Interval between fetches of the ministry's published rules ([`super::fetch`]).
    pub fetch_interval: Duration,
    /// Whether the ministry's registers replace this collector's.
    pub fetch_registers: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("identity", &self.identity)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Checks the material: an https URL, an enterprise certificate, its key.
    pub fn from_pem(
        url: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        interval: Duration,
    ) -> Result<Upstream, UpstreamError> {
        if !url.starts_with("https://") {
            return Err(UpstreamError::Invalid(format!(
                "--upstream '{url}': must start with https://"
            )));
        }
        if interval.is_zero() {
            return Err(UpstreamError::Invalid(
                "--push-interval: must be longer than zero".into(),
            ));
        }
        let der = commscan_core::pki::first_cert_der(cert_pem)
            .map_err(|e| UpstreamError::Certificate(e.to_string()))?;
        let identity = EnterpriseIdentity::from_certificate_der(&der).map_err(|e| {
            UpstreamError::Certificate(format!(
                "{e} (the ministry issues one with `commscan-collector federation issue`)"
            ))
        })?;
        commscan_core::pki::check_key_pair(cert_pem, key_pem)
            .map_err(|e| UpstreamError::Key(e.to_string()))?;
        Ok(Upstream {
            url: url.to_owned(),
            ca_pem: ca_pem.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            identity,
            interval,
            change_poll: DEFAULT_CHANGE_POLL,
            fetch_interval: DEFAULT_FETCH_INTERVAL.min(interval),
            fetch_registers: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::push::DEFAULT_PUSH_INTERVAL;

    #[test]
    fn partial_upstream_flags_name_what_is_missing() {
        assert!(UpstreamFlags::default().resolve().unwrap().is_none());
        let flags = UpstreamFlags {
            url: Some("https://ministry.example:7443".into()),
            cert: Some("e.crt".into()),
            interval: DEFAULT_PUSH_INTERVAL,
            ..Default::default()
        };
        let err = flags.resolve().unwrap_err().to_string();
        assert!(
            err.starts_with("--upstream-ca, --upstream-key missing"),
            "{err}"
        );
    }

    #[test]
    fn a_device_certificate_is_not_an_upstream_identity() {
        let (ca, ca_pem) = commscan_core::pki::Authority::generate("m").unwrap();
        let (key, csr) = commscan_core::pki::device_key_and_csr().unwrap();
        let id = commscan_core::identity::DeviceIdentity {
            trust_domain: "m".into(),
            organisation: "a".into(),
            device_id: uuid::Uuid::new_v4().to_string(),
        };
        let (cert, _) = ca
            .sign_device_csr(&csr, &id, commscan_core::pki::DEVICE_VALIDITY)
            .unwrap();
        let err = Upstream::from_pem(
            "https://m:1",
            &ca_pem.cert,
            &cert,
            &key,
            DEFAULT_PUSH_INTERVAL,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("names no enterprise") || err.contains("not an enterprise"),
            "{err}"
        );
        let e = ca
            .issue_enterprise(
                &EnterpriseIdentity {
                    trust_domain: "m".into(),
                    enterprise: "e1".into(),
                    organisations: vec!["a".into()],
                },
                commscan_core::pki::ENTERPRISE_VALIDITY,
            )
            .unwrap();
        let up = Upstream::from_pem(
            "https://m:1",
            &ca_pem.cert,
            &e.cert,
            &e.key,
            DEFAULT_PUSH_INTERVAL,
        )
        .unwrap();
        assert_eq!(up.identity.organisations, ["a"]);
        assert!(
            Upstream::from_pem(
                "https://m:1",
                &ca_pem.cert,
                &e.cert,
                &key,
                DEFAULT_PUSH_INTERVAL
            )
            .is_err(),
            "the key must be the certificate's"
        );
    }
}
