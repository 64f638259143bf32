//! A read-only reader of offline Windows registry hives (the `regf` format of `SOFTWARE`,
//! `NTUSER.DAT` and friends), in plain Rust, so a `--root` scan of a mounted Windows disk and
//! the tests here read the same bytes Windows would.
//!
//! # Format (what is read)
//! - **Base block** (the first 4096 bytes): signature `regf`, primary and secondary sequence
//!   numbers, major version 1, minor 2–6, file type 0 (a primary file), the root cell offset at
//!   `0x24` and the length of the hive bins data at `0x28`, and an XOR-32 checksum of the first
//!   508 bytes at `0x1FC`, which must hold.
//! - **Hive bins** from file offset `0x1000`: `hbin` blocks, each a multiple of 4096 bytes.
//!   Every offset in the hive is relative to the first bin. The chain of bins is walked once;
//!   cells are only read inside the bins it reached.
//! - **Cells**: a little-endian `i32` size (negative = allocated) then the payload. A reference
//!   to a free cell, or one that runs past the bins, is an error naming the offset.
//! - **`nk` key nodes**: name (Latin-1 when the `0x0020` flag says compressed, UTF-16LE
//!   otherwise), subkey count and list, value count and list.
//! - **Subkey lists** `li` (offsets), `lf` / `lh` (offset + name hint or hash), and `ri` (a list
//!   of such lists, one level deep: a nested `ri` is an error).
//! - **`vk` values**: name, type, data. Data of up to 4 bytes is stored inline (size high bit
//!   set); longer data is in a cell; data over 16344 bytes in hives of minor version ≥ 4 is
//!   stored as `db` big data (a list of segments), which is read.
//!
//! # Dirty hives
//! A hive whose two sequence numbers differ was not flushed cleanly, and Windows would replay
//! its transaction logs (`.LOG1`, `.LOG2`) on load. This reader ignores the logs and reads the
//! primary file as it is on disk ([`Hive::is_dirty`] tells). The primary is consistent as of
//! its last flush, so at worst a change from the last seconds before a crash is missing.
//!
//! # Never panics, bounded work and memory
//! Every read is bounds-checked and returns [`HiveError`] instead of panicking. A corrupt or
//! hostile hive can make lists point at themselves or at one huge cell many times, so work is
//! capped ([`Limits`]): every cell read counts against a per-hive budget, a subkey or value list
//! holds at most `max_list` entries, value data is at most `max_data` bytes, and the API has no
//! recursion of its own (callers descend one [`Key::subkeys`] at a time). Memory is the file
//! itself (callers cap its size before reading) plus those bounded lists.

use std::sync::atomic::{AtomicUsize, Ordering};

mod key;
mod value;

pub(crate) use key::Key;
pub(crate) use value::Values;

/// File offset of the hive bins data; every cell offset is relative to it.
const BINS: usize = 0x1000;
/// Offset value meaning "no cell".
const NONE: u32 = u32::MAX;
/// Size of an `hbin` header.
const HBIN_HEADER: usize = 32;

/// Caps on the work one hive may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Cells read over the life of a [`Hive`] before every further read fails.
    pub(crate) max_cell_reads: usize,
    /// Entries in one subkey or value list.
    pub(crate) max_list: usize,
    /// Bytes of one value's data.
    pub(crate) max_data: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // A SOFTWARE hive's Uninstall keys cost ~50 reads an entry; this allows ~80k entries.
            max_cell_reads: 4_000_000,
            max_list: 65_536,
            max_data: 1 << 20,
        }
    }
}

/// Why a hive, or a part of it, cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HiveError {
    /// The file does not start with `regf`.
    #[error("not a registry hive (no regf signature)")]
    NotAHive,
    /// The file is shorter than its base block.
    #[error("too short for a registry hive: {0} bytes")]
    TooShort(usize),
    /// The base block's checksum does not match its contents.
    #[error("base block checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A version or file type this reader does not handle.
    #[error("unsupported hive: {0}")]
    Unsupported(String),
    /// The file ends before the hive bins it declares.
    #[error("truncated: {have} of {declared} bytes of hive bins present")]
    Truncated {
        /// Bytes of hive bins present.
        have: usize,
        /// Bytes declared in the base block.
        declared: usize,
    },
    /// A cell is missing, free, or not what referred to it expects.
    #[error("cell at {offset:#x}: {why}")]
    BadCell {
        /// Offset of the cell, relative to the hive bins.
        offset: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A list or value is larger than [`Limits`] allow.
    #[error("{what} has {count} entries or bytes, more than the limit of {max}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The hive's cell-read budget is spent.
    #[error("work limit reached: more than {0} cell reads")]
    WorkLimit(usize),
}

