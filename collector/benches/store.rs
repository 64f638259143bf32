//! The compliance store at fleet size: 100,000 devices in 50 organisations, on sled and, when
//! the PostgreSQL server binaries are installed, on a throw-away PostgreSQL cluster in the
//! same run (sled is the baseline). Run with `cargo bench -p commscan-collector --bench store`
//! (set `COMMSCAN_BENCH_DEVICES` for another size, `COMMSCAN_BENCH_POSTGRES=0` to leave
//! PostgreSQL out, `COMMSCAN_BENCH_PG_LOAD_THREADS` for the threads loading it). Prints
//! figures; asserts nothing.
//!
//! Measures, on each store: loading (one transaction per device through the store's
//! `put_device`, as ingest writes them; sled from one thread, PostgreSQL from several, since
//! each of its commits waits for its own WAL flush), disk use (sled: the store directory;
//! PostgreSQL: `pg_database_size`, after loading and after `VACUUM ANALYZE`, and the WAL
//! directory), applying one device's report end to end (judge, aggregate update, history,
//! flush or commit), an organisation summary, the fleet summary, the first page of
//! noncompliant devices, and a full CSV export. The PostgreSQL cluster is the tests' harness
//! (`commscan_runtime::testing::postgres`): fsync and synchronous commit on,
//! `shared_buffers = 32MB`.

mod fleet;

