//! Matching 5,000 inventory items against the whole catalog. Run with
//! `cargo bench -p commscan-core --bench matcher`; prints figures, asserts nothing.
//!
//! The items mimic a busy Linux desktop: 4,000 package names, 600 desktop entries, 300 process
//! names and 100 Windows display names (for the glob path), of which a few dozen match.

use commscan_core::catalog::{Catalog, SignatureKind as K};
use commscan_core::inventory::InventoryItem;
use commscan_core::matcher::Matcher;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn items() -> Vec<InventoryItem> {
    let real = [
        "zoom",
        "skypeforlinux",
        "telegram-desktop",
        "slack-desktop",
        "signal-desktop",
        "teams",
        "vkteams",
        "ktalk",
    ];
    let mut v = Vec::with_capacity(5_000);
    for i in 0..4_000 {
        let name = if i % 500 == 0 {
            real[(i / 500) % real.len()].to_string()
        } else {
            format!(
                "lib{}-package{}",
                ["gtk", "qt", "x11", "ssl", "z"][i % 5],
                i
            )
        };
        v.push(
            InventoryItem::installed("dpkg", K::Dpkg, name.clone(), format!("package {name} 1.0"))
                .with_version("1.0"),
        );
    }
    for i in 0..600 {
        v.push(
            InventoryItem::installed(
                "desktop",
                K::Desktop,
                format!("org.example.App{i}"),
                "desktop",
            )
            .with_id(K::LinuxExe, format!("app{i}")),
        );
    }
    for i in 0..300 {
        let exe = if i == 7 {
            "zoom".to_string()
        } else {
            format!("worker-{i}")
        };
        v.push(InventoryItem::running(
            "process",
            K::LinuxExe,
            exe.clone(),
            format!("process {exe}"),
        ));
    }
    for i in 0..100 {
        let dn = if i == 3 {
            "Zoom Workplace (64-bit)".to_string()
        } else {
            format!("Vendor Product {i} Runtime")
        };
        v.push(InventoryItem::installed(
            "windows_registry",
            K::WinDisplayName,
            dn.clone(),
            dn,
        ));
    }
    v
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let catalog = Catalog::embedded();
    let t = Instant::now();
    let matcher = Matcher::new(&catalog);
    let compile = t.elapsed();
    let items = items();
    let mut runs = Vec::new();
    let mut found = 0;
    for _ in 0..300 {
        let t = Instant::now();
        let (findings, _) = matcher.match_all(black_box(&items));
        runs.push(t.elapsed());
        found = findings.len();
    }
    let m = median(runs.clone());
    let p99 = {
        let mut r = runs;
        r.sort();
        r[r.len() * 99 / 100]
    };
    println!(
        "matcher: catalog of {} products compiled in {:?}",
        catalog.products().len(),
        compile
    );
    println!(
        "matcher: {} items -> {} findings: median {:.1} µs ({:.0} ns/item), p99 {:.1} µs over 300 runs",
        items.len(),
        found,
        m.as_secs_f64() * 1e6,
        m.as_secs_f64() * 1e9 / items.len() as f64,
        p99.as_secs_f64() * 1e6
    );
}
