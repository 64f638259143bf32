//! Many simulated agents in one process, the load phase they follow, and what they count.
//!
//! A phase is broadcast on a `watch`: [`Phase::Idle`] (hold the stream, keepalives only),
//! [`Phase::Closed`] (each agent sends its next delta as soon as the previous one is
//! acknowledged: the collector's capacity at this concurrency) or [`Phase::Open`] (each agent
//! sends one delta per interval, starting at a random offset: an offered rate). Load phases end
//! by themselves at their deadline. Counters are shared atomics; [`Pool::snapshot`] reads them.

use crate::LoadgenError;
use crate::agent::{Agent, Target};
use crate::fleet::SimDevice;
use crate::histogram::Histogram;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the agents do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Hold the stream; no reports after the session's snapshot.
    Idle,
    /// Report back to back until `until`.
    Closed {
        /// End of the phase.
        until: Instant,
    },
    /// One report per `interval` per agent until `until`.
    Open {
        /// Time between an agent's reports.
        interval: Duration,
        /// End of the phase.
        until: Instant,
    },
}

impl Phase {
    /// Whether a closed-loop phase is running now.
    pub fn closed_loop_open(&self) -> bool {
        matches!(self, Phase::Closed { until } if Instant::now() < *until)
    }

    /// Whether an open-loop phase is running now.
    pub fn open_loop_open(&self) -> bool {
        matches!(self, Phase::Open { until, .. } if Instant::now() < *until)
    }

    /// The agent's timer for an open-loop phase: a random first tick, then every interval.
    pub fn ticker(&self, index: usize) -> Option<tokio::time::Interval> {
        let Phase::Open { interval, .. } = *self else {
            return None;
        };
        // A deterministic spread of first ticks over the interval (golden-ratio sequence).
        let offset = interval.mul_f64((index as f64 * 0.618_033_988_75).fract());
        let mut t = tokio::time::interval_at(Instant::now() + offset, interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(t)
    }
}

/// Counters shared by a pool's agents.
#[derive(Debug, Default)]
pub struct Counters {
    connected: AtomicI64,
    welcomes: AtomicU64,
    last_welcome_ns: AtomicU64,
    acks: AtomicU64,
    in_sync: AtomicU64,
    last_in_sync_ns: AtomicU64,
    snapshots_asked: AtomicU64,
    throttled: AtomicU64,
    skipped: AtomicU64,
    failures: AtomicU64,
    policy_changes: AtomicU64,
    last_policy_ns: AtomicU64,
    catalog_updates: AtomicU64,
    last_catalog_ns: AtomicU64,
    latency: Mutex<Histogram>,
    last_failure: Mutex<String>,
}

/// Holds one "connected" count while a session is established.
pub struct Online<'a>(&'a Counters);

impl Drop for Online<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Relaxed);
    }
}

impl Counters {
    /// A session got its welcome.
    pub fn online(&self) -> Online<'_> {
        self.connected.fetch_add(1, Relaxed);
        self.welcomes.fetch_add(1, Relaxed);
        self.last_welcome_ns.fetch_max(crate::unix_nanos(), Relaxed);
        Online(self)
    }

    /// A report was acknowledged; `latency` when it was sent by a load phase.
    pub fn acked(&self, latency: Option<Duration>) {
        self.acks.fetch_add(1, Relaxed);
        if let Some(l) = latency {
            self.latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(l);
        }
    }

    /// A session's welcome asked for a snapshot (the collector's state did not match the
    /// agent's digest).
    pub fn snapshot_asked(&self) {
        self.snapshots_asked.fetch_add(1, Relaxed);
    }

    /// A session is in sync with the collector: its welcome needed no snapshot, or its
    /// snapshot was acknowledged.
    pub fn in_sync(&self) {
        self.in_sync.fetch_add(1, Relaxed);
        self.last_in_sync_ns.fetch_max(crate::unix_nanos(), Relaxed);
    }

    /// A policy change was announced, received at `at_ns` (Unix nanoseconds).
    pub fn policy_changed(&self, at_ns: u64) {
        self.policy_changes.fetch_add(1, Relaxed);
        self.last_policy_ns.fetch_max(at_ns, Relaxed);
    }

    /// A signed catalog was pushed, received at `at_ns` (Unix nanoseconds).
    pub fn catalog_updated(&self, at_ns: u64) {
        self.catalog_updates.fetch_add(1, Relaxed);
        self.last_catalog_ns.fetch_max(at_ns, Relaxed);
    }

    /// A report was throttled.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    /// An open-loop tick found the previous report still unacknowledged.
    pub fn skipped(&self) {
        self.skipped.fetch_add(1, Relaxed);
    }

    /// A session failed.
    pub fn failure(&self, e: &LoadgenError) {
        self.failures.fetch_add(1, Relaxed);
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
    }
}

