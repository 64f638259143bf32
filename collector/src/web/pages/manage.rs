//! What officers and administrators change: unclassified candidates (map, dismiss),
//! enrolment tokens (create shows the secret once; revoke), people and their grants (admins),
//! and the audit log (auditors, officers of their organisations, admins). Every change is a
//! POST with the session's CSRF token; every decision is the domain's.

use super::super::Web;
use super::super::i18n::T;
use super::{Ctx, csrf_refused, page};
use crate::store::Classification;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

#[derive(serde::Deserialize, Default)]
pub struct OrgQuery {
    #[serde(default)]
    org: String,
    #[serde(default)]
    done: Option<String>,
}

/// The organisations the reader sees in the fleet (to choose one), this collector's only.
async fn my_orgs(web: &Web, ctx: &Ctx) -> Vec<String> {
    let who = ctx.signed.who.clone();
    web.blocking(move |c| c.fleet_summary(&who))
        .await
        .map(|s| {
            s.rows
                .into_iter()
                .filter(|r| r.enterprise.is_empty())
                .map(|r| r.organisation)
                .collect()
        })
        .unwrap_or_default()
}

/// A GET form choosing the organisation of a page.
fn org_picker(ctx: &Ctx, action: &str, orgs: &[String], current: &str) -> Markup {
    let lang = ctx.lang;
    html! {
        form.picker method="get" action=(action) {
            label { (lang.t(T::Organisation)) " "
                select name="org" {
                    @for o in orgs { option value=(o) selected[o == current] { (o) } }
                }
            }
            button type="submit" { (lang.t(T::Filter)) }
        }
    }
}

