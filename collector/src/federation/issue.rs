//! `commscan-collector federation issue`: the ministry operator issues an enterprise collector's
//! certificate from the ministry's CA, offline (the running collector is not involved, and the
//! CA key can live on an offline machine with a copy of the data directory's `pki/` and
//! `collector.json`).
//!
//! ```text
//! <out>/enterprise.key    the enterprise's private key (0600); hand it over securely
//! <out>/enterprise.crt    its certificate: spiffe://<ministry domain>/enterprise/<id>, plus
//!                         .../enterprise/<id>/org/<org> for each organisation it may push
//! <out>/ministry-ca.crt   the ministry's CA certificate (the enterprise's --upstream-ca)
//! ```
//!
//! Existing files are never overwritten. Issuing again (more organisations, renewal) goes to a
//! new directory; the enterprise swaps files and restarts. Issuance is not in the ministry's
//! audit log (the store belongs to the running collector); keep the operator's record.

use crate::layout::{Layout, LayoutError, path_err};
use commscan_core::identity::{EnterpriseIdentity, is_valid_organisation};
use commscan_core::pki::{Authority, ENTERPRISE_VALIDITY};
use commscan_runtime::files::write_atomic;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// What was written.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The identity in the certificate.
    pub identity: EnterpriseIdentity,
    /// `enterprise.key`.
    pub key: PathBuf,
    /// `enterprise.crt`.
    pub cert: PathBuf,
    /// `ministry-ca.crt`.
    pub ca: PathBuf,
    /// When the certificate expires.
    pub not_after: OffsetDateTime,
}

impl Layout {
    /// Issues a certificate for `enterprise`, granting `organisations`, into `out`.
    pub fn issue_enterprise(
        &self,
        enterprise: &str,
        organisations: &[String],
        out: &Path,
    ) -> Result<Issued, LayoutError> {
        let mut problems = Vec::new();
        if !is_valid_organisation(enterprise) {
            problems.push(format!(
                "--enterprise '{enterprise}': use 1-64 of a-z, 0-9 and '-'"
            ));
        }
        if organisations.is_empty() {
            problems.push("--org: at least one organisation the enterprise may push".into());
        }
        for o in organisations {
            if !is_valid_organisation(o) {
                problems.push(format!("--org '{o}': use 1-64 of a-z, 0-9 and '-'"));
            }
        }
        if !problems.is_empty() {
            return Err(LayoutError::Invalid(problems.join("; ")));
        }
        let trust_domain = self.trust_domain()?;
        let read = |rel: &str| {
            let p = self.path(rel);
            std::fs::read_to_string(&p).map_err(|e| path_err(&p, format!("cannot read: {e}")))
        };
        let ca_pem = read("pki/ca.crt")?;
        let key_path = self.path("pki/ca.key");
        if !key_path.exists() {
            return Err(path_err(
                &key_path,
                "missing: the ministry's CA key is needed to issue (run this where it is kept)",
            ));
        }
        let authority = Authority::from_pem(&ca_pem, &read("pki/ca.key")?)
            .map_err(|e| path_err(&key_path, e))?;
        let (key, cert, ca) = (
            out.join("enterprise.key"),
            out.join("enterprise.crt"),
            out.join("ministry-ca.crt"),
        );
        for p in [&key, &cert] {
            if p.exists() {
                return Err(path_err(
                    p,
                    "exists; refusing to overwrite it (use another --out)",
                ));
            }
        }
        let mut organisations = organisations.to_vec();
        organisations.sort();
        organisations.dedup();
        let identity = EnterpriseIdentity {
            trust_domain,
            enterprise: enterprise.to_owned(),
            organisations,
        };
        let pem = authority
            .issue_enterprise(&identity, ENTERPRISE_VALIDITY)
            .map_err(|e| LayoutError::Invalid(e.to_string()))?;
        std::fs::create_dir_all(out).map_err(|e| path_err(out, format!("cannot create: {e}")))?;
        let write = |p: &Path, text: &str, mode: u32| {
            write_atomic(p, text.as_bytes(), mode).map_err(|e| path_err(&e.path, e.source))
        };
        write(&key, &pem.key, 0o600)?;
        write(&cert, &pem.cert, 0o644)?;
        write(&ca, &ca_pem, 0o644)?;
        let not_after = commscan_core::pki::not_after(&pem.cert).map_err(|e| path_err(&cert, e))?;
        tracing::info!(enterprise, organisations = ?identity.organisations, %not_after, "enterprise certificate issued");
        Ok(Issued {
            identity,
            key,
            cert,
            ca,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::{InitOptions, Layout};

    #[test]
    fn issued_files_make_an_enterprise_identity_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("m"));
        layout
            .init(&InitOptions {
                trust_domain: "ministry.gov".into(),
                server_names: vec!["localhost".into()],
                organisation: "ministry".into(),
                import_ca: None,
                import_server: None,
            })
            .unwrap();
        let out = dir.path().join("e1");
        let issued = layout
            .issue_enterprise("e1", &["b".into(), "a".into(), "a".into()], &out)
            .unwrap();
        assert_eq!(issued.identity.organisations, ["a", "b"]);
        assert_eq!(issued.identity.trust_domain, "ministry.gov");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&issued.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let up = crate::federation::upstream::Upstream::from_pem(
            "https://m:1",
            &std::fs::read_to_string(&issued.ca).unwrap(),
            &std::fs::read_to_string(&issued.cert).unwrap(),
            &std::fs::read_to_string(&issued.key).unwrap(),
            crate::federation::push::DEFAULT_PUSH_INTERVAL,
        )
        .unwrap();
        assert_eq!(up.identity, issued.identity);
        let again = layout
            .issue_enterprise("e1", &["a".into()], &out)
            .unwrap_err();
        assert!(
            again.to_string().contains("refusing to overwrite"),
            "{again}"
        );
        let bad = layout
            .issue_enterprise("E 1", &[], &dir.path().join("x"))
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("--enterprise") && bad.contains("--org"),
            "{bad}"
        );
    }
}
