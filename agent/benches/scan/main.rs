//! Whole scans: this machine, and generated trees the size of a busy workstation. Run with
//! `cargo bench -p commscan-agent --bench scan`; prints figures, asserts nothing. Options
//! after `--`: `NAME` runs only the cases whose name contains NAME, `--runs N` another number
//! of runs (default 7), `--fixtures DIR` builds the fixture trees in DIR and keeps them (to
//! profile, or to scan with `commscan-agent scan --root DIR/linux`).
//!
//! Every run is a fresh child process (this binary re-executed with `--case`), so peak RSS
//! is the peak of one scan, not of the bench. The child reads its resident size at start
//! (`VmRSS`, the baseline), compiles the catalog, scans once, then reads its high-water mark
//! (`VmHWM`, the peak) from `/proc/self/status`. CPU time is the process's
//! `CLOCK_PROCESS_CPUTIME_ID` (user and system, all threads) around the scan alone, without
//! compiling the catalog. Page cache is warm: the fixtures were just written, and this
//! machine's files are read by the first run.
//!
//! Cases:
//! - `host`, `host --no-processes`: `ScanTarget::host`, all Linux sources on `/`.
//! - `linux fixture`: `Scanner::scan_with` over a generated tree (5,000 dpkg packages, 300
//!   desktop entries) with the Linux sources, the live process source replaced by one that
//!   feeds 1,000 generated process names through `process::items_from_names`.
//! - `macos fixture`: 200 `.app` bundles with XML and binary Info.plists, platform macOS.

use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_agent::sources::{self, ScanContext, Source, process};
use commscan_core::catalog::Catalog;
use commscan_core::inventory::InventoryItem;
use commscan_core::platform::Platform;
use commscan_core::scan::SourceOutcome;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod fixture;

const CASES: [&str; 4] = [
    "host",
    "host --no-processes",
    "linux fixture",
    "macos fixture",
];

/// The process source of the Linux fixture: generated names instead of the live table.
struct FixtureProcesses(Vec<String>);

impl Source for FixtureProcesses {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        process::items_from_names(ctx.platform, self.0.iter().cloned(), out);
        SourceOutcome::Ok
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time of every thread of this process so far, user and system, to the nanosecond
/// (`/proc/*/schedstat` and `getrusage` lag by up to a scheduler tick, longer than a scan).
#[cfg(unix)]
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(not(unix))]
fn cpu_time() -> Duration {
    Duration::ZERO
}

/// One run in this (fresh) process; prints a `RESULT` line for the parent.
fn child(case: &str, root: Option<PathBuf>) {
    let base_kib = status_kib("VmRSS");
    let compile = cpu_time();
    let catalog = Catalog::embedded();
    let scanner = Scanner::new(&catalog);
    let compile = cpu_time().saturating_sub(compile);
    let (target, sources) = match case {
        "host" | "host --no-processes" => {
            let target = ScanTarget::host(case.ends_with("processes")).expect("a supported OS");
            let sources = sources::for_platform(target.platform);
            (target, sources)
        }
        "linux fixture" => {
            let mut sources = sources::for_platform(Platform::Linux);
            sources.retain(|s| s.name() != "process");
            sources.push(Box::new(FixtureProcesses(fixture::process_names(&catalog))));
            let root = root.expect("--root");
            (ScanTarget::tree(&root, Platform::Linux), sources)
        }
        "macos fixture" => {
            let root = root.expect("--root");
            (
                ScanTarget::tree(&root, Platform::Macos),
                sources::for_platform(Platform::Macos),
            )
        }
        other => panic!("unknown case {other}"),
    };
    let cpu = cpu_time();
    let wall = Instant::now();
    let report = scanner.scan_with(&target, &sources);
    let wall = wall.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    let peak_kib = status_kib("VmHWM");
    let not_ok: Vec<String> = report
        .stats
        .sources
        .iter()
        .filter(|(_, o)| !o.is_ok())
        .map(|(s, o)| format!("{s}={o}"))
        .collect();
    println!(
        "RESULT {} {} {} {base_kib} {peak_kib} {} {} {} {}",
        wall.as_nanos(),
        cpu.as_nanos(),
        compile.as_nanos(),
        report.stats.items_seen,
        report.findings.len(),
        report.unclassified.len(),
        not_ok.join(",").replace(' ', "_")
    );
}

