//! A read-only reader of BerkeleyDB **hash** databases, enough for rpm's `Packages` (rpm < 4.16:
//! RHEL and CentOS ≤ 8, RED OS, ALT Linux, ROSA, older SUSE), in pure Rust: no libdb is linked,
//! so it builds for every platform and a damaged file can only cost packages, never the agent.
//!
//! # Format
//! A file of equal pages (`pagesize`, a power of two from 512 to 65536). Page 0 is the hash meta
//! page: magic `0x061561` at byte 12, written in the byte order of the machine that created the
//! file (so it reads as `0x61150600` on the other order, and every other number of the file
//! follows it), hash version (8 to 10) at 16, page size at 20, encryption algorithm at 24, page
//! type 8 at 25, last page number at 32. Every other page starts with a 26-byte header: page
//! number at 8, next page at 16, entry count at 20, free-space offset at 22 (an overflow page's
//! data length), page type at 25. A hash page (type 13, or 2 for the older unsorted form) has
//! `entries` 16-bit item offsets from byte 26, in key/value pairs; items fill the page from its
//! end, so an item ends where the previous one starts. An item's first byte is its kind: 1 (data
//! on the page, the rest of the item), 3 (off-page: page number at +4 and total length at +8 of a
//! chain of overflow pages, type 7, each carrying `free-space offset` bytes from byte 26), 2 and 4
//! (duplicates, which rpm's `Packages` never has).
//!
//! rpm keys `Packages` by the 4-byte header number and stores one RPM header per value; key 0
//! holds rpm's next free number, not a header, and is skipped.
//!
//! # Design
//! - The pages are read in file order, not through the bucket table: every live pair sits on a
//!   hash page, freed pages are retyped invalid, and a linear pass is bounded by the page count,
//!   needs nothing from the meta page beyond byte order and page size, and survives a damaged
//!   bucket table. Only overflow chains are followed, each step checked (page in the file, page
//!   number matching, overflow type, length within the page and the value) and each page at most
//!   once per chain, so a loop or a cut chain costs one value.
//! - Bounded: a file larger than [`MAX_FILE_BYTES`] is refused, a value larger than
//!   [`MAX_BLOB`](super::MAX_BLOB) is skipped, every offset and count is checked against the page,
//!   and at most one page plus one value is held in memory.
//! - Damage below the meta page is counted and described in [`Damage`], and reading goes on;
//!   only an unreadable file or meta page is a [`BdbError`]. A file that ends inside a page or
//!   before the meta page's last page is damage (the pages present are read).
//! - Like rpm's own read-only backend (`bdb_ro`), page checksums are not verified; encrypted
//!   databases are refused.

use super::{Damage, MAX_BLOB};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

/// Largest `Packages` read. A real one holds a few thousand headers: tens to a few hundred MB.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;

const MAGIC_HASH: u32 = 0x0006_1561;
const PAGE_HEADER: usize = 26;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;

/// Why a BerkeleyDB file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BdbError {
    /// Reading the file failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("{0} bytes exceed the {MAX_FILE_BYTES}-byte limit")]
    TooLarge(u64),
    /// Too short to hold a meta page.
    #[error("{0} bytes is too short for a BerkeleyDB meta page")]
    TooShort(u64),
    /// Page 0 is not a hash meta page.
    #[error("not a BerkeleyDB hash database (magic {0:#010x}, page type {1})")]
    NotHash(u32, u8),
    /// A hash version rpm never wrote.
    #[error("unsupported hash version {0}")]
    Version(u32),
    /// A page size BerkeleyDB does not use.
    #[error("invalid page size {0}")]
    PageSize(u32),
    /// Encrypted pages.
    #[error("encrypted database")]
    Encrypted,
}

/// Numbers in the file's byte order.
#[derive(Debug, Clone, Copy)]
struct Order {
    big: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let s: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }
}

/// An open database: its geometry and a page buffer.
struct Db<'a, R> {
    file: &'a mut R,
    order: Order,
    pagesize: usize,
    /// Whole pages present in the file (and announced by the meta page).
    pages: u32,
}

