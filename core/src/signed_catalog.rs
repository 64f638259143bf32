//! Signed catalogs: how a new catalog reaches agents without a new agent, and why an agent can
//! trust it when the collector that passed it on cannot be trusted.
//!
//! A *signed catalog* is an envelope around catalog text (the same TOML as the embedded
//! catalog, validated by the same [`Catalog::parse`] with the same limits): a release number,
//! the SHA-256 of the content, and one or more Ed25519 signatures by *catalog keys*. Catalog
//! keys are kept apart from every TLS key: an administrator (or a ministry, for the
//! enterprises it supplies) keeps the private key offline, signs with
//! `commscan-collector catalog sign`, and agents are configured with the public keys they
//! accept. The collector only stores and passes on the signed bytes it was given; it holds no
//! catalog key and signs nothing, so whoever controls a collector can withhold a catalog but
//! never make an agent accept one.
//!
//! # Format
//!
//! UTF-8 text, so it fits the collector's rules store and its history shows readable diffs:
//!
//! ```text
//! commscan-signed-catalog: 1
//! release: 2
//! sha256: <64 lowercase hex digits of SHA-256(content)>
//! signature: ed25519 <public key, 64 hex> <signature, 128 hex>
//! content-length: <bytes of content>
//!
//! <content: catalog TOML, exactly content-length bytes>
//! ```
//!
//! Header lines are strict: the first names the format, each key appears once (`signature`
//! up to [`MAX_SIGNATURES`] times), unknown keys are refused. Each signature covers
//! `"commscan-signed-catalog-v1\0" ‖ release (u64, big-endian) ‖ SHA-256(content)`, so a
//! signature cannot be moved to other content or another release number.
//!
//! # Invariants an agent relies on
//!
//! - Nothing larger than [`MAX_SIGNED_CATALOG_BYTES`] is parsed.
//! - [`SignedCatalog::parse`] checks structure and digest only; [`SignedCatalog::verify`]
//!   additionally requires a valid signature by a trusted key (and no invalid one by a trusted
//!   key) before the content is even parsed as a catalog, so unsigned bytes never reach the
//!   catalog parser on an agent.
//! - Releases only move forward: [`check_newer`] refuses a release at or below the one in use,
//!   and below [`EMBEDDED_CATALOG_RELEASE`].
//! - Content is data: the catalog's validator refuses anything but identifiers, names and
//!   paths inside the fixed set of places the agent's sources already read.

use crate::catalog::{Catalog, EMBEDDED_CATALOG};
use crate::textpos::Problems;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The largest signed catalog accepted anywhere (the embedded catalog is about 87 KB). The same
/// bound as the collector's stored rules texts, so a signed catalog fits its store.
pub const MAX_SIGNED_CATALOG_BYTES: usize = 1 << 20;
/// Most signatures an envelope may carry.
pub const MAX_SIGNATURES: usize = 8;
/// The release number of the catalog embedded in this build. An agent refuses any signed
/// catalog at or below it; raise it whenever `core/catalog/catalog.toml` changes.
pub const EMBEDDED_CATALOG_RELEASE: u64 = 1;
/// The first line of every signed catalog.
pub const MAGIC: &str = "commscan-signed-catalog: 1";
/// What every signature covers first (domain separation).
const SIGNING_CONTEXT: &[u8] = b"commscan-signed-catalog-v1\0";
/// Most header lines before the blank line.
const MAX_HEADER_LINES: usize = 4 + MAX_SIGNATURES;

