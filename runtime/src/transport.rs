//! A TLS channel to a collector, the transport error, reconnect backoff.
//!
//! Every connection pins the deployment CA it is given (no system roots); a client identity
//! (certificate and key) is presented when given, and the collector derives the caller from it.
//! HTTP/2 keepalive notices a half-open link within `keepalive_interval + keepalive_timeout`
//! (defaults [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`]).
//!
//! Errors are classified once, in [`TransportError::is_retriable`]: the agent's reconnect loop,
//! an enterprise's push to its ministry and `commscanctl` all ask it. A refused connection (the
//! host answered the TCP connection attempt with a reset: [`TransportError::is_refused`],
//! [`connection_refused`]) is told apart: the collector's host is up but nothing listens,
//! which is a collector restarting, not one overloaded. A reset after the connection was made
//! is not: a collector whose handshakes time out under load resets them, and those agents must
//! back off as usual. Reconnect loops retry those within
//! [`REFUSED_BACKOFF_MAX`] (full jitter) instead of their ordinary cap: a refused attempt costs
//! the collector nothing (the kernel answers it), and agents that backed off for minutes
//! would come back long after the collector is listening again.

use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Interval between HTTP/2 keepalive pings.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the link counts as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The backoff cap after a refused connection ([`TransportError::is_refused`]), whatever the
/// ordinary cap: 16,000 agents drawing from `[0, 5 s]` arrive at ~3,200 attempts a second
/// while the port is closed, each answered by the kernel with a reset; once it listens, they
/// are all back within a few seconds of it.
pub const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whether `e`, or an error it was caused by, is a TCP connection refused: the peer's host
/// answered and nothing listens (a restarting collector). A timeout, an unreachable host, a
/// reset of an established connection (a handshake an overloaded server gave up on) or a
/// certificate refused by the TLS handshake are not.
pub fn connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == ErrorKind::ConnectionRefused {
                return true;
            }
            // An io::Error wrapping another error: look inside it too.
            if let Some(inner) = io.get_ref()
                && connection_refused(inner)
            {
                return true;
            }
        }
        next = err.source();
    }
    false
}

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The collector URL is unusable.
    #[error("collector URL '{url}': {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// TLS material is unusable.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The collector did not answer.
    #[error("cannot reach collector at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The error.
        source: tonic::transport::Error,
    },
    /// The collector answered with an error.
    #[error("collector refused: {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The collector broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl TransportError {
    /// Whether retrying later may succeed. Permanent: the collector refused this device or its
    /// input (unauthenticated, permission denied, invalid argument), or local setup is broken.
    pub fn is_retriable(&self) -> bool {
        use tonic::Code;
        match self {
            TransportError::Connect { .. } | TransportError::Protocol(_) => true,
            TransportError::Status(s) => !matches!(
                s.code(),
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::Unimplemented
            ),
            TransportError::Url { .. } | TransportError::Tls(_) => false,
        }
    }
}

impl TransportError {
    /// Whether the connection was refused: nothing listens (see
    /// [`connection_refused`]): a collector restarting. Retried within
    /// [`REFUSED_BACKOFF_MAX`].
    pub fn is_refused(&self) -> bool {
        match self {
            TransportError::Connect { source, .. } => connection_refused(source),
            _ => false,
        }
    }
}

impl From<tonic::Status> for TransportError {
    fn from(s: tonic::Status) -> Self {
        TransportError::Status(s)
    }
}

/// A channel to the collector pinning `ca_pem`, presenting `identity` (cert, key) if given,
/// with the default keepalive.
pub async fn channel(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, TransportError> {
    channel_with(url, ca_pem, identity, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT).await
}

/// [`channel`] with a given HTTP/2 keepalive interval and timeout.
pub async fn channel_with(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
) -> Result<Channel, TransportError> {
    let bad_url = |message: String| TransportError::Url {
        url: url.to_owned(),
        message,
    };
    if !url.starts_with("https://") {
        return Err(bad_url(
            "must start with https:// (the collector only speaks TLS)".into(),
        ));
    }
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad_url(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(keepalive_interval)
        .keep_alive_timeout(keepalive_timeout)
        .keep_alive_while_idle(true);
    endpoint
        .connect()
        .await
        .map_err(|source| TransportError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// Full-jitter exponential backoff: a random delay in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        u64::from(attempt) * 7919
    };
    let ms = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(r % (ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        for attempt in 0..40 {
            let d = backoff(attempt, Duration::from_millis(500), Duration::from_secs(60));
            assert!(d <= Duration::from_secs(60));
            assert!(d <= Duration::from_millis(500) * 2u32.pow(attempt.min(20)));
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_silent_one_is_not() {
        // A port bound then released: nothing listens, the kernel answers with a reset.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let ca = commscan_core::pki::Authority::generate("t.local")
            .unwrap()
            .0;
        let err = channel(&format!("https://127.0.0.1:{port}"), ca.cert_pem(), None)
            .await
            .unwrap_err();
        assert!(err.is_refused(), "{err:?}");
        assert!(err.is_retriable());
        // A listener that accepts, reads the ClientHello and closes cleanly: the handshake
        // fails on an early end of stream, which is not a refusal.
        let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closing.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = closing.accept().await.unwrap();
            let mut hello = vec![0u8; 64 * 1024];
            let _ = s.read(&mut hello).await;
            let _ = s.shutdown().await;
            // Keep reading until the client closes, so no unread byte makes the kernel reset.
            while matches!(s.read(&mut hello).await, Ok(n) if n > 0) {}
        });
        let url = format!("https://{addr}");
        let err = tokio::time::timeout(Duration::from_secs(30), channel(&url, ca.cert_pem(), None))
            .await
            .expect("the handshake ends at the server's close")
            .unwrap_err();
        server.abort();
        assert!(!err.is_refused(), "{err:?}");
        assert!(!TransportError::Protocol("eof".into()).is_refused());
        assert!(!TransportError::Status(tonic::Status::unavailable("down")).is_refused());
    }

    #[test]
    fn refusals_are_permanent_and_outages_are_not() {
        assert!(
            !TransportError::Status(tonic::Status::permission_denied("revoked")).is_retriable()
        );
        assert!(!TransportError::Status(tonic::Status::unauthenticated("no cert")).is_retriable());
        assert!(TransportError::Status(tonic::Status::unavailable("down")).is_retriable());
        assert!(TransportError::Protocol("eof".into()).is_retriable());
    }
}