/// What a pool's counters say, since it started or was last reset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Agents with a session established now.
    pub connected: i64,
    /// Welcomes received (sessions established).
    pub welcomes: u64,
    /// When the last welcome arrived (Unix ns; 0 if none).
    pub last_welcome_ns: u64,
    /// Reports acknowledged.
    pub acks: u64,
    /// Sessions in sync with the collector (welcome without a snapshot asked, or the
    /// session's snapshot acknowledged).
    #[serde(default)]
    pub in_sync: u64,
    /// When the last session got in sync (Unix ns; 0 if none).
    #[serde(default)]
    pub last_in_sync_ns: u64,
    /// Welcomes that asked for a snapshot.
    #[serde(default)]
    pub snapshots_asked: u64,
    /// Reports throttled.
    pub throttled: u64,
    /// Open-loop ticks skipped because a report was in flight.
    pub skipped: u64,
    /// Failed sessions.
    pub failures: u64,
    /// The last failure's message.
    pub last_failure: String,
    /// Policy-change announcements received.
    pub policy_changes: u64,
    /// When the last one arrived (Unix ns; 0 if none).
    pub last_policy_ns: u64,
    /// Signed catalogs received.
    #[serde(default)]
    pub catalog_updates: u64,
    /// When the last one arrived (Unix ns; 0 if none).
    #[serde(default)]
    pub last_catalog_ns: u64,
    /// Ack latencies of load-phase reports.
    pub latency: Histogram,
}

impl Snapshot {
    /// Adds another process's snapshot (counts add; times take the latest).
    pub fn merge(&mut self, o: &Snapshot) {
        self.connected += o.connected;
        self.welcomes += o.welcomes;
        self.last_welcome_ns = self.last_welcome_ns.max(o.last_welcome_ns);
        self.acks += o.acks;
        self.in_sync += o.in_sync;
        self.last_in_sync_ns = self.last_in_sync_ns.max(o.last_in_sync_ns);
        self.snapshots_asked += o.snapshots_asked;
        self.throttled += o.throttled;
        self.skipped += o.skipped;
        self.failures += o.failures;
        if self.last_failure.is_empty() {
            self.last_failure.clone_from(&o.last_failure);
        }
        self.policy_changes += o.policy_changes;
        self.last_policy_ns = self.last_policy_ns.max(o.last_policy_ns);
        self.catalog_updates += o.catalog_updates;
        self.last_catalog_ns = self.last_catalog_ns.max(o.last_catalog_ns);
        self.latency.merge(&o.latency);
    }
}

/// Simulated agents in this process.
pub struct Pool {
    counters: Arc<Counters>,
    phase: watch::Sender<Phase>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Pool {
    /// Starts one agent per device; device `i` connects from `sources[i % len]`, after
    /// `i / ramp_per_second` seconds (all at once when `ramp_per_second` is 0). `first_index`
    /// is the fleet position of `devices[0]`.
    pub fn start(
        target: Target,
        devices: Vec<SimDevice>,
        first_index: usize,
        sources: &[IpAddr],
        ramp_per_second: f64,
    ) -> Pool {
        assert!(!sources.is_empty(), "at least one source address");
        let counters = Arc::new(Counters::default());
        let (phase, _) = watch::channel(Phase::Idle);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let target = Arc::new(target);
        for (k, device) in devices.into_iter().enumerate() {
            let start_after = if ramp_per_second > 0.0 {
                Duration::from_secs_f64(k as f64 / ramp_per_second)
            } else {
                Duration::ZERO
            };
            let agent = Agent {
                index: first_index + k,
                device,
                source: sources[k % sources.len()],
                target: target.clone(),
                phase: phase.subscribe(),
                counters: counters.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(agent.run(start_after));
        }
        tasks.close();
        Pool {
            counters,
            phase,
            stop,
            tasks,
        }
    }

    /// Switches every agent to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Zeroes the counters (not `connected`, which is a level).
    pub fn reset(&self) {
        let c = &self.counters;
        for a in [
            &c.welcomes,
            &c.last_welcome_ns,
            &c.acks,
            &c.in_sync,
            &c.last_in_sync_ns,
            &c.snapshots_asked,
            &c.throttled,
            &c.skipped,
            &c.failures,
            &c.policy_changes,
            &c.last_policy_ns,
            &c.catalog_updates,
            &c.last_catalog_ns,
        ] {
            a.store(0, Relaxed);
        }
        *c.latency.lock().unwrap_or_else(|p| p.into_inner()) = Histogram::default();
        c.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        Snapshot {
            connected: c.connected.load(Relaxed),
            welcomes: c.welcomes.load(Relaxed),
            last_welcome_ns: c.last_welcome_ns.load(Relaxed),
            acks: c.acks.load(Relaxed),
            in_sync: c.in_sync.load(Relaxed),
            last_in_sync_ns: c.last_in_sync_ns.load(Relaxed),
            snapshots_asked: c.snapshots_asked.load(Relaxed),
            throttled: c.throttled.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
            failures: c.failures.load(Relaxed),
            last_failure: c
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            policy_changes: c.policy_changes.load(Relaxed),
            last_policy_ns: c.last_policy_ns.load(Relaxed),
            catalog_updates: c.catalog_updates.load(Relaxed),
            last_catalog_ns: c.last_catalog_ns.load(Relaxed),
            latency: c.latency.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Stops every agent and waits for them to end (at most `grace`).
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
    }
}