/// Why a signed catalog was refused. Messages are short, lowercase and safe to show an
/// officer; they never quote the hostile input at length.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than [`MAX_SIGNED_CATALOG_BYTES`].
    #[error("oversize: {size} bytes, at most {max}")]
    Oversize {
        /// Bytes offered.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// Not a signed catalog (bad header, lengths, encoding).
    #[error("malformed: {0}")]
    Malformed(String),
    /// The content's SHA-256 differs from the header's.
    #[error("digest mismatch: the content is not what was signed")]
    DigestMismatch,
    /// No signature by a key this side trusts.
    #[error("unsigned: no signature by a trusted catalog key")]
    Unsigned,
    /// A signature by a trusted key does not verify.
    #[error("bad signature by trusted key {0}")]
    BadSignature(String),
    /// No catalog keys are configured, so nothing can be accepted.
    #[error("no catalog keys configured")]
    NoTrustedKeys,
    /// Signed, but not a valid catalog.
    #[error("invalid catalog: {0}")]
    Invalid(Problems),
    /// Not newer than the catalog in use.
    #[error("downgrade: release {offered} is not newer than release {current} in use")]
    Downgrade {
        /// The release offered.
        offered: u64,
        /// The release in use.
        current: u64,
    },
}

impl EnvelopeError {
    /// A stable one-word reason, for metrics, status files and tests.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::Oversize { .. } => "oversize",
            EnvelopeError::Malformed(_) => "malformed",
            EnvelopeError::DigestMismatch => "digest-mismatch",
            EnvelopeError::Unsigned => "unsigned",
            EnvelopeError::BadSignature(_) => "bad-signature",
            EnvelopeError::NoTrustedKeys => "no-keys",
            EnvelopeError::Invalid(_) => "invalid",
            EnvelopeError::Downgrade { .. } => "downgrade",
        }
    }
}

/// An Ed25519 public key that signs catalogs, written `ed25519:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CatalogPublicKey([u8; 32]);

impl CatalogPublicKey {
    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CatalogPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CatalogPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for CatalogPublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let h = s
            .trim()
            .strip_prefix("ed25519:")
            .ok_or("a catalog public key looks like 'ed25519:<64 hex digits>'")?;
        parse_hex::<32>(h)
            .map(CatalogPublicKey)
            .ok_or_else(|| "a catalog public key has 64 hex digits after 'ed25519:'".to_owned())
    }
}

fn parse_hex<const N: usize>(h: &str) -> Option<[u8; N]> {
    if h.len() != 2 * N || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(h, &mut out).ok()?;
    Some(out)
}

/// Why a catalog key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM is not an Ed25519 PKCS#8 private key.
    #[error("not an Ed25519 private key (PKCS#8 PEM): {0}")]
    Format(String),
}

/// A catalog signing key (Ed25519). Kept offline; only `catalog keygen` and `catalog sign`
/// touch it.
pub struct CatalogSigningKey {
    pair: ring::signature::Ed25519KeyPair,
}

impl fmt::Debug for CatalogSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogSigningKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl CatalogSigningKey {
    /// A new random key and its PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, readable by
    /// `openssl pkey`), to be written to a file only its owner can read.
    pub fn generate() -> Result<(CatalogSigningKey, String), KeyError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        let pem = pair.serialize_pem();
        Ok((CatalogSigningKey::from_pem(&pem)?, pem))
    }

    /// Reads a key written by [`CatalogSigningKey::generate`].
    pub fn from_pem(pem: &str) -> Result<CatalogSigningKey, KeyError> {
        let der = rcgen::KeyPair::from_pem(pem)
            .map_err(|e| KeyError::Format(e.to_string()))?
            .serialize_der();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        Ok(CatalogSigningKey { pair })
    }

    /// The public key agents are configured with.
    pub fn public_key(&self) -> CatalogPublicKey {
        use ring::signature::KeyPair;
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        CatalogPublicKey(k)
    }
}

/// SHA-256 of catalog content.
pub fn content_digest(content: &str) -> [u8; 32] {
    Sha256::digest(content.as_bytes()).into()
}

/// The release and digest of the catalog embedded in this build.
pub fn embedded_identity() -> (u64, [u8; 32]) {
    (EMBEDDED_CATALOG_RELEASE, content_digest(EMBEDDED_CATALOG))
}

