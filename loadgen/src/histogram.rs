//! Latency histogram: log-linear buckets (32 per power of two, so a bucket is at most ~3%
//! wide), in microseconds. Small enough to send between processes as JSON and merge exactly.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const SUB_BUCKETS: u64 = 32;

/// Counts of latencies by bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Histogram {
    /// Bucket → count; a list of pairs on the wire (JSON map keys would be strings).
    #[serde(with = "pairs")]
    buckets: BTreeMap<u32, u64>,
    count: u64,
}

mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, u64>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, u64>, D::Error> {
        Ok(Vec::<(u32, u64)>::deserialize(d)?.into_iter().collect())
    }
}

fn bucket_of(us: u64) -> u32 {
    if us < SUB_BUCKETS {
        return us as u32;
    }
    let octave = 63 - u64::from(us.leading_zeros()); // floor(log2 us) >= 5
    let shift = octave - 5;
    let sub = (us >> shift) - SUB_BUCKETS; // 0..32
    ((octave - 4) * SUB_BUCKETS + sub) as u32
}

/// The lower bound of a bucket, in microseconds.
fn lower_bound(bucket: u32) -> u64 {
    let b = u64::from(bucket);
    if b < SUB_BUCKETS {
        return b;
    }
    let octave = b / SUB_BUCKETS + 4;
    let sub = b % SUB_BUCKETS;
    (SUB_BUCKETS + sub) << (octave - 5)
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        *self.buckets.entry(bucket_of(us)).or_default() += 1;
        self.count += 1;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.count += other.count;
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0..=1), as the lower bound of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(lower_bound(*b)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in 1..2_000_000u64 {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
            let lo = lower_bound(b);
            assert!(lo <= us, "{us}: bucket starts at {lo}");
            assert!(
                (us - lo) as f64 <= us as f64 * 0.035,
                "{us}: bucket too wide"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.035, "{p50}");
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.035, "{p99}");
        let mut twice: Histogram =
            serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(twice, h, "survives the trip between processes");
        twice.merge(&h);
        assert_eq!(twice.count(), 200);
        assert_eq!(twice.quantile(0.5), h.quantile(0.5));
    }
}
