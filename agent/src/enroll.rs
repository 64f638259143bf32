//! Enrolment: generate a key pair here, send a CSR with the organisation's token, store the
//! issued certificate. The private key never leaves the device.

use crate::state::{DataDir, Identity, StateError};
use commscan_core::platform::Platform;
use commscan_proto::convert;
use commscan_proto::v1::{self, enrollment_client::EnrollmentClient};
use commscan_runtime::transport::{self, TransportError};

/// An enrolment failure.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Key generation failed.
    #[error("key generation: {0}")]
    Key(#[from] commscan_core::pki::PkiError),
    /// The collector could not be reached or refused.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The result could not be stored.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Enrols this device with the collector at `url`, pinning `ca_pem`, and stores the identity
/// in `data`. With `expected_organisation`, the collector refuses a token of another
/// organisation. Nothing is written unless the collector issued a certificate.
pub async fn enroll(
    url: &str,
    token: &str,
    ca_pem: &str,
    platform: Platform,
    expected_organisation: Option<&str>,
    data: &DataDir,
) -> Result<Identity, EnrollError> {
    let (key_pem, csr_pem) = commscan_core::pki::device_key_and_csr()?;
    let channel = transport::channel(url, ca_pem, None).await?;
    let response = EnrollmentClient::new(channel)
        .enroll(v1::EnrollRequest {
            token: token.to_owned(),
            csr_pem,
            host: Some(v1::HostFacts {
                hostname: hostname(),
                platform: convert::platform_to_wire(platform),
                os_version: sysinfo::System::long_os_version().unwrap_or_default(),
                agent_version: commscan_core::VERSION.to_owned(),
            }),
            organisation: expected_organisation.unwrap_or_default().to_owned(),
        })
        .await
        .map_err(TransportError::from)?
        .into_inner();
    let identity = Identity {
        device_id: response.device_id,
        organisation: response.organisation,
        collector: url.to_owned(),
    };
    // Pin the CA the operator gave us, not one the server sent back.
    data.store_enrolment(&identity, &key_pem, &response.certificate_pem, ca_pem)?;
    Ok(identity)
}

/// Renew when less than this much of the certificate's life is left (a third of 30 days).
pub const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(10 * 86_400);

/// Renews the device certificate over mutual TLS if it expires within [`RENEW_BEFORE`] of
/// `now`. Returns whether it renewed.
pub async fn renew_if_due(data: &DataDir, now: time::OffsetDateTime) -> Result<bool, EnrollError> {
    let identity = data.identity()?;
    let (ca, cert, key) = data.credentials()?;
    let not_after = commscan_core::pki::not_after(&cert)?;
    if not_after - now > RENEW_BEFORE {
        return Ok(false);
    }
    let (new_key, csr_pem) = commscan_core::pki::device_key_and_csr()?;
    let channel = transport::channel(&identity.collector, &ca, Some((&cert, &key))).await?;
    let response = EnrollmentClient::new(channel)
        .renew(v1::RenewRequest { csr_pem })
        .await
        .map_err(TransportError::from)?
        .into_inner();
    data.store_renewal(&new_key, &response.certificate_pem)?;
    tracing::info!(previous_expiry = %not_after, "device certificate renewed");
    Ok(true)
}

/// This machine's host name, for display to officers.
pub(crate) fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "unknown".into())
}