fn signed_message(release: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + 8 + 32);
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(&release.to_be_bytes());
    m.extend_from_slice(digest);
    m
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSignature {
    /// Who signed.
    pub key: CatalogPublicKey,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

/// A parsed envelope: structure and digest checked, signatures not yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCatalog {
    /// The release number; releases only move forward.
    pub release: u64,
    /// SHA-256 of `content`.
    pub digest: [u8; 32],
    /// The signatures, in file order.
    pub signatures: Vec<CatalogSignature>,
    /// The catalog text.
    pub content: String,
}

impl SignedCatalog {
    /// Signs `content` as `release` with every key: validates it as a catalog first (nothing
    /// invalid is ever signed) and returns the envelope's text.
    pub fn sign(
        content: &str,
        release: u64,
        keys: &[&CatalogSigningKey],
    ) -> Result<String, EnvelopeError> {
        if release == 0 {
            return Err(EnvelopeError::Malformed(
                "release must be at least 1".into(),
            ));
        }
        if keys.is_empty() || keys.len() > MAX_SIGNATURES {
            return Err(EnvelopeError::Malformed(format!(
                "between 1 and {MAX_SIGNATURES} keys sign a catalog"
            )));
        }
        Catalog::parse("<catalog to sign>", content).map_err(EnvelopeError::Invalid)?;
        let digest = content_digest(content);
        let message = signed_message(release, &digest);
        let envelope = SignedCatalog {
            release,
            digest,
            signatures: keys
                .iter()
                .map(|k| {
                    let mut signature = [0u8; 64];
                    signature.copy_from_slice(k.pair.sign(&message).as_ref());
                    CatalogSignature {
                        key: k.public_key(),
                        signature,
                    }
                })
                .collect(),
            content: content.to_owned(),
        };
        let text = envelope.encode();
        if text.len() > MAX_SIGNED_CATALOG_BYTES {
            return Err(EnvelopeError::Oversize {
                size: text.len(),
                max: MAX_SIGNED_CATALOG_BYTES,
            });
        }
        Ok(text)
    }

