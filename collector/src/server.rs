//! Serving: every service on one TLS port, until shutdown.
//!
//! `serve` takes an already-bound listener (tests bind `127.0.0.1:0`) and a cancellation
//! token; it returns when the token fires and in-flight calls have drained.

use crate::collector::Collector;
use crate::grpc::admin::AdminService;
use crate::grpc::backstop::Backstop;
use crate::grpc::{
    enrollment::EnrollmentService, federation::FederationService, query::QueryService,
    reporting::ReportingService,
};
use commscan_proto::v1::admin_server::AdminServer;
use commscan_proto::v1::{
    enrollment_server::EnrollmentServer, federation_server::FederationServer,
    query_server::QueryServer, reporting_server::ReportingServer,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decoded message.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Open connections in total.
    pub max_connections: usize,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered.
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            max_streams_per_connection: 16,
            max_connections: 18_000,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// A server failure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// Serves until `shutdown` fires.
pub async fn serve(
    collector: Arc<Collector>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EnrollmentServer<EnrollmentService>>()
        .await;
    health_reporter
        .set_serving::<ReportingServer<ReportingService>>()
        .await;
    health_reporter
        .set_serving::<QueryServer<QueryService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    health_reporter
        .set_serving::<FederationServer<FederationService>>()
        .await;
    // Both reflection versions: grpcurl and grpcio's reflection client still speak v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(commscan_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(commscan_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let max = limits.max_message_bytes;
    let auditor = collector.clone();
    let hook: crate::tls::RejectHook = Arc::new(move |peer, why| {
        auditor.audit(
            &format!("anonymous@{}", peer.ip()),
            "tls.handshake",
            None,
            false,
            why,
        );
    });
    let incoming = ReceiverStream::new(crate::tls::accept_loop(
        listener,
        tls,
        limits.max_connections,
        hook,
        shutdown.clone(),
    ));
    tonic::transport::Server::builder()
        .layer(crate::grpc::oversize::OversizeLayer)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            EnrollmentServer::new(EnrollmentService(collector.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            ReportingServer::new(ReportingService(collector.clone(), shutdown.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(Backstop::new(
            QueryServer::new(QueryService(collector.clone())).max_decoding_message_size(max),
        ))
        .add_service(Backstop::new(
            AdminServer::new(AdminService(collector.clone())).max_decoding_message_size(max),
        ))
        // Authenticated by the enterprise certificate, not a bearer token: no backstop.
        .add_service(
            FederationServer::new(FederationService(collector)).max_decoding_message_size(max),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}