/// What one child reported.
struct Run {
    wall: Duration,
    cpu: Duration,
    compile: Duration,
    base_kib: u64,
    peak_kib: u64,
    items: u64,
    findings: usize,
    unclassified: usize,
    not_ok: String,
}

fn parse_run(stdout: &str) -> Option<Run> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    let f: Vec<&str> = line.split(' ').collect();
    Some(Run {
        wall: Duration::from_nanos(f.first()?.parse().ok()?),
        cpu: Duration::from_nanos(f.get(1)?.parse().ok()?),
        compile: Duration::from_nanos(f.get(2)?.parse().ok()?),
        base_kib: f.get(3)?.parse().ok()?,
        peak_kib: f.get(4)?.parse().ok()?,
        items: f.get(5)?.parse().ok()?,
        findings: f.get(6)?.parse().ok()?,
        unclassified: f.get(7)?.parse().ok()?,
        not_ok: f.get(8).copied().unwrap_or("").to_owned(),
    })
}

fn spawn(case: &str, root: Option<&Path>) -> Run {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.arg("--case").arg(case);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    let out = cmd.output().expect("re-run the bench as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_run(&stdout).unwrap_or_else(|| {
        panic!(
            "case {case}: child printed no result: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn median<T: Ord + Copy>(mut xs: Vec<T>) -> T {
    xs.sort();
    xs[xs.len() / 2]
}

fn min<T: Ord + Copy>(xs: &[T]) -> T {
    xs.iter().copied().min().expect("at least one run")
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if let Some(case) = value("--case") {
        child(&case, value("--root").map(PathBuf::from));
        return;
    }
    let runs: usize = value("--runs").and_then(|n| n.parse().ok()).unwrap_or(7);
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--") && (*i == 0 || !["--runs", "--fixtures"].contains(&&*args[i - 1]))
        })
        .map(|(_, a)| a)
        .collect();

    let catalog = Catalog::embedded();
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = value("--fixtures").map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let (linux, macos) = (dir.join("linux"), dir.join("macos"));
    for tree in [&linux, &macos] {
        if tree.exists() {
            std::fs::remove_dir_all(tree).expect("remove the old fixture");
        }
    }
    let t = Instant::now();
    let status_bytes = fixture::linux(&linux, &catalog);
    fixture::macos(&macos, &catalog);
    println!(
        "scan: fixtures built in {:.1} s: dpkg status {:.1} MB ({} packages), {} desktop entries, \
         {} process names, {} app bundles",
        t.elapsed().as_secs_f64(),
        status_bytes as f64 / 1e6,
        fixture::PACKAGES,
        fixture::DESKTOP_ENTRIES,
        fixture::PROCESSES,
        fixture::APP_BUNDLES
    );
    println!(
        "scan: {runs} runs per case, each in a fresh process; times in ms, RSS in MiB (VmRSS before \
         the catalog is compiled, VmHWM after the scan); catalog = CPU to load and compile it"
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6} {:>8} {:>12}  not ok",
        "case",
        "wall med",
        "wall min",
        "cpu med",
        "cpu min",
        "catalog",
        "base RSS",
        "peak RSS",
        "items",
        "findings",
        "unclassified"
    );
    for case in CASES {
        if !filters.is_empty() && !filters.iter().any(|f| case.contains(f.as_str())) {
            continue;
        }
        let root = match case {
            "linux fixture" => Some(linux.as_path()),
            "macos fixture" => Some(macos.as_path()),
            _ => None,
        };
        let results: Vec<Run> = (0..runs).map(|_| spawn(case, root)).collect();
        let walls: Vec<Duration> = results.iter().map(|r| r.wall).collect();
        let cpus: Vec<Duration> = results.iter().map(|r| r.cpu).collect();
        let last = results.last().expect("at least one run");
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6} {:>8} {:>12}  {}",
            case,
            ms(median(walls.clone())),
            ms(min(&walls)),
            ms(median(cpus.clone())),
            ms(min(&cpus)),
            ms(median(results.iter().map(|r| r.compile).collect())),
            mib(median(results.iter().map(|r| r.base_kib).collect())),
            mib(median(results.iter().map(|r| r.peak_kib).collect())),
            last.items,
            last.findings,
            last.unclassified,
            if last.not_ok.is_empty() {
                "-"
            } else {
                &last.not_ok
            }
        );
    }
}
