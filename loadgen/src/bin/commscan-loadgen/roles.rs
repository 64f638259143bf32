//! What the coordinator's children run: a server (the collector, or the bare echo) and a
//! share of the simulated agents. Each reads commands from stdin and writes events to stdout
//! (see `child.rs`); stdin closing means stop.

use crate::child::{Command, Event, emit};
use anyhow::Context;
use commscan_collector::compliance::RulesConfig;
use commscan_collector::layout::{Layout, OpenSettings};
use commscan_collector::limits::{Limiters, RateLimiter};
use commscan_collector::server::Limits;
use commscan_collector::store::pg_store::PgConfig;
use commscan_loadgen::agent::Target;
use commscan_loadgen::fleet::Fleet;
use commscan_loadgen::pool::{Phase, Pool};
use commscan_loadgen::{echo, unix_nanos};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// The two policies a collector alternates between on `reload`.
const POLICIES: [&str; 2] = [
    include_str!("../../../../policies/ministry-letter.toml"),
    include_str!("../../../../policies/government-device-ban.toml"),
];

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    /// The collector, as `commscan-collector serve` runs it.
    Collector,
    /// The bare echo baseline.
    Echo,
}

async fn commands(mut on: impl AsyncFnMut(Command) -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let cmd: Command =
            serde_json::from_str(&line).with_context(|| format!("command {line:?}"))?;
        if !on(cmd).await? {
            break;
        }
    }
    Ok(())
}

