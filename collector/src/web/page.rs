//! The page frame every page shares (header, navigation for the reader's roles, language
//! switch, sign-out form), the error pages, and small renderers used across pages. Everything
//! interpolated goes through maud's escaping; nothing here writes raw HTML.

use super::Ctx;
use super::i18n::{Lang, T};
use crate::error::CollectorError;
use crate::store::records::Role;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use commscan_core::verdict::Status;
use maud::{DOCTYPE, Markup, html};

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Fleet,
    Products,
    Candidates,
    Tokens,
    People,
    Audit,
    Enterprises,
}

/// What the reader's grants let them open, to show only links that lead somewhere.
fn has_role(ctx: &Ctx, roles: &[Role]) -> bool {
    ctx.signed
        .who
        .grants
        .iter()
        .any(|g| roles.contains(&g.role))
}

/// Whether the reader may see device rows anywhere (officers, auditors, admins).
pub fn sees_devices(ctx: &Ctx) -> bool {
    has_role(ctx, &[Role::Admin, Role::Officer, Role::Auditor])
}

/// The frame around `body`.
pub fn frame(ctx: &Ctx, title: &str, nav: Nav, body: Markup) -> Response {
    let lang = ctx.lang;
    let entries: Vec<(Nav, &str, T, bool)> = vec![
        (Nav::Fleet, "/fleet", T::Fleet, true),
        (Nav::Products, "/products", T::Products, true),
        (
            Nav::Candidates,
            "/candidates",
            T::Candidates,
            sees_devices(ctx),
        ),
        (
            Nav::Tokens,
            "/tokens",
            T::Tokens,
            has_role(ctx, &[Role::Admin, Role::Officer]),
        ),
        (
            Nav::People,
            "/people",
            T::People,
            has_role(ctx, &[Role::Admin]),
        ),
        (
            Nav::Audit,
            "/audit",
            T::Audit,
            has_role(ctx, &[Role::Admin, Role::Officer, Role::Auditor]),
        ),
        (Nav::Enterprises, "/enterprises", T::Enterprises, true),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (lang.t(T::Title)) }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { (lang.t(T::Title)) }
                header {
                    nav aria-label=(lang.t(T::Title)) {
                        ul {
                            @for (n, href, label, shown) in &entries {
                                @if *shown {
                                    li {
                                        @if *n == nav {
                                            a href=(href) aria-current="page" { (lang.t(*label)) }
                                        } @else {
                                            a href=(href) { (lang.t(*label)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    div.account {
                        span.who { (ctx.signed.who.actor()) }
                        span.lang {
                            a href=(lang_href(&ctx.here, "ru")) lang="ru" hreflang="ru" { "RU" }
                            " · "
                            a href=(lang_href(&ctx.here, "en")) lang="en" hreflang="en" { "EN" }
                        }
                        form #sign-out method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(ctx.signed.csrf);
                            button type="submit" { (lang.t(T::SignOut)) }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    div #live role="status" aria-live="polite" {}
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page for someone not signed in (the sign-in form).
pub fn bare(lang: Lang, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (lang.t(T::Title)) }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                main #main .narrow {
                    p.lang {
                        a href="?lang=ru" lang="ru" hreflang="ru" { "RU" }
                        " · "
                        a href="?lang=en" lang="en" hreflang="en" { "EN" }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// The response for a domain error: a page saying what went wrong, with the matching status.
pub fn error(lang: Lang, e: CollectorError) -> Response {
    let (status, text) = match &e {
        CollectorError::Unauthenticated(_) => {
            return Redirect::to("/login?ended=1").into_response();
        }
        CollectorError::PermissionDenied(_) => {
            (StatusCode::FORBIDDEN, lang.t(T::Forbidden).to_owned())
        }
        CollectorError::NotFound(_) => (StatusCode::NOT_FOUND, lang.t(T::NotFound).to_owned()),
        CollectorError::InvalidArgument(m)
        | CollectorError::FailedPrecondition(m)
        | CollectorError::AlreadyExists(m) => (
            StatusCode::BAD_REQUEST,
            format!("{}: {m}", lang.t(T::Invalid)),
        ),
        CollectorError::ResourceExhausted(m) => (StatusCode::TOO_MANY_REQUESTS, m.clone()),
        CollectorError::Unavailable(_) | CollectorError::Store(_) => {
            tracing::warn!(error = %e, "console: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                lang.t(T::Unavailable).to_owned(),
            )
        }
        _ => {
            tracing::error!(error = %e, "console: request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                lang.t(T::Unavailable).to_owned(),
            )
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (lang.t(T::Title)) }
                link rel="stylesheet" href="/static/app.css";
            }
            body { main #main .narrow { h1 { (status.as_u16()) } p.error { (text) } p { a href="/fleet" { (lang.t(T::Fleet)) } } } }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// A status as a labelled badge (colour from its class, the word always written).
pub fn status(lang: Lang, s: Status) -> Markup {
    html! { span class=(format!("status {}", s.as_str())) { (lang.status(s)) } }
}

/// Counts by status, in a fixed order, as a definition list.
pub fn status_counts(lang: Lang, counts: &std::collections::BTreeMap<Status, u64>) -> Markup {
    html! {
        dl.counts {
            @for s in [Status::Compliant, Status::Waived, Status::Noncompliant, Status::Stale, Status::Unknown] {
                div { dt { (status(lang, s)) } dd { (lang.int(counts.get(&s).copied().unwrap_or(0))) } }
            }
        }
    }
}

/// A query string from pairs, percent-encoded (for links that keep filters).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The page at `here` (path and query) in language `code`: its other parameters kept.
pub fn lang_href(here: &str, code: &str) -> String {
    let (path, query) = here.split_once('?').unwrap_or((here, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("lang="))
        .collect();
    let lang = format!("lang={code}");
    params.push(&lang);
    format!("{path}?{}", params.join("&"))
}

/// The CSRF field every form carries.
pub fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.signed.csrf); }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_language_links_keep_the_page_and_its_filters() {
        assert_eq!(
            super::lang_href("/org/acme?status=noncompliant&lang=en&cursor=x", "ru"),
            "/org/acme?status=noncompliant&cursor=x&lang=ru"
        );
        assert_eq!(super::lang_href("/fleet", "en"), "/fleet?lang=en");
    }
}
