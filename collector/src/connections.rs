//! Connected agents, one entry per device, to spot two agents using one identity.
//!
//! A device normally holds one stream. A second stream for the same device takes over (the old
//! one is cancelled): that is what a laptop whose link went half-open looks like when it
//! reconnects. Two live agents with the same certificate (a cloned disk) keep taking over from
//! each other; [`TAKEOVERS_FOR_DUPLICATE`] takeovers within [`TAKEOVER_WINDOW`] flag the device
//! as a duplicate. Flagged devices are refused, never silently merged.
//!
//! The registry also carries announcements to every connected stream: today, "the policy in
//! force changed" ([`Connections::announce_policy_change`]). An announcement is a state, not a
//! queue of events: a `tokio::sync::watch` holding a generation number, which each stream
//! subscribes to when it opens. Announcing is O(1) for the caller and costs each stream one
//! wake-up; a slow or stuck agent can never hold the announcer back or make memory grow, and
//! two reloads in quick succession reach a stream that has not caught up yet as one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Takeovers within the window that mark a duplicate.
pub(crate) const TAKEOVERS_FOR_DUPLICATE: usize = 3;
/// The window.
pub(crate) const TAKEOVER_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Entry {
    conn: u64,
    cancel: CancellationToken,
    takeovers: VecDeque<Instant>,
}

/// What registering a stream found.
#[derive(Debug)]
pub(crate) struct Registered {
    /// This stream's id, to unregister it.
    pub conn: u64,
    /// Fires when a newer stream of the same device takes over.
    pub superseded: CancellationToken,
    /// True when takeovers show two live agents with one identity.
    pub duplicate: bool,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Connections {
    next: std::sync::atomic::AtomicU64,
    inner: Mutex<HashMap<String, Entry>>,
    policy_generation: tokio::sync::watch::Sender<u64>,
}

impl Connections {
    /// Registers a stream for `device`, superseding any existing one.
    pub(crate) fn register(&self, device: &str, now: Instant) -> Registered {
        let conn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut takeovers = VecDeque::new();
        if let Some(old) = map.remove(device) {
            old.cancel.cancel();
            takeovers = old.takeovers;
            takeovers.push_back(now);
        }
        while takeovers
            .front()
            .is_some_and(|t| now.duration_since(*t) > TAKEOVER_WINDOW)
        {
            takeovers.pop_front();
        }
        let duplicate = takeovers.len() >= TAKEOVERS_FOR_DUPLICATE;
        map.insert(
            device.to_owned(),
            Entry {
                conn,
                cancel: cancel.clone(),
                takeovers,
            },
        );
        Registered {
            conn,
            superseded: cancel,
            duplicate,
        }
    }

    /// Removes a stream when it ends, unless a newer one already replaced it. The takeover
    /// history is kept for a reconnect that follows.
    pub(crate) fn unregister(&self, device: &str, conn: u64) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(device)
            && e.conn == conn
        {
            if e.takeovers.is_empty() {
                map.remove(device);
            } else {
                e.cancel.cancel();
            }
        }
    }

    /// Tells every connected stream that the policy in force changed (after a reload has
    /// re-judged the stored devices). Streams opened later are not told: their agent learns
    /// nothing it needs, since verdicts are computed here.
    pub(crate) fn announce_policy_change(&self) {
        self.policy_generation.send_modify(|g| *g += 1);
    }

    /// A subscription to policy-change announcements made from now on.
    pub(crate) fn policy_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.policy_generation.subscribe()
    }

    /// Devices with a stream open now.
    pub fn connected(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| !e.cancel.is_cancelled())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reconnect_is_not_a_duplicate_but_ping_pong_is() {
        let c = Connections::default();
        let t = Instant::now();
        let a = c.register("d", t);
        assert!(!a.duplicate);
        let b = c.register("d", t + Duration::from_secs(1));
        assert!(
            a.superseded.is_cancelled(),
            "the half-open stream is replaced"
        );
        assert!(!b.duplicate);
        let _ = c.register("d", t + Duration::from_secs(2));
        let d = c.register("d", t + Duration::from_secs(3));
        assert!(d.duplicate, "three takeovers in ten minutes");
    }

    #[test]
    fn a_policy_change_reaches_every_subscriber_once_and_only_later_ones() {
        let c = Connections::default();
        let mut early = c.policy_changes();
        let other = c.policy_changes();
        assert!(!early.has_changed().unwrap());
        c.announce_policy_change();
        c.announce_policy_change();
        let late = c.policy_changes();
        assert!(early.has_changed().unwrap());
        assert!(other.has_changed().unwrap());
        assert!(
            !late.has_changed().unwrap(),
            "a stream opened after the change is not told"
        );
        early.mark_unchanged();
        assert!(!early.has_changed().unwrap(), "two changes are seen as one");
    }

    #[test]
    fn takeovers_age_out() {
        let c = Connections::default();
        let t = Instant::now();
        for i in 0..3 {
            let r = c.register("d", t + TAKEOVER_WINDOW * (i + 1) * 2);
            assert!(!r.duplicate);
        }
    }
}
