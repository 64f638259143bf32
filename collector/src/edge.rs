//! The network edge: what a client can make the collector hold, and for how long, before it
//! has proved who it is. Every number is a field of [`Limits`] (defaults: the constants of
//! [`crate::server`]); ARCHITECTURE.md, "Bounds at the network edge", states the promises.
//!
//! - **Connections.** [`Edge::incoming`] runs the TLS accept loop ([`crate::tls::accept_loop`]:
//!   connection cap, handshake timeout) and gives every established connection a
//!   [`ConnectionWatch`], registered in a table keyed by the peer address. [`EdgeLayer`] counts
//!   each connection's open request streams, from a request's complete headers to the end of
//!   its response body. The connection's reads and writes ([`crate::tls::TlsConnection`]) poll
//!   its watch, which fails them, closing the connection, once it has had no stream for
//!   `first_request_timeout` since the handshake (no HTTP/2 preface, or no request), or for
//!   `idle_timeout` since its last stream ended, or once shutdown's grace is over. An agent's
//!   `Reporting.Connect` stream is open for as long as the agent is connected, so agents are
//!   never idle; HTTP/2 pings are not activity.
//! - **Bytes.** Requests on connections without a verified client certificate draw every DATA
//!   byte they deliver from one budget shared by all of them ([`Limits::unauthenticated_buffer_bytes`]),
//!   given back when the request body is dropped; when the budget is empty the request fails
//!   with RESOURCE_EXHAUSTED instead of buffering. Each request is further bounded by the
//!   decoding limit of its service, and each connection by h2's settings, which
//!   [`Edge::builder`] sets: concurrent streams, flow-control windows, frame and header sizes.
//! - **Time.** [`Edge::builder`] sets tonic's request timeout (headers to response headers), so
//!   a request whose body stalls is cancelled and its bytes returned.
//! - **Shutdown.** [`Edge::shutdown_signal`] starts tonic's graceful shutdown (GOAWAY, streams
//!   drain) when the token fires, and `shutdown_grace` later fails every connection still
//!   open, so `serve` returns even when a watch, a stalled client or an agent that stopped
//!   reading would hold it.

use crate::server::Limits;
use crate::tls::{RejectHook, TlsConnection};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::codegen::{BoxFuture, Bytes, Service, http};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The edge of one server: its limits, its connections, its byte budget.
#[derive(Debug, Clone)]
pub struct Edge {
    limits: Limits,
    table: Arc<ConnectionTable>,
    budget: Arc<Semaphore>,
    force_close: CancellationToken,
}

impl Edge {
    /// An edge enforcing `limits`.
    pub fn new(limits: Limits) -> Edge {
        Edge {
            limits,
            table: Arc::default(),
            budget: Arc::new(Semaphore::new(limits.unauthenticated_buffer_bytes)),
            force_close: CancellationToken::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Established TLS connections from `listener`, each watched, until `shutdown` fires.
    pub fn incoming(
        &self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        on_certificate_rejected: RejectHook,
        shutdown: CancellationToken,
    ) -> ReceiverStream<Result<TlsConnection, std::io::Error>> {
        ReceiverStream::new(crate::tls::accept_loop(
            listener,
            tls,
            self.clone(),
            on_certificate_rejected,
            shutdown,
        ))
    }

    /// A tonic server with the edge's layer and h2 settings; add services and serve it with
    /// [`Edge::incoming`] and [`Edge::shutdown_signal`].
    pub fn builder(
        &self,
    ) -> tonic::transport::Server<tower::layer::util::Stack<EdgeLayer, tower::layer::util::Identity>>
    {
        let l = &self.limits;
        tonic::transport::Server::builder()
            .timeout(l.request_timeout)
            .max_concurrent_streams(l.max_streams_per_connection)
            .initial_stream_window_size(l.initial_stream_window_bytes)
            .initial_connection_window_size(l.initial_connection_window_bytes)
            .max_frame_size(l.max_frame_bytes)
            .http2_max_header_list_size(l.max_header_list_bytes)
            .http2_keepalive_interval(Some(l.keepalive_interval))
            .http2_keepalive_timeout(Some(l.keepalive_timeout))
            .layer(EdgeLayer {
                table: self.table.clone(),
                budget: self.budget.clone(),
            })
    }

    /// The shutdown signal to give tonic: completes when `shutdown` fires (graceful shutdown
    /// begins), and `shutdown_grace` later closes every connection still open.
    pub fn shutdown_signal(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (force, table, grace) = (
            self.force_close.clone(),
            self.table.clone(),
            self.limits.shutdown_grace,
        );
        async move {
            shutdown.cancelled().await;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let open = table.len();
                if open > 0 {
                    tracing::warn!(
                        connections = open,
                        grace_ms = grace.as_millis() as u64,
                        "shutdown grace over; closing the connections still open"
                    );
                }
                force.cancel();
            });
        }
    }

    /// The watch of a connection just established with `peer`.
    pub(crate) fn watch(&self, peer: SocketAddr) -> ConnectionWatch {
        let activity = Arc::new(Mutex::new(Activity {
            open_streams: 0,
            had_stream: false,
            quiet_since: Instant::now(),
        }));
        self.table.insert(peer, activity.clone());
        ConnectionWatch {
            peer,
            activity,
            table: self.table.clone(),
            first_request_timeout: self.limits.first_request_timeout,
            idle_timeout: self.limits.idle_timeout,
            timer: Box::pin(tokio::time::sleep(self.limits.first_request_timeout)),
            force_close: Box::pin(self.force_close.clone().cancelled_owned()),
            closed: None,
        }
    }

