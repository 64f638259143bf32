//! Reading `rpmdb.sqlite` (rpm ≥ 4.16) with the bundled SQLite, in Linux builds only.
//!
//! The database is opened read-only with `immutable=1`, so SQLite takes no lock and writes
//! nothing (no `-shm`, no journal) into the scanned tree. `immutable` also makes SQLite ignore
//! the write-ahead log; when a non-empty `rpmdb.sqlite-wal` exists (an rpm or PackageKit
//! process holds the database open and recent installs are not yet checkpointed), the database
//! and its log are copied to a private temporary folder and read from there.

use super::Damage;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// Largest database (plus log) copied aside when a write-ahead log must be read.
const MAX_COPY: u64 = 1 << 30;
/// Most rows read; a real database has a few thousand.
const MAX_ROWS: usize = 1_000_000;

/// `file:` URI for SQLite: every byte outside the unreserved set and `/` percent-encoded.
pub(crate) fn sqlite_uri(path: &Path, query: &str) -> Result<String, String> {
    let s = path
        .to_str()
        .ok_or_else(|| "path is not UTF-8".to_owned())?;
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

/// Hands every `blob` of an open database to `blob`; rows whose blob is not a blob are damage.
fn read_packages(conn: &Connection, blob: &mut dyn FnMut(&[u8])) -> rusqlite::Result<Damage> {
    let mut stmt = conn.prepare("SELECT hnum, blob FROM Packages")?;
    let mut rows = stmt.query([])?;
    let mut damage = Damage::default();
    let mut n = 0usize;
    while let Some(row) = rows.next()? {
        n += 1;
        if n > MAX_ROWS {
            damage.note(format!("more than {MAX_ROWS} rows"));
            break;
        }
        match row.get_ref(1)?.as_blob() {
            Ok(b) => blob(b),
            Err(_) => {
                let hnum = row.get_ref(0)?.as_i64().unwrap_or(0);
                damage.note(format!("row {hnum}: not a blob"));
            }
        }
    }
    Ok(damage)
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

/// Reads an SQLite rpm database, handing each RPM header to `blob`; errors do not name the
/// file (the caller does).
pub(crate) fn read(db: &Path, blob: &mut dyn FnMut(&[u8])) -> Result<Damage, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
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
        return read_packages(&conn, blob).map_err(|e| fail(&e));
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
    let result = read_packages(&conn, blob).map_err(|e| fail(&e));
    drop(conn);
    result
}
