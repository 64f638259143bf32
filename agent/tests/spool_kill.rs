//! The agent killed with SIGKILL at random points while it writes its spool: every committed
//! operation survives, nothing half-done is visible, and reopening stays fast.
//!
//! The child runs `commscan-spool-torture` (a test-only binary, feature `torture`): a deterministic sequence of spool
//! operations (observe, freeze a record, acknowledge, welcome, resync; see
//! `commscan_agent::spool::torture`), printing the number of each one after it returned. The
//! test kills it, reads what it printed, replays the same operations on the in-memory model,
//! and requires the reopened spool to equal the model after the last printed operation or
//! the one after (which may have reached the disk before the kill). CI runs 100 iterations;
//! `COMMSCAN_KILL_ITERATIONS=2000 cargo test --release -p commscan-agent --test spool_kill
//! -- --nocapture` is the longer bench.

use commscan_agent::spool::torture::{MemorySpool, TORTURE_CAP, step};
use commscan_agent::spool::{LogSpool, Spool};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rand(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn an_agent_killed_at_random_points_keeps_every_committed_change_and_reopens_fast() {
    let iterations: u64 = std::env::var("COMMSCAN_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut x = 0x5EED_u64;
    let (mut total_ops, mut reopen_max, mut reopen_sum) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut beyond = 0;
    let started = Instant::now();
    for it in 0..iterations {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.log");
        let seed = rand(&mut x);
        let mut child = Command::new(env!("CARGO_BIN_EXE_commscan-spool-torture"))
            .arg(&path)
            .arg(seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of committed operations (0..300), sometimes a little
        // later still, so the kill lands anywhere inside an operation.
        let target = rand(&mut x) % 300;
        let mut last: Option<u64> = None;
        while last.is_none_or(|l| l < target) {
            match lines.next() {
                Some(Ok(l)) => last = Some(l.parse().unwrap()),
                _ => break,
            }
        }
        if rand(&mut x).is_multiple_of(2) {
            std::thread::sleep(Duration::from_micros(rand(&mut x) % 2000));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Everything printed before the kill was committed.
        for l in lines.map_while(Result::ok) {
            if let Ok(n) = l.parse() {
                last = Some(n);
            }
        }
        let t = Instant::now();
        let reopened = LogSpool::open(&path, TORTURE_CAP)
            .unwrap_or_else(|e| panic!("iteration {it} (seed {seed}): reopen failed: {e}"));
        let took = t.elapsed();
        reopen_max = reopen_max.max(took);
        reopen_sum += took;
        let got = reopened.view();

        let model = MemorySpool::new(TORTURE_CAP);
        let committed = last.map_or(0, |l| l + 1);
        for i in 0..committed {
            step(&model, seed, i).unwrap();
        }
        total_ops += committed;
        if got == model.view() {
            continue;
        }
        step(&model, seed, committed).unwrap();
        assert_eq!(
            got,
            model.view(),
            "iteration {it} (seed {seed}): the reopened spool is neither the state after operation {} nor the next one",
            committed.saturating_sub(1)
        );
        beyond += 1;
    }
    println!(
        "{iterations} kills in {:?}: {total_ops} committed operations all intact; {beyond} kills landed after an operation reached the disk but before it was reported; reopen mean {:?}, max {:?}",
        started.elapsed(),
        reopen_sum / iterations.max(1) as u32,
        reopen_max
    );
}
