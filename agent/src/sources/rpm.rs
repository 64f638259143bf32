//! The rpm database (source `rpm`).
//!
//! RPM ≥ 4.16 (Fedora 33+, RHEL 9, openSUSE's newer releases) keeps it in SQLite:
//! `rpmdb.sqlite` in `/usr/lib/sysimage/rpm` or `/var/lib/rpm` (often one links to the other),
//! table `Packages(hnum, blob)`, one RPM header per installed package. The first of the two
//! folders that holds any database decides.
//!
//! - The database is opened read-only with `immutable=1`, so SQLite takes no lock and writes
//!   nothing (no `-shm`, no journal) into the scanned tree. `immutable` also makes SQLite ignore
//!   the write-ahead log; when a non-empty `rpmdb.sqlite-wal` exists (an rpm or PackageKit
//!   process holds the database open and recent installs are not yet checkpointed), the
//!   database and its log are copied to a private temporary folder and read from there.
//! - Headers are parsed by [`parse_header`], pure code that bounds-checks every count and
//!   offset: a damaged blob skips one package, never the scan.
//! - The older BerkeleyDB `Packages` (RHEL ≤ 8) and SUSE's `Packages.db` (ndb) are not read:
//!   the source says so as `failed: ...` instead of claiming the machine has no rpm packages.
//! - SQLite (`rusqlite`, bundled C) is compiled into Linux builds only, Linux being the one
//!   platform whose sources include `rpm`; builds for macOS and Windows leave it out (the macOS
//!   type-check in CI has no C library headers to compile it against). There the source still
//!   exists, since `scan --root <tree> --platform linux` can scan a Linux tree, and header
//!   parsing and the BerkeleyDB and ndb detection are the same, but an `rpmdb.sqlite` is
//!   reported as `failed: <path>: rpm sqlite database reading needs the Linux build` instead
//!   of being read.

// Elsewhere than Linux nothing calls the header parser (only the SQLite reader does); it stays
// compiled there, and its tests run there, rather than being cfg'd out item by item.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use super::util::{rooted, text::clip};
use super::{ScanContext, Source};
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;

/// The rpm source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rpm;

/// Folders that hold the rpm database, newest convention first.
pub(crate) const DB_DIRS: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];

/// rpm's own limit on the index entries of one header (`HEADER_TAGS_MAX`).
pub(crate) const MAX_ENTRIES: u32 = 0xffff;
/// rpm's own limit on the data store of one header (`HEADER_DATA_MAX`).
pub(crate) const MAX_DATA: u32 = 0x0fff_ffff;
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;

/// What commscan keeps of one RPM header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Header {
    /// `NAME`.
    pub(crate) name: String,
    /// `EPOCH`, when set.
    pub(crate) epoch: Option<u32>,
    /// `VERSION`.
    pub(crate) version: Option<String>,
    /// `RELEASE`.
    pub(crate) release: Option<String>,
}

impl Header {
    /// `[epoch:]version[-release]`, as `rpm -q` shows it.
    pub(crate) fn evr(&self) -> Option<String> {
        let v = self.version.as_deref()?;
        let mut s = String::new();
        if let Some(e) = self.epoch {
            s.push_str(&format!("{e}:"));
        }
        s.push_str(v);
        if let Some(r) = &self.release {
            s.push('-');
            s.push_str(r);
        }
        Some(clip(&s))
    }
}

