//! TLS to the database: libpq's `sslmode` and `sslrootcert` in the store URL, with the
//! certificate always verified.
//!
//! # What the URL says
//! `--store postgres://commscan@db.example:5432/commscan?sslmode=require&sslrootcert=/etc/commscan/db-ca.pem`
//! is read the way libpq (and so `psql`) reads it, so the connection string an operator
//! tested with `psql` is the one the collector takes:
//!
//! | `sslmode` | the collector |
//! |---|---|
//! | `disable` | plain TCP |
//! | `prefer` (libpq's default, and ours when the URL names none) | TLS when the server offers it, plain when it answers that it does not |
//! | `require`, `verify-ca`, `verify-full` | TLS or no connection: "database does not offer TLS" |
//! | `allow` | refused (plain first, TLS only when the server insists: never wanted here) |
//!
//! Whenever TLS is used, the server's certificate chain **and** its name (the URL's host, a
//! DNS name or an IP address) are verified; there is no mode that encrypts without verifying,
//! because a connection to whoever answers is no protection against the one party TLS is
//! there for (someone on the path). So `require` and `verify-ca` mean `verify-full` here,
//! which is stricter than libpq. The trust anchors are the file `sslrootcert` names (PEM, one
//! or more certificates: the deployment's own CA), or with no `sslrootcert` (or
//! `sslrootcert=system`, libpq 16's spelling) the system's trust store, read by
//! `rustls-native-certs` (the distribution's bundle; `SSL_CERT_FILE` overrides it), where
//! operators already install their internal CA and where managed databases' CAs are found.
//! (libpq's own default, `~/.postgresql/root.crt`, is not read: a service has no home to
//! speak of.) `prefer` still falls back to plain TCP when the server declines TLS, so only
//! `require` protects against someone on the path who answers in the server's place; use it
//! in production.
//!
//! The password never travels in the URL ([`super::PgConfig`]); SCRAM's channel binding
//! (`SCRAM-SHA-256-PLUS`) ties the login to the verified TLS session when the server offers
//! it (tokio-postgres' default, `channel_binding=prefer`). Client certificates (`sslcert`,
//! `sslkey`) are not supported and refused by name.
//!
//! # Errors
//! A handshake that fails verification is [`DbTlsError::NotTrusted`], naming the host, what
//! rustls found wrong with the certificate and the roots it was checked against; a server
//! that declines TLS under `require` is reported as such ([`describe`]). Both are what
//! `PgStore::open` (and so `serve`, `validate`, `migrate`) reports, and what a later
//! connection failure carries (UNAVAILABLE: agents keep their reports meanwhile).

use super::StoreError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

/// tokio-postgres' own words when a server answers `N` to the TLS request under `require`.
const NO_TLS_FROM_SERVER: &str = "server does not support TLS";

/// Why a TLS connection to the database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbTlsError {
    /// The server's certificate does not chain to the roots, or does not name the host.
    #[error(
        "database certificate not trusted: {} (host {host}, checked against {roots})",
        explain(problem)
    )]
    NotTrusted {
        /// The host the URL names.
        host: String,
        /// What rustls found wrong with the certificate.
        problem: rustls::CertificateError,
        /// Where the trust anchors came from.
        roots: String,
    },
    /// The URL's host is not a valid DNS name or IP address for TLS.
    #[error("database host {host:?} cannot be verified by TLS: {message}")]
    Name {
        /// The host.
        host: String,
        /// Why.
        message: String,
    },
    /// The handshake failed for another reason (protocol versions, a reset, a bad signature).
    #[error("database TLS handshake with {host} failed: {source}")]
    Handshake {
        /// The host.
        host: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// rustls' words for a certificate problem, with the common ones said plainly.
fn explain(problem: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match problem {
        E::UnknownIssuer => "it is not issued by a CA among the roots (UnknownIssuer)".into(),
        E::BadSignature => "its signature does not verify (BadSignature)".into(),
        other => other.to_string(),
    }
}

/// Where the trust anchors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// The system's trust store.
    System,
    /// A PEM file (`sslrootcert=FILE`).
    File(PathBuf),
}

/// The TLS part of a store URL, once `sslmode` and `sslrootcert` are taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsParams {
    mode: SslMode,
    roots: Roots,
}

