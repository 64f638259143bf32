//! The running agent: two loops around the [spool](crate::spool).
//!
//! ```text
//!  triggers ─► observer ─► spool.observe ─► (ready) ─► sender ─► Reporting.Connect ─► collector
//!  full scan (jittered)     diff + coalesce            next_record, send, ack
//!  process sample            flush                     reconnect with full-jitter backoff
//!  file watch (debounced)                              honours Throttle, Command RESCAN/RESYNC
//!  collector RESCAN
//! ```
//!
//! - The **observer** ([`observer`]) scans when a trigger fires and hands the result to the
//!   spool, which diffs it against the current state and keeps the changes durably. Full
//!   scans always produce a report (liveness and stats); process samples and file-watch
//!   rescans only when something changed.
//! - The **sender** ([`session`]) keeps one `Reporting.Connect` stream open: hello with the
//!   acknowledged sequence and state digest, welcome (which may ask for a snapshot), then one
//!   record at a time from the spool, each forgotten only after its acknowledgement.
//!   Failures end the session and the sender reconnects after a full-jitter backoff.
//! - A **dead link** ([`keepalive`]) is noticed by the acknowledgement deadline when something
//!   is pending (`ack_timeout`), and by rare HTTP/2 pings when idle (`keepalive_interval`,
//!   halved down to `keepalive_interval_min` after each link found dead while idle).
//! - **Shutdown** (SIGTERM): both loops stop at their next await, the spool is flushed, the
//!   status file says `stopped`, and [`Agent::run`] returns within the configured grace. A
//!   record in flight stays in the spool and is sent again, under the same sequence, at the
//!   next start.
//!
//! Every step is announced as an [`AgentEvent`] (tests and the status file listen) and
//! reflected in `<data-dir>/status.json` ([`crate::status`]).

mod keepalive;
mod observer;
mod session;

use crate::candidate_mappings::MappingsKeeper;
use crate::catalog_update::CatalogKeeper;
use crate::config::AgentConfig;
use crate::scanner::{HostInventory, Inventory, ScanTarget, Scanner};
use crate::spool::{Spool, SpoolError, quarantine};
use crate::state::{DataDir, StateError};
use crate::status::{SpoolNote, StatusFile};
use commscan_runtime::transport::TransportError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use observer::ScanKind;

/// Something the agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// A scan was recorded in the spool.
    Scanned {
        /// What triggered it.
        kind: ScanKind,
        /// Changes against the previous state.
        changes: usize,
        /// The cap forced a snapshot.
        fell_back: bool,
    },
    /// A stream is open.
    Connected {
        /// The collector's stored sequence.
        stored_sequence: u64,
        /// Whether it asked for a snapshot.
        want_snapshot: bool,
    },
    /// A report was sent.
    Sent {
        /// Its sequence.
        sequence: u64,
        /// `snapshot` or `delta`.
        kind: &'static str,
        /// Digest of the state once applied.
        state_digest: String,
    },
    /// A report was acknowledged and forgotten.
    Acked {
        /// Its sequence.
        sequence: u64,
    },
    /// The collector asked for a resync.
    Resync,
    /// The collector announced that the policy in force changed (nothing to do: the
    /// collector re-judged this device; it is logged so an operator sees it arrive).
    PolicyChanged {
        /// The default policy's id now.
        policy_id: String,
    },
    /// A signed catalog pushed by the collector is now in use.
    CatalogAccepted {
        /// Its release.
        release: u64,
    },
    /// The organisation's candidate decisions sent by the collector are now applied.
    MappingsAccepted {
        /// How many.
        decisions: usize,
    },
    /// Candidate decisions sent by the collector were refused; the previous ones stay.
    MappingsRefused,
    /// A signed catalog pushed by the collector was refused; the previous one stays.
    CatalogRefused {
        /// One-word reason ([`crate::catalog_update::OfferError::code`]).
        reason: &'static str,
    },
    /// The session ended.
    Disconnected {
        /// Why.
        error: String,
    },
}

/// An agent failure that stops it.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data directory is unusable (not enrolled, corrupt identity).
    #[error(transparent)]
    State(#[from] StateError),
    /// The spool cannot be opened (and quarantining did not help).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The collector could not be reached, refused, or broke the protocol.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// This device's clock is outside its certificate's validity, so the collector would
    /// refuse the handshake with a bare transport error: said plainly instead.
    #[error(
        "this device's clock reads {now}, outside its certificate's validity ({not_before} to {not_after}): set the clock (NTP); the collector refuses certificates that are not yet or no longer valid"
    )]
    Clock {
        /// The device's clock.
        now: time::OffsetDateTime,
        /// The certificate's start.
        not_before: time::OffsetDateTime,
        /// The certificate's end.
        not_after: time::OffsetDateTime,
    },
}