    /// Connections open now (after their handshake).
    pub fn open_connections(&self) -> usize {
        self.table.len()
    }

    /// Unauthenticated request bytes held now.
    pub fn unauthenticated_bytes_held(&self) -> usize {
        self.limits
            .unauthenticated_buffer_bytes
            .saturating_sub(self.budget.available_permits())
    }
}

/// What a connection is doing, as far as reaping goes.
#[derive(Debug)]
struct Activity {
    open_streams: usize,
    had_stream: bool,
    /// When the connection was established or its last stream ended.
    quiet_since: Instant,
}

type Shared = Arc<Mutex<Activity>>;

fn lock(a: &Shared) -> std::sync::MutexGuard<'_, Activity> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

/// Established connections by peer address (unique among open TCP connections to one
/// listener).
#[derive(Debug, Default)]
struct ConnectionTable(Mutex<HashMap<SocketAddr, Shared>>);

impl ConnectionTable {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Shared>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, peer: SocketAddr, activity: Shared) {
        self.map().insert(peer, activity);
    }

    fn remove(&self, peer: &SocketAddr, activity: &Shared) {
        let mut map = self.map();
        if map.get(peer).is_some_and(|a| Arc::ptr_eq(a, activity)) {
            map.remove(peer);
        }
    }

    fn len(&self) -> usize {
        self.map().len()
    }

    /// Counts a stream opening on `peer`'s connection until the guard drops.
    fn open_stream(&self, peer: SocketAddr) -> Option<StreamGuard> {
        let activity = self.map().get(&peer).cloned()?;
        {
            let mut a = lock(&activity);
            a.open_streams += 1;
            a.had_stream = true;
        }
        Some(StreamGuard(activity))
    }
}

/// One open stream of a connection.
#[derive(Debug)]
struct StreamGuard(Shared);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut a = lock(&self.0);
        a.open_streams -= 1;
        if a.open_streams == 0 {
            a.quiet_since = Instant::now();
        }
    }
}

/// Decides when a connection is closed: polled by every read and write of its IO.
pub struct ConnectionWatch {
    peer: SocketAddr,
    activity: Shared,
    table: Arc<ConnectionTable>,
    first_request_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
    timer: Pin<Box<Sleep>>,
    force_close: Pin<Box<WaitForCancellationFutureOwned>>,
    closed: Option<&'static str>,
}

impl std::fmt::Debug for ConnectionWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionWatch")
            .field("peer", &self.peer)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl ConnectionWatch {
    /// `Some(error)` once the connection must close; registers the wakeups otherwise.
    pub(crate) fn poll_reap(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        if self.closed.is_none() {
            self.closed = self.check(cx);
            if let Some(reason) = self.closed {
                tracing::debug!(peer = %self.peer, reason, "connection closed at the edge");
            }
        }
        self.closed
            .map(|reason| std::io::Error::new(std::io::ErrorKind::TimedOut, reason))
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        if self.force_close.as_mut().poll(cx).is_ready() {
            return Some("shutdown grace over");
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let deadline = {
                let a = lock(&self.activity);
                if a.open_streams > 0 {
                    now + self.idle_timeout
                } else if a.had_stream {
                    a.quiet_since + self.idle_timeout
                } else {
                    a.quiet_since + self.first_request_timeout
                }
            };
            if deadline <= now {
                let a = lock(&self.activity);
                return Some(if a.had_stream {
                    "idle: no open stream"
                } else {
                    "no request after the TLS handshake"
                });
            }
            self.timer.as_mut().reset(deadline);
        }
        None
    }
}

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        self.table.remove(&self.peer, &self.activity);
    }
}

/// Counts streams per connection and puts unauthenticated request bodies on the budget.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    table: Arc<ConnectionTable>,
    budget: Arc<Semaphore>,
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct EdgeService<S> {
    inner: S,
    layer: EdgeLayer,
}

impl<S, RB> Service<http::Request<tonic::body::Body>> for EdgeService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<RB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let info = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .cloned();
        let stream = info
            .as_ref()
            .and_then(|i| i.get_ref().remote_addr())
            .and_then(|peer| self.layer.table.open_stream(peer));
        let anonymous = info.as_ref().is_none_or(|i| i.peer_certs().is_none());
        let req = if anonymous {
            let budget = self.layer.budget.clone();
            req.map(|body| {
                tonic::body::Body::new(Budgeted {
                    inner: body,
                    budget,
                    held: None,
                })
            })
        } else {
            req
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await?;
            Ok(response.map(|body| {
                tonic::body::Body::new(Tracked {
                    inner: Box::pin(body),
                    _stream: stream,
                })
            }))
        })
    }
}

/// A response body holding its stream open until it ends or is dropped.
struct Tracked<B> {
    inner: Pin<Box<B>>,
    _stream: Option<StreamGuard>,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.get_mut().inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body whose bytes are drawn from the unauthenticated budget.
struct Budgeted {
    inner: tonic::body::Body,
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl http_body::Body for Budgeted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let n = frame.data_ref().map_or(0, Bytes::len);
        if n > 0 {
            let permit = u32::try_from(n)
                .ok()
                .and_then(|n| this.budget.clone().try_acquire_many_owned(n).ok());
            match permit {
                Some(p) => match &mut this.held {
                    Some(held) => held.merge(p),
                    None => this.held = Some(p),
                },
                None => {
                    tracing::debug!(
                        bytes = n,
                        "unauthenticated request refused: the request byte budget is spent"
                    );
                    return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(
                        "the collector holds its limit of unauthenticated request bytes; retry later",
                    ))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
