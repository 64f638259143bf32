//! Device identities and how they are written into client certificates.
//!
//! A device certificate names exactly one identity in a URI SAN:
//! `spiffe://<trust-domain>/org/<organisation>/device/<device-id>`. The collector reads the
//! identity back from the *verified* peer certificate and from nowhere else, so a message field
//! can never make one device speak as another.
//!
//! An enterprise collector that federates to a ministry carries an [`EnterpriseIdentity`]
//! instead, issued by the ministry's CA: one URI SAN `spiffe://<trust-domain>/enterprise/<id>`
//! naming the enterprise, plus one `spiffe://<trust-domain>/enterprise/<id>/org/<org>` per
//! organisation it may report for. The two shapes never overlap: a device certificate names no
//! enterprise and an enterprise certificate names no device, and a certificate mixing them is
//! neither (each parser refuses any URI SAN it does not understand, see the tests).

use serde::{Deserialize, Serialize};
use std::fmt;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Who a device is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// The deployment's trust domain, e.g. `commscan.local`.
    pub trust_domain: String,
    /// The organisation the device enrolled into.
    pub organisation: String,
    /// The device id (a UUID).
    pub device_id: String,
}

/// Why a certificate does not carry a device identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER is not a certificate.
    #[error("not an X.509 certificate: {0}")]
    NotACertificate(String),
    /// No URI SAN of the expected shape.
    #[error(
        "certificate names no device (expected a URI SAN spiffe://<domain>/org/<org>/device/<id>)"
    )]
    NoDeviceUri,
    /// No URI SAN naming an enterprise.
    #[error(
        "certificate names no enterprise (expected a URI SAN spiffe://<domain>/enterprise/<id>)"
    )]
    NoEnterpriseUri,
    /// The certificate names an enterprise but also something else.
    #[error("not an enterprise certificate: {0}")]
    NotAnEnterprise(String),
}

/// Whether `s` may be an organisation id: 1–64 of `[a-z0-9-]`, not starting with `-`.
pub fn is_valid_organisation(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl DeviceIdentity {
    /// The SPIFFE-style URI.
    pub fn uri(&self) -> String {
        format!(
            "spiffe://{}/org/{}/device/{}",
            self.trust_domain, self.organisation, self.device_id
        )
    }

    /// Parses a URI written by [`DeviceIdentity::uri`].
    pub fn parse_uri(uri: &str) -> Option<DeviceIdentity> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (domain, o, org, d, dev) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some()
            || o != "org"
            || d != "device"
            || domain.is_empty()
            || dev.is_empty()
        {
            return None;
        }
        if !is_valid_organisation(org) || uuid::Uuid::parse_str(dev).is_err() {
            return None;
        }
        Some(DeviceIdentity {
            trust_domain: domain.into(),
            organisation: org.into(),
            device_id: dev.into(),
        })
    }

    /// Reads the identity from a DER certificate. Call only on a certificate the TLS layer has
    /// verified against the deployment CA.
    pub fn from_certificate_der(der: &[u8]) -> Result<DeviceIdentity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| IdentityError::NotACertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::NotACertificate(e.to_string()))?
            .ok_or(IdentityError::NoDeviceUri)?;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => DeviceIdentity::parse_uri(u),
            _ => None,
        });
        let first = found.next().ok_or(IdentityError::NoDeviceUri)?;
        // A certificate naming two devices is not a device certificate.
        if found.next().is_some() {
            return Err(IdentityError::NoDeviceUri);
        }
        Ok(first)
    }
}

/// When a certificate (DER) stops being valid; `None` if it cannot be read.
pub fn certificate_not_after(der: &[u8]) -> Option<time::OffsetDateTime> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.organisation, self.device_id)
    }
}

/// Who an enterprise collector is, and which organisations it may report for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterpriseIdentity {
    /// The ministry's trust domain (the issuer's, not the enterprise's own).
    pub trust_domain: String,
    /// The enterprise id: 1–64 of `[a-z0-9-]`, as organisation ids.
    pub enterprise: String,
    /// Organisations it may report for, sorted, without duplicates.
    pub organisations: Vec<String>,
}

