//! Prometheus metrics: what an operator graphs and alerts on, served on `--metrics-listen`
//! (loopback by default, plain HTTP, `GET /metrics`) in Prometheus's classic text format
//! (0.0.4), which every scraper and `promtool` reads: the client library writes OpenMetrics,
//! whose counters are described under their name without `_total`; [`classic`] renames those
//! descriptions and drops the `# EOF` marker.
//!
//! Counted as things happen: reports applied and acknowledged, the time from a report's
//! arrival to its acknowledgement and the store flush within it (histograms), enrolments,
//! refusals by audit action, gRPC queries and admin calls by method and code. Read at scrape
//! time: connected agents, the store's size on disk, and per-organisation devices by status.
//! Labels are bounded: methods are the services' own, codes gRPC's, actions the audit log's,
//! organisations the deployment's (never devices, hosts or people).
//!
//! Alerts ([`crate::alerts`]): delivered, failed attempts, retries and dropped alerts by sink
//! kind (and reason), the outbox depth by sink (sinks are the configuration's, a handful).
//!
//! One registry per collector (tests run several in one process).

use crate::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkKindLabels {
    sink_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    sink_kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabels {
    organisation: String,
    status: String,
}

/// Latency buckets, seconds: 1 ms to 10 s.
fn buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// A collector's metrics.
pub struct Metrics {
    registry: Registry,
    reports: Counter,
    report_seconds: Histogram,
    flush_seconds: Histogram,
    enrolments: Counter,
    refusals: Family<ActionLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    connected: Gauge,
    store_bytes: Gauge,
    org_devices: Family<OrgLabels, Gauge>,
    alerts_delivered: Family<SinkKindLabels, Counter>,
    alerts_failed: Family<SinkKindLabels, Counter>,
    alerts_retried: Family<SinkKindLabels, Counter>,
    alerts_dropped: Family<DropLabels, Counter>,
    alert_outbox: Family<SinkLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("commscan");
        let m = Metrics {
            reports: Counter::default(),
            report_seconds: Histogram::new(buckets()),
            flush_seconds: Histogram::new(buckets()),
            enrolments: Counter::default(),
            refusals: Family::default(),
            calls: Family::default(),
            connected: Gauge::default(),
            store_bytes: Gauge::default(),
            org_devices: Family::default(),
            alerts_delivered: Family::default(),
            alerts_failed: Family::default(),
            alerts_retried: Family::default(),
            alerts_dropped: Family::default(),
            alert_outbox: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reports_acknowledged",
            "Reports applied, flushed and acknowledged",
            m.reports.clone(),
        );
        registry.register(
            "report_duration_seconds",
            "From a report's arrival to its acknowledgement",
            m.report_seconds.clone(),
        );
        registry.register(
            "store_flush_duration_seconds",
            "Store flushes before acknowledgements",
            m.flush_seconds.clone(),
        );
        registry.register("enrolments", "Devices enrolled", m.enrolments.clone());
        registry.register(
            "refusals",
            "Requests refused, by audit action",
            m.refusals.clone(),
        );
        registry.register(
            "calls",
            "Query and Admin calls by method and gRPC code",
            m.calls.clone(),
        );
        registry.register(
            "connected_agents",
            "Agents with an open reporting stream to this collector",
            m.connected.clone(),
        );
        registry.register(
            "store_size_bytes",
            "The store's size on disk (the database's, for PostgreSQL)",
            m.store_bytes.clone(),
        );
        registry.register(
            "organisation_devices",
            "Devices per organisation and status",
            m.org_devices.clone(),
        );
        registry.register(
            "alerts_delivered",
            "Alerts a sink took, by sink kind",
            m.alerts_delivered.clone(),
        );
        registry.register(
            "alerts_failed",
            "Failed alert delivery attempts, by sink kind",
            m.alerts_failed.clone(),
        );
        registry.register(
            "alerts_retried",
            "Alert deliveries attempted again after a failure, by sink kind",
            m.alerts_retried.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Alerts given up, by sink kind and reason (outbox_full, too_old)",
            m.alerts_dropped.clone(),
        );
        registry.register(
            "alert_outbox_depth",
            "Alerts waiting in a sink's outbox",
            m.alert_outbox.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// A report acknowledged `took` after it arrived.
    pub(crate) fn report_acknowledged(&self, took: Duration) {
        self.reports.inc();
        self.report_seconds.observe(took.as_secs_f64());
    }

    /// A store flush before an acknowledgement.
    pub(crate) fn flushed(&self, took: Duration) {
        self.flush_seconds.observe(took.as_secs_f64());
    }

    /// A device enrolled.
    pub(crate) fn enrolled(&self) {
        self.enrolments.inc();
    }

    /// A request refused under audit `action`.
    pub(crate) fn refused(&self, action: &str) {
        self.refusals
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }

    /// A Query or Admin call to `method` (`/commscan.v1.Query/ListDevices`) answered `code`.
    pub(crate) fn call(&self, method: &str, code: &str) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.rsplit('/').next().unwrap_or(method).to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }
}

/// Alerts.
impl Metrics {
    fn kind(kind: &str) -> SinkKindLabels {
        SinkKindLabels {
            sink_kind: kind.to_owned(),
        }
    }

    /// An alert delivered to a sink of `kind`.
    pub(crate) fn alert_delivered(&self, kind: &str) {
        self.alerts_delivered.get_or_create(&Self::kind(kind)).inc();
    }

    /// An attempt to a sink of `kind` failed.
    pub(crate) fn alert_failed(&self, kind: &str) {
        self.alerts_failed.get_or_create(&Self::kind(kind)).inc();
    }

    /// An alert is tried again.
    pub(crate) fn alert_retried(&self, kind: &str) {
        self.alerts_retried.get_or_create(&Self::kind(kind)).inc();
    }

    /// An alert was given up for `reason`.
    pub(crate) fn alert_dropped(&self, kind: &str, reason: &str) {
        self.alerts_dropped
            .get_or_create(&DropLabels {
                sink_kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// `sink`'s outbox holds `depth` alerts.
    pub(crate) fn set_alert_depth(&self, sink: &str, depth: u64) {
        self.alert_outbox
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

impl Collector {
    /// The metrics in the text exposition format, with the scrape-time figures read now.
    pub fn render_metrics(&self) -> String {
        let m = self.metrics();
        m.connected
            .set(i64::try_from(self.connections().connected_devices().len()).unwrap_or(i64::MAX));
        if let Some(bytes) = self.store().size_bytes() {
            m.store_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        m.org_devices.clear();
        match self.store().org_aggregates() {
            Ok(orgs) => {
                for (org, agg) in orgs {
                    for (status, n) in agg.by_status {
                        m.org_devices
                            .get_or_create(&OrgLabels {
                                organisation: org.clone(),
                                status: status.as_str().to_owned(),
                            })
                            .set(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: organisation counts unavailable"),
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        classic(&out)
    }
}

/// OpenMetrics text as Prometheus's classic text format: a counter family's `# HELP` and
/// `# TYPE` name its `_total` samples, and there is no `# EOF`.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Serves `GET /metrics` on `listener` (plain HTTP: keep it on loopback or a management
/// network) until `shutdown`. At most 16 connections, 10 s each.
pub async fn serve(
    collector: Arc<Collector>,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let c = collector.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || c.render_metrics())
                    .await
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_described_under_their_sample_names() {
        let om = "# HELP c_x Things.\n# TYPE c_x counter\nc_x_total 3\n# HELP g Now.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            super::classic(om),
            "# HELP c_x_total Things.\n# TYPE c_x_total counter\nc_x_total 3\n# HELP g Now.\n# TYPE g gauge\ng 1\n"
        );
    }
}