use commscan_collector::collector::Collector;
use commscan_collector::compliance::RulesConfig;
use commscan_collector::grpc::query::{CSV_HEADER, csv_line};
use commscan_collector::ingest::{HelloInfo, IncomingReport, ReportBody};
use commscan_collector::layout::{InitOptions, Layout, OpenSettings};
use commscan_collector::store::DeviceFilter;
use commscan_collector::store::pg_store::PgConfig;
use commscan_core::identity::DeviceIdentity;
use commscan_core::scan::ScanStats;
use commscan_core::verdict::Status;
use commscan_runtime::testing::postgres::PgCluster;
use fleet::{ORGS, device, finding};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_it<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f());
        v.push(t.elapsed());
    }
    let p = median(v.clone());
    v.sort();
    (p, v[v.len() * 99 / 100])
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// What one store measured.
struct Figures {
    name: &'static str,
    load: Duration,
    load_threads: usize,
    disk: u64,
    /// PostgreSQL: after `VACUUM ANALYZE`, and the WAL directory.
    vacuumed: Option<(u64, u64)>,
    apply: (Duration, Duration),
    org_summary: (Duration, Duration),
    fleet_summary: (Duration, Duration),
    first_page: (Duration, Duration),
    org_first_page: Duration,
    export: Duration,
    export_bytes: usize,
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = env_or("COMMSCAN_BENCH_DEVICES", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let opts = InitOptions {
        trust_domain: "bench".into(),
        server_names: vec!["localhost".into()],
        organisation: "org-0".into(),
        import_ca: None,
        import_server: None,
    };
    let mut all = Vec::new();

    let layout = Layout::new(dir.path().join("sled"));
    let secrets = layout.init(&opts).unwrap();
    let (collector, _) = layout.open(&RulesConfig::default()).unwrap();
    let store_dir = layout.path("store");
    all.push(measure(
        "sled",
        &collector,
        &secrets.admin_token,
        n,
        1,
        &|| walk_size(&store_dir),
        None,
    ));
    drop(collector);

    let postgres = std::env::var("COMMSCAN_BENCH_POSTGRES").map_or(true, |v| v != "0");
    if let Some(cluster) = postgres.then(|| PgCluster::start("store bench")).flatten() {
        let pg = PgConfig {
            url: cluster.url(),
            password: Some(cluster.password().to_owned()),
            max_connections: 32,
        };
        let layout = Layout::new(dir.path().join("pg"));
        let secrets = layout.init_with(&opts, Some(&pg)).unwrap();
        let settings = OpenSettings {
            postgres: Some(pg),
            ..OpenSettings::default()
        };
        let (collector, _) = layout
            .open_with(&RulesConfig::default(), &settings)
            .unwrap();
        let size = || -> u64 {
            cluster
                .psql(
                    &cluster.url(),
                    "SELECT pg_database_size(current_database())",
                )
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let vacuum = || -> (u64, u64) {
            cluster.psql(&cluster.url(), "VACUUM ANALYZE").unwrap();
            let wal = cluster.log_file().parent().unwrap().join("pg_wal");
            (size(), walk_size(&wal))
        };
        all.push(measure(
            "PostgreSQL",
            &collector,
            &secrets.admin_token,
            n,
            env_or("COMMSCAN_BENCH_PG_LOAD_THREADS", 16),
            &size,
            Some(&vacuum),
        ));
        drop(collector);
    }
    print_table(n, &all);
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Vacuum<'a> = Option<&'a dyn Fn() -> (u64, u64)>;

fn measure(
    name: &'static str,
    collector: &Collector,
    admin_token: &str,
    n: usize,
    threads: usize,
    disk: &dyn Fn() -> u64,
    vacuum: Vacuum<'_>,
) -> Figures {
    println!("\n# {name}");
    let admin = collector
        .authenticate(Some(admin_token), Default::default())
        .unwrap();
    let rules = collector.rules();
    let now = time::OffsetDateTime::now_utc();

    // Load: one device per transaction, judged, every third one with a denied product.
    let threads = threads.max(1);
    let t = Instant::now();
    std::thread::scope(|s| {
        for k in 0..threads {
            let rules = &rules;
            s.spawn(move || {
                for i in (k..n).step_by(threads) {
                    let d = device(i, rules, now, collector.stale_after());
                    collector.store().put_device(&d, now).unwrap();
                }
            });
        }
    });
    collector.store().flush().unwrap();
    let load = t.elapsed();
    let disk = disk();
    println!(
        "store: {n} devices in {ORGS} organisations loaded in {:.1} s from {threads} thread(s) ({:.0} devices/s), {:.0} MiB on disk ({:.0} bytes per device), RSS {:.0} MiB",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64(),
        disk as f64 / 1048576.0,
        disk as f64 / n as f64,
        rss_mib()
    );
    let vacuumed = vacuum.map(|v| v());
    if let Some((size, wal)) = vacuumed {
        println!(
            "after VACUUM ANALYZE: {:.0} MiB ({:.0} bytes per device); WAL directory {:.0} MiB",
            size as f64 / 1048576.0,
            size as f64 / n as f64,
            wal as f64 / 1048576.0
        );
    }

    // Apply one device's report end to end (validate, judge, transaction, flush).
    let mut seq = 1;
    let who = DeviceIdentity {
        trust_domain: "bench".into(),
        organisation: "org-7".into(),
        device_id: format!("00000000-0000-4000-8000-{:012}", 7),
    };
    let apply = time_it(200, || {
        seq += 1;
        let findings = if seq % 2 == 0 {
            vec![finding("zoom")]
        } else {
            vec![finding("yandex-telemost")]
        };
        collector
            .apply_report(
                &who,
                &HelloInfo::default(),
                IncomingReport {
                    sequence: seq,
                    body: ReportBody::Snapshot {
                        findings,
                        unclassified: vec![],
                    },
                    stats: ScanStats::default(),
                    state_digest: Vec::new(),
                },
            )
            .unwrap();
    });
    println!(
        "apply one report (judge + aggregates + history + flush): median {:.2} ms, p99 {:.2} ms",
        ms(apply.0),
        ms(apply.1)
    );

    let org_summary = time_it(1000, || {
        collector.organisation_summary(&admin, "org-3").unwrap()
    });
    println!(
        "organisation summary: median {:.1} µs, p99 {:.1} µs",
        us(org_summary.0),
        us(org_summary.1)
    );
    let fleet_summary = time_it(200, || collector.fleet_summary(&admin).unwrap());
    println!(
        "fleet summary ({ORGS} rows): median {:.1} µs, p99 {:.1} µs",
        us(fleet_summary.0),
        us(fleet_summary.1)
    );
    let filter = DeviceFilter {
        status: Some(Status::Noncompliant),
        ..DeviceFilter::default()
    };
    let first_page = time_it(200, || {
        collector.list_devices(&admin, &filter, None, 100).unwrap()
    });
    println!(
        "first page (100) of noncompliant devices: median {:.2} ms, p99 {:.2} ms",
        ms(first_page.0),
        ms(first_page.1)
    );
    let org_filter = DeviceFilter {
        organisation: Some("org-11".into()),
        status: Some(Status::Noncompliant),
        ..DeviceFilter::default()
    };
    let (org_first_page, _) = time_it(200, || {
        collector
            .list_devices(&admin, &org_filter, None, 100)
            .unwrap()
    });
    println!(
        "first page (100) of one organisation's noncompliant devices: median {:.2} ms",
        ms(org_first_page)
    );

    let mut exports = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut out = String::from(CSV_HEADER);
        let mut cursor: Option<String> = None;
        let all = DeviceFilter::default();
        loop {
            let page = collector
                .store()
                .list_devices(&all, cursor.as_deref(), 2000)
                .unwrap();
            for d in &page.devices {
                out.push_str(&csv_line(d));
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        bytes = out.len();
        exports.push(t.elapsed());
    }
    let export = median(exports);
    println!(
        "full CSV export of {n} devices: median {:.2} s ({:.1} MiB)",
        export.as_secs_f64(),
        bytes as f64 / 1048576.0
    );
    println!("RSS after the run: {:.0} MiB", rss_mib());
    Figures {
        name,
        load,
        load_threads: threads,
        disk,
        vacuumed,
        apply,
        org_summary,
        fleet_summary,
        first_page,
        org_first_page,
        export,
        export_bytes: bytes,
    }
}

/// The stores side by side, as a Markdown table.
fn print_table(n: usize, all: &[Figures]) {
    println!(
        "\n| operation ({n} devices) | {} | budget |",
        all.iter().map(|f| f.name).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}---|", "---:|".repeat(all.len()));
    let row = |what: &str, budget: &str, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = all.iter().map(cell).collect();
        println!("| {what} | {} | {budget} |", cells.join(" | "));
    };
    row("load (one transaction per device)", "", &|f| {
        format!(
            "{:.1} s, {} thread(s) ({:.0} devices/s)",
            f.load.as_secs_f64(),
            f.load_threads,
            n as f64 / f.load.as_secs_f64()
        )
    });
    row("disk after loading", "", &|f| {
        format!(
            "{:.0} MiB ({:.1} KiB per device)",
            f.disk as f64 / 1048576.0,
            f.disk as f64 / n as f64 / 1024.0
        )
    });
    row(
        "disk after VACUUM ANALYZE; WAL",
        "",
        &|f| match f.vacuumed {
            Some((size, wal)) => format!(
                "{:.0} MiB ({:.1} KiB per device); WAL {:.0} MiB",
                size as f64 / 1048576.0,
                size as f64 / n as f64 / 1024.0,
                wal as f64 / 1048576.0
            ),
            None => "—".into(),
        },
    );
    let pair_ms = |d: (Duration, Duration)| format!("{:.2} / {:.2} ms", ms(d.0), ms(d.1));
    let pair_us = |d: (Duration, Duration)| format!("{:.1} / {:.1} µs", us(d.0), us(d.1));
    row("apply one report, median / p99", "", &|f| pair_ms(f.apply));
    row("organisation summary, median / p99", "< 1 ms", &|f| {
        pair_us(f.org_summary)
    });
    row("fleet summary (50 rows), median / p99", "< 1 ms", &|f| {
        pair_us(f.fleet_summary)
    });
    row(
        "first page (100) of noncompliant devices, median / p99",
        "< 10 ms",
        &|f| pair_ms(f.first_page),
    );
    row(
        "first page (100), one organisation, median",
        "< 10 ms",
        &|f| format!("{:.2} ms", ms(f.org_first_page)),
    );
    row("full CSV export, median of 3", "< 2 s", &|f| {
        format!(
            "{:.2} s ({:.1} MiB)",
            f.export.as_secs_f64(),
            f.export_bytes as f64 / 1048576.0
        )
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn walk_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