/// One URI SAN of an enterprise certificate.
enum EnterpriseUri {
    /// `spiffe://<domain>/enterprise/<id>`.
    Enterprise { domain: String, id: String },
    /// `spiffe://<domain>/enterprise/<id>/org/<org>`.
    Organisation {
        domain: String,
        id: String,
        org: String,
    },
}

fn parse_enterprise_uri(uri: &str) -> Option<EnterpriseUri> {
    let rest = uri.strip_prefix("spiffe://")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [domain, "enterprise", id] if !domain.is_empty() && is_valid_organisation(id) => {
            Some(EnterpriseUri::Enterprise {
                domain: (*domain).into(),
                id: (*id).into(),
            })
        }
        [domain, "enterprise", id, "org", org]
            if !domain.is_empty() && is_valid_organisation(id) && is_valid_organisation(org) =>
        {
            Some(EnterpriseUri::Organisation {
                domain: (*domain).into(),
                id: (*id).into(),
                org: (*org).into(),
            })
        }
        _ => None,
    }
}

impl EnterpriseIdentity {
    /// The URI naming the enterprise.
    pub fn uri(&self) -> String {
        format!(
            "spiffe://{}/enterprise/{}",
            self.trust_domain, self.enterprise
        )
    }

    /// Every URI SAN its certificate carries: the enterprise, then one per organisation.
    pub fn uris(&self) -> Vec<String> {
        let mut out = vec![self.uri()];
        out.extend(
            self.organisations
                .iter()
                .map(|o| format!("{}/org/{o}", self.uri())),
        );
        out
    }

    /// Whether it may report for `org`.
    pub fn may_report(&self, org: &str) -> bool {
        self.organisations
            .binary_search_by(|o| o.as_str().cmp(org))
            .is_ok()
    }

    /// Reads the identity from the URI SANs of a certificate. Exactly one enterprise URI is
    /// required; every other URI must name an organisation of that same enterprise and trust
    /// domain. Anything else (a device URI, another enterprise, another domain) refuses the
    /// whole certificate.
    pub fn from_uris<'a>(
        uris: impl IntoIterator<Item = &'a str>,
    ) -> Result<EnterpriseIdentity, IdentityError> {
        let mut enterprise: Option<(String, String)> = None;
        let mut orgs = Vec::new();
        for uri in uris {
            match parse_enterprise_uri(uri) {
                Some(EnterpriseUri::Enterprise { domain, id }) => {
                    if enterprise.is_some() {
                        return Err(IdentityError::NotAnEnterprise(
                            "it names more than one enterprise".into(),
                        ));
                    }
                    enterprise = Some((domain, id));
                }
                Some(EnterpriseUri::Organisation { domain, id, org }) => {
                    orgs.push((domain, id, org));
                }
                None => {
                    return Err(IdentityError::NotAnEnterprise(format!(
                        "unexpected URI SAN '{uri}'"
                    )));
                }
            }
        }
        let (trust_domain, id) = enterprise.ok_or(IdentityError::NoEnterpriseUri)?;
        let mut organisations = Vec::with_capacity(orgs.len());
        for (domain, eid, org) in orgs {
            if domain != trust_domain || eid != id {
                return Err(IdentityError::NotAnEnterprise(format!(
                    "organisation '{org}' is granted to enterprise '{eid}' in '{domain}', not '{id}' in '{trust_domain}'"
                )));
            }
            organisations.push(org);
        }
        organisations.sort();
        organisations.dedup();
        Ok(EnterpriseIdentity {
            trust_domain,
            enterprise: id,
            organisations,
        })
    }

    /// Reads the identity from a DER certificate. Call only on a certificate the TLS layer has
    /// verified against the ministry's CA.
    pub fn from_certificate_der(der: &[u8]) -> Result<EnterpriseIdentity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| IdentityError::NotACertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::NotACertificate(e.to_string()))?
            .ok_or(IdentityError::NoEnterpriseUri)?;
        EnterpriseIdentity::from_uris(san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        }))
    }
}

