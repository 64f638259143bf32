//! Builds valid registry hive (`regf`) files from a tree of keys and values, for tests only:
//! fixtures are made by code, never checked in as binaries.
//!
//! The agent's test-only `test_support` module includes this file with `#[path]` (the unit
//! tests of `agent/src/sources/util/hive` and other crates' tests use it from there), and the
//! integration tests with `mod`, so it depends on nothing but `std`.
//!
//! Layout: a 4096-byte base block with a correct checksum, then hive bins of 4096 bytes (larger
//! when one cell needs it), cells allocated in order and never across a bin. Each key is an
//! `nk` cell followed by its children, its subkey list (`lf`, `lh`, `li`, or `ri` over `lh`
//! leaves of two entries, by [`Options::list`]), its `vk` values and their data: inline up to
//! 4 bytes, a cell up to 16344 bytes, `db` big data beyond.

#![allow(dead_code)]

/// A value's data.
#[derive(Debug, Clone)]
pub enum Data {
    /// `REG_SZ`, written NUL-terminated.
    Sz(String),
    /// `REG_EXPAND_SZ`, written NUL-terminated.
    ExpandSz(String),
    /// `REG_DWORD`.
    Dword(u32),
    /// Any type with raw bytes.
    Raw(u32, Vec<u8>),
}

impl Data {
    fn encode(&self) -> (u32, Vec<u8>) {
        let utf16 = |s: &str| {
            s.encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>()
        };
        match self {
            Data::Sz(s) => (1, utf16(s)),
            Data::ExpandSz(s) => (2, utf16(s)),
            Data::Dword(d) => (4, d.to_le_bytes().to_vec()),
            Data::Raw(t, b) => (*t, b.clone()),
        }
    }
}

/// A key: name, values, subkeys.
#[derive(Debug, Clone, Default)]
pub struct HiveKey {
    /// The key's name.
    pub name: String,
    /// Values in order.
    pub values: Vec<(String, Data)>,
    /// Subkeys (written sorted by upper-case name, as Windows keeps them).
    pub subkeys: Vec<HiveKey>,
}

impl HiveKey {
    /// A key with no values or subkeys.
    pub fn new(name: &str) -> HiveKey {
        HiveKey {
            name: name.to_owned(),
            ..HiveKey::default()
        }
    }

    /// The key at a backslash-separated path below this one, created as needed.
    pub fn key(&mut self, path: &str) -> &mut HiveKey {
        let mut key = self;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            let i = match key
                .subkeys
                .iter()
                .position(|k| k.name.eq_ignore_ascii_case(part))
            {
                Some(i) => i,
                None => {
                    key.subkeys.push(HiveKey::new(part));
                    key.subkeys.len() - 1
                }
            };
            key = &mut key.subkeys[i];
        }
        key
    }

    /// Adds a value.
    pub fn set(&mut self, name: &str, data: Data) -> &mut HiveKey {
        self.values.push((name.to_owned(), data));
        self
    }

    /// Adds a `REG_SZ` value.
    pub fn sz(&mut self, name: &str, value: &str) -> &mut HiveKey {
        self.set(name, Data::Sz(value.to_owned()))
    }

    /// Adds a `REG_DWORD` value.
    pub fn dword(&mut self, name: &str, value: u32) -> &mut HiveKey {
        self.set(name, Data::Dword(value))
    }

    /// The hive file with default options.
    pub fn to_hive(&self) -> Vec<u8> {
        write(self, Options::default())
    }
}

/// How subkey lists are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListKind {
    /// `lf`: offset and a four-character name hint (Windows XP and later).
    Lf,
    /// `lh`: offset and a name hash (the usual on current Windows).
    #[default]
    Lh,
    /// `li`: offsets only.
    Li,
    /// `ri` over `lh` leaves of two entries each (large keys on Windows).
    Ri,
}

/// Writer options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Subkey list format.
    pub list: ListKind,
    /// Store every name as UTF-16LE, even when it would fit compressed (Latin-1).
    pub utf16_names: bool,
    /// Leave the sequence numbers unequal, as a hive not flushed cleanly.
    pub dirty: bool,
}

const NONE: u32 = u32::MAX;
const BIN: usize = 4096;
const SEGMENT: usize = 16344;

