//! The collector's data directory, `init`, and opening it for `serve`.
//!
//! ```text
//! <data>/collector.json     trust domain and format version
//! <data>/pki/ca.crt         deployment CA certificate (give it to agents with --ca)
//! <data>/pki/ca.key         CA private key (0600)
//! <data>/pki/server.crt     the collector's certificate, signed by the CA
//! <data>/pki/server.key     its key (0600)
//! <data>/store/             sled database: devices, aggregates, hashed tokens (0700, files 0600)
//! <data>/admin.token        the first admin bearer token (0600); move it somewhere safe
//! ```
//!
//! The data directory, `pki/` and `store/` are created 0700 and the store's files made 0600
//! whatever the umask ([`private_dir`], [`private_files`]); opening tightens an existing store.
//!
//! `init` refuses to touch a directory that already holds a deployment: nothing stored is ever
//! overwritten by a second `init`.

use crate::collector::{Clock, Collector, system_clock};
use crate::compliance::{Rules, RulesConfig};
use crate::secrets;
use crate::store::Store;
use crate::store::records::{Grant, PersonRecord, Role, TokenRecord};
use crate::store::sled_store::SledStore;
use commscan_core::identity::is_valid_organisation;
use commscan_core::pki::Authority;
use commscan_runtime::files::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A data-directory failure, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file or directory could not be used.
    #[error("{path}: {message}")]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Creates `dir` and its missing parents 0700 and tightens an existing `dir` to 0700: a data
/// directory holds keys and the store, for the collector's user alone (outside the systemd
/// unit, the umask would otherwise leave it 0755).
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Makes every file under `dir` 0600 and every directory 0700 (sled creates its files with the
/// process umask).
pub(crate) fn private_files(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
                private_files(&entry.path())?;
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(crate) fn path_err(path: &Path, message: impl std::fmt::Display) -> LayoutError {
    LayoutError::Path {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The directory.
    pub root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    format: u32,
    trust_domain: String,
}

/// What `init` creates.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Trust domain in device certificates.
    pub trust_domain: String,
    /// DNS names and IP addresses the server certificate covers.
    pub server_names: Vec<String>,
    /// Organisation of the first enrolment token.
    pub organisation: String,
    /// The enterprise's own CA (certificate, key) instead of a new one. Without the key, the
    /// deployment cannot enrol devices (its PKI signs them elsewhere).
    pub import_ca: Option<(PathBuf, Option<PathBuf>)>,
    /// The enterprise's own server certificate and key instead of one issued by the CA.
    pub import_server: Option<(PathBuf, PathBuf)>,
}

/// Secrets `init` shows once.
#[derive(Debug, Clone)]
pub struct InitSecrets {
    /// An admin bearer token (also written to `admin.token`).
    pub admin_token: String,
    /// An enrolment token for the organisation.
    pub enrolment_token: String,
}

/// How `open` sets up the collector beyond what the data directory holds.
#[derive(Clone)]
pub struct OpenSettings {
    /// The clock (tests substitute a controllable one).
    pub clock: Clock,
    /// On a ministry, how long an enterprise's pushed rows stay fresh.
    pub federation_stale_after: std::time::Duration,
    /// The PostgreSQL store to use instead of the data directory's sled store.
    pub postgres: Option<crate::store::pg_store::PgConfig>,
    /// Keys whose signed catalogs are accepted ([`crate::catalog_trust`]); empty: none checked.
    pub catalog_keys: Vec<commscan_core::signed_catalog::CatalogPublicKey>,
}

impl Default for OpenSettings {
    fn default() -> Self {
        OpenSettings {
            clock: system_clock(),
            federation_stale_after: crate::collector::DEFAULT_FEDERATION_STALE_AFTER,
            postgres: None,
            catalog_keys: Vec::new(),
        }
    }
}

impl std::fmt::Debug for OpenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSettings")
            .field("federation_stale_after", &self.federation_stale_after)
            .field("postgres", &self.postgres)
            .finish_non_exhaustive()
    }
}

impl Layout {
    /// The layout of `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// A path inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Creates a new deployment: CA, server certificate, store, admin token and one enrolment
    /// token. Refuses if the directory already holds one.
    pub fn init(&self, opts: &InitOptions) -> Result<InitSecrets, LayoutError> {
        self.init_with(opts, None)
    }

