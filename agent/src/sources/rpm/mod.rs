//! The rpm database (source `rpm`).
//!
//! rpm keeps one RPM header per installed package in a database under `/usr/lib/sysimage/rpm`
//! or `/var/lib/rpm` (often one links to the other), in one of three formats, each read by its
//! own module that hands over raw header blobs:
//!
//! | file | format | written by | module |
//! |---|---|---|---|
//! | `rpmdb.sqlite` | SQLite, table `Packages(hnum, blob)` | rpm ≥ 4.16: Fedora 33+, RHEL 9, openSUSE since 2022 | [`sqlite`] (Linux builds only) |
//! | `Packages.db` | rpm's own ndb | SUSE 15.2+ before SQLite | [`ndb`] |
//! | `Packages` | BerkeleyDB hash | rpm < 4.16: RHEL/CentOS ≤ 8, RED OS, ALT Linux, ROSA | [`bdb`] |
//!
//! - The first of the two folders that holds any database decides. Within it, `rpmdb.sqlite`
//!   wins over `Packages.db`, which wins over `Packages`: rpm only ever converts a database
//!   forward (`rpmdb --rebuilddb` after `%_db_backend` changed: BerkeleyDB to ndb on SUSE, either
//!   to SQLite later) and may leave the old file behind, so the newer format present is the one
//!   rpm maintains and an older one beside it is stale.
//! - `stats.sources` says which format was read: `ok (sqlite)`, `ok (ndb)`, `ok (bdb)`. A
//!   database that cannot be read is `failed: <path>: <format>: <why>`; damaged entries (pages,
//!   slots, headers) are skipped, the readable packages still reported, and the outcome is
//!   `failed: <path>: <format>: N problems (first: <why>); the rest was read`.
//! - Headers are parsed by [`parse_header`], pure code that bounds-checks every count and
//!   offset: a damaged blob skips one package, never the scan.
//! - The BerkeleyDB and ndb readers are pure Rust (no libdb, no librpm), so they build for every
//!   platform: `scan --root <tree> --platform linux` on macOS or Windows reads them too. Both are
//!   bounded (file size caps, every offset checked, loops bounded by the file) and never panic;
//!   property tests feed them arbitrary and mutated files.
//! - SQLite (`rusqlite`, bundled C) is compiled into Linux builds only, Linux being the one
//!   platform whose sources include `rpm`; builds for macOS and Windows leave it out (the macOS
//!   type-check in CI has no C library headers to compile it against) and report an
//!   `rpmdb.sqlite` as `failed: <path>: sqlite: reading needs the Linux build`.

use super::util::{rooted, text::clip};
use super::{ScanContext, Source};
use commscan_core::catalog::SignatureKind;
use commscan_core::inventory::InventoryItem;
use commscan_core::scan::SourceOutcome;
use std::path::Path;

pub(crate) mod bdb;
pub(crate) mod ndb;
#[cfg(target_os = "linux")]
pub(crate) mod sqlite;

/// The rpm source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rpm;

/// Folders that hold the rpm database, newest convention first.
pub(crate) const DB_DIRS: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];

/// rpm's own limit on the index entries of one header (`HEADER_TAGS_MAX`).
pub(crate) const MAX_ENTRIES: u32 = 0xffff;
/// rpm's own limit on the data store of one header (`HEADER_DATA_MAX`).
pub(crate) const MAX_DATA: u32 = 0x0fff_ffff;
/// Largest header blob the BerkeleyDB and ndb readers assemble. Below rpm's own limits (256 MiB
/// of data), far above real headers (a package with tens of thousands of files has a few MiB).
pub(crate) const MAX_BLOB: usize = 64 << 20;
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

/// The rpm database formats, in the order a folder is searched (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `rpmdb.sqlite`.
    Sqlite,
    /// `Packages.db`.
    Ndb,
    /// `Packages`.
    Bdb,
}

impl Format {
    /// Search order within a folder.
    pub(crate) const ALL: [Format; 3] = [Format::Sqlite, Format::Ndb, Format::Bdb];