struct Writer {
    bins: Vec<u8>,
    bin_end: usize,
    opts: Options,
}

/// Writes `root` and everything below it as a hive file.
pub fn write(root: &HiveKey, opts: Options) -> Vec<u8> {
    let mut w = Writer {
        bins: Vec::new(),
        bin_end: 0,
        opts,
    };
    let root_offset = w.key(root, NONE, true);
    w.close_bin();
    let mut base = vec![0u8; BIN];
    base[..4].copy_from_slice(b"regf");
    put32(&mut base, 0x04, 7);
    put32(&mut base, 0x08, if opts.dirty { 6 } else { 7 });
    put32(&mut base, 0x14, 1); // major
    put32(&mut base, 0x18, 5); // minor: big data allowed
    put32(&mut base, 0x1C, 0); // primary file
    put32(&mut base, 0x20, 1); // direct memory load format
    put32(&mut base, 0x24, root_offset);
    put32(&mut base, 0x28, w.bins.len() as u32);
    put32(&mut base, 0x2C, 1); // clustering factor
    let sum = base[..0x1FC].chunks_exact(4).fold(0u32, |a, c| {
        a ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]])
    });
    let sum = match sum {
        0 => 1,
        u32::MAX => u32::MAX - 1,
        s => s,
    };
    put32(&mut base, 0x1FC, sum);
    base.extend_from_slice(&w.bins);
    base
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// A name as stored: Latin-1 ("compressed") when it fits and allowed, else UTF-16LE.
fn encode_name(name: &str, utf16: bool) -> (Vec<u8>, bool) {
    if !utf16 && name.chars().all(|c| (c as u32) < 0x100) {
        (name.chars().map(|c| c as u8).collect(), true)
    } else {
        (
            name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            false,
        )
    }
}

/// The `lh` name hash: upper-cased UTF-16 units, `h = h * 37 + unit`.
pub fn lh_hash(name: &str) -> u32 {
    name.to_uppercase()
        .encode_utf16()
        .fold(0u32, |h, u| h.wrapping_mul(37).wrapping_add(u32::from(u)))
}

impl Writer {
    /// Fills the rest of the current bin with one free cell.
    fn close_bin(&mut self) {
        let rest = self.bin_end - self.bins.len();
        if rest > 0 {
            let at = self.bins.len();
            self.bins.resize(self.bin_end, 0);
            put32(&mut self.bins, at, rest as u32);
        }
    }

    /// Allocates a zeroed cell for `payload` bytes; returns its offset.
    fn alloc(&mut self, payload: usize) -> u32 {
        let size = (payload + 4 + 7) & !7;
        if self.bins.len() + size > self.bin_end {
            self.close_bin();
            let start = self.bins.len();
            let bin_size = (32 + size).div_ceil(BIN) * BIN;
            self.bins.resize(start + 32, 0);
            self.bins[start..start + 4].copy_from_slice(b"hbin");
            put32(&mut self.bins, start + 4, start as u32);
            put32(&mut self.bins, start + 8, bin_size as u32);
            self.bin_end = start + bin_size;
        }
        let at = self.bins.len();
        self.bins.resize(at + size, 0);
        put32(&mut self.bins, at, (size as i32).wrapping_neg() as u32);
        at as u32
    }

    fn cell(&mut self, payload: &[u8]) -> u32 {
        let at = self.alloc(payload.len());
        let start = at as usize + 4;
        self.bins[start..start + payload.len()].copy_from_slice(payload);
        at
    }

