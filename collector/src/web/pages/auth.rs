//! Signing in (token form, one-time link) and out.

use super::super::i18n::T;
use super::super::session::COOKIE;
use super::super::{LangOf, Web};
use super::{Ctx, csrf_refused, page};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    failed: Option<String>,
}

pub async fn login_page(LangOf(lang): LangOf, Query(q): Query<LoginQuery>) -> Response {
    let note = if q.failed.is_some() {
        Some(lang.t(T::BadToken))
    } else if q.ended.is_some() {
        Some(lang.t(T::SessionEnded))
    } else {
        None
    };
    page::bare(
        lang,
        lang.t(T::SignIn),
        html! {
            @if let Some(n) = note { p.error role="alert" { (n) } }
            form #login method="post" action="/login" {
                label for="token" { (lang.t(T::Token)) }
                input #token type="password" name="token" autocomplete="off" required;
                p.help { (lang.t(T::TokenHelp)) }
                button #sign-in type="submit" { (lang.t(T::SignIn)) }
            }
        },
    )
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// The cookie that carries a session.
fn session_cookie(secret: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        super::super::session::ABSOLUTE.as_secs()
    ))
    .expect("a generated secret is a valid header value")
}

fn signed_in(secret: &str) -> Response {
    let mut r = Redirect::to("/fleet").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(secret));
    r
}

pub async fn login(State(web): State<Web>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim().to_owned();
    match web.blocking(move |c| c.open_session(&token)).await {
        Ok((secret, _)) => signed_in(&secret),
        Err(_) => Redirect::to("/login?failed=1").into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct LinkQuery {
    code: String,
}

pub async fn link(
    State(web): State<Web>,
    LangOf(lang): LangOf,
    Query(q): Query<LinkQuery>,
) -> Response {
    match web.blocking(move |c| c.use_login_link(&q.code)).await {
        // A page, not a redirect: a link clicked in a mail or chat is a cross-site navigation,
        // on which the browser would not send the SameSite=Strict cookie to the redirect's
        // target; from this page on, navigation is same-site.
        Ok((secret, _)) => {
            let mut r = page::bare(
                lang,
                lang.t(T::SignIn),
                html! {
                    meta http-equiv="refresh" content="0; url=/fleet";
                    p { a #continue href="/fleet" { (lang.t(T::Continue)) } }
                },
            );
            r.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&secret));
            r
        }
        Err(_) => (
            axum::http::StatusCode::UNAUTHORIZED,
            page::bare(
                lang,
                lang.t(T::SignIn),
                html! { p.error role="alert" { (lang.t(T::LinkUsed)) } p { a href="/login" { (lang.t(T::SignIn)) } } },
            ),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(State(web): State<Web>, ctx: Ctx, Form(f): Form<CsrfForm>) -> Response {
    if let Some(r) = csrf_refused(&ctx, &f.csrf) {
        return r;
    }
    let (secret, who) = (ctx.secret.clone(), ctx.signed.who.clone());
    if let Err(e) = web.blocking(move |c| c.close_session(&secret, &who)).await {
        return page::error(ctx.lang, e);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-commscan=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}
