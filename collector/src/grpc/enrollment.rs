//! `Enrollment` adapter.

use super::{blocking, reporting::peer_identity, to_status};
use crate::collector::Collector;
use crate::enrollment::EnrollInput;
use commscan_proto::convert;
use commscan_proto::v1::{
    EnrollRequest, EnrollResponse, RenewRequest, RenewResponse, enrollment_server::Enrollment,
};
use std::sync::Arc;

/// The `Enrollment` service.
#[derive(Debug, Clone)]
pub struct EnrollmentService(pub Arc<Collector>);

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: tonic::Request<EnrollRequest>,
    ) -> Result<tonic::Response<EnrollResponse>, tonic::Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        let host = r.host.unwrap_or_default();
        let input = EnrollInput {
            token: r.token,
            csr_pem: r.csr_pem,
            hostname: host.hostname,
            platform: convert::platform_from_wire(host.platform).ok(),
            os_version: host.os_version,
            agent_version: host.agent_version,
            expected_organisation: r.organisation,
            peer,
        };
        let out = blocking(&self.0, move |c| c.enroll(input)).await.inspect_err(|s| {
            tracing::warn!(peer = ?peer, code = ?s.code(), error = %s.message(), "enrolment refused");
        })?;
        Ok(tonic::Response::new(EnrollResponse {
            device_id: out.device_id,
            organisation: out.organisation,
            certificate_pem: out.certificate_pem,
            ca_pem: out.ca_pem,
            not_after: Some(convert::timestamp(out.not_after)),
        }))
    }

    async fn renew(
        &self,
        request: tonic::Request<RenewRequest>,
    ) -> Result<tonic::Response<RenewResponse>, tonic::Status> {
        let who = peer_identity(&request).map_err(to_status)?;
        let csr = request.into_inner().csr_pem;
        let (certificate_pem, not_after) = blocking(&self.0, move |c| c.renew(&who, &csr)).await?;
        Ok(tonic::Response::new(RenewResponse {
            certificate_pem,
            not_after: Some(convert::timestamp(not_after)),
        }))
    }
}