    /// The database's file name.
    pub(crate) fn file(self) -> &'static str {
        match self {
            Format::Sqlite => "rpmdb.sqlite",
            Format::Ndb => "Packages.db",
            Format::Bdb => "Packages",
        }
    }

    /// The name `stats.sources` and problems give it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Sqlite => "sqlite",
            Format::Ndb => "ndb",
            Format::Bdb => "bdb",
        }
    }
}

/// Entries a reader skipped as damaged: how many, and the first one's description.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Entries (pages, slots, values, headers) skipped.
    pub(crate) count: usize,
    /// What was wrong with the first.
    pub(crate) first: Option<String>,
}

impl Damage {
    /// Counts one damaged entry.
    pub(crate) fn note(&mut self, why: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(why);
        }
    }
}

/// Reads the database `db` in format `format`, handing each header blob to `blob`.
fn read_db(format: Format, db: &Path, blob: &mut dyn FnMut(&[u8])) -> Result<Damage, String> {
    let open = || -> Result<(std::fs::File, u64), String> {
        let file = std::fs::File::open(db).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        Ok((file, len))
    };
    match format {
        #[cfg(target_os = "linux")]
        Format::Sqlite => sqlite::read(db, blob),
        #[cfg(not(target_os = "linux"))]
        Format::Sqlite => Err("reading needs the Linux build".to_owned()),
        Format::Ndb => {
            let (mut file, len) = open()?;
            ndb::read(&mut file, len, blob).map_err(|e| e.to_string())
        }
        Format::Bdb => {
            let (mut file, len) = open()?;
            bdb::read(&mut file, len, blob).map_err(|e| e.to_string())
        }
    }
}

/// The inventory item of a parsed header.
fn item(h: Header) -> InventoryItem {
    let evr = h.evr();
    let detail = match &evr {
        Some(v) => format!("package {} {v}", h.name),
        None => format!("package {}", h.name),
    };
    let mut item = InventoryItem::installed("rpm", SignatureKind::Rpm, h.name, detail);
    item.version = evr;
    item
}

/// Reads one database into `out` and words the outcome.
fn collect_db(format: Format, db: &Path, out: &mut Vec<InventoryItem>) -> SourceOutcome {
    let mut bad_headers = Damage::default();
    let read = read_db(format, db, &mut |blob| match parse_header(blob) {
        Ok(h) => out.push(item(h)),
        Err(e) => bad_headers.note(e.to_string()),
    });
    let fail =
        |why: &str| SourceOutcome::Failed(format!("{}: {}: {why}", db.display(), format.name()));
    match read {
        Err(e) => fail(&e),
        Ok(damage) => {
            let count = damage.count + bad_headers.count;
            match damage.first.or(bad_headers.first) {
                None => SourceOutcome::OkFrom(format.name().to_owned()),
                Some(first) => fail(&format!(
                    "{count} problem{} (first: {first}); the rest was read",
                    if count == 1 { "" } else { "s" }
                )),
            }
        }
    }
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
            for format in Format::ALL {
                let db = dir.join(format.file());
                if db.is_file() {
                    return collect_db(format, &db, out);
                }
            }
        }
        SourceOutcome::Absent
    }
}

#[cfg(test)]
mod format_tests;
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
        let blob = include_bytes!("../../../testdata/rpm-header-zoom.bin");
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
            let mut blob = include_bytes!("../../../testdata/rpm-header-zoom.bin").to_vec();
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
            matches!(&outcome, SourceOutcome::Failed(m) if m.contains("rpmdb.sqlite: sqlite: 1 problem (first: header of 7 bytes is shorter than its preamble); the rest was read")),
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
        assert_eq!(outcome, SourceOutcome::OkFrom("sqlite".into()));
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
            matches!(&outcome, SourceOutcome::Failed(m) if m.ends_with("rpmdb.sqlite: sqlite: reading needs the Linux build")),
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
