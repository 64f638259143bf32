//! An organisation (summary, trend, its devices with the CLI's filters, paged, exports) and
//! one device (findings with evidence, reasons, history, waivers, sources of its last scan).

use super::super::Web;
use super::super::chart;
use super::super::i18n::{Lang, T};
use super::fleet::days_links;
use super::{Ctx, page};
use crate::error::CollectorError;
use crate::store::{DeviceFilter, DeviceRecord, HistoryKind};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use commscan_core::platform::Platform;
use commscan_core::verdict::Status;
use maud::html;

/// Devices per page.
const PAGE: usize = 50;

#[derive(serde::Deserialize, Default)]
pub struct OrgQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    days: Option<usize>,
}

/// The filter a query asks for; a value that is not a status or platform is refused.
fn filter_of(org: &str, q: &OrgQuery) -> Result<DeviceFilter, CollectorError> {
    // The organisation comes from the URL and ends up in headers (the export's file name).
    if !commscan_core::identity::is_valid_organisation(org) {
        return Err(CollectorError::NotFound(format!(
            "no organisation '{}'",
            org.escape_debug()
        )));
    }
    let status = match q.status.as_str() {
        "" => None,
        s => Some(s.parse::<Status>().map_err(|_| {
            CollectorError::InvalidArgument(format!("status: '{s}' is not a status"))
        })?),
    };
    let platform = match q.platform.as_str() {
        "" => None,
        p => Some(p.parse::<Platform>().map_err(|_| {
            CollectorError::InvalidArgument(format!("platform: '{p}' is not a platform"))
        })?),
    };
    Ok(DeviceFilter {
        organisation: Some(org.to_owned()),
        status,
        product: Some(q.product.trim().to_owned()).filter(|p| !p.is_empty()),
        platform,
        allowed_orgs: None,
    })
}

fn last_report(lang: Lang, d: &DeviceRecord) -> String {
    d.last_report
        .map_or_else(|| lang.t(T::Never).to_owned(), |t| lang.datetime(t))
}

