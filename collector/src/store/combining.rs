//! Write combining: concurrent device writes applied as one transaction.
//!
//! sled runs a whole transaction, closure included, under its global write lock, and a flush
//! holds the read side of that lock while it waits for the disk. With one transaction per
//! report, a thousand agents reporting at once means a thousand lock hand-offs, each a thread
//! wake-up, taking turns with the flushes: the store, not the CPU, sets the pace. Combining
//! makes the first waiting writer the *combiner*: it takes every write queued so far, applies
//! them in order, in one transaction, and hands each writer its own result; writers arriving
//! meanwhile queue for the next batch. Alone, a writer is its own batch of one, so nothing
//! waits for company.
//!
//! What each writer sees is unchanged: its call returns after its write committed (or failed),
//! in an order consistent with the batches. Durability is still the caller's flush.
//!
//! Writers wait on one of two condition variables, by the parity of their batch, so a finished
//! batch wakes its own writers and one writer of the next batch (to combine it), not every
//! waiting thread.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

struct State<T, R> {
    queue: Vec<(u64, T)>,
    results: HashMap<u64, R>,
    next: u64,
    busy: bool,
    /// The number of the batch running, or of the last one run.
    batch: u64,
}

/// Combines concurrent submissions into batches run by one thread at a time.
pub struct Combiner<T, R> {
    state: Mutex<State<T, R>>,
    /// Writers of batch `n` wait on `finished[n % 2]`.
    finished: [Condvar; 2],
}

impl<T, R> std::fmt::Debug for Combiner<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner").finish_non_exhaustive()
    }
}

impl<T, R> Default for Combiner<T, R> {
    fn default() -> Self {
        Combiner {
            state: Mutex::new(State {
                queue: Vec::new(),
                results: HashMap::new(),
                next: 0,
                busy: false,
                batch: 0,
            }),
            finished: [Condvar::new(), Condvar::new()],
        }
    }
}

/// Clears `busy` when the combiner is done, even if the batch panicked, so waiters are not
/// stranded; their items then get no result and their calls panic too.
struct Busy<'a, T, R>(&'a Combiner<T, R>, u64);

impl<T, R> Drop for Busy<'_, T, R> {
    fn drop(&mut self) {
        self.0.lock().busy = false;
        self.0.finished[(self.1 % 2) as usize].notify_all();
        // A writer queued for the next batch combines it.
        self.0.finished[((self.1 + 1) % 2) as usize].notify_one();
    }
}

impl<T, R> Combiner<T, R> {
    fn lock(&self) -> MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` and returns its result once a batch containing it ran. `run` gets a batch
    /// in submission order and must return one result per item, in the same order.
    pub fn submit(&self, item: T, run: impl Fn(Vec<T>) -> Vec<R>) -> R {
        let mut s = self.lock();
        let id = s.next;
        s.next += 1;
        s.queue.push((id, item));
        // The next batch to start takes the whole queue, this item included.
        let my_batch = s.batch + 1;
        loop {
            if let Some(r) = s.results.remove(&id) {
                return r;
            }
            if !s.busy {
                if !s.queue.iter().any(|(i, _)| *i == id) {
                    panic!("a combined batch panicked before producing this write's result");
                }
                s.busy = true;
                s.batch += 1;
                let number = s.batch;
                let batch = std::mem::take(&mut s.queue);
                drop(s);
                let busy = Busy(self, number);
                let (ids, items): (Vec<u64>, Vec<T>) = batch.into_iter().unzip();
                let results = run(items);
                assert_eq!(results.len(), ids.len(), "one result per combined item");
                let mut mine = None;
                {
                    let mut s = self.lock();
                    for (i, r) in ids.into_iter().zip(results) {
                        if i == id {
                            mine = Some(r);
                        } else {
                            s.results.insert(i, r);
                        }
                    }
                }
                drop(busy);
                return mine.expect("the combiner's own item is in its batch");
            }
            s = self.finished[(my_batch % 2) as usize]
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_submission_gets_its_own_result_and_concurrent_ones_share_batches() {
        let c = Arc::new(Combiner::<u64, u64>::default());
        let batches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let (c, batches) = (c.clone(), batches.clone());
                std::thread::spawn(move || {
                    for k in 0..100 {
                        let item = t * 1000 + k;
                        let r = c.submit(item, |batch| {
                            batches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(100));
                            batch.iter().map(|x| x * 2).collect()
                        });
                        assert_eq!(r, item * 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            batches.load(Ordering::SeqCst) < 1600,
            "some batches were shared"
        );
    }

    #[test]
    fn a_lone_writer_is_a_batch_of_one() {
        let c = Combiner::<&str, usize>::default();
        assert_eq!(c.submit("a", |b| vec![b.len()]), 1);
        assert_eq!(c.submit("b", |b| vec![b.len()]), 1);
    }
}
