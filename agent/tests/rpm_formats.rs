//! Machines whose rpm predates SQLite: a CentOS 7 / RED OS tree with a BerkeleyDB `Packages`, a
//! SUSE tree with an ndb `Packages.db` (fixtures written by db5.3_load and rpm's layout, see
//! `agent/testdata/rpmdb/README.md`). The agent finds their products and says which format it
//! read. Runs on every platform: neither reader links a C library.

use commscan_agent::scanner::{ScanTarget, Scanner};
use commscan_core::catalog::Catalog;
use commscan_core::platform::Platform;
use commscan_core::scan::{ScanReport, SourceOutcome};
use std::path::Path;

fn tree(db_path: &str, db: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(db_path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, db).unwrap();
    dir
}

fn scan(root: &Path) -> ScanReport {
    Scanner::new(&Catalog::embedded()).scan(&ScanTarget::tree(root, Platform::Linux))
}

fn rpm_evidence(report: &ScanReport) -> Vec<(String, String)> {
    let mut out: Vec<_> = report
        .findings
        .iter()
        .flat_map(|f| {
            f.evidence
                .iter()
                .filter(|e| e.source == "rpm")
                .map(|e| (f.product.clone(), e.detail.clone()))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn centos_7_and_suse_machines_report_their_rpm_packages_and_the_format_read() {
    for (db_path, db, format) in [
        (
            "var/lib/rpm/Packages",
            &include_bytes!("../testdata/rpmdb/bdb-hash-le.db")[..],
            "bdb",
        ),
        (
            "var/lib/rpm/Packages",
            &include_bytes!("../testdata/rpmdb/bdb-hash-be.db")[..],
            "bdb",
        ),
        (
            "usr/lib/sysimage/rpm/Packages.db",
            &include_bytes!("../testdata/rpmdb/ndb.db")[..],
            "ndb",
        ),
    ] {
        let dir = tree(db_path, db);
        let report = scan(dir.path());
        assert_eq!(
            report.stats.sources.get("rpm"),
            Some(&SourceOutcome::OkFrom(format.into())),
            "{db_path}"
        );
        assert_eq!(
            rpm_evidence(&report),
            vec![
                ("slack".into(), "package slack 4.41.105-0.1.el8".into()),
                (
                    "telegram".into(),
                    "package telegram-desktop 4.16.8-1.el8".into()
                ),
                ("zoom".into(), "package zoom 1:6.1.0-2.fc40".into()),
            ],
            "{db_path}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["stats"]["sources"]["rpm"], format!("ok ({format})"));
    }
}

#[test]
fn a_damaged_berkeleydb_still_reports_what_it_can_and_fails_rpm_alone() {
    let dir = tree(
        "var/lib/rpm/Packages",
        include_bytes!("../testdata/rpmdb/bdb-hash-corrupt.db"),
    );
    let report = scan(dir.path());
    match report.stats.sources.get("rpm") {
        Some(SourceOutcome::Failed(why)) => {
            assert!(why.contains("Packages: bdb: 1 problem (first: "), "{why}")
        }
        other => panic!("rpm outcome {other:?}"),
    }
    let found: Vec<String> = rpm_evidence(&report).into_iter().map(|(p, _)| p).collect();
    assert_eq!(found, ["slack", "telegram"]);
}
