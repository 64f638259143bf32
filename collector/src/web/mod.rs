//! The web console: server-rendered pages for officers, auditors, administrators and ministry
//! analysts, served by the collector itself.
//!
//! **Where.** On its own address (`serve --web-listen ADDR`), not the gRPC port: that port asks
//! every client for a certificate (agents must present one), which a browser would answer with
//! a certificate prompt, and it speaks only HTTP/2 behind the edge's gRPC budgets. The console
//! reuses the deployment's server certificate and key with a TLS configuration of its own
//! ([`crate::tls::web_server_config`]: no client certificates, ALPN http/1.1).
//!
//! **How.** axum routes to thin handlers in [`pages`]; each resolves the session
//! ([`Ctx`], [`session`]), calls the same domain methods the gRPC adapters call (so every page
//! goes through [`crate::auth::authorize`] and the audit log like the API), on the blocking
//! pool, and renders with maud, which escapes every interpolated string: host names, versions,
//! application names and evidence come from devices and are hostile. Charts are SVG drawn here
//! ([`chart`]). The one script (`/static/app.js`) only listens to server-sent events
//! (`/events`, the verdict-change stream `watch` uses) and writes their text into the page
//! with `textContent`; there is no inline script or style, so the Content-Security-Policy
//! allows only this origin's files ([`security_headers`]).
//!
//! **Bounds.** At most [`MAX_CONNECTIONS`] connections at once (further ones are closed at
//! accept), [`HANDSHAKE_TIMEOUT`] for TLS, [`HEADER_TIMEOUT`] for a request's headers, request
//! bodies of at most [`MAX_BODY_BYTES`] (forms), and at most [`MAX_EVENT_STREAMS`] open event
//! streams.
//!
//! **Forms.** Every POST carries the session's CSRF token, compared in constant time; the
//! session cookie is SameSite=Strict as well.

pub mod chart;
pub mod i18n;
mod page;
mod pages;
pub mod session;

use crate::collector::Collector;
use crate::error::CollectorError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use i18n::Lang;
use session::Signed;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Open connections at most; more are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has for its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (a form).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Open server-sent event streams at most.
pub const MAX_EVENT_STREAMS: usize = 256;

/// What the handlers share.
#[derive(Clone)]
pub struct Web {
    collector: Arc<Collector>,
    event_streams: Arc<tokio::sync::Semaphore>,
}

impl Web {
    /// Runs `f` with the collector on the blocking pool (the store is synchronous).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Collector) -> Result<T, CollectorError> + Send + 'static,
    ) -> Result<T, CollectorError> {
        let c = self.collector.clone();
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .unwrap_or_else(|e| Err(CollectorError::Unavailable(format!("task: {e}"))))
    }
}

/// The language of a request: `?lang=` (remembered in a cookie by the response), the
/// `lang` cookie, `Accept-Language`, else English.
fn lang_of(parts: &Parts) -> Lang {
    if let Some(q) = parts.uri.query()
        && let Some(l) = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("lang="))
            .and_then(Lang::from_code)
    {
        return l;
    }
    if let Some(l) = cookie(parts, "lang").and_then(|v| Lang::from_code(&v)) {
        return l;
    }
    parts
        .headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::from_accept_language)
}

/// A cookie's value.
fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// The reader's language, for pages anyone may see (sign-in).
pub struct LangOf(pub Lang);

impl FromRequestParts<Web> for LangOf {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &Web) -> Result<Self, Self::Rejection> {
        Ok(LangOf(lang_of(parts)))
    }
}

/// A signed-in request: who, their CSRF token, their language. Without a live session the
/// request is sent to the sign-in page.
pub struct Ctx {
    /// The session.
    pub signed: Signed,
    /// The language.
    pub lang: Lang,
    /// The session cookie's secret (for sign-out).
    secret: String,
    /// The request's path and query (the language links keep them).
    here: String,
}

impl FromRequestParts<Web> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let lang = lang_of(parts);
        let here = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let Some(secret) = cookie(parts, session::COOKIE) else {
            return Err(Redirect::to("/login").into_response());
        };
        let s = secret.clone();
        match web.blocking(move |c| c.session(&s)).await {
            Ok(signed) => Ok(Ctx {
                signed,
                lang,
                secret,
                here,
            }),
            Err(CollectorError::Unauthenticated(_)) => {
                Err(Redirect::to("/login?ended=1").into_response())
            }
            Err(e) => Err(page::error(lang, e)),
        }
    }
}

/// Adds the headers every response carries: no inline script or style, no framing, no
/// sniffing, no referrer, HTTPS only; pages are not cached.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let set_lang = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("lang=")))
        .and_then(Lang::from_code);
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    for (k, v) in fixed {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(l) = set_lang
        && let Ok(v) = HeaderValue::from_str(&format!(
            "lang={}; Path=/; Secure; SameSite=Strict; Max-Age=31536000",
            l.code()
        ))
    {
        h.append(header::SET_COOKIE, v);
    }
    response
}

/// The console's routes.
pub fn router(collector: Arc<Collector>) -> axum::Router {
    let web = Web {
        collector,
        event_streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
    };
    pages::routes()
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web)
}

/// Serves the console on `listener` with `tls` until `shutdown`; open connections are told to
/// close and given a moment to finish.
pub async fn serve(
    collector: Arc<Collector>,
    tls: Arc<rustls::ServerConfig>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let app = router(collector);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "console: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "console: connection limit reached; closed");
            continue;
        };
        let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "console: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "console: connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), connections.wait()).await;
}
