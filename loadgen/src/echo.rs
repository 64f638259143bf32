//! The bare baseline: a `Reporting` service that answers a hello with a welcome and every
//! report with its ack at once, storing nothing and checking nothing beyond the TLS handshake.
//!
//! It is served exactly as the collector serves: the same rustls configuration (TLS 1.3,
//! client certificates verified against the deployment CA), the same accept loop and network
//! edge ([`commscan_collector::edge`]: HTTP/2 limits, keepalive, idle reaping), and the same stream shape (a spawned pump into a bounded
//! channel). The simulated agents cannot tell the two apart, so the collector's figures divided
//! by these are the cost of what the collector does per report: admit, apply, judge, store,
//! flush.

use commscan_collector::server::Limits;
use commscan_proto::v1::{
    self, AgentMessage, CollectorMessage, agent_message, collector_message,
    reporting_server::{Reporting, ReportingServer},
};
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The echo service.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoReporting;

#[tonic::async_trait]
impl Reporting for EchoReporting {
    type ConnectStream =
        Pin<Box<dyn Stream<Item = Result<CollectorMessage, tonic::Status>> + Send>>;

    async fn connect(
        &self,
        request: tonic::Request<tonic::Streaming<AgentMessage>>,
    ) -> Result<tonic::Response<Self::ConnectStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let kind = match m.kind {
                    // Like the collector for a device it holds nothing of: an agent that
                    // states no digest is asked for a snapshot.
                    Some(agent_message::Kind::Hello(h)) => {
                        collector_message::Kind::Welcome(v1::Welcome {
                            want_snapshot: h.state_digest.is_empty(),
                            device_id: h.device_id,
                            organisation: String::new(),
                            stored_sequence: 0,
                        })
                    }
                    Some(agent_message::Kind::Report(r)) => collector_message::Kind::Ack(v1::Ack {
                        sequence: r.sequence,
                    }),
                    _ => continue,
                };
                let reply = CollectorMessage { kind: Some(kind) };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves the echo on `listener` with the collector's TLS and limits until `shutdown` fires.
pub async fn serve(
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let edge = commscan_collector::edge::Edge::new(limits);
    let incoming = edge.incoming(listener, tls, Arc::new(|_, _| {}), shutdown.clone());
    edge.builder()
        .add_service(
            ReportingServer::new(EchoReporting).max_decoding_message_size(limits.max_message_bytes),
        )
        .serve_with_incoming_shutdown(incoming, edge.shutdown_signal(shutdown))
        .await
}
