//! The collector as a long-running service: the periodic and signal-driven work that `serve`
//! runs beside the gRPC server.
//!
//! - Every [`SWEEP_INTERVAL`], devices past their reporting window are marked stale
//!   ([`Collector::sweep_stale`]), so a device that went silent stops counting as compliant
//!   without any report arriving.
//! - On SIGHUP (Unix), every rules file is reloaded; an invalid one is refused and the previous
//!   rules stay in force ([`Collector::reload`]).
//!
//! Both run on the blocking pool (sled is synchronous) and stop when `shutdown` fires.

use crate::collector::Collector;
use crate::compliance::RulesConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the staleness sweep runs.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Starts the background work; the returned tracker completes once it has stopped.
pub fn spawn(
    collector: Arc<Collector>,
    rules: RulesConfig,
    shutdown: CancellationToken,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    {
        let (collector, shutdown) = (collector.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let c = collector.clone();
                match tokio::task::spawn_blocking(move || c.sweep_stale()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(devices = n, "devices turned stale"),
                    Ok(Err(e)) => tracing::error!(error = %e, "staleness sweep failed"),
                    Err(e) => tracing::error!(error = %e, "staleness sweep task failed"),
                }
            }
        });
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
