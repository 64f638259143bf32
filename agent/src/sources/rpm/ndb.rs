//! A read-only reader of rpm's **ndb** package database (`Packages.db`, SUSE since openSUSE Leap
//! 15.2 / SLE 15 SP2 until their move to SQLite), in pure Rust, following rpm's
//! `lib/backend/ndb/rpmpkg.c`.
//!
//! # Format
//! All numbers little-endian, whatever the machine. The file is 16-byte blocks. It opens with
//! `slotnpages` 4096-byte slot pages; the first 32 bytes of page 0 are the database header
//! (`RpmP`, version 0, generation, `slotnpages`, next package index). The rest of the slot pages
//! are 16-byte slots: `Slot`, package index, block offset, block count; a slot whose block offset
//! is 0 is free. A used slot points at a blob after the slot pages: a 16-byte head (`BlbS`,
//! package index, timestamp, length), the RPM header, zero padding to the block, and a 12-byte
//! tail (Adler-32 of head, header and padding; length again; `BlbE`). The block count is exactly
//! what head, header and tail need.
//!
//! # Design
//! - Every slot is checked (magic, non-zero index, blob after the slot pages and inside the file)
//!   and every blob against its slot and itself (magics, index, length agreeing three ways,
//!   checksum). A bad slot or blob is counted in [`Damage`] and skipped; only an unreadable
//!   file or database header is an [`NdbError`]. rpm refuses the whole database over one bad
//!   slot; a scanner would rather list the packages it can prove.
//! - Bounded: a file larger than [`MAX_FILE_BYTES`] is refused, the slot pages must fit in the
//!   file, a blob larger than [`MAX_BLOB`](super::MAX_BLOB) is skipped, and one slot page plus
//!   one blob is held in memory at a time.
//! - Headers are handed over in package-index order (rpm's header numbers), as the SQLite
//!   reader does.
//! - rpm can be built to LZO-compress blobs (`RPMPKG_LZO`, off by default and in the
//!   distributions' builds); such a blob is not an RPM header and is counted as damage by the
//!   header parser.

use super::{Damage, MAX_BLOB};
use std::io::{Read, Seek, SeekFrom};

/// Largest `Packages.db` read.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;

const PAGE: usize = 4096;
const BLK: u64 = 16;
const SLOT: usize = 16;
const DB_HEADER: usize = 32;
const MAGIC_DB: &[u8; 4] = b"RpmP";
const MAGIC_SLOT: &[u8; 4] = b"Slot";
const MAGIC_HEAD: &[u8; 4] = b"BlbS";
const MAGIC_TAIL: &[u8; 4] = b"BlbE";
const HEAD: usize = 16;
const TAIL: usize = 12;

/// Why an ndb file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NdbError {
    /// Reading the file failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("{0} bytes exceed the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(u64),
    /// No database header.
    #[error("not an rpm ndb database (no RpmP header)")]
    NotNdb,
    /// A version rpm never wrote.
    #[error("unsupported ndb version {0}")]
    Version(u32),
    /// The slot pages do not fit in the file.
    #[error("{pages} slot pages do not fit in {len} bytes")]
    SlotPages {
        /// Slot pages announced.
        pages: u32,
        /// File length.
        len: u64,
    },
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

/// Adler-32 (RFC 1950), as rpmpkg.c checks blobs with.
pub(crate) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that cannot overflow `b` between reductions.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// One used slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pkgidx: u32,
    blkoff: u32,
    blkcnt: u32,
}

