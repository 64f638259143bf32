//! The collector as a long-running service: the periodic and signal-driven work that `serve`
//! runs beside the gRPC server.
//!
//! - Every [`SWEEP_INTERVAL`], devices past their reporting window are marked stale
//!   ([`Collector::sweep_stale`]), so a device that went silent stops counting as compliant
//!   without any report arriving.
//! - On SIGHUP (Unix), every rules file is reloaded; an invalid one is refused and the previous
//!   rules stay in force ([`Collector::reload`]).
//! - On a store shared with other collectors, their notifications are followed
//!   ([`crate::cluster::follow`]): rules stored by any of them, their verdict changes.
//!
//! - Every [`AUDIT_TICK`], the audit log's refusal window is closed if it has ended (its counts
//!   written), and every [`AUDIT_SWEEP_INTERVAL`] (and at start) old entries are removed by
//!   retention ([`Collector::sweep_audit`], [`crate::audit`]).
//!
//! All run on the blocking pool (sled is synchronous) and stop when `shutdown` fires.
//! [`watch_store_health`], started by the server, turns the store's health into the gRPC
//! health service's: NOT_SERVING while the store cannot write, driving its recovery.

use crate::collector::Collector;
use crate::compliance::RulesConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the staleness sweep runs.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How often the audit refusal window is checked for its end.
pub(crate) const AUDIT_TICK: Duration = Duration::from_secs(5);
/// How often audit retention runs.
pub(crate) const AUDIT_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the store's health is checked (and a failed store's recovery attempted).
pub(crate) const STORE_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the health service's `services` (and the overall "" service) NOT_SERVING while the
/// store cannot write, and SERVING again once it recovered ([`crate::store::Durable::check_health`]
/// reopens a failed store). Runs until `shutdown`.
pub(crate) async fn watch_store_health(
    reporter: tonic_health::server::HealthReporter,
    collector: Arc<Collector>,
    services: Vec<&'static str>,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(STORE_HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = collector.clone();
        let healthy = tokio::task::spawn_blocking(move || c.store().check_health())
            .await
            .unwrap_or(false);
        if healthy == serving {
            continue;
        }
        serving = healthy;
        let status = if healthy {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        tracing::warn!(?status, "store health changed");
        reporter.set_service_status("", status).await;
        for name in &services {
            reporter.set_service_status(*name, status).await;
        }
    }
}

/// Runs `each` at once and then every `period` (a late tick is delayed, not bunched) until
/// `shutdown`; a run in progress finishes first.
pub(crate) async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut each: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        each().await;
    }
}

/// Starts the background work; the returned tracker completes once it has stopped.
pub fn spawn(
    collector: Arc<Collector>,
    rules: RulesConfig,
    shutdown: CancellationToken,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    tasks.spawn(crate::cluster::follow(collector.clone(), shutdown.clone()));
    {
        let collector = collector.clone();
        tasks.spawn(every(SWEEP_INTERVAL, shutdown.clone(), move || {
            let c = collector.clone();
            async move {
                // One collector at a time sweeps a shared store; the others skip this tick.
                let sweep = move || match c.store().try_exclusive("staleness sweep")? {
                    Some(_held) => c.sweep_stale(),
                    None => Ok(0),
                };
                match tokio::task::spawn_blocking(sweep).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(devices = n, "devices turned stale"),
                    Ok(Err(e)) => tracing::error!(error = %e, "staleness sweep failed"),
                    Err(e) => tracing::error!(error = %e, "staleness sweep task failed"),
                }
            }
        }));
    }
    {
        let collector = collector.clone();
        let mut last_sweep: Option<std::time::Instant> = None;
        tasks.spawn(every(AUDIT_TICK, shutdown.clone(), move || {
            let sweep = last_sweep.is_none_or(|t| t.elapsed() >= AUDIT_SWEEP_INTERVAL);
            if sweep {
                last_sweep = Some(std::time::Instant::now());
            }
            let c = collector.clone();
            async move {
                let done = tokio::task::spawn_blocking(move || {
                    c.close_audit_window();
                    if sweep && let Err(e) = c.prune_sessions() {
                        tracing::warn!(error = %e, "console session pruning failed");
                    }
                    // Retention runs on one collector at a time on a shared store.
                    let held = match c.store().try_exclusive("audit retention") {
                        Ok(held) => held,
                        Err(e) => return Some(Err(e.into())),
                    };
                    (sweep && held.is_some())
                        .then(|| c.sweep_audit(&crate::audit::AuditRetention::default()))
                })
                .await;
                match done {
                    Ok(Some(Ok(n))) if n > 0 => {
                        tracing::info!(entries = n, "audit retention removed entries")
                    }
                    Ok(Some(Err(e))) => tracing::error!(error = %e, "audit retention failed"),
                    Err(e) => tracing::error!(error = %e, "audit task failed"),
                    _ => {}
                }
            }
        }));
    }
    #[cfg(unix)]
    tasks.spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; policy reloads need a restart");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                s = hup.recv() => if s.is_none() { return },
            }
            let (c, r) = (collector.clone(), rules.clone());
            match tokio::task::spawn_blocking(move || c.reload(&r)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: rules reload failed"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = rules;
    tasks.close();
    tasks
}
