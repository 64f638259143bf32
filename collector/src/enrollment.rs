//! Enrolment: an organisation-scoped token and a CSR in, a device identity and a short-lived
//! client certificate out.
//!
//! The token is looked up by hash and checked (revoked, expired, uses left) before signing, and
//! checked and consumed again inside the store transaction that creates the device, so a token's
//! last use cannot be spent twice. The device id is chosen here; the CSR's names are ignored.

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::secrets;
use crate::store::DeviceRecord;
use commscan_core::identity::DeviceIdentity;
use commscan_core::pki::DEVICE_VALIDITY;
use commscan_core::platform::Platform;
use time::OffsetDateTime;

/// What an enrolling device sends.
#[derive(Debug, Clone)]
pub struct EnrollInput {
    /// The secret token.
    pub token: String,
    /// PEM CSR.
    pub csr_pem: String,
    /// Host name.
    pub hostname: String,
    /// Platform.
    pub platform: Option<Platform>,
    /// OS name and version.
    pub os_version: String,
    /// Agent version.
    pub agent_version: String,
}

/// What the device gets back.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// Its id.
    pub device_id: String,
    /// Its organisation.
    pub organisation: String,
    /// Its client certificate.
    pub certificate_pem: String,
    /// The CA to pin.
    pub ca_pem: String,
    /// Certificate expiry.
    pub not_after: OffsetDateTime,
}

/// Trims a free-text field from a device to a sane length without control characters.
pub fn clean_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

impl Collector {
    /// Enrols a device.
    pub fn enroll(&self, input: EnrollInput) -> Result<Enrolled, CollectorError> {
        let now = self.now();
        let hash = secrets::hash(&input.token);
        let token = self
            .store
            .token(&hash)?
            .ok_or_else(|| CollectorError::Unauthenticated("unknown enrolment token".into()))?;
        token.consume(now).map_err(|why| {
            CollectorError::Unauthenticated(format!("enrolment token refused: {why}"))
        })?;
        let identity = DeviceIdentity {
            trust_domain: self.trust_domain.clone(),
            organisation: token.organisation.clone(),
            device_id: uuid::Uuid::new_v4().to_string(),
        };
        let (certificate_pem, not_after) = self
            .authority
            .sign_device_csr(&input.csr_pem, &identity, DEVICE_VALIDITY)
            .map_err(|e| CollectorError::InvalidArgument(format!("csr_pem: {e}")))?;
        let record = DeviceRecord::enrolled(
            identity.device_id.clone(),
            identity.organisation.clone(),
            clean_text(&input.hostname, 255),
            input.platform,
            clean_text(&input.os_version, 255),
            clean_text(&input.agent_version, 64),
            now,
        );
        self.store.enroll(&record, &hash, now)?;
        self.store.flush()?;
        tracing::info!(device = %identity.device_id, organisation = %identity.organisation, hostname = %record.hostname, "device enrolled");
        Ok(Enrolled {
            device_id: identity.device_id,
            organisation: identity.organisation,
            certificate_pem,
            ca_pem: self.authority.cert_pem().to_owned(),
            not_after,
        })
    }
}