/// Why a header blob was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    /// Shorter than the 8-byte preamble.
    #[error("header of {0} bytes is shorter than its preamble")]
    TooShort(usize),
    /// More index entries than rpm allows.
    #[error("{0} index entries exceed rpm's limit")]
    TooManyEntries(u32),
    /// A larger data store than rpm allows.
    #[error("data store of {0} bytes exceeds rpm's limit")]
    DataTooLarge(u32),
    /// The index and data store need more bytes than the blob has.
    #[error("header needs {need} bytes but has {have}")]
    Truncated {
        /// Bytes the preamble announces.
        need: u64,
        /// Bytes present.
        have: usize,
    },
    /// A tag points outside the data store or its string has no terminator.
    #[error("tag {0} points outside the data store")]
    BadOffset(u32),
    /// No `NAME` tag.
    #[error("header has no NAME")]
    NoName,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn string_at(data: &[u8], offset: u32, tag: u32) -> Result<String, HeaderError> {
    let rest = data
        .get(offset as usize..)
        .ok_or(HeaderError::BadOffset(tag))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(HeaderError::BadOffset(tag))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Parses an RPM header as stored in the rpm database ("header-only" form, without the lead
/// and magic of a package file): a big-endian entry count `il` and data size `dl`, `il`
/// 16-byte index entries (tag, type, offset, count), then `dl` bytes of data. Only `NAME`,
/// `EPOCH`, `VERSION` and `RELEASE` are kept; other tags are not looked at.
pub(crate) fn parse_header(blob: &[u8]) -> Result<Header, HeaderError> {
    let (Some(il), Some(dl)) = (be32(blob, 0), be32(blob, 4)) else {
        return Err(HeaderError::TooShort(blob.len()));
    };
    if il > MAX_ENTRIES {
        return Err(HeaderError::TooManyEntries(il));
    }
    if dl > MAX_DATA {
        return Err(HeaderError::DataTooLarge(dl));
    }
    let index_end = 8 + 16 * il as u64;
    let need = index_end + dl as u64;
    if need > blob.len() as u64 {
        return Err(HeaderError::Truncated {
            need,
            have: blob.len(),
        });
    }
    let data = &blob[index_end as usize..need as usize];
    let mut header = Header::default();
    let mut name = None;
    for i in 0..il as usize {
        let at = 8 + 16 * i;
        let (Some(tag), Some(typ), Some(offset), Some(count)) = (
            be32(blob, at),
            be32(blob, at + 4),
            be32(blob, at + 8),
            be32(blob, at + 12),
        ) else {
            return Err(HeaderError::Truncated {
                need,
                have: blob.len(),
            });
        };
        match (tag, typ) {
            (TAG_NAME, TYPE_STRING) => name = Some(string_at(data, offset, tag)?),
            (TAG_VERSION, TYPE_STRING) => header.version = Some(string_at(data, offset, tag)?),
            (TAG_RELEASE, TYPE_STRING) => header.release = Some(string_at(data, offset, tag)?),
            (TAG_EPOCH, TYPE_INT32) if count >= 1 => {
                header.epoch =
                    Some(be32(data, offset as usize).ok_or(HeaderError::BadOffset(tag))?);
            }
            _ => {}
        }
    }
    header.name = name.filter(|n| !n.is_empty()).ok_or(HeaderError::NoName)?;
    Ok(header)
}

/// Builds a header-only blob holding the given string tags (and an `EPOCH` if given), as the
/// rpm database stores it. For fixtures and tests.
pub(crate) fn build_header(strings: &[(u32, &str)], epoch: Option<u32>) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data = Vec::new();
    if let Some(e) = epoch {
        index.push((TAG_EPOCH, TYPE_INT32, data.len() as u32, 1u32));
        data.extend_from_slice(&e.to_be_bytes());
    }
    for (tag, s) in strings {
        index.push((*tag, TYPE_STRING, data.len() as u32, 1));
        data.extend_from_slice(s.as_bytes());
        data.push(0);
    }
    let mut out = Vec::with_capacity(8 + 16 * index.len() + data.len());
    out.extend_from_slice(&(index.len() as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    for (tag, typ, offset, count) in index {
        for v in [tag, typ, offset, count] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&data);
    out
}

/// A header for a package named `name`, version `version`, release `release`. For fixtures.
pub fn package_header(name: &str, version: &str, release: &str) -> Vec<u8> {
    build_header(
        &[
            (TAG_NAME, name),
            (TAG_VERSION, version),
            (TAG_RELEASE, release),
        ],
        None,
    )
}

#[cfg(target_os = "linux")]
use sqlite::read_sqlite;

/// Reading `rpmdb.sqlite` with the bundled SQLite (Linux builds only).
#[cfg(target_os = "linux")]
mod sqlite {
    use super::parse_header;
    use commscan_core::catalog::SignatureKind;
    use commscan_core::inventory::InventoryItem;
    use rusqlite::{Connection, OpenFlags};
    use std::path::{Path, PathBuf};

    /// Largest database (plus log) copied aside when a write-ahead log must be read.
    const MAX_COPY: u64 = 1 << 30;
    /// Most rows read; a real database has a few thousand.
    const MAX_ROWS: usize = 1_000_000;

    /// `file:` URI for SQLite: every byte outside the unreserved set and `/` percent-encoded.
    pub(super) fn sqlite_uri(path: &Path, query: &str) -> Result<String, String> {
        let s = path
            .to_str()
            .ok_or_else(|| format!("{}: path is not UTF-8", path.display()))?;
        let mut uri = String::from("file:");
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                uri.push(b as char);
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        uri.push('?');
        uri.push_str(query);
        Ok(uri)
    }

    /// Reads every header of an open database; returns the number of rows skipped as damaged.
    fn read_packages(conn: &Connection, out: &mut Vec<InventoryItem>) -> rusqlite::Result<usize> {
        let mut stmt = conn.prepare("SELECT blob FROM Packages")?;
        let mut rows = stmt.query([])?;
        let mut bad = 0usize;
        let mut n = 0usize;
        while let Some(row) = rows.next()? {
            n += 1;
            if n > MAX_ROWS {
                break;
            }
            let parsed = match row.get_ref(0)?.as_blob() {
                Ok(blob) => parse_header(blob),
                Err(_) => {
                    bad += 1;
                    continue;
                }
            };
            match parsed {
                Ok(h) => {
                    let evr = h.evr();
                    let detail = match &evr {
                        Some(v) => format!("package {} {v}", h.name),
                        None => format!("package {}", h.name),
                    };
                    let mut item =
                        InventoryItem::installed("rpm", SignatureKind::Rpm, h.name, detail);
                    item.version = evr;
                    out.push(item);
                }
                Err(_) => bad += 1,
            }
        }
        Ok(bad)
    }

    /// A private temporary folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> std::io::Result<TempDir> {
            let mut rnd = [0u8; 8];
            getrandom::fill(&mut rnd).map_err(|e| std::io::Error::other(e.to_string()))?;
            let name = format!("commscan-rpmdb-{}-{}", std::process::id(), hex_of(&rnd));
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir(&path)?;
            Ok(TempDir(path))
        }
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Reads an SQLite rpm database; `Ok(n)` with `n` damaged rows skipped.
    pub(crate) fn read_sqlite(db: &Path, out: &mut Vec<InventoryItem>) -> Result<usize, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", db.display());
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if wal_len == 0 {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI;
            let conn = Connection::open_with_flags(sqlite_uri(db, "immutable=1")?, flags)
                .map_err(|e| fail(&e))?;
            return read_packages(&conn, out).map_err(|e| fail(&e));
        }
        // Committed transactions may sit only in the log: read a private copy of both.
        let db_len = std::fs::metadata(db).map_err(|e| fail(&e))?.len();
        if db_len.saturating_add(wal_len) > MAX_COPY {
            return Err(fail(&format!(
                "{} bytes with its write-ahead log, too large to copy aside",
                db_len + wal_len
            )));
        }
        let tmp = TempDir::new().map_err(|e| fail(&format!("temporary copy: {e}")))?;
        let copy = tmp.0.join("rpmdb.sqlite");
        std::fs::copy(db, &copy).map_err(|e| fail(&e))?;
        std::fs::copy(&wal, tmp.0.join("rpmdb.sqlite-wal")).map_err(|e| fail(&e))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&copy, flags).map_err(|e| fail(&e))?;
        let result = read_packages(&conn, out).map_err(|e| fail(&e));
        drop(conn);
        result
    }
}

