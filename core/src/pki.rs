//! The deployment's PKI: a CA, the collector's server certificate, and device certificates
//! signed from agents' CSRs.
//!
//! Keys are ECDSA P-256 (rcgen on `ring`). The CA signs two kinds of leaf: server certificates
//! (EKU serverAuth, DNS/IP SANs) and device certificates (EKU clientAuth, one URI SAN naming the
//! device, see [`crate::identity`]). A device's private key is generated on the device and never
//! leaves it: the collector signs the public key of the CSR and ignores the CSR's names.
//!
//! A ministry's CA also signs enterprise certificates (EKU clientAuth, the URI SANs of an
//! [`EnterpriseIdentity`]) for enterprise collectors that push aggregates to it. The ministry
//! operator issues them offline, key included, and hands them over with the CA certificate.

use crate::identity::{DeviceIdentity, EnterpriseIdentity};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Validity of a freshly created CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Validity of a server certificate.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(397 * 86_400);
/// Validity of a device certificate: short-lived, renewed by the agent.
pub const DEVICE_VALIDITY: Duration = Duration::from_secs(30 * 86_400);
/// Validity of an enterprise certificate: reissued by the ministry once a year.
pub const ENTERPRISE_VALIDITY: Duration = Duration::from_secs(397 * 86_400);

/// A PKI failure.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key or certificate material could not be parsed.
    #[error("invalid {what}: {source}")]
    Invalid {
        /// What was being parsed.
        what: &'static str,
        /// The parser's error.
        source: rcgen::Error,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
    /// A PEM certificate could not be read.
    #[error("invalid certificate: {0}")]
    Certificate(String),
}

/// A certificate with its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// Certificate PEM.
    pub cert: String,
    /// Private key PEM (PKCS#8).
    pub key: String,
}

/// The deployment CA, able to sign.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, for_: Duration) {
    let now = OffsetDateTime::now_utc();
    // A little back-dating tolerates clock skew between collector and devices.
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + for_;
}

impl Authority {
    /// Creates a new CA named after the trust domain.
    pub fn generate(trust_domain: &str) -> Result<(Authority, Pem), PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Sign)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("commscan CA {trust_domain}"));
        dn.push(DnType::OrganizationName, "commscan");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(PkiError::Sign)?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        let authority = Authority::from_pem(&pem.cert, &pem.key)?;
        Ok((authority, pem))
    }

    /// Loads a CA from PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| PkiError::Invalid {
            what: "CA key",
            source,
        })?;
        // The key must be the certificate's: otherwise every device certificate would be
        // signed by a key no verifier trusts.
        if !key_belongs_to(cert_pem, &key)? {
            return Err(PkiError::Certificate(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|source| PkiError::Invalid {
                what: "CA certificate",
                source,
            })?;
        Ok(Authority {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String]) -> Result<Pem, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Sign)?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|source| PkiError::Invalid {
                what: "server name",
                source,
            })?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names
                .first()
                .cloned()
                .unwrap_or_else(|| "commscan-collector".into()),
        );
        params.distinguished_name = dn;
        self.sign_leaf(
            params,
            &key,
            ExtendedKeyUsagePurpose::ServerAuth,
            SERVER_VALIDITY,
        )
    }

    /// Signs a device CSR for `identity`. Only the CSR's public key is used.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        identity: &DeviceIdentity,
        valid_for: Duration,
    ) -> Result<(String, OffsetDateTime), PkiError> {
        let now = OffsetDateTime::now_utc();
        // A little back-dating tolerates clock skew between collector and devices.
        self.sign_device_csr_between(
            csr_pem,
            identity,
            now - Duration::from_secs(300),
            now + valid_for,
        )
    }

    /// Signs a device CSR valid from `not_before` to `not_after` (tests use past windows to
    /// make expired certificates).
    pub fn sign_device_csr_between(
        &self,
        csr_pem: &str,
        identity: &DeviceIdentity,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime), PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|source| {
            PkiError::Invalid {
                what: "certificate signing request",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.device_id.clone());
        dn.push(DnType::OrganizationName, identity.organisation.clone());
        params.distinguished_name = dn;
        let uri = identity
            .uri()
            .try_into()
            .map_err(|source| PkiError::Invalid {
                what: "device URI",
                source,
            })?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(PkiError::Sign)?;
        Ok((signed.pem(), not_after))
    }
}