/// Reads every package of an ndb database of `len` bytes, handing each RPM header to `blob`,
/// and returns the damage met on the way.
pub(crate) fn read<R: Read + Seek>(
    file: &mut R,
    len: u64,
    blob: &mut dyn FnMut(&[u8]),
) -> Result<Damage, NdbError> {
    if len > MAX_FILE_BYTES {
        return Err(NdbError::TooLarge(len));
    }
    let mut page = vec![0u8; PAGE];
    file.seek(SeekFrom::Start(0))?;
    if len < DB_HEADER as u64 {
        return Err(NdbError::NotNdb);
    }
    file.read_exact(&mut page[..DB_HEADER])?;
    if &page[..4] != MAGIC_DB {
        return Err(NdbError::NotNdb);
    }
    let version = le32(&page, 4);
    if version != 0 {
        return Err(NdbError::Version(version));
    }
    let slot_pages = le32(&page, 12);
    if slot_pages == 0 || u64::from(slot_pages) * PAGE as u64 > len {
        return Err(NdbError::SlotPages {
            pages: slot_pages,
            len,
        });
    }
    let mut damage = Damage::default();
    let first_blob = u64::from(slot_pages) * (PAGE as u64 / BLK);
    let file_blocks = len / BLK;
    if !len.is_multiple_of(BLK) {
        damage.note(format!(
            "truncated: {len} bytes is not a whole number of blocks"
        ));
    }
    let mut slots = Vec::new();
    for p in 0..slot_pages {
        file.seek(SeekFrom::Start(u64::from(p) * PAGE as u64))?;
        file.read_exact(&mut page)?;
        let start = if p == 0 { DB_HEADER } else { 0 };
        for at in (start..PAGE).step_by(SLOT) {
            let n = (p as usize * PAGE + at) / SLOT;
            if &page[at..at + 4] != MAGIC_SLOT {
                damage.note(format!("slot {n}: bad magic"));
                continue;
            }
            let (pkgidx, blkoff, blkcnt) = (
                le32(&page, at + 4),
                le32(&page, at + 8),
                le32(&page, at + 12),
            );
            if blkoff == 0 {
                continue; // free
            }
            let end = u64::from(blkoff) + u64::from(blkcnt);
            if pkgidx == 0 || blkcnt == 0 || u64::from(blkoff) < first_blob {
                damage.note(format!("slot {n}: bad entry"));
            } else if end > file_blocks {
                damage.note(format!(
                    "slot {n}: package {pkgidx} lies past the end of the file (truncated)"
                ));
            } else {
                slots.push(Slot {
                    pkgidx,
                    blkoff,
                    blkcnt,
                });
            }
        }
    }
    slots.sort_by_key(|s| (s.pkgidx, s.blkoff));
    let mut buf = Vec::new();
    for slot in slots {
        match read_blob(file, slot, &mut buf) {
            Ok(header) => blob(header),
            Err(why) => damage.note(format!("package {}: {why}", slot.pkgidx)),
        }
    }
    Ok(damage)
}