pub async fn organisation(
    State(web): State<Web>,
    ctx: Ctx,
    Path(org): Path<String>,
    Query(q): Query<OrgQuery>,
) -> Response {
    let lang = ctx.lang;
    let filter = match filter_of(&org, &q) {
        Ok(f) => f,
        Err(e) => return page::error(lang, e),
    };
    let days = if q.days == Some(90) { 90 } else { 30 };
    let (who, o, cursor) = (ctx.signed.who.clone(), org.clone(), q.cursor.clone());
    let got = web
        .blocking(move |c| {
            let summary = c.organisation_summary(&who, &o)?;
            let trend = c.organisation_trend(&who, &o, days)?;
            // An analyst reads summaries only: the device table is left out, not an error.
            let devices = match c.list_devices(
                &who,
                &filter,
                Some(&cursor).filter(|c| !c.is_empty()).map(String::as_str),
                PAGE,
            ) {
                // As the API lists them: a revoked device is out of service, never listed
                // under its last verdict's status.
                Ok(p) => Some(crate::queries::keep_revoked(
                    p,
                    false,
                    filter.status.is_some(),
                )),
                Err(CollectorError::PermissionDenied(_)) => None,
                Err(e) => return Err(e),
            };
            Ok((summary, trend, devices))
        })
        .await;
    let (summary, trend, devices) = match got {
        Ok(v) => v,
        Err(e) => return page::error(lang, e),
    };
    let points: Vec<(String, f64)> = trend
        .iter()
        .map(|(d, a)| (d.clone(), a.percent_compliant()))
        .collect();
    let keep = |cursor: &str| {
        page::query(&[
            ("status", &q.status),
            ("product", &q.product),
            ("platform", &q.platform),
            ("cursor", cursor),
        ])
    };
    let export = page::query(&[
        ("status", &q.status),
        ("product", &q.product),
        ("platform", &q.platform),
    ]);
    page::frame(
        &ctx,
        &format!("{}: {org}", lang.t(T::Organisation)),
        page::Nav::Fleet,
        html! {
            section.summary {
                p.big { (lang.percent(summary.percent_compliant())) " " (lang.t(T::CompliantShare)) }
                p { (lang.int(summary.devices)) " " (lang.t(T::DeviceCount)) }
                (page::status_counts(lang, &summary.by_status))
            }
            section {
                h2 { (lang.t(T::Trend)) }
                (days_links(&ctx, &format!("/org/{org}"), days))
                @if points.is_empty() { p { (lang.t(T::NoTrend)) } } @else { (chart::trend(&points, lang.t(T::Trend), lang)) }
            }
            @if let Some(page_) = devices {
                section {
                    h2 { (lang.t(T::Devices)) }
                    form #filters method="get" action=(format!("/org/{org}")) {
                        label { (lang.t(T::Status)) " "
                            select name="status" {
                                option value="" selected[q.status.is_empty()] { (lang.t(T::Any)) }
                                @for s in [Status::Noncompliant, Status::Compliant, Status::Waived, Status::Stale, Status::Unknown] {
                                    option value=(s.as_str()) selected[q.status == s.as_str()] { (lang.status(s)) }
                                }
                            }
                        }
                        label { (lang.t(T::Product)) " " input name="product" value=(q.product) size="14"; }
                        label { (lang.t(T::Platform)) " "
                            select name="platform" {
                                option value="" selected[q.platform.is_empty()] { (lang.t(T::Any)) }
                                @for p in [Platform::Linux, Platform::Windows, Platform::Macos] {
                                    option value=(p.as_str()) selected[q.platform == p.as_str()] { (p.as_str()) }
                                }
                            }
                        }
                        button type="submit" { (lang.t(T::Filter)) }
                    }
                    p.exports {
                        a #export-csv href=(format!("/org/{org}/export.csv?{export}")) download { (lang.t(T::ExportCsv)) }
                        " · "
                        a #export-json href=(format!("/org/{org}/export.json?{export}")) download { (lang.t(T::ExportJson)) }
                    }
                    @if page_.devices.is_empty() {
                        p { (lang.t(T::NoDevices)) }
                    } @else {
                        div.scroll {
                            table #devices {
                                thead { tr {
                                    th scope="col" { (lang.t(T::Hostname)) }
                                    th scope="col" { (lang.t(T::Status)) }
                                    th scope="col" { (lang.t(T::Products)) }
                                    th scope="col" { (lang.t(T::Platform)) }
                                    th scope="col" { (lang.t(T::LastReport)) }
                                } }
                                tbody {
                                    @for d in &page_.devices {
                                        tr data-device=(d.device_id) {
                                            td { a href=(format!("/device/{}", d.device_id)) { (if d.hostname.is_empty() { &d.device_id } else { &d.hostname }) } }
                                            td.st { (page::status(lang, d.verdict.status)) @if d.revoked { " " span.status.revoked { (lang.t(T::Revoked)) } } }
                                            td { (d.verdict.products().join(", ")) }
                                            td { (d.platform.map_or("", |p| p.as_str())) }
                                            td { (last_report(lang, d)) }
                                        }
                                    }
                                }
                            }
                        }
                        @if let Some(next) = &page_.next {
                            p { a #next rel="next" href=(format!("/org/{org}?{}", keep(next))) { (lang.t(T::Next)) } }
                        }
                    }
                }
            }
        },
    )
}

