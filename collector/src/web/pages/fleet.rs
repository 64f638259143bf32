//! Fleet (organisations with their compliance, counts by status and the fleet's trend),
//! products across organisations, and the ministry's view of enterprises with freshness.

use super::super::Web;
use super::super::chart;
use super::super::i18n::T;
use super::{Ctx, page};
use crate::queries::FleetSummary;
use crate::store::OrgAggregate;
use axum::extract::{Query, State};
use axum::response::Response;
use commscan_core::verdict::Status;
use maud::html;
use std::collections::BTreeMap;

#[derive(serde::Deserialize, Default)]
pub struct DaysQuery {
    #[serde(default)]
    days: Option<usize>,
}

/// 30 or 90 days (anything else is 30).
fn days_of(q: &DaysQuery) -> usize {
    if q.days == Some(90) { 90 } else { 30 }
}

/// Sums the daily points of several organisations into one trend: % compliant per day.
fn fleet_trend(per_org: Vec<Vec<(String, OrgAggregate)>>) -> Vec<(String, f64)> {
    let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for points in per_org {
        for (day, a) in points {
            let ok = a.by_status.get(&Status::Compliant).copied().unwrap_or(0)
                + a.by_status.get(&Status::Waived).copied().unwrap_or(0);
            let e = days.entry(day).or_default();
            e.0 += ok;
            e.1 += a.devices;
        }
    }
    days.into_iter()
        .map(|(d, (ok, n))| {
            (
                d,
                if n == 0 {
                    0.0
                } else {
                    100.0 * ok as f64 / n as f64
                },
            )
        })
        .collect()
}

/// The days links (30 / 90) of a page at `path`.
pub(super) fn days_links(ctx: &Ctx, path: &str, days: usize) -> maud::Markup {
    let lang = ctx.lang;
    html! {
        p.days {
            @for (d, label) in [(30, T::Days30), (90, T::Days90)] {
                @if d == days { strong { (lang.t(label)) } } @else { a href=(format!("{path}?days={d}")) { (lang.t(label)) } }
                " "
            }
        }
    }
}