/// Parses the store URL into the driver's configuration and the TLS connector it says.
/// Errors name the URL's parameter at fault.
pub(super) fn configure(url: &str) -> Result<(tokio_postgres::Config, DbTls), StoreError> {
    let bad = |m: String| StoreError::Backend(format!("--store: {m}"));
    let (rest, params) = split_tls_params(url).map_err(bad)?;
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| StoreError::Backend(format!("--store {url}: {e}")))?;
    pg.ssl_mode(params.mode);
    let tls = DbTls::new(&params).map_err(bad)?;
    Ok((pg, tls))
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query (the driver knows
/// neither `verify-*` nor `sslrootcert`), refusing what is not supported by name. A
/// key-value connection string is passed on as it is (TLS parameters are then the driver's).
fn split_tls_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams {
        mode: SslMode::Prefer,
        roots: Roots::System,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| format!("{key}: bad percent-encoding"))?;
        match key {
            "sslmode" => {
                params.mode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" | "verify-ca" | "verify-full" => SslMode::Require,
                    "allow" => {
                        return Err("sslmode=allow is not supported (it prefers plain TCP); use prefer, require or verify-full".into());
                    }
                    other => {
                        return Err(format!(
                            "sslmode={other}: want disable, prefer, require, verify-ca or verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" if value.is_empty() => return Err("sslrootcert is empty".into()),
            "sslrootcert" if value == "system" => params.roots = Roots::System,
            "sslrootcert" => params.roots = Roots::File(PathBuf::from(value)),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(format!(
                    "{key} is not supported: the collector authenticates to the database with a password (COMMSCAN_STORE_PASSWORD_FILE)"
                ));
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The connector given to both pools: rustls with ring (the workspace's provider), TLS 1.2
/// and 1.3, the roots of the URL, server certificates verified, no client certificate.
#[derive(Clone)]
pub(super) struct DbTls {
    inner: MakeRustlsConnect,
    /// "sslrootcert /path (2 certificates)", for error messages.
    roots: Arc<str>,
}

impl DbTls {
    fn new(params: &TlsParams) -> Result<DbTls, String> {
        let mut store = rustls::RootCertStore::empty();
        let roots = match (&params.mode, &params.roots) {
            // Never used: the driver does not ask for TLS.
            (SslMode::Disable, _) => "no roots (sslmode=disable)".to_owned(),
            (_, Roots::File(path)) => {
                for cert in crate::tls::read_certs(path).map_err(|e| format!("sslrootcert {e}"))? {
                    store.add(cert).map_err(|e| {
                        format!(
                            "sslrootcert {}: not a usable CA certificate: {e}",
                            path.display()
                        )
                    })?;
                }
                describe_roots(Some(path), store.len())
            }
            (_, Roots::System) => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "system trust store: some certificates could not be read");
                }
                // Unparsable certificates of a system bundle are skipped, as libraries do.
                let (added, skipped) = store.add_parsable_certificates(found.certs);
                if skipped > 0 {
                    tracing::warn!(skipped, "system trust store: unusable certificates skipped");
                }
                if added == 0 {
                    // Not fatal here: `prefer` against a server without TLS needs no roots.
                    // A TLS handshake will fail saying which roots it had.
                    tracing::warn!(
                        "system trust store is empty; name the database's CA with sslrootcert=FILE in --store"
                    );
                }
                describe_roots(None, added)
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("database TLS configuration: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(DbTls {
            inner: MakeRustlsConnect::new(config),
            roots: roots.into(),
        })
    }
}

fn describe_roots(file: Option<&Path>, n: usize) -> String {
    let what = if n == 1 {
        "certificate"
    } else {
        "certificates"
    };
    match file {
        Some(p) => format!("sslrootcert {} ({n} {what})", p.display()),
        None => format!("the system's trust store ({n} {what})"),
    }
}

type Socket = tokio_postgres::Socket;
type Inner = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;

impl MakeTlsConnect<Socket> for DbTls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = DbTlsConnect;
    type Error = DbTlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<DbTlsConnect, DbTlsError> {
        let inner =
            MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, host).map_err(|e| {
                DbTlsError::Name {
                    host: host.to_owned(),
                    message: e.to_string(),
                }
            })?;
        Ok(DbTlsConnect {
            inner,
            host: host.to_owned(),
            roots: self.roots.clone(),
        })
    }
}

/// One handshake; turns rustls' failures into [`DbTlsError`]s that say what went wrong.
pub(super) struct DbTlsConnect {
    inner: Inner,
    host: String,
    roots: Arc<str>,
}

type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

impl TlsConnect<Socket> for DbTlsConnect {
    type Stream = Stream;
    type Error = DbTlsError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, DbTlsError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        let DbTlsConnect { inner, host, roots } = self;
        Box::pin(async move {
            inner.connect(socket).await.map_err(|source| {
                let certificate = source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .and_then(|e| match e {
                        rustls::Error::InvalidCertificate(c) => Some(c.clone()),
                        _ => None,
                    });
                let error = match certificate {
                    Some(problem) => DbTlsError::NotTrusted {
                        host: host.clone(),
                        problem,
                        roots: roots.to_string(),
                    },
                    None => DbTlsError::Handshake {
                        host: host.clone(),
                        source,
                    },
                };
                tracing::warn!(%error, "database TLS handshake failed");
                error
            })
        })
    }
}

/// A pool error caused by TLS, in words: the [`DbTlsError`] of the handshake, or "database
/// does not offer TLS" when the server declined it under `sslmode=require`. `None` for
/// every other error.
pub(super) fn describe(e: &deadpool_postgres::PoolError) -> Option<String> {
    let deadpool_postgres::PoolError::Backend(e) = e else {
        return None;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<DbTlsError>() {
            return Some(tls.to_string());
        }
        if c.to_string() == NO_TLS_FROM_SERVER {
            return Some(
                "database does not offer TLS, and the store URL requires it (sslmode=require); \
                 turn ssl on in the server or, on a trusted network only, use sslmode=prefer"
                    .into(),
            );
        }
        cause = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsParams) {
        split_tls_params(url).unwrap()
    }

    #[test]
    fn without_parameters_tls_is_preferred_and_verified_against_the_system_roots() {
        let (rest, p) = split("postgres://commscan@db:5432/commscan");
        assert_eq!(rest, "postgres://commscan@db:5432/commscan");
        assert_eq!(p.mode, SslMode::Prefer);
        assert_eq!(p.roots, Roots::System);
    }

    #[test]
    fn libpq_modes_map_to_plain_preferred_or_required_tls() {
        for (mode, want) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let (_, p) = split(&format!("postgres://u@h/d?sslmode={mode}"));
            assert_eq!(p.mode, want, "{mode}");
        }
        for bad in ["allow", "yes", ""] {
            let e = split_tls_params(&format!("postgres://u@h/d?sslmode={bad}")).unwrap_err();
            assert!(e.contains("sslmode"), "{e}");
        }
    }

    #[test]
    fn the_ca_file_is_taken_out_of_the_url_and_other_parameters_stay() {
        let (rest, p) = split(
            "postgresql://u@h:5/d?connect_timeout=3&sslrootcert=%2Fetc%2Fdb%20ca.pem&sslmode=verify-full&application_name=x",
        );
        assert_eq!(
            rest,
            "postgresql://u@h:5/d?connect_timeout=3&application_name=x"
        );
        assert_eq!(p.roots, Roots::File(PathBuf::from("/etc/db ca.pem")));
        assert_eq!(p.mode, SslMode::Require);
        let (_, p) = split("postgres://u@h/d?sslrootcert=system");
        assert_eq!(p.roots, Roots::System);
    }

    #[test]
    fn client_certificates_are_refused_by_name() {
        let e = split_tls_params("postgres://u@h/d?sslcert=/c.pem&sslkey=/k.pem").unwrap_err();
        assert!(e.starts_with("sslcert is not supported"), "{e}");
    }

    #[test]
    fn a_missing_ca_file_is_named_when_the_store_is_configured() {
        let Err(e) = configure("postgres://u@h/d?sslmode=require&sslrootcert=/nonexistent/ca.pem")
        else {
            panic!("a missing CA file was accepted");
        };
        let e = e.to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
    }
}