    /// The envelope's text.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{MAGIC}\nrelease: {}\nsha256: {}\n",
            self.release,
            hex::encode(self.digest)
        );
        for sig in &self.signatures {
            s.push_str(&format!(
                "signature: ed25519 {} {}\n",
                hex::encode(sig.key.0),
                hex::encode(sig.signature)
            ));
        }
        s.push_str(&format!("content-length: {}\n\n", self.content.len()));
        s.push_str(&self.content);
        s
    }

    /// Whether `bytes` claim to be a signed catalog (they start with [`MAGIC`]); says nothing
    /// about validity.
    pub fn looks_signed(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC.as_bytes())
    }

    /// Parses an envelope: size, header and digest. Signatures are checked by
    /// [`SignedCatalog::verify`].
    pub fn parse(bytes: &[u8]) -> Result<SignedCatalog, EnvelopeError> {
        if bytes.len() > MAX_SIGNED_CATALOG_BYTES {
            return Err(EnvelopeError::Oversize {
                size: bytes.len(),
                max: MAX_SIGNED_CATALOG_BYTES,
            });
        }
        let bad = |m: &str| EnvelopeError::Malformed(m.to_owned());
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let (header, content) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line after the header"))?;
        let mut lines = header.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(bad("the first line must be 'commscan-signed-catalog: 1'"));
        }
        let (mut release, mut digest, mut length) = (None, None, None);
        let mut signatures = Vec::new();
        for (n, line) in lines.enumerate() {
            if n >= MAX_HEADER_LINES {
                return Err(bad("too many header lines"));
            }
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| bad("a header line is not 'key: value'"))?;
            let once = |given: bool| {
                if given {
                    Err(EnvelopeError::Malformed(format!("'{key}' given twice")))
                } else {
                    Ok(())
                }
            };
            match key {
                "release" => {
                    once(release.is_some())?;
                    let r: u64 = value
                        .parse()
                        .ok()
                        .filter(|r| *r > 0 && value.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or_else(|| bad("release is not a positive integer"))?;
                    release = Some(r);
                }
                "sha256" => {
                    once(digest.is_some())?;
                    digest = Some(
                        parse_hex::<32>(value).ok_or_else(|| bad("sha256 is not 64 hex digits"))?,
                    );
                }
                "content-length" => {
                    once(length.is_some())?;
                    length = Some(
                        value
                            .parse::<usize>()
                            .ok()
                            .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                            .ok_or_else(|| bad("content-length is not an integer"))?,
                    );
                }
                "signature" => {
                    if signatures.len() == MAX_SIGNATURES {
                        return Err(bad("too many signatures"));
                    }
                    let mut parts = value.split(' ');
                    let (Some("ed25519"), Some(k), Some(s), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return Err(bad("a signature is 'ed25519 <key> <signature>'"));
                    };
                    signatures.push(CatalogSignature {
                        key: CatalogPublicKey(
                            parse_hex::<32>(k)
                                .ok_or_else(|| bad("a signature's key is not 64 hex digits"))?,
                        ),
                        signature: parse_hex::<64>(s)
                            .ok_or_else(|| bad("a signature is not 128 hex digits"))?,
                    });
                }
                _ => return Err(bad("unknown header key")),
            }
        }
        let release = release.ok_or_else(|| bad("no release"))?;
        let digest = digest.ok_or_else(|| bad("no sha256"))?;
        let length = length.ok_or_else(|| bad("no content-length"))?;
        if length != content.len() {
            return Err(bad("content-length differs from the content's length"));
        }
        if content_digest(content) != digest {
            return Err(EnvelopeError::DigestMismatch);
        }
        let envelope = SignedCatalog {
            release,
            digest,
            signatures,
            content: content.to_owned(),
        };
        // One spelling per envelope (lower-case hex, no leading zeros, the header in the
        // order `catalog sign` writes it): two byte strings never carry the same signed
        // meaning, so a stored or logged envelope identifies what was signed.
        if envelope.encode() != text {
            return Err(bad(
                "not in canonical form (as `commscan-collector catalog sign` writes it: lower-case hex, no leading zeros, release, sha256, signatures, content-length in that order)",
            ));
        }
        Ok(envelope)
    }

    /// Checks the signatures against `trusted`, then validates the content as a catalog.
    /// Signatures by keys not in `trusted` are ignored; one by a trusted key that fails
    /// refuses the whole envelope (someone altered it).
    pub fn verify(&self, trusted: &[CatalogPublicKey]) -> Result<Catalog, EnvelopeError> {
        if trusted.is_empty() {
            return Err(EnvelopeError::NoTrustedKeys);
        }
        // The fields are public: bind the signatures to the content checked, not to a digest
        // a caller may have changed since `parse`.
        if content_digest(&self.content) != self.digest {
            return Err(EnvelopeError::DigestMismatch);
        }
        let message = signed_message(self.release, &self.digest);
        let mut good = false;
        for sig in self.signatures.iter().filter(|s| trusted.contains(&s.key)) {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, sig.key.0)
                .verify(&message, &sig.signature)
                .map_err(|_| EnvelopeError::BadSignature(sig.key.to_string()))?;
            good = true;
        }
        if !good {
            return Err(EnvelopeError::Unsigned);
        }
        self.catalog()
    }

    /// The content as a validated catalog, without looking at signatures (the collector's
    /// view: it judges with the catalog it passes on, and agents check the signatures).
    pub fn catalog(&self) -> Result<Catalog, EnvelopeError> {
        Catalog::parse(
            &format!("<signed catalog release {}>", self.release),
            &self.content,
        )
        .map_err(EnvelopeError::Invalid)
    }
}

/// Refuses `offered` unless it is newer than the release in use and than the embedded one.
pub fn check_newer(offered: u64, current: u64) -> Result<(), EnvelopeError> {
    let floor = current.max(EMBEDDED_CATALOG_RELEASE);
    if offered <= floor {
        return Err(EnvelopeError::Downgrade {
            offered,
            current: floor,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
