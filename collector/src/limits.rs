//! Rate limits: keyed token buckets for enrolment attempts (per source address and overall)
//! and for reports (per device). Memory is bounded: when a limiter tracks too many keys, it
//! forgets the buckets that have refilled, which are indistinguishable from new ones.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A keyed token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter allowing `burst` at once and `per_minute` sustained, per key.
    pub fn per_minute(per_minute: f64, burst: f64) -> Self {
        RateLimiter {
            per_second: per_minute / 60.0,
            burst,
            max_keys: 100_000,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` has a token at `now`, without taking it.
    pub(crate) fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            None => Ok(()),
            Some(b) => {
                let tokens = (b.tokens
                    + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second)
                    .min(self.burst);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
                }
            }
        }
    }

    /// Takes one token for `key` at `now`; on refusal returns how long until one is available.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_keys && !map.contains_key(key) {
            let full = self.burst / self.per_second;
            map.retain(|_, b| now.duration_since(b.at).as_secs_f64() < full);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

/// The network an address belongs to for rate limits: its /24 for IPv4 (IPv4-mapped IPv6
/// included), its /64 for IPv6. A host can use every address of its network, so per-address
/// budgets would be as many budgets as it has addresses.
pub fn network_prefix(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => network_prefix(IpAddr::V4(v4)),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !u128::from(u64::MAX))),
        },
    }
}

/// The collector's limits.
#[derive(Debug)]
pub struct Limiters {
    /// Enrolment attempts overall.
    pub enrol_global: RateLimiter<()>,
    /// Failed enrolment attempts per source network ([`network_prefix`]).
    pub enrol_failures: RateLimiter<std::net::IpAddr>,
    /// Reports per device.
    pub reports: RateLimiter<String>,
}

impl Default for Limiters {
    fn default() -> Self {
        Limiters {
            // Each enrolment signs a certificate; 50/s sustained keeps a 2-core collector
            // responsive while a whole site enrols after a deployment.
            enrol_global: RateLimiter::per_minute(3000.0, 500.0),
            // A wrong token is cheap to refuse but worth slowing: 20 a minute per network
            // (/24 or /64: one host holds many addresses of its network).
            enrol_failures: RateLimiter::per_minute(20.0, 20.0),
            // A healthy agent reports hourly plus on changes; 12 a minute is generous.
            reports: RateLimiter::per_minute(12.0, 24.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::per_minute(60.0, 3.0);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.take(&"a", t).is_ok());
        }
        let wait = l.take(&"a", t).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.take(&"b", t).is_ok(), "keys are independent");
        assert!(l.take(&"a", t + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        let p = |s: &str| network_prefix(s.parse().unwrap()).to_string();
        assert_eq!(p("127.0.0.1"), "127.0.0.0");
        assert_eq!(p("127.0.0.200"), "127.0.0.0");
        assert_eq!(p("127.0.1.7"), "127.0.1.0");
        assert_eq!(p("::ffff:10.1.2.3"), "10.1.2.0");
        assert_eq!(p("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let mut l = RateLimiter::per_minute(60.0, 1.0);
        l.max_keys = 10;
        let t = Instant::now();
        for i in 0..100 {
            let _ = l.take(&i, t + Duration::from_secs(i as u64 * 2));
        }
        assert!(l.buckets.lock().unwrap().len() <= 10);
    }
}
