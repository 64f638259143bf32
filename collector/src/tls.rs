//! The collector's TLS: rustls, TLS 1.3 only, client certificates verified against the
//! deployment CA when presented.
//!
//! One port serves enrolment (server-authenticated: a new device has no certificate yet) and
//! device reporting (mutual TLS). The verifier therefore accepts a handshake without a client
//! certificate, but any certificate that *is* presented must chain to the deployment CA, or
//! the handshake fails. `Reporting` then refuses streams without a verified device certificate
//! (see [`crate::grpc::reporting::peer_identity`]).
//!
//! The accept loop runs handshakes concurrently with a timeout and a cap on open connections;
//! a failed handshake (garbage on the port, wrong CA, TLS 1.2) closes that connection only.
//! Established connections are watched by the [`crate::edge`]: their reads and writes fail
//! once the connection is idle, never sent a request, or outlived shutdown's grace.
//!
//! No session resumption: no session cache, no tickets. rustls would restore a resumed
//! session's client certificate chain without verifying it again, so a certificate that
//! expired since the first handshake would still be accepted; every handshake is therefore a
//! full one, and the verifier sees every certificate. (Revocation is checked per stream by the
//! domain, [`crate::collector::Collector::open_stream`], handshake or not.) Agents hold one
//! long-lived connection, so this costs one full handshake per agent connection.

use crate::edge::{ConnectionWatch, Edge};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A TLS setup failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in file"));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_err(path, format!("not a PEM private key: {e}")))
}

/// The server configuration: TLS 1.3 only, ALPN h2, optional-but-verified client certificates.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| file_err(ca, format!("not a usable CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| file_err(key, format!("does not match {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The web console's configuration: the same certificate and key as the gRPC port, TLS 1.2
/// and 1.3 (browsers), ALPN http/1.1, and no client certificate asked for (a browser would
/// prompt for one; people sign in with their token instead).
pub fn web_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| file_err(key, format!("does not match {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections, completes TLS handshakes concurrently (each within the edge's
/// `tls_handshake_timeout`), and yields established streams, each watched by `edge`. Stops
/// when `shutdown` fires. At most `max_connections` are open at once, handshaking ones
/// included; further connections wait in the kernel's backlog.
pub(crate) fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    edge: Edge,
    on_certificate_rejected: RejectHook,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Result<TlsConnection, std::io::Error>> {
    let (tx, rx) = mpsc::channel(128);
    let acceptor = TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(edge.limits().max_connections));
    let handshake_timeout = edge.limits().tls_handshake_timeout;
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            };
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let hook = on_certificate_rejected.clone();
            let edge = edge.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx
                            .send(Ok(TlsConnection {
                                stream,
                                watch: edge.watch(peer),
                                _permit: permit,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => match certificate_rejection(&e) {
                        Some(why) => {
                            tracing::warn!(%peer, error = %why, "client certificate rejected");
                            hook(peer, why);
                        }
                        None => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    },
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// Called with the peer and the reason when a client presents a certificate the deployment
/// does not accept (wrong CA, expired...). Garbage and plain failed handshakes are not reported:
/// they say nothing about identity and would flood the audit log.
pub type RejectHook = Arc<dyn Fn(std::net::SocketAddr, String) + Send + Sync>;

/// The reason, if a handshake failed because of the client's certificate.
pub(crate) fn certificate_rejection(e: &std::io::Error) -> Option<String> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(c) => Some(format!("client certificate rejected: {c:?}")),
        _ => None,
    }
}

/// An established TLS connection holding one connection permit until it closes. Its reads
/// and writes fail once its [`ConnectionWatch`] says it must close.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    watch: ConnectionWatch,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = <TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.watch.poll_reap(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.watch.poll_reap(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.stream).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.watch.poll_reap(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.watch.poll_reap(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