pub async fn candidates(State(web): State<Web>, ctx: Ctx, Query(q): Query<OrgQuery>) -> Response {
    let orgs = my_orgs(&web, &ctx).await;
    let org = if q.org.is_empty() {
        orgs.first().cloned().unwrap_or_default()
    } else {
        q.org.clone()
    };
    let lang = ctx.lang;
    let (who, o) = (ctx.signed.who.clone(), org.clone());
    let rows = if org.is_empty() {
        Vec::new()
    } else {
        match web.blocking(move |c| c.list_unclassified(&who, &o)).await {
            Ok(r) => r,
            Err(e) => return page::error(lang, e),
        }
    };
    let rules = web.collector.rules();
    let products: Vec<(&str, &str)> = rules
        .catalog
        .products()
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_str()))
        .collect();
    page::frame(
        &ctx,
        lang.t(T::Candidates),
        page::Nav::Candidates,
        html! {
            (org_picker(&ctx, "/candidates", &orgs, &org))
            @if q.done.is_some() { p.ok role="status" { (lang.t(T::Done)) } }
            @if rows.is_empty() { p { (lang.t(T::NoCandidates)) } } @else {
                div.scroll {
                    table #candidates {
                        thead { tr {
                            th scope="col" { (lang.t(T::Candidate)) }
                            th scope="col" .num { (lang.t(T::Devices)) }
                            th scope="col" { (lang.t(T::Source)) }
                            th scope="col" { (lang.t(T::Map)) }
                            th scope="col" { (lang.t(T::Dismiss)) }
                        } }
                        tbody {
                            @for (name, c) in &rows {
                                tr data-candidate=(name) {
                                    td { (candidate_name(lang, name, &c.looks_like, &products)) }
                                    td.num { (lang.int(c.devices)) }
                                    td { code { (c.source) } " " (c.detail) }
                                    td {
                                        form.map method="post" action=(format!("/candidates/{org}/map")) {
                                            (page::csrf(&ctx))
                                            input type="hidden" name="name" value=(name);
                                            select name="product" aria-label=(lang.t(T::Product)) {
                                                @for (id, pname) in &products { option value=(id) selected[*id == c.looks_like] { (pname) } }
                                            }
                                            button type="submit" { (lang.t(T::Map)) }
                                        }
                                    }
                                    td {
                                        form.dismiss method="post" action=(format!("/candidates/{org}/dismiss")) {
                                            (page::csrf(&ctx))
                                            input type="hidden" name="name" value=(name);
                                            button type="submit" { (lang.t(T::Dismiss)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A candidate's name, and for a near miss (named like a catalogued product whose identifiers
/// it does not carry) the product it looks like. The map form starts on that product, so
/// mapping is one click. maud escapes every string.
fn candidate_name(
    lang: super::super::i18n::Lang,
    name: &str,
    looks_like: &str,
    products: &[(&str, &str)],
) -> Markup {
    let product = products
        .iter()
        .find(|(id, _)| *id == looks_like)
        .map_or(looks_like, |(_, n)| n);
    html! {
        (name)
        @if !looks_like.is_empty() {
            br;
            span.hint data-looks-like=(looks_like) {
                (lang.t(T::LooksLike)) " " (product) " (" code { (looks_like) } ")"
            }
        }
    }
}

#[derive(serde::Deserialize)]
pub struct CandidateForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    product: String,
}

async fn classify(
    web: Web,
    ctx: Ctx,
    org: String,
    f: CandidateForm,
    decision: Classification,
) -> Response {
    if let Some(r) = csrf_refused(&ctx, &f.csrf) {
        return r;
    }
    let (who, o) = (ctx.signed.who.clone(), org.clone());
    match web
        .blocking(move |c| c.classify_candidate(&who, &o, &f.name, decision))
        .await
    {
        Ok(_) => Redirect::to(&format!(
            "/candidates?{}",
            page::query(&[("org", &org), ("done", "1")])
        ))
        .into_response(),
        Err(e) => page::error(ctx.lang, e),
    }
}

pub async fn map_candidate(
    State(web): State<Web>,
    ctx: Ctx,
    Path(org): Path<String>,
    Form(f): Form<CandidateForm>,
) -> Response {
    let decision = Classification::Product {
        product: f.product.clone(),
    };
    classify(web, ctx, org, f, decision).await
}

pub async fn dismiss_candidate(
    State(web): State<Web>,
    ctx: Ctx,
    Path(org): Path<String>,
    Form(f): Form<CandidateForm>,
) -> Response {
    classify(web, ctx, org, f, Classification::Dismissed).await
}

/// The tokens page, with a new token's secret when one was just created.
async fn tokens_page(
    web: Web,
    ctx: Ctx,
    org: String,
    created: Option<(String, String)>,
) -> Response {
    let orgs = my_orgs(&web, &ctx).await;
    let org = if org.is_empty() {
        orgs.first().cloned().unwrap_or_default()
    } else {
        org
    };
    let lang = ctx.lang;
    let (who, o) = (ctx.signed.who.clone(), org.clone());
    let tokens = match web
        .blocking(move |c| {
            c.list_enrollment_tokens(&who, Some(&o).filter(|o| !o.is_empty()).map(String::as_str))
        })
        .await
    {
        Ok(t) => t,
        Err(e) => return page::error(lang, e),
    };
    page::frame(
        &ctx,
        lang.t(T::Tokens),
        page::Nav::Tokens,
        html! {
            (org_picker(&ctx, "/tokens", &orgs, &org))
            @if let Some((id, secret)) = &created {
                section.secret {
                    h2 { (id) }
                    p { (lang.t(T::SecretOnce)) }
                    p { code #secret { (secret) } }
                }
            }
            form #create-token method="post" action="/tokens" {
                (page::csrf(&ctx))
                input type="hidden" name="org" value=(org);
                label { (lang.t(T::Uses)) " " input type="number" name="uses" min="1" size="6"; }
                button type="submit" { (lang.t(T::CreateToken)) }
            }
            div.scroll {
                table #tokens {
                    thead { tr {
                        th scope="col" { "ID" }
                        th scope="col" { (lang.t(T::Organisation)) }
                        th scope="col" { (lang.t(T::Created)) }
                        th scope="col" { (lang.t(T::Expires)) }
                        th scope="col" .num { (lang.t(T::Uses)) }
                        th scope="col" { (lang.t(T::Status)) }
                        th scope="col" { (lang.t(T::Revoke)) }
                    } }
                    tbody {
                        @for t in &tokens {
                            tr data-token=(t.token_id) {
                                td { code { (t.token_id) } }
                                td { (t.record.organisation) }
                                td { (lang.datetime(t.record.created_at)) }
                                td { @match t.record.expires_at { Some(e) => (lang.datetime(e)), None => "—" } }
                                td.num { @match t.record.uses_left { Some(u) => (lang.int(u)), None => (lang.t(T::Unlimited)) } }
                                td { @if t.record.revoked { (lang.t(T::Revoked)) } @else { (lang.t(T::Active)) } }
                                td {
                                    @if !t.record.revoked {
                                        form.revoke method="post" action=(format!("/tokens/{}/revoke", t.token_id)) {
                                            (page::csrf(&ctx))
                                            button type="submit" { (lang.t(T::Revoke)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub async fn tokens(State(web): State<Web>, ctx: Ctx, Query(q): Query<OrgQuery>) -> Response {
    tokens_page(web, ctx, q.org, None).await
}

#[derive(serde::Deserialize)]
pub struct CreateTokenForm {
    #[serde(default)]
    csrf: String,
    org: String,
    #[serde(default)]
    uses: String,
}

pub async fn create_token(
    State(web): State<Web>,
    ctx: Ctx,
    Form(f): Form<CreateTokenForm>,
) -> Response {
    if let Some(r) = csrf_refused(&ctx, &f.csrf) {
        return r;
    }
    let uses = match f.uses.trim() {
        "" => None,
        u => match u.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return page::error(
                    ctx.lang,
                    crate::error::CollectorError::InvalidArgument(format!(
                        "uses: '{u}' is not a number of uses (1 or more)"
                    )),
                );
            }
        },
    };
    let (who, org) = (ctx.signed.who.clone(), f.org.clone());
    match web
        .blocking(move |c| c.create_enrollment_token(&who, &org, uses, None, false))
        .await
    {
        // The secret is rendered into this response only, never stored in plain.
        Ok((info, secret)) => tokens_page(web, ctx, f.org, Some((info.token_id, secret))).await,
        Err(e) => page::error(ctx.lang, e),
    }
}

#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn revoke_token(
    State(web): State<Web>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = csrf_refused(&ctx, &f.csrf) {
        return r;
    }
    let who = ctx.signed.who.clone();
    match web
        .blocking(move |c| c.revoke_enrollment_token(&who, &id))
        .await
    {
        Ok(()) => Redirect::to("/tokens").into_response(),
        Err(e) => page::error(ctx.lang, e),
    }
}

pub async fn people(State(web): State<Web>, ctx: Ctx) -> Response {
    people_page(web, ctx, None).await
}

/// The people page, with a new person's token when one was just added.
async fn people_page(web: Web, ctx: Ctx, added: Option<(String, String)>) -> Response {
    let who = ctx.signed.who.clone();
    let people = match web.blocking(move |c| c.list_access_tokens(&who)).await {
        Ok(p) => p,
        Err(e) => return page::error(ctx.lang, e),
    };
    let lang = ctx.lang;
    page::frame(
        &ctx,
        lang.t(T::People),
        page::Nav::People,
        html! {
            @if let Some((id, secret)) = &added {
                section.secret {
                    h2 { (id) }
                    p { (lang.t(T::TokenOnce)) }
                    p { code #secret { (secret) } }
                }
            }
            form #add-person method="post" action="/people" {
                (page::csrf(&ctx))
                label { (lang.t(T::Name)) " " input name="name" required maxlength="128"; }
                label { (lang.t(T::Grants)) " " input name="grants" required aria-describedby="grant-help"; }
                button type="submit" { (lang.t(T::AddPerson)) }
                p.help #grant-help { (lang.t(T::GrantHelp)) }
            }
            div.scroll {
                table #people {
                    thead { tr {
                        th scope="col" { "ID" }
                        th scope="col" { (lang.t(T::Name)) }
                        th scope="col" { (lang.t(T::Grants)) }
                        th scope="col" { (lang.t(T::Created)) }
                        th scope="col" { (lang.t(T::Expires)) }
                        th scope="col" { (lang.t(T::Status)) }
                        th scope="col" { (lang.t(T::Revoke)) }
                    } }
                    tbody {
                        @for p in &people {
                            tr {
                                td { code { (p.person_id) } }
                                td { (p.record.name) }
                                td { @for g in &p.record.grants { span.tag { (format!("{:?}", g.role).to_lowercase()) ":" (g.organisation.as_deref().unwrap_or("*")) } " " } }
                                td { @match p.record.created_at { Some(t) => (lang.datetime(t)), None => "—" } }
                                td { @match p.record.expires_at { Some(t) => (lang.datetime(t)), None => "—" } }
                                td { @if p.record.revoked { (lang.t(T::Revoked)) } @else { (lang.t(T::Active)) } }
                                td {
                                    @if !p.record.revoked {
                                        form.revoke method="post" action=(format!("/people/{}/revoke", p.person_id)) {
                                            (page::csrf(&ctx))
                                            button type="submit" { (lang.t(T::Revoke)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[derive(serde::Deserialize)]
pub struct PersonForm {
    #[serde(default)]
    csrf: String,
    name: String,
    grants: String,
}

/// `role` or `role:org`, as `commscanctl people add --grant` takes them.
fn parse_grant(s: &str) -> Result<crate::store::records::Grant, crate::error::CollectorError> {
    use crate::store::records::{Grant, Role};
    let (role, org) = s.split_once(':').map_or((s, None), |(r, o)| (r, Some(o)));
    let role = match role.to_ascii_lowercase().as_str() {
        "admin" => Role::Admin,
        "officer" => Role::Officer,
        "analyst" => Role::Analyst,
        "auditor" => Role::Auditor,
        other => {
            return Err(crate::error::CollectorError::InvalidArgument(format!(
                "grants: '{other}' is not a role (admin, officer, analyst, auditor)"
            )));
        }
    };
    Ok(Grant {
        role,
        organisation: org
            .filter(|o| !o.is_empty() && *o != "*")
            .map(str::to_owned),
    })
}

pub async fn add_person(State(web): State<Web>, ctx: Ctx, Form(f): Form<PersonForm>) -> Response {
    if let Some(r) = csrf_refused(&ctx, &f.csrf) {
        return r;
    }
    let grants = match f
        .grants
        .split_whitespace()
        .take(32)
        .map(parse_grant)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(g) => g,
        Err(e) => return page::error(ctx.lang, e),
    };
    let who = ctx.signed.who.clone();
    match web
        .blocking(move |c| c.create_access_token(&who, &f.name, grants, None))
        .await
    {
        // The token is rendered into this response only; the store keeps its hash.
        Ok((id, secret)) => people_page(web, ctx, Some((id, secret))).await,
        Err(e) => page::error(ctx.lang, e),
    }
}

pub async fn revoke_person(
    State(web): State<Web>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = csrf_refused(&ctx, &f.csrf) {
        return r;
    }
    let who = ctx.signed.who.clone();
    match web
        .blocking(move |c| c.revoke_access_token(&who, &id))
        .await
    {
        Ok(_) => Redirect::to("/people").into_response(),
        Err(e) => page::error(ctx.lang, e),
    }
}

#[derive(serde::Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    after: u64,
}

pub async fn audit(State(web): State<Web>, ctx: Ctx, Query(q): Query<AuditQuery>) -> Response {
    let who = ctx.signed.who.clone();
    let entries = match web
        .blocking(move |c| c.list_audit(&who, q.after, 100))
        .await
    {
        Ok(e) => e,
        Err(e) => return page::error(ctx.lang, e),
    };
    let lang = ctx.lang;
    let last = entries.last().map(|(p, _)| *p);
    page::frame(
        &ctx,
        lang.t(T::Audit),
        page::Nav::Audit,
        html! {
            div.scroll {
                table #audit {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { (lang.t(T::When)) }
                        th scope="col" { (lang.t(T::Who)) }
                        th scope="col" { (lang.t(T::Action)) }
                        th scope="col" { (lang.t(T::Organisation)) }
                        th scope="col" { (lang.t(T::Outcome)) }
                        th scope="col" { (lang.t(T::Detail)) }
                    } }
                    tbody {
                        @for (pos, e) in &entries {
                            tr {
                                td.num { (pos) }
                                td { (lang.datetime(e.at)) }
                                td { (e.actor) }
                                td { code { (e.action) } }
                                td { (e.organisation.as_deref().unwrap_or("")) }
                                td { @if e.allowed { (lang.t(T::Allowed)) } @else { span.status.noncompliant { (lang.t(T::Denied)) } } }
                                td { (e.detail) }
                            }
                        }
                    }
                }
            }
            @if let Some(last) = last { @if entries.len() == 100 { p { a rel="next" href=(format!("/audit?after={last}")) { (lang.t(T::Older)) } } } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::super::i18n::Lang;
    use super::*;

    #[test]
    fn a_near_miss_shows_the_product_it_looks_like_and_every_string_is_escaped() {
        let products = [("whatsapp", "WhatsApp"), ("max", "MAX")];
        // (lang, name, looks_like, must contain, must not contain)
        let cases = [
            (
                Lang::En,
                "WhatsApp",
                "whatsapp",
                "looks like WhatsApp (<code>whatsapp</code>)",
                "<script",
            ),
            (Lang::Ru, "MAX", "max", "похоже на MAX", "<script"),
            (
                Lang::En,
                "<script>alert(1)</script>",
                "",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
                "looks like",
            ),
            // A hint naming no product of the catalog in force is shown as the id it is.
            (
                Lang::En,
                "Chat",
                "gone-product",
                "looks like gone-product",
                "<script",
            ),
        ];
        for (lang, name, looks_like, contains, absent) in cases {
            let html = candidate_name(lang, name, looks_like, &products).into_string();
            assert!(html.contains(contains), "{html}");
            assert!(!html.contains(absent), "{html}");
        }
    }
}