fn limits_note() {
    match commscan_collector::open_files::raise_to_hard_limit() {
        Ok(l) => tracing::debug!(soft = ?l.soft, hard = ?l.hard, "open files"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// Serves `data` on `listen` until told to quit. With `unlimited_reports`, the per-device
/// report limit is lifted (capacity runs send back to back from each agent). With `postgres`,
/// the collector keeps its store there instead of in `data` (whose PKI it still uses), as
/// `commscan-collector serve --store` does.
pub async fn serve(
    kind: ServerKind,
    data: &Path,
    listen: SocketAddr,
    unlimited_reports: bool,
    postgres: Option<PgConfig>,
    started: Instant,
) -> anyhow::Result<()> {
    limits_note();
    let layout = Layout::new(data);
    let stop = CancellationToken::new();
    let mut collector = None;
    let policy_files: Vec<PathBuf> = (0..2)
        .map(|i| data.join(format!("../policy-{i}.toml")))
        .collect();
    let (task, addr) = match kind {
        ServerKind::Collector => {
            for (file, text) in policy_files.iter().zip(POLICIES) {
                std::fs::write(file, text)?;
            }
            let settings = OpenSettings {
                postgres,
                ..OpenSettings::default()
            };
            let rules = RulesConfig::with_policy(Some(&policy_files[0]));
            let (mut c, tls) = tokio::task::block_in_place(|| layout.open_with(&rules, &settings))?;
            if unlimited_reports {
                Arc::get_mut(&mut c)
                    .context("collector shared before serving")?
                    .set_limiters(Limiters {
                        reports: RateLimiter::per_minute(1e12, 1e12),
                        ..Limiters::default()
                    });
            }
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            // As `commscan-collector serve` does once listening.
            let _rejudge =
                commscan_collector::rejudge::spawn_rejudge_at_start(c.clone(), stop.clone());
            collector = Some(c.clone());
            let stop = stop.clone();
            let task = tokio::spawn(async move {
                commscan_collector::server::serve(c, tls, listener, Limits::default(), stop)
                    .await
                    .map_err(anyhow::Error::from)
            });
            (task, addr)
        }
        ServerKind::Echo => {
            let tls = commscan_collector::tls::server_config(
                &layout.path("pki/ca.crt"),
                &layout.path("pki/server.crt"),
                &layout.path("pki/server.key"),
            )?;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            let stop = stop.clone();
            let task = tokio::spawn(async move {
                echo::serve(tls, listener, Limits::default(), stop)
                    .await
                    .map_err(anyhow::Error::from)
            });
            (task, addr)
        }
    };
    emit(&Event::Ready {
        addr: Some(addr.to_string()),
        startup_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
    });
    let mut next_policy = 1;
    commands(async |cmd| {
        match cmd {
            Command::PublishCatalog => {
                let c = collector.clone().context("catalog: not a collector")?;
                let key = commscan_core::signed_catalog::CatalogSigningKey::generate()?.0;
                let signed = commscan_core::signed_catalog::SignedCatalog::sign(
                    commscan_core::catalog::EMBEDDED_CATALOG,
                    commscan_core::signed_catalog::EMBEDDED_CATALOG_RELEASE + 1,
                    &[&key],
                )?;
                let file = data.join("../catalog.signed");
                std::fs::write(&file, signed)?;
                // The policy in force stays; only the catalog changes.
                let mut rules = RulesConfig::with_policy(Some(&policy_files[1 - next_policy]));
                rules.catalog = Some(file);
                let started_ns = unix_nanos();
                let r = tokio::task::spawn_blocking(move || c.reload(&rules)).await??;
                emit(&Event::Reloaded {
                    started_ns,
                    finished_ns: unix_nanos(),
                    devices: r.devices,
                    changed: r.changed,
                });
            }
            Command::Reload => {
                let c = collector.clone().context("reload: not a collector")?;
                let rules = RulesConfig::with_policy(Some(&policy_files[next_policy]));
                next_policy = 1 - next_policy;
                let started_ns = unix_nanos();
                let r = tokio::task::spawn_blocking(move || c.reload(&rules)).await??;
                emit(&Event::Reloaded {
                    started_ns,
                    finished_ns: unix_nanos(),
                    devices: r.devices,
                    changed: r.changed,
                });
            }
            Command::Stats => emit(&Event::Connected {
                devices: collector
                    .as_ref()
                    .map_or(0, |c| c.connections().connected()),
            }),
            Command::Quit => return Ok(false),
            other => anyhow::bail!("a server does not take {other:?}"),
        }
        Ok(true)
    })
    .await?;
    stop.cancel();
    // Reporting streams do not end on their own; do not wait for them long.
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    Ok(())
}

/// Runs devices `from..from + count` of the fleet in `cache` against `target` until told to quit.
pub async fn agents(
    cache: &Path,
    from: usize,
    count: usize,
    target: SocketAddr,
    sources: Vec<IpAddr>,
    ramp_per_second: f64,
) -> anyhow::Result<()> {
    limits_note();
    let fleet = Fleet::open(cache, from, count)?;
    let target = Target {
        addr: target,
        ca_pem: fleet.ca_pem.clone(),
    };
    let pool = Pool::start(target, fleet.devices, from, &sources, ramp_per_second);
    emit(&Event::Ready {
        addr: None,
        startup_ms: None,
    });
    commands(async |cmd| {
        match cmd {
            Command::Load { interval_ms, secs } => {
                pool.reset();
                let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
                pool.set_phase(match interval_ms {
                    None => Phase::Closed { until },
                    Some(ms) => Phase::Open {
                        interval: Duration::from_secs_f64(ms / 1000.0),
                        until,
                    },
                });
                tokio::time::sleep_until(until).await;
                // Read at the deadline: reports in flight now are in neither this phase's
                // count nor its latencies.
                let s = pool.snapshot();
                pool.set_phase(Phase::Idle);
                emit(&Event::Stats(s));
            }
            Command::Reset => pool.reset(),
            Command::Stats => emit(&Event::Stats(pool.snapshot())),
            Command::Quit => return Ok(false),
            Command::Reload | Command::PublishCatalog => {
                anyhow::bail!("agents do not take reload")
            }
        }
        Ok(true)
    })
    .await?;
    pool.stop(Duration::from_secs(5)).await;
    Ok(())
}
