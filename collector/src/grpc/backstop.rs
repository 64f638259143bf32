//! The fail-closed backstop around `Query` and `Admin`.
//!
//! Every request gets a fresh [`DecisionMark`] in its extensions. Handlers pass it to
//! [`crate::collector::Collector::authenticate`], and [`crate::auth::authorize`] sets it. If a
//! handler returns without any authentication or authorisation decision having been made (a
//! handler that forgot), the response is replaced by PERMISSION_DENIED and the event is logged
//! as an error: a new RPC cannot leak data by omission. With [`Backstop::counting`], each call
//! is also counted by method and gRPC code (`/metrics`; a code sent in trailers after a
//! stream began is counted as OK).

use crate::auth::DecisionMark;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

/// Wraps a generated gRPC server.
#[derive(Debug, Clone)]
pub struct Backstop<S> {
    inner: S,
    collector: Option<std::sync::Arc<crate::collector::Collector>>,
}

impl<S> Backstop<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Backstop {
            inner,
            collector: None,
        }
    }

    /// Also counts each call in `collector`'s metrics.
    pub fn counting(self, collector: std::sync::Arc<crate::collector::Collector>) -> Self {
        Backstop {
            collector: Some(collector),
            ..self
        }
    }
}

impl<S: NamedService> NamedService for Backstop<S> {
    const NAME: &'static str = S::NAME;
}

/// The mark of a request, for handlers (a fresh one if the backstop is not installed).
pub fn mark_of<T>(request: &tonic::Request<T>) -> DecisionMark {
    request
        .extensions()
        .get::<DecisionMark>()
        .cloned()
        .unwrap_or_default()
}

impl<S, B> Service<http::Request<B>> for Backstop<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let mark = DecisionMark::default();
        req.extensions_mut().insert(mark.clone());
        let path = req.uri().path().to_owned();
        // The clone is ready-polled by the caller's `poll_ready` on `self.inner`; swap so the
        // ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let collector = self.collector.clone();
        Box::pin(async move {
            let response = inner.call(req).await?;
            if let Some(c) = &collector {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                c.metrics().call(&path, &format!("{code:?}"));
            }
            if mark.is_set() {
                Ok(response)
            } else {
                tracing::error!(rpc = %path, "handler returned without an authorisation decision; denied");
                Ok(
                    tonic::Status::permission_denied("authorisation was not checked for this call")
                        .into_http(),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::Request;

    fn ok_response() -> http::Response<tonic::body::Body> {
        http::Response::builder()
            .header("grpc-status", "0")
            .body(tonic::body::Body::empty())
            .unwrap()
    }

    async fn status_of(mark_it: bool) -> String {
        let inner = tower::service_fn(move |req: Request<()>| async move {
            if mark_it {
                req.extensions()
                    .get::<DecisionMark>()
                    .expect("the backstop adds a mark")
                    .set();
            }
            Ok::<_, Infallible>(ok_response())
        });
        let mut svc = Backstop::new(inner);
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let resp = svc
            .call(
                Request::builder()
                    .uri("/commscan.v1.Query/New")
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        resp.headers()
            .get("grpc-status")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn a_handler_that_forgot_to_authorise_is_denied() {
        assert_eq!(
            status_of(false).await,
            (tonic::Code::PermissionDenied as i32).to_string()
        );
    }

    #[tokio::test]
    async fn a_handler_that_decided_passes_through() {
        assert_eq!(status_of(true).await, "0");
    }
}