/// A parsed hive: the file's bytes, checked base block and bin chain, and a work budget.
#[derive(Debug)]
pub(crate) struct Hive {
    data: Vec<u8>,
    /// File offset where the readable hive bins end.
    bins_end: usize,
    root: u32,
    minor: u32,
    dirty: bool,
    limits: Limits,
    reads: AtomicUsize,
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decodes a key or value name: Latin-1 when stored compressed, UTF-16LE otherwise.
pub(crate) fn decode_name(bytes: &[u8], compressed: bool) -> String {
    if compressed {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        utf16_lossy(bytes)
    }
}

/// UTF-16LE to a string, without a trailing odd byte; invalid units become U+FFFD.
pub(crate) fn utf16_lossy(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The base block checksum: XOR of its first 127 little-endian words, with 0 and `!0` remapped.
fn checksum(base: &[u8]) -> u32 {
    let sum = base[..0x1FC].chunks_exact(4).fold(0u32, |acc, w| {
        acc ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]])
    });
    match sum {
        0 => 1,
        u32::MAX => u32::MAX - 1,
        s => s,
    }
}

impl Hive {
    /// Parses a hive file's bytes with the default [`Limits`].
    pub(crate) fn parse(data: Vec<u8>) -> Result<Hive, HiveError> {
        Hive::parse_with(data, Limits::default())
    }

    /// Parses a hive file's bytes: checks the base block and the chain of bins, and that the
    /// root cell is a key node.
    pub(crate) fn parse_with(data: Vec<u8>, limits: Limits) -> Result<Hive, HiveError> {
        if !data.starts_with(b"regf") {
            return Err(HiveError::NotAHive);
        }
        if data.len() < BINS {
            return Err(HiveError::TooShort(data.len()));
        }
        let word = |at| u32_at(&data, at).unwrap_or(0);
        let (stored, computed) = (word(0x1FC), checksum(&data[..BINS]));
        if stored != computed {
            return Err(HiveError::BadChecksum { stored, computed });
        }
        let (major, minor, file_type) = (word(0x14), word(0x18), word(0x1C));
        if major != 1 || !(2..=6).contains(&minor) {
            return Err(HiveError::Unsupported(format!("version {major}.{minor}")));
        }
        if file_type != 0 {
            return Err(HiveError::Unsupported(format!(
                "file type {file_type}, not a primary hive file"
            )));
        }
        let declared = word(0x28) as usize;
        let have = data.len() - BINS;
        if declared == 0 || !declared.is_multiple_of(4096) {
            return Err(HiveError::Unsupported(format!(
                "hive bins size {declared} is not a positive multiple of 4096"
            )));
        }
        if have < declared {
            return Err(HiveError::Truncated { have, declared });
        }
        let readable = walk_bins(&data[BINS..BINS + declared]);
        if readable == 0 {
            return Err(HiveError::BadCell {
                offset: 0,
                why: "first hive bin has no hbin signature",
            });
        }
        let hive = Hive {
            dirty: word(0x4) != word(0x8),
            root: word(0x24),
            bins_end: BINS + readable,
            minor,
            limits,
            reads: AtomicUsize::new(0),
            data,
        };
        hive.root()?;
        Ok(hive)
    }

    /// Whether the hive was not flushed cleanly (its transaction logs, which this reader does
    /// not read, hold newer changes).
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The root key.
    pub(crate) fn root(&self) -> Result<Key<'_>, HiveError> {
        Key::at(self, self.root)
    }

    /// The key at a backslash-separated path below the root (case-insensitive, like Windows).
    /// `Ok(None)` when a component does not exist.
    pub(crate) fn open(&self, path: &str) -> Result<Option<Key<'_>>, HiveError> {
        let mut key = self.root()?;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match key.subkey(part)? {
                Some(k) => key = k,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn minor(&self) -> u32 {
        self.minor
    }

    /// The payload of the allocated cell at `offset` (relative to the hive bins), counted
    /// against the work budget.
    pub(crate) fn cell(&self, offset: u32) -> Result<&[u8], HiveError> {
        let max = self.limits.max_cell_reads;
        if self.reads.fetch_add(1, Ordering::Relaxed) >= max {
            return Err(HiveError::WorkLimit(max));
        }
        let bad = |why| HiveError::BadCell { offset, why };
        if offset == NONE {
            return Err(bad("no cell (offset -1)"));
        }
        let start = BINS
            .checked_add(offset as usize)
            .filter(|s| s.saturating_add(4) <= self.bins_end)
            .ok_or_else(|| bad("offset past the end of the hive bins"))?;
        let size = u32_at(&self.data, start).ok_or_else(|| bad("offset past the end"))? as i32;
        if size >= 0 {
            return Err(bad("cell is free, not allocated"));
        }
        let len = size.unsigned_abs() as usize;
        if len < 4 || start + len > self.bins_end {
            return Err(bad("cell size runs past the end of the hive bins"));
        }
        Ok(&self.data[start + 4..start + len])
    }
}

/// Length of the run of well-formed `hbin` blocks at the start of `bins`.
fn walk_bins(bins: &[u8]) -> usize {
    let mut pos = 0usize;
    while pos + HBIN_HEADER <= bins.len() {
        let b = &bins[pos..];
        let size = u32_at(b, 8).unwrap_or(0) as usize;
        let ok = b.starts_with(b"hbin")
            && u32_at(b, 4) == Some(pos as u32)
            && size >= 4096
            && size.is_multiple_of(4096)
            && size <= bins.len() - pos;
        if !ok {
            break;
        }
        pos += size;
    }
    pos
}

#[cfg(test)]
pub(crate) use crate::test_support::hive_writer as writer;

#[cfg(test)]
mod tests;
