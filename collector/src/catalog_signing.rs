//! `commscan-collector catalog keygen|sign`: the offline half of signed catalogs.
//!
//! An administrator (or a ministry, for the enterprises it supplies) keeps a catalog key
//! apart from every collector's TLS key, ideally on a machine that never runs a collector.
//! `keygen` writes a new Ed25519 key (PKCS#8 PEM, mode 0600, never over an existing file)
//! and prints its public key, which goes into every agent's `catalog_keys`. `sign` validates a
//! catalog file with the same validator agents use and writes the signed envelope
//! ([`commscan_core::signed_catalog`]), which `commscanctl catalog apply` hands to a
//! collector. Nothing here runs inside `serve`: a collector holds no catalog key.

use commscan_core::signed_catalog::{
    CatalogPublicKey, CatalogSigningKey, EnvelopeError, KeyError, SignedCatalog,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a catalog tool failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogToolError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The key file is not a catalog key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The catalog could not be signed (invalid, too large).
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
}

impl CatalogToolError {
    /// Whether the user gave something wrong (exit 64) rather than the machine failing.
    pub fn is_usage(&self) -> bool {
        !matches!(self, CatalogToolError::Io { .. })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogToolError + '_ {
    move |source| CatalogToolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new catalog key to `out` (0600; an existing file is never replaced) and returns
/// its public key.
pub fn keygen(out: &Path) -> Result<CatalogPublicKey, CatalogToolError> {
    let (key, pem) = CatalogSigningKey::generate().map_err(|source| CatalogToolError::Key {
        path: out.to_owned(),
        source,
    })?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(out).map_err(io(out))?;
    f.write_all(pem.as_bytes()).map_err(io(out))?;
    f.sync_all().map_err(io(out))?;
    Ok(key.public_key())
}

/// Reads a key written by [`keygen`].
pub fn read_key(path: &Path) -> Result<CatalogSigningKey, CatalogToolError> {
    let pem = std::fs::read_to_string(path).map_err(io(path))?;
    CatalogSigningKey::from_pem(&pem).map_err(|source| CatalogToolError::Key {
        path: path.to_owned(),
        source,
    })
}

/// What `sign` wrote.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The release number.
    pub release: u64,
    /// The content's SHA-256, hex.
    pub digest: String,
    /// The products in the catalog.
    pub products: usize,
    /// The keys that signed.
    pub keys: Vec<CatalogPublicKey>,
    /// Bytes written.
    pub bytes: usize,
}

/// Signs the catalog file `catalog` as `release` with every key file in `keys` and writes
/// the envelope to `out` (atomically).
pub fn sign(
    keys: &[PathBuf],
    release: u64,
    catalog: &Path,
    out: &Path,
) -> Result<Signed, CatalogToolError> {
    let keys = keys
        .iter()
        .map(|k| read_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let content = std::fs::read_to_string(catalog).map_err(io(catalog))?;
    let refs: Vec<&CatalogSigningKey> = keys.iter().collect();
    let text = SignedCatalog::sign(&content, release, &refs)?;
    let envelope = SignedCatalog::parse(text.as_bytes())?;
    let products = envelope.catalog()?.products().len();
    commscan_runtime::files::write_atomic(out, text.as_bytes(), 0o644).map_err(|e| {
        CatalogToolError::Io {
            path: out.to_owned(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    Ok(Signed {
        release,
        digest: hex::encode(envelope.digest),
        products,
        keys: keys.iter().map(|k| k.public_key()).collect(),
        bytes: text.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.key");
        let public = keygen(&path).unwrap();
        assert_eq!(read_key(&path).unwrap().public_key(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(keygen(&path).is_err());
        assert_eq!(read_key(&path).unwrap().public_key(), public);
    }

    #[test]
    fn sign_writes_an_envelope_agents_verify() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("catalog.key");
        let public = keygen(&key).unwrap();
        let catalog = dir.path().join("catalog.toml");
        std::fs::write(&catalog, commscan_core::catalog::EMBEDDED_CATALOG).unwrap();
        let out = dir.path().join("catalog.signed");
        let signed = sign(&[key], 5, &catalog, &out).unwrap();
        assert_eq!(signed.release, 5);
        let bytes = std::fs::read(&out).unwrap();
        let env = SignedCatalog::parse(&bytes).unwrap();
        assert!(env.verify(&[public]).is_ok());
    }
}