impl fmt::Display for EnterpriseIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "enterprise/{}", self.enterprise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE_URI: &str = "spiffe://m.gov/org/acme/device/6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b";

    #[test]
    fn enterprise_uris_round_trip_with_their_organisations() {
        let id = EnterpriseIdentity {
            trust_domain: "m.gov".into(),
            enterprise: "bank-one".into(),
            organisations: vec!["branches".into(), "hq".into()],
        };
        let uris = id.uris();
        assert_eq!(
            uris,
            [
                "spiffe://m.gov/enterprise/bank-one",
                "spiffe://m.gov/enterprise/bank-one/org/branches",
                "spiffe://m.gov/enterprise/bank-one/org/hq",
            ]
        );
        let back = EnterpriseIdentity::from_uris(uris.iter().map(String::as_str)).unwrap();
        assert_eq!(back, id);
        assert!(back.may_report("hq"));
        assert!(!back.may_report("other"));
    }

    #[test]
    fn a_device_uri_never_passes_as_an_enterprise() {
        assert_eq!(
            EnterpriseIdentity::from_uris([DEVICE_URI]),
            Err(IdentityError::NotAnEnterprise(format!(
                "unexpected URI SAN '{DEVICE_URI}'"
            )))
        );
        // Mixed with a genuine enterprise URI it spoils the whole certificate.
        assert!(
            EnterpriseIdentity::from_uris(["spiffe://m.gov/enterprise/e1", DEVICE_URI]).is_err()
        );
        assert_eq!(
            DeviceIdentity::parse_uri("spiffe://m.gov/enterprise/e1"),
            None
        );
        assert_eq!(
            DeviceIdentity::parse_uri("spiffe://m.gov/enterprise/e1/org/acme"),
            None
        );
    }

    #[test]
    fn an_enterprise_cannot_claim_organisations_of_another_enterprise_or_domain() {
        let e1 = "spiffe://m.gov/enterprise/e1";
        assert!(
            EnterpriseIdentity::from_uris([e1, "spiffe://m.gov/enterprise/e2/org/acme"]).is_err()
        );
        assert!(
            EnterpriseIdentity::from_uris([e1, "spiffe://other/enterprise/e1/org/acme"]).is_err()
        );
        assert!(EnterpriseIdentity::from_uris([e1, "spiffe://m.gov/enterprise/e2"]).is_err());
        assert_eq!(
            EnterpriseIdentity::from_uris(["spiffe://m.gov/enterprise/e1/org/acme"]),
            Err(IdentityError::NoEnterpriseUri)
        );
        assert!(EnterpriseIdentity::from_uris(["spiffe://m.gov/enterprise/E1"]).is_err());
        assert!(
            EnterpriseIdentity::from_uris([e1, "spiffe://m.gov/enterprise/e1/org/a/b"]).is_err()
        );
    }

    #[test]
    fn uri_round_trips_and_rejects_other_shapes() {
        let id = DeviceIdentity {
            trust_domain: "commscan.local".into(),
            organisation: "acme".into(),
            device_id: "6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b".into(),
        };
        assert_eq!(DeviceIdentity::parse_uri(&id.uri()), Some(id.clone()));
        assert_eq!(
            DeviceIdentity::parse_uri(&format!("{}/extra", id.uri())),
            None
        );
        assert_eq!(
            DeviceIdentity::parse_uri(
                "spiffe://d/org/ACME/device/6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b"
            ),
            None
        );
        assert_eq!(
            DeviceIdentity::parse_uri("spiffe://d/org/acme/device/not-a-uuid"),
            None
        );
        assert_eq!(
            DeviceIdentity::parse_uri(
                "https://d/org/acme/device/6f1c5c3e-2b1a-4a57-9a1e-0c2d4e1f3a5b"
            ),
            None
        );
    }
}
