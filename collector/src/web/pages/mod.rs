//! The console's pages, one module per concern; each handler resolves the session ([`Ctx`]),
//! calls domain methods on the blocking pool, and renders. Handlers never decide who may see
//! what: the domain's authorisation does, and a refusal is a 403 page.

mod assets;
mod auth;
mod devices;
mod events;
mod fleet;
mod manage;

use super::page;
use super::{Ctx, Web};
use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

/// Every route.
pub fn routes() -> Router<Web> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/fleet") }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/login/link", get(auth::link))
        .route("/logout", post(auth::logout))
        .route("/fleet", get(fleet::fleet))
        .route("/products", get(fleet::products))
        .route("/enterprises", get(fleet::enterprises))
        .route("/org/{org}", get(devices::organisation))
        .route("/org/{org}/export.csv", get(devices::export_csv))
        .route("/org/{org}/export.json", get(devices::export_json))
        .route("/device/{id}", get(devices::device))
        .route("/candidates", get(manage::candidates))
        .route("/candidates/{org}/map", post(manage::map_candidate))
        .route("/candidates/{org}/dismiss", post(manage::dismiss_candidate))
        .route("/tokens", get(manage::tokens).post(manage::create_token))
        .route("/tokens/{id}/revoke", post(manage::revoke_token))
        .route("/people", get(manage::people).post(manage::add_person))
        .route("/people/{id}/revoke", post(manage::revoke_person))
        .route("/audit", get(manage::audit))
        .route("/events", get(events::events))
        .route("/static/app.css", get(assets::css))
        .route("/static/app.js", get(assets::js))
        .fallback(not_found)
}

async fn not_found(super::LangOf(lang): super::LangOf) -> Response {
    page::error(
        lang,
        crate::error::CollectorError::NotFound("no such page".into()),
    )
}

/// The refusal of a form whose CSRF token is not the session's; `None` when it is.
fn csrf_refused(ctx: &Ctx, given: &str) -> Option<Response> {
    if super::session::same_secret(&ctx.signed.csrf, given) {
        return None;
    }
    tracing::warn!(principal = %ctx.signed.who.actor(), "console: form with a wrong CSRF token refused");
    Some(
        (
            axum::http::StatusCode::FORBIDDEN,
            "the form's CSRF token is not this session's: reload the page and try again",
        )
            .into_response(),
    )
}