    fn key(&mut self, key: &HiveKey, parent: u32, root: bool) -> u32 {
        let (name, compressed) = encode_name(&key.name, self.opts.utf16_names);
        let at = self.alloc(0x4C + name.len());
        let mut children = key.subkeys.clone();
        children.sort_by_key(|k| k.name.to_uppercase());
        let kids: Vec<(String, u32)> = children
            .iter()
            .map(|k| (k.name.clone(), self.key(k, at, false)))
            .collect();
        let list = if kids.is_empty() {
            NONE
        } else {
            self.subkey_list(&kids)
        };
        let vks: Vec<u32> = key.values.iter().map(|(n, d)| self.value(n, d)).collect();
        let vlist = if vks.is_empty() {
            NONE
        } else {
            let bytes: Vec<u8> = vks.iter().flat_map(|o| o.to_le_bytes()).collect();
            self.cell(&bytes)
        };
        let mut nk = vec![0u8; 0x4C];
        nk[..2].copy_from_slice(b"nk");
        let flags = if compressed { 0x20 } else { 0 } | if root { 0x0C } else { 0 };
        put16(&mut nk, 0x02, flags);
        put32(&mut nk, 0x10, parent);
        put32(&mut nk, 0x14, kids.len() as u32);
        put32(&mut nk, 0x1C, list);
        put32(&mut nk, 0x20, NONE);
        put32(&mut nk, 0x24, vks.len() as u32);
        put32(&mut nk, 0x28, vlist);
        put32(&mut nk, 0x2C, NONE);
        put32(&mut nk, 0x30, NONE);
        put16(&mut nk, 0x48, name.len() as u16);
        nk.extend_from_slice(&name);
        let start = at as usize + 4;
        self.bins[start..start + nk.len()].copy_from_slice(&nk);
        at
    }

    fn leaf(&mut self, kind: ListKind, kids: &[(String, u32)]) -> u32 {
        let (sig, stride) = match kind {
            ListKind::Li => (b"li", 4),
            ListKind::Lf => (b"lf", 8),
            ListKind::Lh | ListKind::Ri => (b"lh", 8),
        };
        let mut b = vec![0u8; 4 + kids.len() * stride];
        b[..2].copy_from_slice(sig);
        put16(&mut b, 2, kids.len() as u16);
        for (i, (name, off)) in kids.iter().enumerate() {
            let at = 4 + i * stride;
            put32(&mut b, at, *off);
            match kind {
                ListKind::Li => {}
                ListKind::Lf => {
                    let hint: Vec<u8> = name.bytes().take(4).collect();
                    b[at + 4..at + 4 + hint.len()].copy_from_slice(&hint);
                }
                ListKind::Lh | ListKind::Ri => put32(&mut b, at + 4, lh_hash(name)),
            }
        }
        self.cell(&b)
    }

    fn subkey_list(&mut self, kids: &[(String, u32)]) -> u32 {
        if self.opts.list != ListKind::Ri {
            return self.leaf(self.opts.list, kids);
        }
        let leaves: Vec<u32> = kids.chunks(2).map(|c| self.leaf(ListKind::Ri, c)).collect();
        let mut b = vec![0u8; 4 + leaves.len() * 4];
        b[..2].copy_from_slice(b"ri");
        put16(&mut b, 2, leaves.len() as u16);
        for (i, off) in leaves.iter().enumerate() {
            put32(&mut b, 4 + i * 4, *off);
        }
        self.cell(&b)
    }

    fn value(&mut self, name: &str, data: &Data) -> u32 {
        let (kind, bytes) = data.encode();
        let (size, offset) = if bytes.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..bytes.len()].copy_from_slice(&bytes);
            (bytes.len() as u32 | 0x8000_0000, u32::from_le_bytes(inline))
        } else if bytes.len() > SEGMENT {
            (bytes.len() as u32, self.big_data(&bytes))
        } else {
            (bytes.len() as u32, self.cell(&bytes))
        };
        let (name, compressed) = encode_name(name, self.opts.utf16_names);
        let mut vk = vec![0u8; 0x14];
        vk[..2].copy_from_slice(b"vk");
        put16(&mut vk, 0x02, name.len() as u16);
        put32(&mut vk, 0x04, size);
        put32(&mut vk, 0x08, offset);
        put32(&mut vk, 0x0C, kind);
        put16(&mut vk, 0x10, u16::from(compressed));
        vk.extend_from_slice(&name);
        self.cell(&vk)
    }

    fn big_data(&mut self, bytes: &[u8]) -> u32 {
        let segments: Vec<u32> = bytes.chunks(SEGMENT).map(|s| self.cell(s)).collect();
        let list: Vec<u8> = segments.iter().flat_map(|o| o.to_le_bytes()).collect();
        let list = self.cell(&list);
        let mut db = vec![0u8; 8];
        db[..2].copy_from_slice(b"db");
        put16(&mut db, 2, segments.len() as u16);
        put32(&mut db, 4, list);
        self.cell(&db)
    }
}