    /// [`Layout::init`], keeping the first secrets in the PostgreSQL store `postgres` instead
    /// of the data directory's sled store (the PKI stays in the data directory either way).
    pub fn init_with(
        &self,
        opts: &InitOptions,
        postgres: Option<&crate::store::pg_store::PgConfig>,
    ) -> Result<InitSecrets, LayoutError> {
        if !is_valid_organisation(&opts.organisation) {
            return Err(LayoutError::Invalid(format!(
                "--org '{}': use 1-64 of a-z, 0-9 and '-'",
                opts.organisation
            )));
        }
        if opts.trust_domain.is_empty() || opts.trust_domain.contains('/') {
            return Err(LayoutError::Invalid(format!(
                "--trust-domain '{}': must be a non-empty name without '/'",
                opts.trust_domain
            )));
        }
        let meta = self.path("collector.json");
        if meta.exists() || self.path("pki/ca.crt").exists() {
            return Err(path_err(
                &self.root,
                "already holds a deployment; refusing to overwrite it (use another --data-dir)",
            ));
        }
        private_dir(&self.root).map_err(|e| path_err(&self.root, format!("cannot create: {e}")))?;
        let pki = self.path("pki");
        private_dir(&pki).map_err(|e| path_err(&pki, format!("cannot create: {e}")))?;
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| path_err(p, format!("cannot read: {e}")))
        };
        let (ca, ca_pem) = match &opts.import_ca {
            None => {
                let (ca, pem) = Authority::generate(&opts.trust_domain)
                    .map_err(|e| LayoutError::Invalid(e.to_string()))?;
                (Some(ca), pem)
            }
            Some((cert, key)) => {
                let cert_pem = read(cert)?;
                commscan_core::pki::not_after(&cert_pem).map_err(|e| path_err(cert, e))?;
                match key {
                    Some(k) => {
                        let key_pem = read(k)?;
                        let ca =
                            Authority::from_pem(&cert_pem, &key_pem).map_err(|e| path_err(k, e))?;
                        (
                            Some(ca),
                            commscan_core::pki::Pem {
                                cert: cert_pem,
                                key: key_pem,
                            },
                        )
                    }
                    None => (
                        None,
                        commscan_core::pki::Pem {
                            cert: cert_pem,
                            key: String::new(),
                        },
                    ),
                }
            }
        };
        let server = match (&opts.import_server, &ca) {
            (Some((cert, key)), _) => commscan_core::pki::Pem {
                cert: read(cert)?,
                key: read(key)?,
            },
            (None, Some(ca)) => ca
                .issue_server(&opts.server_names)
                .map_err(|e| LayoutError::Invalid(format!("--server-name: {e}")))?,
            (None, None) => {
                return Err(LayoutError::Invalid(
                    "--ca-cert without --ca-key needs --server-cert and --server-key: nothing can issue the server certificate".into(),
                ));
            }
        };
        let write = |rel: &str, text: &str, mode: u32| {
            let p = self.path(rel);
            write_atomic(&p, text.as_bytes(), mode).map_err(|e| path_err(&e.path, e.source))
        };
        if !ca_pem.key.is_empty() {
            write("pki/ca.key", &ca_pem.key, 0o600)?;
        }
        write("pki/ca.crt", &ca_pem.cert, 0o644)?;
        write("pki/server.key", &server.key, 0o600)?;
        write("pki/server.crt", &server.cert, 0o644)?;
        let store: Box<dyn Store> = match postgres {
            Some(pg) => Box::new(
                crate::store::pg_store::PgStore::open(pg)
                    .map_err(|e| LayoutError::Invalid(format!("--store {}: {e}", pg.url)))?,
            ),
            None => Box::new(
                SledStore::open(&self.path("store"))
                    .map_err(|e| path_err(&self.path("store"), e))?,
            ),
        };
        let admin_token = secrets::generate("csa");
        store
            .put_person(
                &secrets::hash(&admin_token),
                &PersonRecord {
                    created_at: Some(time::OffsetDateTime::now_utc()),
                    ..PersonRecord::new(
                        "admin".into(),
                        vec![Grant {
                            role: Role::Admin,
                            organisation: None,
                        }],
                    )
                },
            )
            .map_err(|e| path_err(&self.path("store"), e))?;
        let enrolment_token = secrets::generate("cse");
        let now = time::OffsetDateTime::now_utc();
        store
            .put_token(
                &secrets::hash(&enrolment_token),
                &TokenRecord {
                    organisation: opts.organisation.clone(),
                    created_at: now,
                    expires_at: Some(now + time::Duration::days(7)),
                    uses_left: None,
                    revoked: false,
                },
            )
            .map_err(|e| path_err(&self.path("store"), e))?;
        store
            .flush()
            .map_err(|e| path_err(&self.path("store"), e))?;
        write("admin.token", &format!("{admin_token}\n"), 0o600)?;
        // Written last: its presence means a complete deployment.
        let m = serde_json::to_string_pretty(&MetaFile {
            format: 1,
            trust_domain: opts.trust_domain.clone(),
        })
        .expect("serialises");
        write("collector.json", &m, 0o644)?;
        Ok(InitSecrets {
            admin_token,
            enrolment_token,
        })
    }

    /// The trust domain of an initialised directory.
    pub(crate) fn trust_domain(&self) -> Result<String, LayoutError> {
        let meta_path = self.path("collector.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                path_err(
                    &meta_path,
                    "missing: not a collector data directory (run `commscan-collector init` first)",
                )
            } else {
                path_err(&meta_path, format!("cannot read: {e}"))
            }
        })?;
        let meta: MetaFile = serde_json::from_str(&text)
            .map_err(|e| path_err(&meta_path, format!("invalid: {e}")))?;
        Ok(meta.trust_domain)
    }

    /// Opens an initialised directory: the collector and its TLS configuration.
    pub fn open(
        &self,
        rules: &RulesConfig,
    ) -> Result<(Arc<Collector>, Arc<rustls::ServerConfig>), LayoutError> {
        self.open_with(rules, &OpenSettings::default())
    }

    /// The web console's TLS configuration: the deployment's server certificate, no client
    /// certificates ([`crate::tls::web_server_config`]).
    pub fn web_tls(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, LayoutError> {
        crate::tls::web_server_config(&self.path("pki/server.crt"), &self.path("pki/server.key"))
            .map_err(|e| LayoutError::Invalid(e.to_string()))
    }

    /// [`Layout::open`] with settings.
    pub fn open_with(
        &self,
        rules: &RulesConfig,
        settings: &OpenSettings,
    ) -> Result<(Arc<Collector>, Arc<rustls::ServerConfig>), LayoutError> {
        let trust_domain = self.trust_domain()?;
        let read = |rel: &str| {
            let p = self.path(rel);
            std::fs::read_to_string(&p).map_err(|e| path_err(&p, format!("cannot read: {e}")))
        };
        let ca_pem = read("pki/ca.crt")?;
        let key_path = self.path("pki/ca.key");
        let authority = if key_path.exists() {
            Some(
                Authority::from_pem(&ca_pem, &read("pki/ca.key")?)
                    .map_err(|e| path_err(&key_path, e))?,
            )
        } else {
            tracing::warn!(path = %key_path.display(), "CA key not present: enrolment and renewal are closed");
            None
        };
        let tls = crate::tls::server_config(
            &self.path("pki/ca.crt"),
            &self.path("pki/server.crt"),
            &self.path("pki/server.key"),
        )
        .map_err(|e| LayoutError::Invalid(e.to_string()))?;
        let rules = Rules::load(rules).map_err(|e| LayoutError::Invalid(format!("rules: {e}")))?;
        crate::catalog_trust::check(&rules, &settings.catalog_keys)
            .map_err(|e| LayoutError::Invalid(format!("rules: {e}")))?;
        let store: Arc<dyn Store> = match &settings.postgres {
            Some(pg) => Arc::new(
                crate::store::pg_store::PgStore::open(pg)
                    .map_err(|e| LayoutError::Invalid(format!("--store {}: {e}", pg.url)))?,
            ),
            None => {
                let store_dir = self.path("store");
                let opener: crate::store::recovering::Opener = Box::new(move || {
                    SledStore::open(&store_dir).map(|s| Arc::new(s) as Arc<dyn Store>)
                });
                Arc::new(
                    crate::store::recovering::Recovering::open(opener)
                        .map_err(|e| path_err(&self.path("store"), e))?,
                )
            }
        };
        let collector = Collector::new(store, rules, authority, ca_pem, trust_domain)
            .with_clock(settings.clock.clone())
            .with_federation_stale_after(settings.federation_stale_after)
            .with_catalog_keys(settings.catalog_keys.clone());
        // Rules applied through the API override the files; stored rules that no longer
        // validate against the files are reported, and the files judge until they are fixed.
        if let Err(e) = collector.refresh_rules() {
            tracing::error!(error = %e, "stored rules not put in force");
        }
        if let Err(e) = collector.store().heartbeat(collector.node()) {
            tracing::warn!(error = %e, "cluster heartbeat failed");
        }
        Ok((Arc::new(collector), tls))
    }
}

#[cfg(all(test, unix))]
mod permission_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_data_directory_and_the_store_are_private_whatever_the_umask() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("data"));
        layout
            .init(&InitOptions {
                trust_domain: "t".into(),
                server_names: vec!["localhost".into()],
                organisation: "acme".into(),
                import_ca: None,
                import_server: None,
            })
            .unwrap();
        // An existing store left world-readable (an older version) is tightened on open.
        let db = layout.path("store/db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _ = layout.open(&RulesConfig::default()).unwrap();
        assert_eq!(mode(&layout.root), 0o700);
        assert_eq!(mode(&layout.path("pki")), 0o700);
        assert_eq!(mode(&layout.path("store")), 0o700);
        for e in std::fs::read_dir(layout.path("store")).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
            }
        }
    }
}
