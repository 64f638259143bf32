//! The `rpm` source over BerkeleyDB and ndb databases written by real tools (see
//! `agent/testdata/rpmdb/README.md`), whole and damaged, and the choice between formats.

use super::*;
use commscan_core::platform::Platform;

const LE: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-le.db");
const BE: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-be.db");
const BIG_PAGES: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-8k.db");
const BDB_TRUNCATED: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-truncated.db");
const BDB_CORRUPT: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-corrupt.db");
const NDB: &[u8] = include_bytes!("../../../testdata/rpmdb/ndb.db");
const NDB_TRUNCATED: &[u8] = include_bytes!("../../../testdata/rpmdb/ndb-truncated.db");
const NDB_CORRUPT: &[u8] = include_bytes!("../../../testdata/rpmdb/ndb-corrupt.db");

const ALL: [(&str, &str); 3] = [
    ("slack", "4.41.105-0.1.el8"),
    ("telegram-desktop", "4.16.8-1.el8"),
    ("zoom", "1:6.1.0-2.fc40"),
];

/// Scans a tree holding `files` (path under the root, bytes): the outcome and the sorted
/// `name version` list.
fn scan(files: &[(&str, &[u8])]) -> (SourceOutcome, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let mut out = Vec::new();
    let ctx = ScanContext::new(dir.path(), Platform::Linux, false);
    let outcome = Rpm.collect(&ctx, &mut out);
    let mut names: Vec<_> = out
        .into_iter()
        .map(|i| (i.ids[0].1.clone(), i.version.unwrap_or_default()))
        .collect();
    names.sort();
    (outcome, names)
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// What a test expects of the outcome.
enum Expect {
    Ok(&'static str),
    /// `failed: <path ending>: <format>: ...` containing the text.
    Failed(&'static str, &'static str),
}

/// One database placed in a tree, and what scanning it must give.
struct Case {
    what: &'static str,
    path: &'static str,
    bytes: &'static [u8],
    packages: &'static [(&'static str, &'static str)],
    expect: Expect,
}

#[test]
fn databases_of_every_format_and_state_give_their_packages_and_a_true_outcome() {
    let cases = [
        Case {
            what: "bdb little-endian, all on overflow pages",
            path: "var/lib/rpm/Packages",
            bytes: LE,
            packages: &ALL,
            expect: Expect::Ok("bdb"),
        },
        Case {
            what: "bdb big-endian (s390x)",
            path: "var/lib/rpm/Packages",
            bytes: BE,
            packages: &ALL,
            expect: Expect::Ok("bdb"),
        },
        Case {
            what: "bdb 8 KiB pages, headers on the bucket page",
            path: "var/lib/rpm/Packages",
            bytes: BIG_PAGES,
            packages: &ALL,
            expect: Expect::Ok("bdb"),
        },
        Case {
            what: "bdb cut in the middle of an overflow chain",
            path: "var/lib/rpm/Packages",
            bytes: BDB_TRUNCATED,
            packages: &[("zoom", "1:6.1.0-2.fc40")],
            expect: Expect::Failed("var/lib/rpm/Packages: bdb: ", "truncated"),
        },
        Case {
            what: "bdb whose overflow chain points at itself",
            path: "var/lib/rpm/Packages",
            bytes: BDB_CORRUPT,
            packages: &[
                ("slack", "4.41.105-0.1.el8"),
                ("telegram-desktop", "4.16.8-1.el8"),
            ],
            expect: Expect::Failed(
                "var/lib/rpm/Packages: bdb: 1 problem (first: ",
                "overflow chain from page 3 loops); the rest was read",
            ),
        },
        Case {
            what: "ndb",
            path: "usr/lib/sysimage/rpm/Packages.db",
            bytes: NDB,
            packages: &ALL,
            expect: Expect::Ok("ndb"),
        },
        Case {
            what: "ndb cut inside its last package",
            path: "usr/lib/sysimage/rpm/Packages.db",
            bytes: NDB_TRUNCATED,
            packages: &[
                ("telegram-desktop", "4.16.8-1.el8"),
                ("zoom", "1:6.1.0-2.fc40"),
            ],
            expect: Expect::Failed("usr/lib/sysimage/rpm/Packages.db: ndb: ", "truncated"),
        },
        Case {
            what: "ndb with a flipped byte in one header",
            path: "usr/lib/sysimage/rpm/Packages.db",
            bytes: NDB_CORRUPT,
            packages: &[("slack", "4.41.105-0.1.el8"), ("zoom", "1:6.1.0-2.fc40")],
            expect: Expect::Failed(
                "usr/lib/sysimage/rpm/Packages.db: ndb: ",
                "1 problem (first: package 2: checksum mismatch); the rest was read",
            ),
        },
        Case {
            what: "bdb that is not a database",
            path: "var/lib/rpm/Packages",
            bytes: b"bdb",
            packages: &[],
            expect: Expect::Failed(
                "var/lib/rpm/Packages: bdb: ",
                "3 bytes is too short for a BerkeleyDB meta page",
            ),
        },
    ];
    for Case {
        what,
        path,
        bytes,
        packages,
        expect,
    } in cases
    {
        let (outcome, names) = scan(&[(path, bytes)]);
        assert_eq!(names, owned(packages), "{what}");
        match (expect, &outcome) {
            (Expect::Ok(format), SourceOutcome::OkFrom(f)) => assert_eq!(f, format, "{what}"),
            (Expect::Failed(prefix, text), SourceOutcome::Failed(m)) => {
                assert!(m.contains(prefix) && m.contains(text), "{what}: {m}");
            }
            (_, other) => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn the_outcome_names_the_format_in_stats_sources_text() {
    let (outcome, _) = scan(&[("var/lib/rpm/Packages", LE)]);
    assert_eq!(outcome.to_string(), "ok (bdb)");
    let (outcome, _) = scan(&[("var/lib/rpm/Packages.db", NDB)]);
    assert_eq!(outcome.to_string(), "ok (ndb)");
}

#[test]
fn ndb_is_preferred_over_a_stale_berkeleydb_beside_it() {
    // SUSE's conversion to ndb leaves the BerkeleyDB behind; here it is damaged, to tell.
    let (outcome, names) = scan(&[
        ("var/lib/rpm/Packages", b"stale"),
        ("var/lib/rpm/Packages.db", NDB),
    ]);
    assert_eq!(outcome, SourceOutcome::OkFrom("ndb".into()));
    assert_eq!(names, owned(&ALL));
}

#[test]
fn the_first_folder_holding_a_database_decides() {
    let (outcome, names) = scan(&[
        ("usr/lib/sysimage/rpm/Packages", LE),
        ("var/lib/rpm/Packages.db", b"not read"),
    ]);
    assert_eq!(outcome, SourceOutcome::OkFrom("bdb".into()));
    assert_eq!(names.len(), 3);
}

#[cfg(target_os = "linux")]
#[test]
fn sqlite_is_preferred_over_ndb_and_berkeleydb_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("var/lib/rpm");
    std::fs::create_dir_all(&folder).unwrap();
    let conn = rusqlite::Connection::open(folder.join("rpmdb.sqlite")).unwrap();
    conn.execute_batch("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL);")
        .unwrap();
    conn.execute(
        "INSERT INTO Packages (blob) VALUES (?1)",
        [package_header("bash", "5.2", "1")],
    )
    .unwrap();
    drop(conn);
    std::fs::write(folder.join("Packages.db"), NDB).unwrap();
    std::fs::write(folder.join("Packages"), LE).unwrap();
    let mut out = Vec::new();
    let ctx = ScanContext::new(dir.path(), Platform::Linux, false);
    assert_eq!(
        Rpm.collect(&ctx, &mut out),
        SourceOutcome::OkFrom("sqlite".into())
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn a_header_that_does_not_parse_is_skipped_and_counted() {
    // ndb frames the blob correctly; the header inside is garbage.
    let db = ndb::tests::write(&[
        (1, b"garbage".to_vec()),
        (2, package_header("bash", "5", "1")),
    ]);
    let (outcome, names) = scan(&[("var/lib/rpm/Packages.db", &db)]);
    assert_eq!(names, owned(&[("bash", "5-1")]));
    assert!(
        matches!(&outcome, SourceOutcome::Failed(m) if m.ends_with("Packages.db: ndb: 1 problem (first: header of 7 bytes is shorter than its preamble); the rest was read")),
        "{outcome:?}"
    );
}
