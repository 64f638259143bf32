//! Connected agents, one entry per device, to spot two agents using one identity.
//!
//! A device normally holds one stream. A second stream for the same device takes over (the old
//! one is cancelled): that is what a laptop whose link went half-open looks like when it
//! reconnects. Two live agents with the same certificate (a cloned disk) keep taking over from
//! each other; [`TAKEOVERS_FOR_DUPLICATE`] takeovers within [`TAKEOVER_WINDOW`] flag the device
//! as a duplicate. Flagged devices are refused, never silently merged. Collectors sharing a
//! database also record each device's stream in the store ([`crate::store::Store::claim_stream`]),
//! so a takeover across collectors closes the other's stream and counts the same way.
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
struct Live {
    conn: u64,
    cancel: CancellationToken,
}

/// A device's open stream, if any, and the takeovers seen within the window. An ended stream
/// leaves only its history: a reconnect after an ordinary disconnect takes nothing over.
#[derive(Debug)]
struct Entry {
    live: Option<Live>,
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
    announced: tokio::sync::watch::Sender<Announced>,
}

/// What has been announced to connected streams, as generations: a stream compares each with
/// the one it saw last.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// Changes of the rules in force.
    pub rules: u64,
    /// Changes of some organisation's candidate mappings ([`crate::mappings`]).
    pub mappings: u64,
}

impl Connections {
    /// Registers a stream for `device`, superseding any existing one.
    pub(crate) fn register(&self, device: &str, now: Instant) -> Registered {
        let conn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut takeovers = VecDeque::new();
        if let Some(old) = map.remove(device) {
            takeovers = old.takeovers;
            // Only a stream still open is taken over; one that ended left its history alone.
            if let Some(live) = old.live {
                live.cancel.cancel();
                takeovers.push_back(now);
            }
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
                live: Some(Live {
                    conn,
                    cancel: cancel.clone(),
                }),
                takeovers,
            },
        );
        Registered {
            conn,
            superseded: cancel,
            duplicate,
        }
    }

    /// Closes `device`'s open stream here because another collector sharing the store took
    /// it over (that collector counted the takeover). Whether one was open.
    pub(crate) fn close_taken_over(&self, device: &str) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = map.get_mut(device) else {
            return false;
        };
        match e.live.take() {
            Some(live) => {
                live.cancel.cancel();
                if e.takeovers.is_empty() {
                    map.remove(device);
                }
                true
            }
            None => false,
        }
    }

    /// The devices with an open stream here.
    pub(crate) fn connected_devices(&self) -> Vec<String> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, e)| e.live.is_some())
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Forgets a stream when it ends, unless a newer one already replaced it. The takeover
    /// history is kept (two clones alternating still add up), but the next stream of this
    /// device takes nothing over.
    pub(crate) fn unregister(&self, device: &str, conn: u64) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(device)
            && e.live.as_ref().is_some_and(|l| l.conn == conn)
        {
            if let Some(live) = e.live.take() {
                live.cancel.cancel();
            }
            if e.takeovers.is_empty() {
                map.remove(device);
            }
        }
    }

    /// Tells every connected stream that the policy in force changed (after a reload has
    /// re-judged the stored devices). Streams opened later are not told: their agent learns
    /// nothing it needs, since verdicts are computed here.
    pub(crate) fn announce_policy_change(&self) {
        self.announced.send_modify(|a| a.rules += 1);
    }

    /// Tells every connected stream that some organisation's candidate mappings changed;
    /// each compares its own organisation's with what its agent holds.
    pub(crate) fn announce_mappings_change(&self) {
        self.announced.send_modify(|a| a.mappings += 1);
    }

    /// A subscription to announcements made from now on, and the rules generation at
    /// subscription (an announcement with another one is a policy change).
    pub(crate) fn policy_changes(&self) -> (tokio::sync::watch::Receiver<Announced>, u64) {
        let rx = self.announced.subscribe();
        let rules = rx.borrow().rules;
        (rx, rules)
    }

    /// Devices with a stream open now.
    pub fn connected(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| e.live.as_ref().is_some_and(|l| !l.cancel.is_cancelled()))
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
        let (mut early, _) = c.policy_changes();
        let (other, _) = c.policy_changes();
        assert!(!early.has_changed().unwrap());
        c.announce_policy_change();
        c.announce_policy_change();
        let (late, generation) = c.policy_changes();
        assert_eq!(generation, 2);
        assert!(early.has_changed().unwrap());
        assert!(other.has_changed().unwrap());
        assert!(
            !late.has_changed().unwrap(),
            "a stream opened after the change is not told"
        );
        early.mark_unchanged();
        assert!(!early.has_changed().unwrap(), "two changes are seen as one");
        c.announce_mappings_change();
        assert!(early.has_changed().unwrap());
        assert_eq!(
            *early.borrow_and_update(),
            Announced {
                rules: 2,
                mappings: 1
            },
            "a mappings change leaves the rules generation alone"
        );
    }

    #[test]
    fn sequential_reconnects_after_one_takeover_never_flag() {
        let c = Connections::default();
        let t = Instant::now();
        let a = c.register("d", t);
        // The link went half-open: the agent reconnects while the old stream is still held.
        let b = c.register("d", t + Duration::from_secs(1));
        assert!(a.superseded.is_cancelled());
        assert!(!b.duplicate);
        c.unregister("d", a.conn);
        c.unregister("d", b.conn);
        // Then ordinary restarts: each stream ends before the next one opens.
        for i in 0..10 {
            let r = c.register("d", t + Duration::from_secs(10 + i));
            assert!(!r.duplicate, "restart {i} flagged as a duplicate");
            assert_eq!(c.connected(), 1);
            c.unregister("d", r.conn);
            assert_eq!(c.connected(), 0);
        }
    }

    #[test]
    fn two_live_agents_alternating_are_flagged() {
        let c = Connections::default();
        let t = Instant::now();
        let mut flagged = false;
        let mut previous = c.register("d", t);
        for i in 1..=TAKEOVERS_FOR_DUPLICATE as u64 {
            // The other clone connects while this one is live; the loser's stream then ends.
            let next = c.register("d", t + Duration::from_secs(i));
            assert!(previous.superseded.is_cancelled());
            c.unregister("d", previous.conn);
            flagged |= next.duplicate;
            previous = next;
        }
        assert!(
            flagged,
            "two live agents taking over each other are a duplicate"
        );
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