impl AgentError {
    /// Whether the collector's host refused the connection (nothing listens): a collector
    /// restarting, retried within
    /// [`commscan_runtime::transport::REFUSED_BACKOFF_MAX`].
    pub fn is_refused(&self) -> bool {
        matches!(self, AgentError::Transport(t) if t.is_refused())
    }

    /// Whether retrying later may succeed: some transport failures, and the spool's disk
    /// failing (a full disk frees up: retried with the ordinary short backoff, never the
    /// hour of a permanent refusal); a broken data directory or a corrupt spool needs a person.
    pub fn is_retriable(&self) -> bool {
        match self {
            AgentError::Transport(t) => t.is_retriable(),
            // A clock gets corrected (NTP catches up); keep trying at the outage pace.
            AgentError::Clock { .. } => true,
            AgentError::Spool(SpoolError::Backend(_)) => true,
            AgentError::State(_) | AgentError::Spool(_) => false,
        }
    }
}

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        AgentError::Transport(TransportError::Status(s))
    }
}

/// What both loops share.
pub(crate) struct Shared {
    pub(crate) data: DataDir,
    pub(crate) config: AgentConfig,
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) inventory: Arc<dyn Inventory>,
    /// Something may be ready to send.
    pub(crate) ready: Notify,
    /// The collector asked for a rescan.
    pub(crate) rescan: Notify,
    /// End a reconnect backoff now.
    pub(crate) wake: Notify,
    pub(crate) events: broadcast::Sender<AgentEvent>,
    pub(crate) status: Mutex<StatusFile>,
    /// The catalog in use and the checks a pushed one must pass.
    pub(crate) catalog: CatalogKeeper,
    /// The organisation's candidate decisions in use.
    pub(crate) mappings: MappingsKeeper,
}

impl Shared {
    pub(crate) fn emit(&self, e: AgentEvent) {
        let _ = self.events.send(e);
    }

    /// Updates and writes the status file.
    pub(crate) fn set_status(&self, f: impl FnOnce(&mut StatusFile)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        let v = self.spool.view();
        s.spool = SpoolNote {
            pending_changes: v.pending.len(),
            unacked_records: v.outbox.len(),
            bytes: v.bytes,
            cap: v.cap,
            snapshot_needed: v.meta.snapshot_needed,
            fallbacks: v.meta.fallbacks,
            last_fallback: v.meta.last_fallback.clone(),
            acked_sequence: v.meta.acked_sequence,
        };
        s.quarantine = v.meta.quarantine.clone();
        let c = self.catalog.status();
        s.catalog = Some(crate::status::CatalogNote {
            release: c.release,
            refused_release: c.refused_release,
            refusal: c.refusal,
            candidate_decisions: self.mappings.current().len(),
        });
        s.updated_at = now();
        if let Err(e) = s.write(&self.data) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The agent: spool, inventory, triggers and delivery.
pub struct Agent {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("data", &self.shared.data)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Opens the agent of an enrolled data directory: checks the identity, opens the spool
    /// (quarantining a corrupt one).
    pub fn open(config: AgentConfig, inventory: Arc<dyn Inventory>) -> Result<Agent, AgentError> {
        let data = DataDir::new(&config.data_dir);
        data.identity()?;
        let spool = quarantine::open_or_quarantine(data.root(), config.spool_cap, now())?;
        Ok(Agent::with_spool(config, inventory, Arc::new(spool)))
    }

    /// An agent over a given spool (tests).
    pub fn with_spool(
        config: AgentConfig,
        inventory: Arc<dyn Inventory>,
        spool: Arc<dyn Spool>,
    ) -> Agent {
        let (events, _) = broadcast::channel(4096);
        // The last acknowledgement survives a restart: carried over from the previous run's
        // status file when its sequence is still the spool's (else `status` shows the spool's
        // sequence without a time).
        let acked = spool.view().meta.acked_sequence;
        let last_ack = StatusFile::read(&DataDir::new(&config.data_dir))
            .and_then(Result::ok)
            .and_then(|s| s.last_ack)
            .filter(|a| a.sequence == acked);
        let status = StatusFile {
            pid: std::process::id(),
            started_at: now(),
            last_ack,
            ..StatusFile::default()
        };
        let (catalog, stored) = CatalogKeeper::open(&config.data_dir, config.catalog_keys.clone());
        if let Some(stored) = stored
            && !inventory.use_catalog(&stored)
        {
            tracing::warn!(
                "this inventory cannot change its catalog; the stored catalog is not used"
            );
        }
        let mappings = MappingsKeeper::open(&config.data_dir);
        let current = mappings.current();
        if !current.is_empty() && !inventory.use_mappings(current) {
            tracing::warn!(
                "this inventory cannot apply candidate decisions; the stored ones are not used"
            );
        }
        Agent {
            shared: Arc::new(Shared {
                data: DataDir::new(&config.data_dir),
                config,
                spool,
                inventory,
                ready: Notify::new(),
                rescan: Notify::new(),
                wake: Notify::new(),
                events,
                status: Mutex::new(status),
                catalog,
                mappings,
            }),
        }
    }

    /// Subscribes to what the agent does.
    pub fn events(&self) -> broadcast::Receiver<AgentEvent> {
        self.shared.events.subscribe()
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<dyn Spool> {
        &self.shared.spool
    }

    /// Ends a reconnect backoff now, for when the network is known to be back (a laptop
    /// woke up, an interface came up). While connected, the next backoff is skipped once.
    pub fn reconnect_now(&self) {
        self.shared.wake.notify_one();
    }

    /// Runs until `shutdown`, then stops within the configured grace: scans on its triggers,
    /// delivers on its stream, reconnects forever.
    pub async fn run(&self, shutdown: CancellationToken) {
        let tasks = tokio_util::task::TaskTracker::new();
        let stop = shutdown.child_token();
        tasks.spawn(observer::run(self.shared.clone(), stop.clone()));
        tasks.spawn(session::run(self.shared.clone(), stop.clone()));
        tasks.close();
        self.shared.set_status(|_| {});
        crate::systemd::notify("READY=1\nSTATUS=scanning and delivering");
        let watchdog = crate::systemd::watchdog_interval();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(watchdog.unwrap_or(Duration::from_secs(3600))), if watchdog.is_some() => {
                    crate::systemd::notify("WATCHDOG=1");
                }
            }
        }
        crate::systemd::notify("STOPPING=1");
        tracing::info!("stopping: flushing the spool");
        stop.cancel();
        if tokio::time::timeout(self.shared.config.shutdown_grace, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.shared.config.shutdown_grace, "tasks did not stop within the grace; exiting anyway");
        }
        if let Err(e) = self.shared.spool.flush() {
            tracing::error!(error = %e, "spool flush at shutdown failed");
        }
        self.shared.set_status(|s| {
            s.stopped = true;
            s.connected = false;
        });
    }

