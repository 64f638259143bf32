//! Enrolment: generate a key pair here, send a CSR with the organisation's token, store the
//! issued certificate. The private key never leaves the device.

use crate::state::{DataDir, Identity, StateError};
use crate::transport::{self, TransportError};
use commscan_core::platform::Platform;
use commscan_proto::convert;
use commscan_proto::v1::{self, enrollment_client::EnrollmentClient};

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
/// in `data`. Nothing is written unless the collector issued a certificate.
pub async fn enroll(
    url: &str,
    token: &str,
    ca_pem: &str,
    platform: Platform,
    data: &DataDir,
) -> Result<Identity, EnrollError> {
    let (key_pem, csr_pem) = commscan_core::pki::device_key_and_csr()?;
    let channel = transport::channel(url, ca_pem, None).await?;
    let response = EnrollmentClient::new(channel)
        .enroll(v1::EnrollRequest {
            token: token.to_owned(),
            csr_pem,
            host: Some(v1::HostFacts {
                hostname: transport::hostname(),
                platform: convert::platform_to_wire(platform),
                os_version: sysinfo::System::long_os_version().unwrap_or_default(),
                agent_version: commscan_core::VERSION.to_owned(),
            }),
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
