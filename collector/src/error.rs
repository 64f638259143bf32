//! The collector's domain error, answering the one question callers ask: which wire code.
//! The mapping to `tonic::Status` lives in exactly one place, [`crate::grpc::to_status`].

use crate::store::StoreError;

/// A domain failure.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The caller is not who it must be (no or unknown credentials).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The input is wrong; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A limit was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The call came in the wrong state (e.g. a stream without a hello).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another holder of the same identity is connected.
    #[error("{0}")]
    AlreadyExists(String),
    /// The service cannot do this now (e.g. the CA key is kept offline).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Certificate signing failed.
    #[error("pki: {0}")]
    Pki(#[from] commscan_core::pki::PkiError),
}

/// The wire error codes the collector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// UNAUTHENTICATED.
    Unauthenticated,
    /// PERMISSION_DENIED.
    PermissionDenied,
    /// INVALID_ARGUMENT.
    InvalidArgument,
    /// NOT_FOUND.
    NotFound,
    /// RESOURCE_EXHAUSTED.
    ResourceExhausted,
    /// FAILED_PRECONDITION.
    FailedPrecondition,
    /// ALREADY_EXISTS.
    AlreadyExists,
    /// UNAVAILABLE.
    Unavailable,
    /// INTERNAL (details stay in the log).
    Internal,
}

impl CollectorError {
    /// The wire code for this error.
    pub fn code(&self) -> Code {
        match self {
            CollectorError::Unauthenticated(_) => Code::Unauthenticated,
            CollectorError::PermissionDenied(_) => Code::PermissionDenied,
            CollectorError::InvalidArgument(_) => Code::InvalidArgument,
            CollectorError::NotFound(_) => Code::NotFound,
            CollectorError::ResourceExhausted(_) => Code::ResourceExhausted,
            CollectorError::FailedPrecondition(_) => Code::FailedPrecondition,
            CollectorError::AlreadyExists(_) => Code::AlreadyExists,
            CollectorError::Unavailable(_) => Code::Unavailable,
            CollectorError::Store(StoreError::TokenRefused(_)) => Code::Unauthenticated,
            CollectorError::Store(StoreError::Unavailable(_)) => Code::Unavailable,
            CollectorError::Store(_) | CollectorError::Pki(_) => Code::Internal,
        }
    }
}
