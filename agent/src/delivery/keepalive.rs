//! How an agent notices a dead link to its collector without paying for it while idle.
//!
//! - **Something to send.** A report (or the hello) not acknowledged within `ack_timeout`
//!   ends the session, and the sender reconnects: a dead link with a pending report is
//!   noticed within the acknowledgement deadline, whatever the ping interval.
//! - **Nothing to send.** An idle agent loses nothing on a dead link (its changes wait in the
//!   spool, and the next one is watched by the acknowledgement deadline), so it pings rarely:
//!   an HTTP/2 PING every `keepalive_interval` (15 min by default, under the idle timeouts of
//!   common NATs and firewalls: ARCHITECTURE.md, "Keepalive"), unanswered for
//!   `keepalive_timeout` ending the session. Pings keep NAT state alive and let the collector's
//!   pushes (policy, catalog) reach the agent soon after a link died.
//! - **Adaptive.** When a link is found dead while idle (the session failed with a transport
//!   error while nothing awaited an acknowledgement), something between the agent and its
//!   collector drops idle connections sooner than the interval: [`IdlePing`] halves it, down
//!   to `keepalive_interval_min`. It never grows back within a process: a restart starts
//!   from `keepalive_interval` again.

use crate::config::Delivery;
use std::time::Duration;

/// The ping interval of an idle session, halved after each link found dead while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdlePing {
    interval: Duration,
    floor: Duration,
}

impl IdlePing {
    /// Starts at the configured interval, never goes below the configured minimum.
    pub(crate) fn new(d: &Delivery) -> IdlePing {
        IdlePing {
            interval: d.keepalive_interval.max(d.keepalive_interval_min),
            floor: d.keepalive_interval_min,
        }
    }

    /// The interval for the next session.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// A session ended; `dead_while_idle`: it failed in transit while nothing awaited an
    /// acknowledgement. Returns the new interval when it changed.
    pub(crate) fn session_ended(&mut self, dead_while_idle: bool) -> Option<Duration> {
        if !dead_while_idle || self.interval <= self.floor {
            return None;
        }
        self.interval = (self.interval / 2).max(self.floor);
        Some(self.interval)
    }
}

/// Whether a failed read failed in transit (the connection broke: a keepalive timeout, a reset,
/// a dropped connection) rather than carrying the collector's own answer: tonic keeps the
/// underlying error as the status's source only for the former.
pub(crate) fn broke_in_transit(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(interval: u64, min: u64) -> Delivery {
        Delivery {
            keepalive_interval: Duration::from_secs(interval),
            keepalive_interval_min: Duration::from_secs(min),
            ..Delivery::default()
        }
    }

    #[test]
    fn a_link_found_dead_while_idle_halves_the_interval_down_to_the_minimum() {
        let mut p = IdlePing::new(&delivery(900, 120));
        assert_eq!(p.interval(), Duration::from_secs(900));
        assert_eq!(p.session_ended(true), Some(Duration::from_secs(450)));
        assert_eq!(p.session_ended(true), Some(Duration::from_secs(225)));
        assert_eq!(p.session_ended(true), Some(Duration::from_secs(120)));
        assert_eq!(p.session_ended(true), None);
        assert_eq!(p.interval(), Duration::from_secs(120));
    }

    #[test]
    fn other_endings_leave_the_interval_alone() {
        let mut p = IdlePing::new(&delivery(900, 120));
        for _ in 0..5 {
            assert_eq!(p.session_ended(false), None);
        }
        assert_eq!(p.interval(), Duration::from_secs(900));
    }

    #[test]
    fn a_minimum_above_the_interval_wins() {
        let p = IdlePing::new(&delivery(60, 120));
        assert_eq!(p.interval(), Duration::from_secs(120));
    }

    #[test]
    fn only_a_status_with_an_underlying_error_broke_in_transit() {
        let answered = tonic::Status::unavailable("collector shutting down");
        assert!(!broke_in_transit(&answered));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let broken = tonic::Status::from_error(Box::new(io));
        assert!(broke_in_transit(&broken));
    }
}
