//! Oversized messages answer RESOURCE_EXHAUSTED, as the gRPC spec asks of servers.
//!
//! tonic refuses a message above `max_decoding_message_size` before any handler runs, but with
//! OUT_OF_RANGE. This layer rewrites exactly that refusal (status 11 with tonic's "message
//! length too large" text, sent in the response headers) to RESOURCE_EXHAUSTED (8), so clients
//! can tell "too big" from other range errors. Streams that receive an oversized message mid-way
//! are answered by the reporting pump directly.

use std::task::{Context, Poll};
use tonic::codegen::{BoxFuture, Service, http};

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct OversizeLayer;

impl<S> tower::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
}

/// Whether a tonic status is its "decoded message too large" refusal.
pub fn is_oversize(code: tonic::Code, message: &str) -> bool {
    code == tonic::Code::OutOfRange && message.contains("message length too large")
}

impl<S, B, RB> Service<http::Request<B>> for Oversize<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            let headers = response.headers_mut();
            let oversize = headers.get("grpc-status").is_some_and(|v| v == "11")
                && headers
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
            if oversize {
                headers.insert("grpc-status", http::HeaderValue::from_static("8"));
            }
            Ok(response)
        })
    }
}