pub async fn fleet(State(web): State<Web>, ctx: Ctx, Query(q): Query<DaysQuery>) -> Response {
    let days = days_of(&q);
    let who = ctx.signed.who.clone();
    let got = web
        .blocking(move |c| {
            let summary = c.fleet_summary(&who)?;
            let mut per_org = Vec::new();
            for r in summary.rows.iter().filter(|r| r.enterprise.is_empty()) {
                per_org.push(c.organisation_trend(&who, &r.organisation, days)?);
            }
            Ok((summary, fleet_trend(per_org)))
        })
        .await;
    let (summary, trend): (FleetSummary, _) = match got {
        Ok(v) => v,
        Err(e) => return page::error(ctx.lang, e),
    };
    let lang = ctx.lang;
    page::frame(
        &ctx,
        lang.t(T::Fleet),
        page::Nav::Fleet,
        html! {
            section.summary {
                @if summary.total_devices == 0 {
                    p { (lang.t(T::NoDevicesYet)) }
                } @else {
                    p.big { (lang.percent(summary.percent_compliant)) " " (lang.t(T::CompliantShare)) }
                    p { (lang.int(summary.total_devices)) " " (lang.t(T::DeviceCount)) }
                }
                (page::status_counts(lang, &summary.total_by_status))
            }
            section {
                h2 { (lang.t(T::Trend)) }
                (days_links(&ctx, "/fleet", days))
                @if trend.is_empty() { p { (lang.t(T::NoTrend)) } } @else { (chart::trend(&trend, lang.t(T::Trend), lang)) }
            }
            section {
                h2 { (lang.t(T::Organisations)) }
                div.scroll {
                    table #fleet {
                        thead { tr {
                            th scope="col" { (lang.t(T::Enterprise)) }
                            th scope="col" { (lang.t(T::Organisation)) }
                            th scope="col" .num { (lang.t(T::Devices)) }
                            th scope="col" .num { (lang.t(T::PercentCompliant)) }
                            @for s in [Status::Compliant, Status::Waived, Status::Noncompliant, Status::Stale, Status::Unknown] {
                                th scope="col" .num { (lang.status(s)) }
                            }
                            th scope="col" { (lang.t(T::Updated)) }
                        } }
                        tbody {
                            @for r in &summary.rows {
                                tr data-org=(r.organisation) {
                                    td { (r.enterprise) }
                                    td {
                                        @if r.enterprise.is_empty() {
                                            a.org href=(format!("/org/{}", r.organisation)) { (r.organisation) }
                                        } @else { (r.organisation) }
                                    }
                                    td.num { (lang.int(r.aggregate.devices)) }
                                    td.num { (lang.percent(r.percent_compliant())) }
                                    @for s in [Status::Compliant, Status::Waived, Status::Noncompliant, Status::Stale, Status::Unknown] {
                                        td.num {
                                            @if r.stale {
                                                @if s == Status::Stale { (lang.int(r.aggregate.devices)) } @else { "0" }
                                            } @else {
                                                (lang.int(r.aggregate.by_status.get(&s).copied().unwrap_or(0)))
                                            }
                                        }
                                    }
                                    td {
                                        @match r.updated_at {
                                            Some(t) => { (lang.datetime(t)) @if r.stale { " " (page::status(lang, Status::Stale)) } }
                                            None => { "—" }
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

pub async fn products(State(web): State<Web>, ctx: Ctx) -> Response {
    let who = ctx.signed.who.clone();
    let rows = match web.blocking(move |c| c.product_findings(&who, None)).await {
        Ok(r) => r,
        Err(e) => return page::error(ctx.lang, e),
    };
    let rules = web.collector.rules();
    let lang = ctx.lang;
    page::frame(
        &ctx,
        lang.t(T::Products),
        page::Nav::Products,
        html! {
            div.scroll {
                table #products {
                    thead { tr {
                        th scope="col" { (lang.t(T::Product)) }
                        th scope="col" .num { (lang.t(T::Devices)) }
                        th scope="col" .num { (lang.t(T::Violating)) }
                    } }
                    tbody {
                        @for (id, counts) in &rows {
                            tr {
                                td {
                                    (rules.catalog.product(id).map_or(id.as_str(), |p| p.name.as_str()))
                                    " " span.id { "(" (id) ")" }
                                }
                                td.num { (lang.int(counts.devices)) }
                                td.num { (lang.int(counts.violating)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// An enterprise's organisations, devices, last update and whether it is stale.
type EnterpriseLine<'a> = (Vec<&'a str>, u64, Option<time::OffsetDateTime>, bool);

pub async fn enterprises(State(web): State<Web>, ctx: Ctx) -> Response {
    let who = ctx.signed.who.clone();
    let summary = match web.blocking(move |c| c.fleet_summary(&who)).await {
        Ok(s) => s,
        Err(e) => return page::error(ctx.lang, e),
    };
    // One line per enterprise: its organisations, devices, last update, staleness.
    let mut by_enterprise: BTreeMap<&str, EnterpriseLine> = BTreeMap::new();
    for r in summary.rows.iter().filter(|r| !r.enterprise.is_empty()) {
        let e = by_enterprise.entry(&r.enterprise).or_default();
        e.0.push(&r.organisation);
        e.1 += r.aggregate.devices;
        e.2 = e.2.max(r.updated_at);
        e.3 |= r.stale;
    }
    let lang = ctx.lang;
    page::frame(
        &ctx,
        lang.t(T::Enterprises),
        page::Nav::Enterprises,
        html! {
            @if by_enterprise.is_empty() {
                p { (lang.t(T::NoEnterprises)) }
            } @else {
                div.scroll {
                    table #enterprises {
                        thead { tr {
                            th scope="col" { (lang.t(T::Enterprise)) }
                            th scope="col" { (lang.t(T::Organisations)) }
                            th scope="col" .num { (lang.t(T::Devices)) }
                            th scope="col" { (lang.t(T::Updated)) }
                            th scope="col" { (lang.t(T::Freshness)) }
                        } }
                        tbody {
                            @for (e, (orgs, devices, updated, stale)) in &by_enterprise {
                                tr {
                                    td { (e) }
                                    td { (orgs.join(", ")) }
                                    td.num { (lang.int(*devices)) }
                                    td { @match updated { Some(t) => (lang.datetime(*t)), None => "—" } }
                                    td { @if *stale { (page::status(lang, Status::Stale)) } @else { span.status.compliant { (lang.t(T::Fresh)) } } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