impl<R: Read + Seek> Db<'_, R> {
    /// Reads page `pgno` into `buf`: `Ok(false)` for a page never written (all zeroes, so
    /// numbered 0), an error when it is outside the file, unreadable or misnumbered.
    fn page(&mut self, pgno: u32, buf: &mut [u8]) -> Result<bool, String> {
        if pgno == 0 || pgno >= self.pages {
            return Err(format!("page {pgno} is outside the file"));
        }
        let at = u64::from(pgno) * self.pagesize as u64;
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|e| format!("page {pgno}: {e}"))?;
        match self.order.u32(buf, 8) {
            Some(n) if n == pgno => Ok(true),
            Some(0) if buf[25] == 0 => Ok(false),
            _ => Err(format!("page {pgno} carries another page number")),
        }
    }

    /// The value of an off-page item: `len` bytes on the overflow chain from `first`.
    fn overflow(&mut self, first: u32, len: u32, page: &mut [u8]) -> Result<Vec<u8>, String> {
        let len = len as usize;
        if len == 0 || len > MAX_BLOB {
            return Err(format!("off-page value of {len} bytes"));
        }
        if len as u64 > u64::from(self.pages) * self.pagesize as u64 {
            return Err(format!(
                "off-page value of {len} bytes is larger than the file"
            ));
        }
        let mut out = Vec::with_capacity(len);
        let mut seen = HashSet::new();
        let mut pgno = first;
        while out.len() < len {
            if pgno == 0 {
                return Err(format!("overflow chain from page {first} ends early"));
            }
            if !seen.insert(pgno) {
                return Err(format!("overflow chain from page {first} loops"));
            }
            if !self.page(pgno, page)? || page[25] != P_OVERFLOW {
                return Err(format!(
                    "page {pgno} in an overflow chain is not an overflow page"
                ));
            }
            let here = usize::from(self.order.u16(page, 22).unwrap_or(0));
            let rest = len - out.len();
            if here == 0 || here > self.pagesize - PAGE_HEADER || here > rest {
                return Err(format!("overflow page {pgno} holds {here} bytes"));
            }
            out.extend_from_slice(&page[PAGE_HEADER..PAGE_HEADER + here]);
            pgno = self.order.u32(page, 16).unwrap_or(0);
        }
        Ok(out)
    }
}

