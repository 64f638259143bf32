//! `commscan-hive-from-reg ROOT OUT IN.reg...`: writes the registry hive file OUT whose root is
//! the key ROOT (`HKEY_LOCAL_MACHINE\SOFTWARE` for a `SOFTWARE` hive, `HKEY_CURRENT_USER` for
//! an `NTUSER.DAT`), holding the keys, strings and dwords of the `.reg` exports IN (see
//! `commscan_agent::test_support::reg_export`). For tests that fill a live registry (Wine's)
//! and scan the same entries offline. Test-only: built only with the `test-support` feature,
//! which dev-dependencies turn on and release builds never do.

use commscan_agent::test_support::reg_export::{parse, to_hive_key};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, out, inputs @ ..] = args.as_slice() else {
        eprintln!("usage: commscan-hive-from-reg ROOT OUT IN.reg...");
        return ExitCode::from(64);
    };
    if inputs.is_empty() {
        eprintln!("usage: commscan-hive-from-reg ROOT OUT IN.reg...");
        return ExitCode::from(64);
    }
    let mut exports = Vec::new();
    for input in inputs {
        match std::fs::read(input)
            .map_err(|e| e.to_string())
            .and_then(|b| parse(&b).map_err(|e| e.to_string()))
        {
            Ok(e) => exports.push(e),
            Err(e) => {
                eprintln!("commscan-hive-from-reg: {input}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let hive = match to_hive_key(&exports, root) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("commscan-hive-from-reg: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(out, hive.to_hive()) {
        eprintln!("commscan-hive-from-reg: {out}: {e}");
        return ExitCode::FAILURE;
    }
    let keys: usize = exports.iter().map(|e| e.keys.len()).sum();
    let skipped: usize = exports.iter().map(|e| e.skipped).sum();
    eprintln!(
        "commscan-hive-from-reg: {out}: {keys} keys; {skipped} values of other types skipped"
    );
    ExitCode::SUCCESS
}
