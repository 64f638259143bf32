//! A TCP connection, with TLS if asked, for both sinks.

use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `host:port`; with `tls`, completes a handshake verifying the peer as `name`.
pub async fn connect_tcp(
    host: &str,
    port: u16,
    tls: Option<&(Arc<rustls::ClientConfig>, String)>,
) -> Result<Box<dyn Io>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some((config, name)) => {
            let server = rustls_pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("{name}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(server, tcp)
                .await
                .map_err(|e| format!("{host}:{port}: TLS: {e}"))?;
            Ok(Box::new(stream))
        }
    }
}