/// Reads every value of a BerkeleyDB hash database of `len` bytes, handing each RPM header (any
/// value but key 0's) to `blob`, and returns the damage met on the way.
pub(crate) fn read<R: Read + Seek>(
    file: &mut R,
    len: u64,
    blob: &mut dyn FnMut(&[u8]),
) -> Result<Damage, BdbError> {
    if len > MAX_FILE_BYTES {
        return Err(BdbError::TooLarge(len));
    }
    if len < 512 {
        return Err(BdbError::TooShort(len));
    }
    let mut meta = [0u8; 512];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut meta)?;
    let le = Order { big: false };
    let order = match le.u32(&meta, 12) {
        Some(MAGIC_HASH) => le,
        _ if Order { big: true }.u32(&meta, 12) == Some(MAGIC_HASH) => Order { big: true },
        other => return Err(BdbError::NotHash(other.unwrap_or(0), meta[25])),
    };
    if meta[25] != P_HASHMETA {
        return Err(BdbError::NotHash(MAGIC_HASH, meta[25]));
    }
    let version = order.u32(&meta, 16).unwrap_or(0);
    if !(8..=10).contains(&version) {
        return Err(BdbError::Version(version));
    }
    let pagesize = order.u32(&meta, 20).unwrap_or(0);
    if !(512..=65536).contains(&pagesize) || !pagesize.is_power_of_two() {
        return Err(BdbError::PageSize(pagesize));
    }
    if meta[24] != 0 {
        return Err(BdbError::Encrypted);
    }
    let mut damage = Damage::default();
    let pagesize_u64 = u64::from(pagesize);
    // At most 2^30 / 512 pages: fits a u32.
    let in_file = u32::try_from(len / pagesize_u64).unwrap_or(u32::MAX);
    let announced = order.u32(&meta, 32).unwrap_or(0).saturating_add(1);
    if !len.is_multiple_of(pagesize_u64) || in_file < announced {
        damage.note(format!(
            "truncated: {len} bytes hold {in_file} whole pages of the {announced} the database has"
        ));
    }
    let mut db = Db {
        file,
        order,
        pagesize: pagesize as usize,
        pages: in_file.min(announced),
    };
    let mut page = vec![0u8; db.pagesize];
    let mut overflow_page = vec![0u8; db.pagesize];
    for pgno in 1..db.pages {
        match db.page(pgno, &mut page) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                damage.note(e);
                continue;
            }
        }
        if page[25] != P_HASH && page[25] != P_HASH_UNSORTED {
            continue;
        }
        let entries = usize::from(order.u16(&page, 20).unwrap_or(0));
        let items = (db.pagesize - PAGE_HEADER) / 2;
        if entries > items {
            damage.note(format!("page {pgno}: {entries} entries do not fit"));
            continue;
        }
        if entries % 2 != 0 {
            damage.note(format!("page {pgno}: a key without a value"));
        }
        let offset = |i: usize| usize::from(order.u16(&page, PAGE_HEADER + 2 * i).unwrap_or(0));
        let lowest = PAGE_HEADER + 2 * entries;
        for pair in 0..entries / 2 {
            let (k, v) = (2 * pair, 2 * pair + 1);
            let key_end = if k == 0 { db.pagesize } else { offset(k - 1) };
            let (key_at, value_at) = (offset(k), offset(v));
            if !(lowest <= value_at && value_at < key_at && key_at < key_end)
                || key_end > db.pagesize
            {
                damage.note(format!("page {pgno}: item {k} has a bad offset"));
                continue;
            }
            let key = &page[key_at..key_end];
            let value = &page[value_at..key_at];
            if key == [H_KEYDATA, 0, 0, 0, 0] {
                continue; // rpm's next free header number
            }
            match value[0] {
                H_KEYDATA => blob(&value[1..]),
                H_OFFPAGE if value.len() == 12 => {
                    let first = order.u32(value, 4).unwrap_or(0);
                    let total = order.u32(value, 8).unwrap_or(0);
                    match db.overflow(first, total, &mut overflow_page) {
                        Ok(value) => blob(&value),
                        Err(e) => damage.note(format!("page {pgno}: item {v}: {e}")),
                    }
                }
                kind => damage.note(format!("page {pgno}: item {v} of kind {kind}")),
            }
        }
    }
    Ok(damage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::rpm::parse_header;
    use proptest::prelude::*;
    use std::io::Cursor;

    const LE: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-le.db");
    const BE: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-be.db");
    const BIG_PAGES: &[u8] = include_bytes!("../../../testdata/rpmdb/bdb-hash-8k.db");

    fn read_all(db: &[u8]) -> Result<(Vec<Vec<u8>>, Damage), BdbError> {
        let mut blobs = Vec::new();
        let damage = read(&mut Cursor::new(db), db.len() as u64, &mut |b| {
            blobs.push(b.to_vec())
        })?;
        Ok((blobs, damage))
    }

    fn names(db: &[u8]) -> Vec<String> {
        let (blobs, damage) = read_all(db).unwrap();
        assert_eq!(damage, Damage::default());
        let mut names: Vec<_> = blobs
            .iter()
            .map(|b| parse_header(b).unwrap().name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_byte_orders_and_on_page_values_give_the_same_headers() {
        for db in [LE, BE, BIG_PAGES] {
            assert_eq!(names(db), ["slack", "telegram-desktop", "zoom"]);
        }
        // Same bytes whatever the page layout: the headers are rpm's, byte for byte.
        let mut a = read_all(LE).unwrap().0;
        let mut b = read_all(BIG_PAGES).unwrap().0;
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    /// Offset of the first overflow page of `db` (512-byte pages).
    fn first_overflow(db: &[u8]) -> usize {
        (1..db.len() / 512)
            .map(|p| p * 512)
            .find(|at| db[at + 25] == P_OVERFLOW)
            .unwrap()
    }

    #[test]
    fn damaged_pages_cost_one_value_each_and_say_why() {
        let ov = first_overflow(LE);
        let set = |at: usize, bytes: &[u8]| {
            let mut db = LE.to_vec();
            db[at..at + bytes.len()].copy_from_slice(bytes);
            db
        };
        let cases = [
            ("chain cut", set(ov + 16, &0u32.to_le_bytes()), "ends early"),
            (
                "chain out of the file",
                set(ov + 16, &999u32.to_le_bytes()),
                "page 999 is outside the file",
            ),
            (
                "overflow page claims more than a page",
                set(ov + 22, &600u16.to_le_bytes()),
                "holds 600 bytes",
            ),
            (
                "misnumbered page",
                set(ov + 8, &77u32.to_le_bytes()),
                "carries another page number",
            ),
            (
                "bucket page claims too many entries",
                set(512 + 20, &0xffffu16.to_le_bytes()),
                "entries do not fit",
            ),
            (
                "item offset past the page",
                // Page 2's first pair is header 1 (page 1's is rpm's counter, key 0).
                set(2 * 512 + 26, &0xfff0u16.to_le_bytes()),
                "bad offset",
            ),
            (
                // The next item's end, taken from this one's start, lies past the page (found
                // by the property test below: it panicked).
                "value offset past the page",
                set(2 * 512 + 28, &0xfff0u16.to_le_bytes()),
                "bad offset",
            ),
        ];
        for (what, db, want) in cases {
            let (blobs, damage) = read_all(&db).unwrap();
            assert!(blobs.len() < 3, "{what}");
            assert!(damage.count >= 1, "{what}");
            let first = damage.first.unwrap();
            assert!(first.contains(want), "{what}: {first}");
        }
    }

    #[test]
    fn files_that_are_not_bdb_hash_are_refused_with_a_reason() {
        let mut btree = LE.to_vec();
        btree[12..16].copy_from_slice(&0x0005_3162u32.to_le_bytes());
        let mut version = LE.to_vec();
        version[16..20].copy_from_slice(&7u32.to_le_bytes());
        let mut pagesize = LE.to_vec();
        pagesize[20..24].copy_from_slice(&1000u32.to_le_bytes());
        let mut encrypted = LE.to_vec();
        encrypted[24] = 1;
        for (what, db, want) in [
            ("short", &b"x"[..], "1 bytes is too short"),
            (
                "btree",
                &btree[..],
                "not a BerkeleyDB hash database (magic 0x00053162",
            ),
            ("version", &version[..], "unsupported hash version 7"),
            ("page size", &pagesize[..], "invalid page size 1000"),
            ("encrypted", &encrypted[..], "encrypted database"),
        ] {
            let err = read_all(db).unwrap_err().to_string();
            assert!(err.contains(want), "{what}: {err}");
        }
        let err = read(&mut Cursor::new(LE), MAX_FILE_BYTES + 1, &mut |_| {}).unwrap_err();
        assert!(matches!(err, BdbError::TooLarge(_)), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_pages_behind_a_valid_meta_page_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..6000),
            big in any::<bool>(),
        ) {
            let mut db = (if big { BE } else { LE })[..512].to_vec();
            db.extend_from_slice(&body);
            if let Ok((blobs, damage)) = read_all(&db) {
                let pages = db.len() / 512;
                // At most one value per 4 bytes of item offsets on each page.
                prop_assert!(blobs.len() + damage.count <= pages * 512 / 4 + 1);
                prop_assert!(blobs.iter().all(|b| b.len() <= db.len()));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(db in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = read_all(&db);
        }

        #[test]
        fn mutated_fixtures_never_panic_and_never_hand_over_more_than_they_have(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
            cut in any::<usize>(),
        ) {
            let mut db = [LE, BE, BIG_PAGES][which].to_vec();
            for (at, byte) in edits {
                let n = db.len();
                db[at % n] = byte;
            }
            let n = db.len();
            db.truncate(cut % (n + 1));
            if let Ok((blobs, _)) = read_all(&db) {
                // Every overflow page is used at most once per chain; a value never exceeds
                // the file.
                prop_assert!(blobs.iter().all(|b| b.len() <= db.len()));
                prop_assert!(blobs.len() <= db.len() / 4);
            }
        }
    }
}
