//! `commscan-spool-torture DIR SEED`: runs the spool's deterministic crash workload
//! (`commscan_agent::spool::torture`) on the spool file DIR, printing the number of each
//! operation after it returned, until killed. Test-only: built only with the `torture`
//! feature, which the agent's own tests turn on and release builds never do.

use commscan_agent::spool::{LogSpool, torture};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(Ok(seed))) = (args.first(), args.get(1).map(|s| s.parse::<u64>())) else {
        eprintln!("usage: commscan-spool-torture DIR SEED");
        return ExitCode::from(64);
    };
    let spool = match LogSpool::open(std::path::Path::new(dir), torture::TORTURE_CAP) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("commscan-spool-torture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        if let Err(e) = torture::step(&spool, seed, i) {
            eprintln!("commscan-spool-torture: operation {i}: {e}");
            return ExitCode::FAILURE;
        }
        if writeln!(out, "{i}").and_then(|()| out.flush()).is_err() {
            // The test stopped reading: it is about to kill us anyway.
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::SUCCESS
}