/// Reads and checks the blob of `slot` into `buf`; returns the RPM header in it.
fn read_blob<'b, R: Read + Seek>(
    file: &mut R,
    slot: Slot,
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8], String> {
    let size = u64::from(slot.blkcnt) * BLK;
    if size > (MAX_BLOB + HEAD + TAIL) as u64 + BLK {
        return Err(format!("blob of {size} bytes"));
    }
    let size = size as usize;
    if size < HEAD + TAIL {
        return Err(format!("blob of {size} bytes is shorter than its frame"));
    }
    buf.clear();
    buf.resize(size, 0);
    file.seek(SeekFrom::Start(u64::from(slot.blkoff) * BLK))
        .and_then(|_| file.read_exact(buf))
        .map_err(|e| format!("read error: {e}"))?;
    if &buf[..4] != MAGIC_HEAD || le32(buf, 4) != slot.pkgidx {
        return Err("blob head does not match its slot".into());
    }
    let header_len = le32(buf, 12) as usize;
    let need = (HEAD + TAIL).checked_add(header_len).ok_or("bad length")?;
    if need.div_ceil(BLK as usize) != size / BLK as usize {
        return Err(format!(
            "header of {header_len} bytes does not fill {size} bytes"
        ));
    }
    let tail = size - TAIL;
    if le32(buf, tail + 4) as usize != header_len || &buf[tail + 8..] != MAGIC_TAIL {
        return Err("blob tail does not match its head".into());
    }
    if adler32(&buf[..tail]) != le32(buf, tail) {
        return Err("checksum mismatch".into());
    }
    Ok(&buf[HEAD..HEAD + header_len])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sources::rpm::package_header;
    use proptest::prelude::*;
    use std::io::Cursor;

    const NDB: &[u8] = include_bytes!("../../../testdata/rpmdb/ndb.db");

    /// Lays out an ndb database of `(package index, header)` pairs as rpmpkg.c does.
    pub(crate) fn write(packages: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let slot_pages = (DB_HEADER + packages.len() * SLOT).div_ceil(PAGE).max(1);
        let mut db = vec![0u8; slot_pages * PAGE];
        db[..4].copy_from_slice(MAGIC_DB);
        db[12..16].copy_from_slice(&(slot_pages as u32).to_le_bytes());
        for at in (DB_HEADER..db.len()).step_by(SLOT) {
            db[at..at + 4].copy_from_slice(MAGIC_SLOT);
        }
        for (i, (idx, header)) in packages.iter().enumerate() {
            let blkoff = db.len() as u64 / BLK;
            let blkcnt = (HEAD + header.len() + TAIL).div_ceil(BLK as usize);
            let mut body = MAGIC_HEAD.to_vec();
            for v in [*idx, 0, header.len() as u32] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            body.extend_from_slice(header);
            body.resize(blkcnt * BLK as usize - TAIL, 0);
            let sum = adler32(&body);
            db.extend_from_slice(&body);
            db.extend_from_slice(&sum.to_le_bytes());
            db.extend_from_slice(&(header.len() as u32).to_le_bytes());
            db.extend_from_slice(MAGIC_TAIL);
            let at = DB_HEADER + i * SLOT;
            db[at + 4..at + 8].copy_from_slice(&idx.to_le_bytes());
            db[at + 8..at + 12].copy_from_slice(&(blkoff as u32).to_le_bytes());
            db[at + 12..at + 16].copy_from_slice(&(blkcnt as u32).to_le_bytes());
        }
        db
    }

    fn read_all(db: &[u8]) -> Result<(Vec<Vec<u8>>, Damage), NdbError> {
        let mut blobs = Vec::new();
        let damage = read(&mut Cursor::new(db), db.len() as u64, &mut |b| {
            blobs.push(b.to_vec())
        })?;
        Ok((blobs, damage))
    }

    #[test]
    fn adler32_matches_the_rfc_1950_example() {
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_eq!(adler32(&[]), 1);
        assert_eq!(adler32(&vec![0xff; 100_000]), 0x149a_302c);
    }

    #[test]
    fn fixture_lists_three_headers_in_package_order() {
        let (blobs, damage) = read_all(NDB).unwrap();
        assert_eq!(damage, Damage::default());
        let names: Vec<_> = blobs
            .iter()
            .map(|b| crate::sources::rpm::parse_header(b).unwrap().name)
            .collect();
        assert_eq!(names, ["zoom", "telegram-desktop", "slack"]);
    }

    #[test]
    fn files_that_are_not_ndb_are_refused_with_a_reason() {
        let mut wrong_version = NDB.to_vec();
        wrong_version[4] = 1;
        let mut huge_slot_pages = NDB.to_vec();
        huge_slot_pages[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        for (what, db, want) in [
            (
                "empty",
                &b""[..],
                "not an rpm ndb database (no RpmP header)",
            ),
            (
                "sqlite",
                &b"SQLite format 3\0 and more bytes"[..],
                "not an rpm ndb",
            ),
            ("version", &wrong_version[..], "unsupported ndb version 1"),
            (
                "slot pages",
                &huge_slot_pages[..],
                "4294967295 slot pages do not fit",
            ),
        ] {
            let err = read_all(db).unwrap_err().to_string();
            assert!(err.contains(want), "{what}: {err}");
        }
        let err = read(&mut Cursor::new(NDB), MAX_FILE_BYTES + 1, &mut |_| {}).unwrap_err();
        assert!(matches!(err, NdbError::TooLarge(_)), "{err}");
    }

    #[test]
    fn a_slot_pointing_into_the_slot_pages_or_past_the_file_is_skipped() {
        let mut db = write(&[
            (1, package_header("a", "1", "1")),
            (2, package_header("b", "1", "1")),
        ]);
        // Slot 2 (first used) points into the slot page; slot 3 past the end.
        db[DB_HEADER + 8..DB_HEADER + 12].copy_from_slice(&1u32.to_le_bytes());
        db[DB_HEADER + SLOT + 12..DB_HEADER + SLOT + 16]
            .copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let (blobs, damage) = read_all(&db).unwrap();
        assert!(blobs.is_empty());
        assert_eq!(damage.count, 2);
        assert_eq!(damage.first.as_deref(), Some("slot 2: bad entry"));
    }

    proptest! {
        #[test]
        fn written_databases_read_back(
            packages in proptest::collection::btree_map(
                1u32..1000,
                ("[a-z]{1,12}", "[0-9.]{1,8}"),
                0..20,
            ),
        ) {
            let packages: Vec<(u32, Vec<u8>)> = packages
                .into_iter()
                .map(|(i, (n, v))| (i, package_header(&n, &v, "1")))
                .collect();
            let (blobs, damage) = read_all(&write(&packages)).unwrap();
            prop_assert_eq!(damage, Damage::default());
            let want: Vec<Vec<u8>> = packages.into_iter().map(|(_, b)| b).collect();
            prop_assert_eq!(blobs, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            db in proptest::collection::vec(any::<u8>(), 0..9000),
            magic in any::<bool>(),
        ) {
            let mut db = db;
            if magic && db.len() >= 16 {
                // Get past the header checks so slots and blobs are exercised.
                db[..4].copy_from_slice(MAGIC_DB);
                db[4..8].fill(0);
                db[12..16].copy_from_slice(&1u32.to_le_bytes());
            }
            if let Ok((blobs, damage)) = read_all(&db) {
                prop_assert!(blobs.len() + damage.count <= PAGE / SLOT * 2);
                prop_assert!(blobs.iter().all(|b| b.len() <= db.len()));
            }
        }

        #[test]
        fn mutated_fixture_never_panics_and_never_hands_over_more_than_it_has(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
            cut in any::<usize>(),
        ) {
            let mut db = NDB.to_vec();
            for (at, byte) in edits {
                let n = db.len();
                db[at % n] = byte;
            }
            let n = db.len();
            db.truncate(cut % (n + 1));
            if let Ok((blobs, damage)) = read_all(&db) {
                // At most two slot pages fit in the fixture's 10 KB.
                prop_assert!(blobs.len() + damage.count <= 2 * PAGE / SLOT + 2);
                let total: usize = blobs.iter().map(Vec::len).sum();
                prop_assert!(total <= db.len());
            }
        }
    }
}