/// Without SQLite (builds for other platforms than Linux): says so instead of reading.
#[cfg(not(target_os = "linux"))]
fn read_sqlite(db: &std::path::Path, _out: &mut Vec<InventoryItem>) -> Result<usize, String> {
    Err(format!(
        "{}: rpm sqlite database reading needs the Linux build",
        db.display()
    ))
}

impl Source for Rpm {
    fn name(&self) -> &'static str {
        "rpm"
    }

    fn watch_paths(&self, ctx: &ScanContext) -> Vec<std::path::PathBuf> {
        DB_DIRS.iter().map(|d| ctx.path(d)).collect()
    }

    fn collect(&self, ctx: &ScanContext, out: &mut Vec<InventoryItem>) -> SourceOutcome {
        for dir in DB_DIRS {
            let Ok(dir) = rooted::resolve(&ctx.root, dir) else {
                continue;
            };
            let sqlite = dir.join("rpmdb.sqlite");
            if sqlite.is_file() {
                return match read_sqlite(&sqlite, out) {
                    Ok(0) => SourceOutcome::Ok,
                    Ok(bad) => SourceOutcome::Failed(format!(
                        "{}: {bad} damaged package headers skipped",
                        sqlite.display()
                    )),
                    Err(e) => SourceOutcome::Failed(e),
                };
            }
            let ndb = dir.join("Packages.db");
            if ndb.is_file() {
                return SourceOutcome::Failed(format!(
                    "{}: ndb rpm database not supported",
                    ndb.display()
                ));
            }
            let bdb = dir.join("Packages");
            if bdb.is_file() {
                return SourceOutcome::Failed(format!(
                    "{}: BerkeleyDB rpm database not supported",
                    bdb.display()
                ));
            }
        }
        SourceOutcome::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commscan_core::platform::Platform;
    use proptest::prelude::*;
    #[cfg(target_os = "linux")]
    use rusqlite::Connection;
    use std::path::Path;

    #[cfg(target_os = "linux")]
    /// Writes an SQLite rpm database the way rpm lays it out.
    fn write_db(path: &Path, blobs: &[Vec<u8>]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        for b in blobs {
            conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [b])
                .unwrap();
        }
    }

    fn ctx(root: &Path) -> ScanContext {
        ScanContext::new(root, Platform::Linux, false)
    }

    fn collect(root: &Path) -> (SourceOutcome, Vec<(String, Option<String>)>) {
        let mut out = Vec::new();
        let outcome = Rpm.collect(&ctx(root), &mut out);
        let names = out
            .into_iter()
            .map(|i| (i.ids[0].1.clone(), i.version))
            .collect();
        (outcome, names)
    }

    #[test]
    fn header_fields_are_read_with_epoch() {
        let blob = build_header(
            &[
                (TAG_NAME, "zoom"),
                (TAG_VERSION, "6.1.0"),
                (TAG_RELEASE, "1"),
            ],
            Some(2),
        );
        let h = parse_header(&blob).unwrap();
        assert_eq!(h.name, "zoom");
        assert_eq!(h.evr().as_deref(), Some("2:6.1.0-1"));
    }

    #[test]
    fn header_written_by_rpm_itself_is_read() {
        let blob = include_bytes!("../../testdata/rpm-header-zoom.bin");
        let h = parse_header(blob).unwrap();
        assert_eq!(h.name, "zoom");
        assert_eq!(h.evr().as_deref(), Some("1:6.1.0-2.fc40"));
    }

    #[test]
    fn offsets_outside_the_data_store_are_rejected() {
        let mut blob = package_header("zoom", "1", "1");
        // First entry's offset (bytes 16..20) points far past the data.
        blob[16..20].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert_eq!(parse_header(&blob), Err(HeaderError::BadOffset(TAG_NAME)));
        let mut blob = package_header("zoom", "1", "1");
        let len = blob.len();
        blob.truncate(len - 1); // drops the last string's terminator
        assert!(matches!(
            parse_header(&blob),
            Err(HeaderError::Truncated { .. })
        ));
        assert_eq!(parse_header(&[0, 0]), Err(HeaderError::TooShort(2)));
        assert_eq!(
            parse_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            Err(HeaderError::TooManyEntries(u32::MAX))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(blob in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_header(&blob);
        }

        #[test]
        fn built_headers_round_trip(
            name in "[^\u{0}]{1,40}",
            version in "[^\u{0}]{0,20}",
            release in "[^\u{0}]{0,20}",
            epoch in proptest::option::of(any::<u32>()),
        ) {
            let blob = build_header(
                &[(TAG_RELEASE, &release), (TAG_NAME, &name), (TAG_VERSION, &version)],
                epoch,
            );
            let h = parse_header(&blob).unwrap();
            prop_assert_eq!(h.name, name);
            prop_assert_eq!(h.version, Some(version));
            prop_assert_eq!(h.release, Some(release));
            prop_assert_eq!(h.epoch, epoch);
        }

        #[test]
        fn corrupted_headers_never_panic_and_never_read_past_the_blob(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            // Real rpm output: a region tag, arrays, binaries and i18n strings to damage.
            let mut blob = include_bytes!("../../testdata/rpm-header-zoom.bin").to_vec();
            for (at, byte) in edits {
                let n = blob.len();
                blob[at % n] = byte;
            }
            let n = blob.len();
            blob.truncate(cut % (n + 1));
            if let Ok(h) = parse_header(&blob) {
                prop_assert!(!h.name.is_empty());
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sqlite_database_lists_packages_and_leaves_no_files_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("var/lib/rpm/rpmdb.sqlite");
        write_db(
            &db,
            &[
                package_header("zoom", "6.1.0", "1"),
                package_header("libsignal-protocol", "2.3", "4.fc40"),
                b"garbage".to_vec(),
            ],
        );
        let before: Vec<_> = std::fs::read_dir(db.parent().unwrap()).unwrap().collect();
        let (outcome, names) = collect(dir.path());
        assert_eq!(
            names,
            vec![
                ("zoom".into(), Some("6.1.0-1".into())),
                ("libsignal-protocol".into(), Some("2.3-4.fc40".into()))
            ]
        );
        assert!(
            matches!(&outcome, SourceOutcome::Failed(m) if m.contains("1 damaged package headers")),
            "{outcome:?}"
        );
        let after: Vec<_> = std::fs::read_dir(db.parent().unwrap()).unwrap().collect();
        assert_eq!(before.len(), after.len(), "no -shm or journal created");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn packages_only_in_the_write_ahead_log_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("usr/lib/sysimage/rpm/rpmdb.sqlite");
        write_db(&db, &[package_header("bash", "5.2", "1")]);
        // A second connection stays open so the log is not checkpointed away.
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;")
            .unwrap();
        writer
            .execute(
                "INSERT INTO Packages (blob) VALUES (?1)",
                [package_header("slack", "4.41", "0.1")],
            )
            .unwrap();
        let copy = tempfile::tempdir().unwrap();
        let copied = copy.path().join("usr/lib/sysimage/rpm");
        std::fs::create_dir_all(&copied).unwrap();
        for f in ["rpmdb.sqlite", "rpmdb.sqlite-wal"] {
            std::fs::copy(db.with_file_name(f), copied.join(f)).unwrap();
        }
        let (outcome, names) = collect(copy.path());
        drop(writer);
        assert_eq!(outcome, SourceOutcome::Ok);
        let names: Vec<String> = names.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["bash", "slack"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn garbage_database_is_a_failure_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("var/lib/rpm/rpmdb.sqlite");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(&db, vec![0x5au8; 8192]).unwrap();
        let (outcome, names) = collect(dir.path());
        assert!(names.is_empty());
        assert!(
            matches!(&outcome, SourceOutcome::Failed(m) if m.contains("rpmdb.sqlite")),
            "{outcome:?}"
        );
    }

    #[test]
    fn berkeleydb_and_ndb_are_reported_not_faked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/rpm")).unwrap();
        std::fs::write(dir.path().join("var/lib/rpm/Packages"), b"bdb").unwrap();
        let (outcome, _) = collect(dir.path());
        assert!(
            matches!(&outcome, SourceOutcome::Failed(m) if m.ends_with("Packages: BerkeleyDB rpm database not supported")),
            "{outcome:?}"
        );
        std::fs::create_dir_all(dir.path().join("usr/lib/sysimage/rpm")).unwrap();
        std::fs::write(dir.path().join("usr/lib/sysimage/rpm/Packages.db"), b"ndb").unwrap();
        let (outcome, _) = collect(dir.path());
        assert!(
            matches!(&outcome, SourceOutcome::Failed(m) if m.contains("ndb rpm database not supported")),
            "{outcome:?}"
        );
    }

    #[test]
    fn no_database_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(collect(dir.path()).0, SourceOutcome::Absent);
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn sqlite_database_needs_the_linux_build() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/rpm")).unwrap();
        std::fs::write(
            dir.path().join("var/lib/rpm/rpmdb.sqlite"),
            b"SQLite format 3\0",
        )
        .unwrap();
        let (outcome, names) = collect(dir.path());
        assert!(names.is_empty());
        assert!(
            matches!(&outcome, SourceOutcome::Failed(m) if m.ends_with("rpmdb.sqlite: rpm sqlite database reading needs the Linux build")),
            "{outcome:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn uri_escapes_special_characters() {
        assert_eq!(
            sqlite::sqlite_uri(Path::new("/mnt/disk #1/a?b%.sqlite"), "immutable=1").unwrap(),
            "file:/mnt/disk%20%231/a%3Fb%25.sqlite?immutable=1"
        );
    }
}
