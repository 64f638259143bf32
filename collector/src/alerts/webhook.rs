//! Webhook delivery: one HTTP/1.1 POST per alert, on a connection of its own (alerts are rare
//! next to reports; a connection per alert keeps no state to go stale), over TLS verified
//! against the hook's CA file or the system's roots, or plain HTTP to loopback.
//!
//! Headers: `Content-Type: application/json`, `Idempotency-Key` (the alert's id, also the
//! body's `id`), `X-Commscan-Event` (its kind), `X-Commscan-Timestamp` (Unix seconds at the
//! attempt) and `X-Commscan-Signature: sha256=<hex>`, the HMAC-SHA256 under the hook's secret
//! of `<timestamp>.<body>`. The timestamp is signed with the body so a receiver that refuses
//! timestamps older than a few minutes cannot be fed a recorded request again; the body alone
//! would let an eavesdropper replay it with a fresh timestamp.
//!
//! A 2xx answer is a delivery; anything else (another status, no answer within the timeout, a
//! refused connection or handshake) is a failure the outbox retries.

use super::config::Webhook;
use super::transport::{Io, connect_tcp};
use crate::store::OutboxEntry;
use hmac::Mac;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// TCP or TLS.
    #[error("connect: {0}")]
    Connect(String),
    /// The HTTP exchange.
    #[error("http: {0}")]
    Http(String),
    /// The endpoint answered, not with 2xx.
    #[error("answered {0}")]
    Status(u16),
    /// No complete answer within the hook's timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl WebhookError {
    /// Whether the endpoint refused the request itself (4xx other than 408 and 429): a
    /// configuration problem (secret, URL) worth an error in the log, still retried.
    pub fn is_refusal(&self) -> bool {
        matches!(self, WebhookError::Status(s) if (400..500).contains(s) && *s != 408 && *s != 429)
    }
}

/// `sha256=<hex>` of `<timestamp>.<body>` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `entry` to `hook` once, at `timestamp` (Unix seconds).
pub async fn send(hook: &Webhook, entry: &OutboxEntry, timestamp: i64) -> Result<(), WebhookError> {
    let timeout = hook.routing.timeout;
    tokio::time::timeout(timeout, attempt(hook, entry, timestamp))
        .await
        .map_err(|_| WebhookError::Timeout(timeout))?
}

async fn attempt(hook: &Webhook, entry: &OutboxEntry, timestamp: i64) -> Result<(), WebhookError> {
    let url = &hook.url;
    let host = url.host().unwrap_or_default();
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = hook.tls.as_ref().map(|c| {
        let name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        (c.clone(), name)
    });
    let io: Box<dyn Io> = connect_tcp(host, port, tls.as_ref())
        .await
        .map_err(WebhookError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| WebhookError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = entry.payload.as_bytes().to_vec();
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let request = hyper::Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("commscan-collector/", env!("CARGO_PKG_VERSION")),
        )
        .header("Idempotency-Key", &entry.event_id)
        .header("X-Commscan-Event", event_kind(&entry.payload))
        .header("X-Commscan-Timestamp", timestamp.to_string())
        .header(
            "X-Commscan-Signature",
            signature(&hook.secret, timestamp, &body),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| WebhookError::Http(e.to_string()))?;
    let answer = sender.send_request(request).await;
    driver.abort();
    let status = answer
        .map_err(|e| WebhookError::Http(e.to_string()))?
        .status();
    if status.is_success() {
        Ok(())
    } else {
        Err(WebhookError::Status(status.as_u16()))
    }
}

/// The `kind` of a stored alert, for the header (the payload is ours: JSON from
/// [`super::event::Alert`]).
fn event_kind(payload: &str) -> &'static str {
    serde_json::from_str::<super::event::Alert>(payload)
        .map(|a| a.kind.as_str())
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"Jefe", 0, b"what do ya want for nothing?");
        // The timestamp prefix changes the data, so compare with a direct HMAC instead.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
