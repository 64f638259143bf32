//! Device identities and how they are written into client certificates.
//!
//! A device certificate names exactly one identity in a URI SAN:
//! `spiffe://<trust-domain>/org/<organisation>/device/<device-id>`. The collector reads the
//! identity back from the *verified* peer certificate and from nowhere else, so a message field
//! can never make one device speak as another.

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

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.organisation, self.device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
