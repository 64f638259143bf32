//! gRPC adapters: wire → domain, call the [`Collector`], domain → wire. No decisions are made
//! here beyond translating; errors map to `tonic::Status` in [`to_status`] only.

pub(crate) mod admin;
pub(crate) mod backstop;
pub(crate) mod enrollment;
pub(crate) mod federation;
pub(crate) mod oversize;
pub(crate) mod push;
pub mod query;
pub(crate) mod reporting;

use crate::collector::Collector;
use crate::error::{Code, CollectorError};
use std::sync::Arc;

/// The one mapping from domain errors to gRPC statuses. Internal errors are logged with their
/// detail and returned without it.
pub(crate) fn to_status(e: CollectorError) -> tonic::Status {
    let msg = e.to_string();
    match e.code() {
        Code::Unauthenticated => tonic::Status::unauthenticated(msg),
        Code::PermissionDenied => tonic::Status::permission_denied(msg),
        Code::InvalidArgument => tonic::Status::invalid_argument(msg),
        Code::NotFound => tonic::Status::not_found(msg),
        Code::ResourceExhausted => tonic::Status::resource_exhausted(msg),
        Code::FailedPrecondition => tonic::Status::failed_precondition(msg),
        Code::AlreadyExists => tonic::Status::already_exists(msg),
        Code::Unavailable => tonic::Status::unavailable(msg),
        Code::Internal => {
            tracing::error!(error = %msg, "internal error");
            tonic::Status::internal("internal error; see the collector's log")
        }
    }
}

/// Runs a synchronous domain call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    collector: &Arc<Collector>,
    f: impl FnOnce(&Collector) -> Result<T, CollectorError> + Send + 'static,
) -> Result<T, tonic::Status> {
    let c = collector.clone();
    tokio::task::spawn_blocking(move || f(&c))
        .await
        .map_err(|e| tonic::Status::internal(format!("task failed: {e}")))?
        .map_err(to_status)
}
