//! Group commit: concurrent callers of [`Durable::flush`](super::Durable::flush) share flushes.
//!
//! The collector acknowledges a report only after the store has flushed it, and reports from
//! thousands of agents arrive concurrently. A flush makes durable what was written before it
//! *started*, so a caller that arrives while a flush is running cannot rely on that one (its
//! write may have come too late for it). It waits for the next flush instead, which starts as
//! soon as the running one ends and serves every caller that arrived meanwhile: with `k`
//! callers arriving during one flush, the disk sees one more flush, not `k`.
//!
//! Invariant: [`GroupCommit::flush`] returns `Ok` only after a flush that started after the
//! call began has completed successfully; if that flush failed, every caller that waited for
//! it gets the error. A caller never waits for more than the running flush and the next one.
//!
//! Callers wait on one of two condition variables, by the parity of the flush they need, so a
//! finished flush wakes its own callers and one caller of the next (to lead it), not every
//! thread waiting: with hundreds of reports in flight, waking all of them for nothing was a
//! good share of the collector's context switches.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Flushes started so far; the running one, if any, is number `started`.
    started: u64,
    /// Flushes finished so far (successfully or not).
    completed: u64,
    /// The highest flush number that succeeded.
    succeeded: u64,
    /// The error of the last failed flush.
    error: Option<String>,
    /// Whether a flush is running now.
    running: bool,
}

/// Shares flushes between concurrent callers.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    /// Callers needing flush `n` wait on `finished[n % 2]`.
    finished: [Condvar; 2],
}

/// Ends the leader's flush in the shared state even if the flush panics, so waiters never
/// hang on a flush that will not finish.
struct Leader<'a> {
    group: &'a GroupCommit,
    number: u64,
    outcome: Option<Result<(), String>>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut s = self.group.lock();
        s.running = false;
        s.completed = s.completed.max(self.number);
        match self.outcome.take() {
            Some(Ok(())) => s.succeeded = s.succeeded.max(self.number),
            Some(Err(e)) => s.error = Some(e),
            None => s.error = Some("flush panicked".into()),
        }
        drop(s);
        self.group.finished[(self.number % 2) as usize].notify_all();
        // Someone waiting for the next flush leads it.
        self.group.finished[((self.number + 1) % 2) as usize].notify_one();
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once a run of `flush` that started after this call began has succeeded. The
    /// caller that finds no flush running runs it (for everyone waiting); the others wait.
    pub fn flush(&self, flush: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let mut s = self.lock();
        // Whether one is running or not, the first flush to start from now on is this one.
        let needed = s.started + 1;
        loop {
            if s.completed >= needed {
                return if s.succeeded >= needed {
                    Ok(())
                } else {
                    Err(s.error.clone().unwrap_or_else(|| "flush failed".into()))
                };
            }
            if !s.running {
                s.running = true;
                s.started += 1;
                let mut leader = Leader {
                    group: self,
                    number: s.started,
                    outcome: None,
                };
                drop(s);
                let outcome = flush();
                leader.outcome = Some(outcome.clone());
                drop(leader);
                // This flush started after the call began, so its outcome is the answer.
                return outcome;
            }
            s = self.finished[(needed % 2) as usize]
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn a_lone_caller_flushes_every_time() {
        let g = GroupCommit::default();
        let n = AtomicU64::new(0);
        for _ in 0..3 {
            g.flush(|| {
                n.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn every_caller_returns_after_a_flush_that_started_after_it_arrived() {
        // Writes are numbered; a flush "persists" every write made before it started. Each
        // caller writes, flushes, then checks its write is persisted: the ack invariant.
        let g = Arc::new(GroupCommit::default());
        let written = Arc::new(AtomicU64::new(0));
        let persisted = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, written, persisted, flushes) = (
                    g.clone(),
                    written.clone(),
                    persisted.clone(),
                    flushes.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        g.flush(|| {
                            let upto = written.load(Ordering::SeqCst);
                            flushes.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(200));
                            persisted.fetch_max(upto, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                        assert!(
                            persisted.load(Ordering::SeqCst) >= mine,
                            "acknowledged before its write was flushed"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            flushes.load(Ordering::SeqCst) < 16 * 50,
            "concurrent callers shared flushes"
        );
    }

    #[test]
    fn a_failed_flush_fails_its_waiters_and_the_next_one_can_succeed() {
        let g = GroupCommit::default();
        assert_eq!(g.flush(|| Err("disk full".into())), Err("disk full".into()));
        assert_eq!(g.flush(|| Ok(())), Ok(()));
    }

    #[test]
    fn a_panicking_flush_does_not_leave_waiters_hanging() {
        let g = Arc::new(GroupCommit::default());
        let g2 = g.clone();
        let r = std::thread::spawn(move || g2.flush(|| panic!("boom"))).join();
        assert!(r.is_err());
        assert_eq!(g.flush(|| Ok(())), Ok(()));
    }
}
