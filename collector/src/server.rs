//! Serving: every service on one TLS port, until shutdown.
//!
//! `serve` takes an already-bound listener (tests bind `127.0.0.1:0`) and a cancellation
//! token; it returns when the token fires and in-flight calls have drained, or
//! [`SHUTDOWN_GRACE`] later with the connections still open closed (a watch, a stalled
//! client or an agent that stopped reading cannot hold it).
//!
//! The bounds at the network edge are the constants below, carried by [`Limits`] and
//! enforced by [`crate::edge`] (connections, buffered bytes, idle and shutdown), by tonic and
//! h2 (message sizes, streams, windows, frame and header sizes, request timeout) and by
//! [`crate::tls`] (handshake timeout, no session resumption).

use crate::collector::Collector;
use crate::edge::Edge;
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
use tokio_util::sync::CancellationToken;

/// Largest decoded message from a caller identified by its certificate (`Reporting`: an
/// agent's snapshot; `Federation`: an enterprise's aggregates).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest decoded message of every service whose caller is not identified by a certificate
/// when the message is decoded: `Enrollment` (a token, a CSR, a host), `Query` and `Admin`
/// (a bearer token is checked after decoding), health and reflection. The largest legitimate
/// one, an enrolment with its CSR, is a few kilobytes.
pub const MAX_UNAUTHENTICATED_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest decoded `Admin` message: a rules file applied through the API
/// ([`crate::stored_rules::MAX_RULES_TEXT`]) and its envelope. Its bytes are drawn from
/// [`UNAUTHENTICATED_BUFFER_BYTES`] like every other request's before the bearer token is
/// checked, so the budget, not this, bounds what unauthenticated peers hold.
pub const MAX_ADMIN_MESSAGE_BYTES: usize = crate::stored_rules::MAX_RULES_TEXT + 16 * 1024;
/// Request bytes held at once, all together, for requests on connections without a verified
/// client certificate: every DATA byte such a request delivers is drawn from this budget and
/// returned when the request ends. When it is empty, requests fail with RESOURCE_EXHAUSTED.
pub const UNAUTHENTICATED_BUFFER_BYTES: usize = 32 * 1024 * 1024;
/// Concurrent HTTP/2 streams per connection (an agent uses one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// Open connections in total, handshaking ones included; further ones wait in the kernel's
/// backlog. Keep below the open-files limit ([`crate::open_files`]).
pub const MAX_CONNECTIONS: usize = 18_000;
/// HTTP/2 stream flow-control window: bytes a client may send on a stream before the server
/// reads them.
pub const INITIAL_STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// HTTP/2 connection flow-control window: the same, for all streams of a connection together.
pub const INITIAL_CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// Largest HTTP/2 frame payload accepted (the protocol's minimum).
pub const MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Largest HTTP/2 header list (decoded headers of one request).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Time a client has to complete the TLS handshake after its TCP connection is accepted.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection has, after its TLS handshake, to send the HTTP/2 preface and the complete
/// headers of its first request; otherwise it is closed.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no open stream for this long is closed. An agent's `Reporting.Connect`
/// stream stays open, so agents are never idle; HTTP/2 pings are not activity.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time from a request's headers to its response's headers: a request body that stalls
/// (headers sent, message never completed) is cancelled after this long. Streams already
/// answered (an agent's stream, watches, exports) are not limited by it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 keepalive ping interval (the server's own pings). Only for reaping the streams of
/// agents that vanished (powered off, a link that died while idle): a live agent pings on its
/// own schedule (every 15 min while idle) and a reconnecting one takes its old stream over
/// ([`crate::connections`]), so a long interval costs nothing but how long a vanished agent's
/// stream is held; each ping is 78 bytes of TLS records both ways (ARCHITECTURE.md,
/// "Keepalive").
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2 * 3600);
/// How long a keepalive ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// After shutdown starts (GOAWAY sent, streams asked to end), connections still open this
/// long after are closed, so `serve` returns.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits applied at the network edge; the defaults are the constants above, tests shorten
/// the timeouts. See ARCHITECTURE.md, "Bounds at the network edge".
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// [`MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// [`MAX_UNAUTHENTICATED_MESSAGE_BYTES`].
    pub max_unauthenticated_message_bytes: usize,
    /// [`UNAUTHENTICATED_BUFFER_BYTES`].
    pub unauthenticated_buffer_bytes: usize,
    /// [`MAX_STREAMS_PER_CONNECTION`].
    pub max_streams_per_connection: u32,
    /// [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// [`INITIAL_STREAM_WINDOW_BYTES`].
    pub initial_stream_window_bytes: u32,
    /// [`INITIAL_CONNECTION_WINDOW_BYTES`].
    pub initial_connection_window_bytes: u32,
    /// [`MAX_FRAME_BYTES`].
    pub max_frame_bytes: u32,
    /// [`MAX_HEADER_LIST_BYTES`].
    pub max_header_list_bytes: u32,
    /// [`TLS_HANDSHAKE_TIMEOUT`].
    pub tls_handshake_timeout: Duration,
    /// [`FIRST_REQUEST_TIMEOUT`].
    pub first_request_timeout: Duration,
    /// [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// [`KEEPALIVE_INTERVAL`].
    pub keepalive_interval: Duration,
    /// [`KEEPALIVE_TIMEOUT`].
    pub keepalive_timeout: Duration,
    /// [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_unauthenticated_message_bytes: MAX_UNAUTHENTICATED_MESSAGE_BYTES,
            unauthenticated_buffer_bytes: UNAUTHENTICATED_BUFFER_BYTES,
            max_streams_per_connection: MAX_STREAMS_PER_CONNECTION,
            max_connections: MAX_CONNECTIONS,
            initial_stream_window_bytes: INITIAL_STREAM_WINDOW_BYTES,
            initial_connection_window_bytes: INITIAL_CONNECTION_WINDOW_BYTES,
            max_frame_bytes: MAX_FRAME_BYTES,
            max_header_list_bytes: MAX_HEADER_LIST_BYTES,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            first_request_timeout: FIRST_REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
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
    // NOT_SERVING while the store cannot write (a full disk); SERVING once it recovered.
    tokio::spawn(crate::service::watch_store_health(
        health_reporter.clone(),
        collector.clone(),
        vec![
            <EnrollmentServer<EnrollmentService> as tonic::server::NamedService>::NAME,
            <ReportingServer<ReportingService> as tonic::server::NamedService>::NAME,
            <QueryServer<QueryService> as tonic::server::NamedService>::NAME,
            <AdminServer<AdminService> as tonic::server::NamedService>::NAME,
            <FederationServer<FederationService> as tonic::server::NamedService>::NAME,
        ],
        shutdown.clone(),
    ));
    // Both reflection versions: grpcurl and grpcio's reflection client still speak v1alpha.
    let small = limits.max_unauthenticated_message_bytes;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(commscan_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?
        .max_decoding_message_size(small);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(commscan_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?
        .max_decoding_message_size(small);

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
    let edge = Edge::new(limits);
    let incoming = edge.incoming(listener, tls, hook, shutdown.clone());
    edge.builder()
        .layer(crate::grpc::oversize::OversizeLayer)
        .add_service(health.max_decoding_message_size(small))
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            EnrollmentServer::new(EnrollmentService(collector.clone()))
                .max_decoding_message_size(small),
        )
        .add_service(
            ReportingServer::new(ReportingService(collector.clone(), shutdown.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            Backstop::new(
                QueryServer::new(QueryService(collector.clone(), shutdown.clone()))
                    .max_decoding_message_size(small),
            )
            .counting(collector.clone()),
        )
        .add_service(
            Backstop::new(
                AdminServer::new(AdminService(collector.clone()))
                    .max_decoding_message_size(small.max(MAX_ADMIN_MESSAGE_BYTES)),
            )
            .counting(collector.clone()),
        )
        // Authenticated by the enterprise certificate, not a bearer token: no backstop.
        .add_service(
            FederationServer::new(FederationService(collector)).max_decoding_message_size(max),
        )
        .serve_with_incoming_shutdown(incoming, edge.shutdown_signal(shutdown))
        .await?;
    Ok(())
}
