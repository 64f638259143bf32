//! How to reach a collector as a person: its URL, the deployment CA to pin, a bearer token;
//! and query and admin clients that add the token to every call.
//!
//! Settings come from flags or `COMMSCAN_*` environment variables. The bearer token is read
//! from a file (`--token-file` / `COMMSCAN_TOKEN_FILE`) or the environment (`COMMSCAN_TOKEN`),
//! never from argv, where other users of the machine could read it.

use commscan_proto::v1::admin_client::AdminClient;
use commscan_proto::v1::query_client::QueryClient;
use std::path::PathBuf;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How to reach a collector.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Collector URL.
    pub collector: String,
    /// CA certificate to pin.
    pub ca: PathBuf,
    /// Bearer token.
    pub token: String,
}

/// A connection setup failure, saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A setting is missing.
    #[error("{0}")]
    Missing(String),
    /// A file could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The collector could not be reached.
    #[error(transparent)]
    Transport(#[from] commscan_runtime::transport::TransportError),
}

/// The token from a file or a value, whichever is given (file first).
pub fn resolve_token(file: Option<&PathBuf>, value: Option<String>) -> Result<String, CtlError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| CtlError::File {
            path: path.clone(),
            message: format!("cannot read token: {e}"),
        })?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            return Err(CtlError::File {
                path: path.clone(),
                message: "token file is empty".into(),
            });
        }
        return Ok(token);
    }
    value.filter(|v| !v.trim().is_empty()).map(|v| v.trim().to_owned()).ok_or_else(|| {
        CtlError::Missing("no bearer token: set COMMSCAN_TOKEN_FILE (or --token-file) to a file holding it, or COMMSCAN_TOKEN".into())
    })
}

/// A query client adding the bearer token to every call.
pub type AuthedQuery = QueryClient<InterceptedService<Channel, Bearer>>;

/// An admin client adding the bearer token to every call.
pub type AuthedAdmin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer …`.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

impl Connection {
    async fn channel(&self) -> Result<(Channel, Bearer), CtlError> {
        let ca = std::fs::read_to_string(&self.ca).map_err(|e| CtlError::File {
            path: self.ca.clone(),
            message: format!("cannot read CA certificate: {e} (set COMMSCAN_CA or --ca to the collector's pki/ca.crt)"),
        })?;
        let channel = commscan_runtime::transport::channel(&self.collector, &ca, None).await?;
        let value = format!("Bearer {}", self.token).parse().map_err(|_| {
            CtlError::Missing("the bearer token contains characters not allowed in a header".into())
        })?;
        Ok((channel, Bearer(value)))
    }

    /// Connects and returns a query client.
    pub async fn query(&self) -> Result<AuthedQuery, CtlError> {
        let (channel, bearer) = self.channel().await?;
        Ok(QueryClient::with_interceptor(channel, bearer))
    }

    /// Connects and returns an admin client.
    pub async fn admin(&self) -> Result<AuthedAdmin, CtlError> {
        let (channel, bearer) = self.channel().await?;
        Ok(AdminClient::with_interceptor(channel, bearer))
    }
}
