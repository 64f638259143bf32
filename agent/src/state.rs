//! The agent's data directory.
//!
//! ```text
//! <data-dir>/identity.json   device id, organisation, collector URL (0600)
//! <data-dir>/device.key      the device's private key, generated here, never sent (0600)
//! <data-dir>/device.crt      the client certificate the collector issued (0600)
//! <data-dir>/ca.crt          the deployment CA, pinned on every connection
//! <data-dir>/spool.log       the spool: state, pending changes, sequences (crate::spool)
//! <data-dir>/spool.lock      held by the running agent: one agent per data directory
//! <data-dir>/status.json     what the running agent last did (crate::status)
//! ```
//!
//! Small files are written atomically ([`commscan_runtime::files::write_atomic`]: `x.new`,
//! `sync_all`, rename), so a power cut leaves the old or the new file, never half of one.

use commscan_runtime::files::{WriteError, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A data-directory failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file exists but is not what it should be.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The agent has not enrolled.
    #[error("not enrolled: {0} is missing (run `commscan-agent enroll` first)")]
    NotEnrolled(PathBuf),
}

impl From<WriteError> for StateError {
    fn from(e: WriteError) -> Self {
        StateError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Who this device is, as the collector named it at enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Device id.
    pub device_id: String,
    /// Organisation.
    pub organisation: String,
    /// The collector's URL.
    pub collector: String,
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DataDir {
    /// A data directory at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory if needed: mode 0700 on Unix, a protected DACL for SYSTEM and
    /// Administrators on Windows.
    pub fn create(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&self.root))?;
        }
        // SYSTEM and Administrators only: the directory holds the device's private key.
        #[cfg(windows)]
        crate::service::acl::restrict(&self.root).map_err(io(&self.root))?;
        Ok(())
    }

    fn read(&self, name: &str) -> Result<String, StateError> {
        let path = self.file(name);
        std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StateError::NotEnrolled(path.clone())
            } else {
                StateError::Io {
                    path: path.clone(),
                    source: e,
                }
            }
        })
    }

    /// The stored identity.
    pub fn identity(&self) -> Result<Identity, StateError> {
        let text = self.read("identity.json")?;
        serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: self.file("identity.json"),
            message: e.to_string(),
        })
    }

    /// `(ca, cert, key)` PEM texts. Completes or discards a renewal a crash interrupted.
    pub fn credentials(&self) -> Result<(String, String, String), StateError> {
        self.recover_renewal()?;
        Ok((
            self.read("ca.crt")?,
            self.read("device.crt")?,
            self.read("device.key")?,
        ))
    }

    /// Stores everything enrolment produced. The key is written first: without it the
    /// certificate is useless, and an interrupted enrolment is simply repeated.
    pub fn store_enrolment(
        &self,
        identity: &Identity,
        key_pem: &str,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<(), StateError> {
        self.create()?;
        write_atomic(&self.file("device.key"), key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.file("device.crt"), cert_pem.as_bytes(), 0o600)?;
        write_atomic(&self.file("ca.crt"), ca_pem.as_bytes(), 0o644)?;
        let json = serde_json::to_vec_pretty(identity).expect("identity serialises");
        Ok(write_atomic(&self.file("identity.json"), &json, 0o600)?)
    }

    /// Replaces key and certificate after a renewal. Both new files are written and synced,
    /// then a `renew.ready` marker; only then are they renamed into place and the marker
    /// removed. A crash before the marker leaves the old pair; after it, the next
    /// [`DataDir::credentials`] finishes the swap. Key and certificate never mismatch.
    pub fn store_renewal(&self, key_pem: &str, cert_pem: &str) -> Result<(), StateError> {
        write_atomic(&self.file("device.key.new"), key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.file("device.crt.new"), cert_pem.as_bytes(), 0o600)?;
        write_atomic(&self.file("renew.ready"), b"", 0o600)?;
        self.recover_renewal()
    }

    fn recover_renewal(&self) -> Result<(), StateError> {
        let marker = self.file("renew.ready");
        let pairs = [
            ("device.key.new", "device.key"),
            ("device.crt.new", "device.crt"),
        ];
        if marker.exists() {
            for (from, to) in pairs {
                let from = self.file(from);
                if from.exists() {
                    std::fs::rename(&from, self.file(to)).map_err(io(&from))?;
                }
            }
            std::fs::remove_file(&marker).map_err(io(&marker))?;
        } else {
            for (from, _) in pairs {
                let _ = std::fs::remove_file(self.file(from));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path().join("agent"));
        let id = Identity {
            device_id: "d".into(),
            organisation: "o".into(),
            collector: "https://c".into(),
        };
        d.store_enrolment(&id, "KEY", "CERT", "CA").unwrap();
        assert_eq!(d.identity().unwrap(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["device.key", "device.crt", "identity.json"] {
                let mode = std::fs::metadata(d.file(f)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{f}");
            }
        }
    }

    #[test]
    fn an_interrupted_renewal_never_mixes_key_and_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        let id = Identity {
            device_id: "d".into(),
            organisation: "o".into(),
            collector: "https://c".into(),
        };
        d.store_enrolment(&id, "KEY1", "CERT1", "CA").unwrap();
        // Crash after writing the new pair but before the marker: the old pair stays.
        write_atomic(&d.file("device.key.new"), b"KEY2", 0o600).unwrap();
        write_atomic(&d.file("device.crt.new"), b"CERT2", 0o600).unwrap();
        assert_eq!(
            d.credentials().unwrap(),
            ("CA".into(), "CERT1".into(), "KEY1".into())
        );
        // Crash after the marker and the key rename: the next read finishes the swap.
        write_atomic(&d.file("device.crt.new"), b"CERT3", 0o600).unwrap();
        write_atomic(&d.file("renew.ready"), b"", 0o600).unwrap();
        std::fs::write(d.file("device.key"), b"KEY3").unwrap();
        assert_eq!(
            d.credentials().unwrap(),
            ("CA".into(), "CERT3".into(), "KEY3".into())
        );
        d.store_renewal("KEY4", "CERT4").unwrap();
        assert_eq!(
            d.credentials().unwrap(),
            ("CA".into(), "CERT4".into(), "KEY4".into())
        );
        assert!(!d.file("renew.ready").exists());
    }

    #[test]
    fn missing_identity_says_to_enroll() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataDir::new(dir.path()).identity().unwrap_err();
        assert!(err.to_string().contains("commscan-agent enroll"), "{err}");
    }
}