    /// Scans once, then delivers until nothing is left to send; returns the last
    /// acknowledged sequence (`run --once`, `commscan-collector dev`, tests).
    pub async fn report_once(&self, shutdown: &CancellationToken) -> Result<u64, AgentError> {
        observer::scan_now(&self.shared, ScanKind::Full).await?;
        session::until_idle(&self.shared, shutdown).await
    }
}

/// What [`Reporter::session`] ended with when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `once` was set and everything was acknowledged, up to this sequence.
    Acked(u64),
    /// Shutdown was requested.
    Shutdown,
}

/// The agent of a data directory scanning a target, opened on first use: the embedding API
/// for `commscan-collector dev` and end-to-end tests.
pub struct Reporter {
    data: DataDir,
    scanner: Arc<Scanner>,
    target: ScanTarget,
    agent: Mutex<Option<Arc<Agent>>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter for an enrolled data directory.
    pub fn new(data: DataDir, scanner: Arc<Scanner>, target: ScanTarget) -> Reporter {
        Reporter {
            data,
            scanner,
            target,
            agent: Mutex::new(None),
        }
    }

    fn agent(&self, interval: Duration) -> Result<Arc<Agent>, AgentError> {
        let mut slot = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let mut config = AgentConfig {
            data_dir: self.data.root().to_path_buf(),
            processes: self.target.processes,
            ..AgentConfig::default()
        };
        config.triggers.full_scan_interval = interval;
        config.triggers.watch = false;
        let inventory = Arc::new(HostInventory::new(
            self.scanner.clone(),
            self.target.clone(),
        ));
        let agent = Arc::new(Agent::open(config, inventory)?);
        *slot = Some(agent.clone());
        Ok(agent)
    }

    /// With `once`, scans and delivers until everything is acknowledged; otherwise runs the
    /// agent (full scans every `interval`) until `shutdown`.
    pub async fn session(
        &self,
        interval: Duration,
        once: bool,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, AgentError> {
        let agent = self.agent(interval)?;
        if once {
            agent.report_once(shutdown).await.map(SessionEnd::Acked)
        } else {
            agent.run(shutdown.clone()).await;
            Ok(SessionEnd::Shutdown)
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn a_full_disk_is_retried_soon_a_corrupt_spool_is_not() {
        let full = AgentError::Spool(SpoolError::Backend(
            "No space left on device (os error 28)".into(),
        ));
        assert!(full.is_retriable());
        let corrupt = AgentError::Spool(SpoolError::Corrupt {
            what: "database".into(),
            message: "bad".into(),
        });
        assert!(!corrupt.is_retriable());
    }
}