impl Authority {
    /// Issues an enterprise collector's client certificate, with a new key, naming the
    /// enterprise and every organisation it may push.
    pub fn issue_enterprise(
        &self,
        identity: &EnterpriseIdentity,
        valid_for: Duration,
    ) -> Result<Pem, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Sign)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("commscan enterprise {}", identity.enterprise),
        );
        dn.push(DnType::OrganizationName, identity.enterprise.clone());
        params.distinguished_name = dn;
        params.subject_alt_names = identity
            .uris()
            .into_iter()
            .map(|u| {
                u.try_into()
                    .map(SanType::URI)
                    .map_err(|source| PkiError::Invalid {
                        what: "enterprise URI",
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        self.sign_leaf(params, &key, ExtendedKeyUsagePurpose::ClientAuth, valid_for)
    }

    /// Signs a leaf certificate for a key generated here: one extended key usage, digital
    /// signature only, a random serial, the CA's key identifier, `valid_for` from now.
    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        key: &KeyPair,
        usage: ExtendedKeyUsagePurpose,
        valid_for: Duration,
    ) -> Result<Pem, PkiError> {
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(PkiError::Sign)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Generates a device key pair and a CSR for it. Returns `(key_pem, csr_pem)`.
pub fn device_key_and_csr() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(PkiError::Sign)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "commscan device");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(PkiError::Sign)?;
    Ok((key.serialize_pem(), csr.pem().map_err(PkiError::Sign)?))
}

fn key_belongs_to(cert_pem: &str, key: &KeyPair) -> Result<bool, PkiError> {
    let der = first_cert_der(cert_pem)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}

/// Checks that `key_pem` is the private key of the first certificate of `cert_pem`.
pub fn check_key_pair(cert_pem: &str, key_pem: &str) -> Result<(), PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|source| PkiError::Invalid {
        what: "private key",
        source,
    })?;
    if key_belongs_to(cert_pem, &key)? {
        Ok(())
    } else {
        Err(PkiError::Certificate(
            "the key does not belong to the certificate".into(),
        ))
    }
}

/// The DER of the first certificate in a PEM text.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::Certificate(e.to_string()))
}

/// When the first certificate of a PEM text expires.
pub fn not_after(pem: &str) -> Result<OffsetDateTime, PkiError> {
    Ok(validity_window(pem)?.1)
}

/// The validity window (not before, not after) of the first certificate of a PEM text.
pub fn validity_window(pem: &str) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let der = first_cert_der(pem)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_certificate_names_the_identity_and_ignores_csr_names() {
        let (ca, _) = Authority::generate("test.local").unwrap();
        let (_key, csr) = device_key_and_csr().unwrap();
        let id = DeviceIdentity {
            trust_domain: "test.local".into(),
            organisation: "acme".into(),
            device_id: uuid::Uuid::new_v4().to_string(),
        };
        let (cert, not_after_t) = ca.sign_device_csr(&csr, &id, DEVICE_VALIDITY).unwrap();
        let der = first_cert_der(&cert).unwrap();
        assert_eq!(DeviceIdentity::from_certificate_der(&der).unwrap(), id);
        assert_eq!(
            not_after(&cert).unwrap().unix_timestamp(),
            not_after_t.unix_timestamp()
        );
    }

    #[test]
    fn enterprise_certificate_names_the_enterprise_and_never_a_device() {
        let (ca, _) = Authority::generate("ministry.gov").unwrap();
        let id = EnterpriseIdentity {
            trust_domain: "ministry.gov".into(),
            enterprise: "bank-one".into(),
            organisations: vec!["branches".into(), "hq".into()],
        };
        let pem = ca.issue_enterprise(&id, ENTERPRISE_VALIDITY).unwrap();
        check_key_pair(&pem.cert, &pem.key).unwrap();
        let other = ca.issue_enterprise(&id, ENTERPRISE_VALIDITY).unwrap();
        assert!(check_key_pair(&pem.cert, &other.key).is_err());
        let der = first_cert_der(&pem.cert).unwrap();
        assert_eq!(EnterpriseIdentity::from_certificate_der(&der).unwrap(), id);
        assert!(DeviceIdentity::from_certificate_der(&der).is_err());
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn device_certificate_never_passes_as_an_enterprise() {
        let (ca, _) = Authority::generate("ministry.gov").unwrap();
        let (_key, csr) = device_key_and_csr().unwrap();
        let id = DeviceIdentity {
            trust_domain: "ministry.gov".into(),
            organisation: "hq".into(),
            device_id: uuid::Uuid::new_v4().to_string(),
        };
        let (cert, _) = ca.sign_device_csr(&csr, &id, DEVICE_VALIDITY).unwrap();
        let der = first_cert_der(&cert).unwrap();
        assert!(EnterpriseIdentity::from_certificate_der(&der).is_err());
        let server = ca.issue_server(&["localhost".into()]).unwrap();
        assert!(
            EnterpriseIdentity::from_certificate_der(&first_cert_der(&server.cert).unwrap())
                .is_err()
        );
    }

    #[test]
    fn garbage_csr_is_rejected() {
        let (ca, _) = Authority::generate("t").unwrap();
        let id = DeviceIdentity {
            trust_domain: "t".into(),
            organisation: "a".into(),
            device_id: uuid::Uuid::new_v4().to_string(),
        };
        assert!(
            ca.sign_device_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                &id,
                DEVICE_VALIDITY
            )
            .is_err()
        );
    }

    #[test]
    fn authority_reloads_from_pem() {
        let (_, pem) = Authority::generate("t").unwrap();
        let ca = Authority::from_pem(&pem.cert, &pem.key).unwrap();
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        assert!(not_after(&server.cert).is_ok());
        assert!(Authority::from_pem(&pem.cert, "not a key").is_err());
        let (_, other) = Authority::generate("t").unwrap();
        let err = Authority::from_pem(&pem.cert, &other.key).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
