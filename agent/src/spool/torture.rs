//! A deterministic workload for crash tests: operation `i` of seed `s` is always the same
//! given the same spool content, so a test can kill a process running it at a random point,
//! replay the same operations on a [`MemorySpool`], and require that the reopened spool
//! equals the model after the last operation the process reported (or the one after it,
//! which may have reached the disk before the kill). Compiled only for tests and with the
//! `torture` feature, which builds the test-only `commscan-spool-torture` binary.

use super::logic::{SpoolView, Write};
use super::{Observation, Observed, Record, Spool, SpoolError};
use crate::device_state::State;
use commscan_core::scan::{Evidence, Finding, ScanStats};
use std::sync::Mutex;

/// The spool rules without a disk: the model crash tests compare against.
#[derive(Debug)]
pub struct MemorySpool(Mutex<SpoolView>);

impl MemorySpool {
    /// An empty model with a cap.
    pub fn new(cap: u64) -> MemorySpool {
        MemorySpool(Mutex::new(SpoolView::new(cap)))
    }

    fn run<T>(&self, op: impl FnOnce(&mut SpoolView) -> (T, Vec<Write>)) -> T {
        op(&mut self.0.lock().unwrap_or_else(|p| p.into_inner())).0
    }
}

impl Spool for MemorySpool {
    fn view(&self) -> SpoolView {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn observe(&self, obs: Observation) -> Result<Observed, SpoolError> {
        Ok(self.run(|v| v.observe(obs)))
    }
    fn next_record(&self) -> Result<Option<Record>, SpoolError> {
        Ok(self.run(|v| v.next_record()))
    }
    fn acknowledge(&self, sequence: u64) -> Result<(), SpoolError> {
        self.run(|v| ((), v.acknowledge(sequence)));
        Ok(())
    }
    fn welcome(&self, stored: u64, want: bool) -> Result<(), SpoolError> {
        self.run(|v| ((), v.welcome(stored, want)));
        Ok(())
    }
    fn resync(&self) -> Result<(), SpoolError> {
        self.run(|v| ((), v.resync()));
        Ok(())
    }
    fn flush(&self) -> Result<(), SpoolError> {
        Ok(())
    }
}

/// The cap the workload runs with: small enough that fallbacks happen.
pub const TORTURE_CAP: u64 = 8 * 1024;

/// A small deterministic generator (xorshift64*).
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Runs operation `i` of workload `seed` on `spool`; returns what it did.
pub fn step(spool: &dyn Spool, seed: u64, i: u64) -> Result<String, SpoolError> {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        | 1;
    let r = next(&mut x);
    let view = spool.view();
    Ok(match r % 10 {
        0..=4 => {
            let mut state = view.current.clone();
            let product = format!("product-{}", next(&mut x) % 12);
            if next(&mut x).is_multiple_of(3) {
                state.findings.remove(&product);
            } else {
                state.findings.insert(
                    product.clone(),
                    Finding {
                        product: product.clone(),
                        installed: true,
                        running: next(&mut x).is_multiple_of(2),
                        version: Some(format!("{i}")),
                        evidence: vec![Evidence {
                            source: "dpkg".into(),
                            detail: format!("package {product} {i} {}", "x".repeat(200)),
                            signature: "dpkg".into(),
                        }],
                    },
                );
            }
            let state = State::from_parts(state.findings.into_values().collect(), Vec::new());
            let o = spool.observe(Observation {
                state,
                stats: ScanStats::default(),
                scanned_at: i as i64,
                report: next(&mut x).is_multiple_of(4),
            })?;
            format!("observe {product}: {} changes", o.changes)
        }
        5 | 6 => match spool.next_record()? {
            Some(r) => format!("next {}", r.sequence),
            None => "next none".into(),
        },
        7 | 8 => {
            let seq = view
                .outbox
                .keys()
                .next()
                .copied()
                .unwrap_or(view.meta.acked_sequence);
            spool.acknowledge(seq)?;
            format!("ack {seq}")
        }
        _ => {
            if next(&mut x).is_multiple_of(2) {
                let stored = view.meta.acked_sequence + next(&mut x) % 3;
                let want = next(&mut x).is_multiple_of(4);
                spool.welcome(stored, want)?;
                format!("welcome {stored} {want}")
            } else {
                spool.resync()?;
                "resync".into()
            }
        }
    })
}