async fn export(web: Web, ctx: Ctx, org: String, q: OrgQuery, csv: bool) -> Response {
    let filter = match filter_of(&org, &q) {
        Ok(f) => f,
        Err(e) => return page::error(ctx.lang, e),
    };
    let who = ctx.signed.who.clone();
    let mut pages = match web.blocking(move |c| c.export_devices(&who, &filter)).await {
        Ok(e) => e,
        Err(e) => return page::error(ctx.lang, e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    tokio::spawn(async move {
        if csv
            && tx
                .send(Ok(crate::grpc::query::CSV_HEADER.to_owned()))
                .await
                .is_err()
        {
            return;
        }
        loop {
            // The store is synchronous: each page is read on the blocking pool.
            let pulled = tokio::task::spawn_blocking(move || {
                let page = pages.next();
                (page, pages)
            })
            .await;
            let (page, rest) = match pulled {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            pages = rest;
            let chunk = match page {
                None => return,
                Some(Ok(devices)) => devices
                    .iter()
                    .map(|d| {
                        if csv {
                            crate::grpc::query::csv_line(d)
                        } else {
                            crate::grpc::query::json_line(d)
                        }
                    })
                    .collect::<String>(),
                Some(Err(e)) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let (ctype, name) = if csv {
        ("text/csv; charset=utf-8", "devices.csv")
    } else {
        ("application/x-ndjson", "devices.jsonl")
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{org}-{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn export_csv(
    State(web): State<Web>,
    ctx: Ctx,
    Path(org): Path<String>,
    Query(q): Query<OrgQuery>,
) -> Response {
    export(web, ctx, org, q, true).await
}

pub async fn export_json(
    State(web): State<Web>,
    ctx: Ctx,
    Path(org): Path<String>,
    Query(q): Query<OrgQuery>,
) -> Response {
    export(web, ctx, org, q, false).await
}

fn history_text(lang: Lang, k: &HistoryKind) -> maud::Markup {
    match k {
        HistoryKind::Enrolled => html! { (lang.t(T::Enrolled)) },
        HistoryKind::ProductSeen { product } => html! { "+ " (product) },
        HistoryKind::ProductRemoved { product } => html! { "− " (product) },
        HistoryKind::StatusChanged { from, to } => {
            html! { (page::status(lang, *from)) " → " (page::status(lang, *to)) }
        }
        HistoryKind::Revoked => html! { (lang.t(T::Revoked)) },
    }
}

pub async fn device(State(web): State<Web>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let who = ctx.signed.who.clone();
    let detail = match web
        .blocking(move |c| c.device_detail(&who, &id, Default::default()))
        .await
    {
        Ok(d) => d,
        Err(e) => return page::error(ctx.lang, e),
    };
    let lang = ctx.lang;
    let d = &detail.device;
    let rules = web.collector.rules();
    let name = |p: &str| {
        rules
            .catalog
            .product(p)
            .map_or_else(|| p.to_owned(), |x| x.name.clone())
    };
    let title = format!(
        "{}: {}",
        lang.t(T::Device),
        if d.hostname.is_empty() {
            &d.device_id
        } else {
            &d.hostname
        }
    );
    page::frame(
        &ctx,
        &title,
        page::Nav::Fleet,
        html! {
            section.summary #device data-device=(d.device_id) {
                p.big.st { (page::status(lang, d.verdict.status)) }
                @if let Some(why) = &d.duplicate { p.error { (lang.t(T::Duplicate)) ": " (why) } }
                dl.facts {
                    div { dt { "ID" } dd { code { (d.device_id) } } }
                    div { dt { (lang.t(T::Organisation)) } dd { a href=(format!("/org/{}", d.organisation)) { (d.organisation) } } }
                    div { dt { (lang.t(T::Platform)) } dd {
                        (d.platform.map_or("", |p| p.as_str()))
                        @if !d.os_version.is_empty() { " · " (d.os_version) }
                    } }
                    div { dt { (lang.t(T::Agent)) } dd { (d.agent_version) } }
                    div { dt { (lang.t(T::Enrolled)) } dd { (lang.datetime(d.enrolled_at)) } }
                    div { dt { (lang.t(T::LastReport)) } dd { (last_report(lang, d)) } }
                    div { dt { (lang.t(T::Policy)) } dd { (d.policy) } }
                    div { dt { (lang.t(T::Certificate)) } dd {
                        @match d.certificate_expires {
                            Some(t) => { (lang.t(T::Expires)) " " (lang.datetime(t)) }
                            None => { "—" }
                        }
                    } }
                }
            }
            section #reasons {
                h2 { (lang.t(T::Reasons)) }
                ul { @for r in &d.verdict.reasons { li { (r.text) } } }
            }
            section #findings {
                h2 { (lang.t(T::Findings)) }
                @if d.findings.is_empty() { p { "—" } }
                @for f in &d.findings {
                    article.finding data-product=(f.product) {
                        h3 { (name(&f.product)) " " span.id { "(" (f.product) ")" } }
                        p {
                            @if f.installed { span.tag { (lang.t(T::Installed)) } " " }
                            @if f.running { span.tag { (lang.t(T::Running)) } " " }
                            @if let Some(v) = &f.version { (lang.t(T::Version)) " " (v) }
                        }
                        h4 { (lang.t(T::Evidence)) }
                        ul.evidence { @for e in &f.evidence { li { code { (e.source) } " " (e.detail) } } }
                    }
                }
            }
            section #waivers {
                h2 { (lang.t(T::Waivers)) }
                @if detail.waivers.is_empty() { p { (lang.t(T::NoWaivers)) } }
                ul { @for w in &detail.waivers { li { (w.product) ": " (w.reason) " (" (w.approver) ", " (lang.t(T::Expires)) " " (lang.datetime(w.expires)) ")" } } }
            }
            section #sources {
                h2 { (lang.t(T::Sources)) }
                table {
                    thead { tr { th scope="col" { (lang.t(T::Source)) } th scope="col" { (lang.t(T::Outcome)) } } }
                    tbody { @for (s, o) in &d.stats.sources { tr { td { (s) } td { (o.to_string()) } } } }
                }
            }
            section #history {
                h2 { (lang.t(T::History)) }
                ol.timeline {
                    @for h in detail.history.iter().rev() {
                        li { time { (lang.datetime(h.at)) } " " (history_text(lang, &h.kind)) }
                    }
                }
            }
        },
    )
}
