//! Key nodes (`nk`) and their subkey lists (`li`, `lf`, `lh`, `ri`).

use super::{Hive, HiveError, NONE, Values, decode_name, u16_at, u32_at};

/// Offsets in an `nk` cell's payload.
const NK_FLAGS: usize = 0x02;
const NK_SUBKEY_COUNT: usize = 0x14;
const NK_SUBKEY_LIST: usize = 0x1C;
const NK_VALUE_COUNT: usize = 0x24;
const NK_VALUE_LIST: usize = 0x28;
const NK_NAME_LEN: usize = 0x48;
const NK_NAME: usize = 0x4C;
/// `nk` flag: the name is stored one byte a character (Latin-1).
const KEY_COMP_NAME: u16 = 0x0020;

/// One registry key of a [`Hive`].
#[derive(Debug, Clone)]
pub(crate) struct Key<'h> {
    hive: &'h Hive,
    name: String,
    subkey_count: u32,
    subkey_list: u32,
    value_count: u32,
    value_list: u32,
}

impl<'h> Key<'h> {
    /// Reads the key node at `offset`.
    pub(crate) fn at(hive: &'h Hive, offset: u32) -> Result<Key<'h>, HiveError> {
        let c = hive.cell(offset)?;
        let bad = |why| HiveError::BadCell { offset, why };
        if !c.starts_with(b"nk") {
            return Err(bad("not a key node (nk)"));
        }
        let field = |at| u32_at(c, at).ok_or_else(|| bad("key node too short"));
        let flags = u16_at(c, NK_FLAGS).ok_or_else(|| bad("key node too short"))?;
        let name_len = u16_at(c, NK_NAME_LEN).ok_or_else(|| bad("key node too short"))? as usize;
        let name = c
            .get(NK_NAME..NK_NAME + name_len)
            .ok_or_else(|| bad("key name runs past its cell"))?;
        Ok(Key {
            hive,
            name: decode_name(name, flags & KEY_COMP_NAME != 0),
            subkey_count: field(NK_SUBKEY_COUNT)?,
            subkey_list: field(NK_SUBKEY_LIST)?,
            value_count: field(NK_VALUE_COUNT)?,
            value_list: field(NK_VALUE_LIST)?,
        })
    }

    /// The key's own name (the last component of its path).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The key's subkeys, like `fs::read_dir`: the list itself may be unreadable (`Err`), and
    /// so may each entry, which the caller can skip.
    pub(crate) fn subkeys(&self) -> Result<Subkeys<'h>, HiveError> {
        let mut offsets = Vec::new();
        if self.subkey_count != 0 {
            let max = self.hive.limits().max_list;
            if self.subkey_count as usize > max {
                return Err(HiveError::TooLarge {
                    what: "subkey list",
                    count: self.subkey_count as usize,
                    max,
                });
            }
            offsets.reserve(self.subkey_count as usize);
            read_list(self.hive, self.subkey_list, false, &mut offsets)?;
        }
        Ok(Subkeys {
            hive: self.hive,
            offsets: offsets.into_iter(),
        })
    }

    /// The subkey named `name` (case-insensitive). An unreadable sibling makes the answer an
    /// error unless the wanted key is found: it might have been the unreadable one.
    pub(crate) fn subkey(&self, name: &str) -> Result<Option<Key<'h>>, HiveError> {
        let want = fold(name);
        let mut first_error = None;
        for key in self.subkeys()? {
            match key {
                Ok(k) if fold(&k.name) == want => return Ok(Some(k)),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    /// The key's values, each readable or not on its own.
    pub(crate) fn values(&self) -> Result<Values<'h>, HiveError> {
        Values::read(self.hive, self.value_count, self.value_list)
    }

    /// The value named `name` (case-insensitive; `""` is the default value), with the same
    /// error rule as [`Key::subkey`].
    #[cfg(test)]
    pub(crate) fn value(&self, name: &str) -> Result<Option<super::value::Value<'h>>, HiveError> {
        let want = fold(name);
        let mut first_error = None;
        for value in self.values()? {
            match value {
                Ok(v) if fold(v.name()) == want => return Ok(Some(v)),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    /// A `REG_SZ` or `REG_EXPAND_SZ` value as text; `None` when missing, of another type or
    /// unreadable.
    #[cfg(test)]
    pub(crate) fn value_string(&self, name: &str) -> Option<String> {
        self.value(name).ok().flatten()?.string().ok().flatten()
    }

    /// A `REG_DWORD` value; `None` when missing, of another type or unreadable.
    #[cfg(test)]
    pub(crate) fn value_dword(&self, name: &str) -> Option<u32> {
        self.value(name).ok().flatten()?.dword().ok().flatten()
    }
}

/// Case folding for key and value names (Windows compares them case-insensitively).
pub(crate) fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Appends the key-node offsets of the subkey list at `offset`. An `ri` (index root) lists
/// other lists; only one level of it is followed.
fn read_list(
    hive: &Hive,
    offset: u32,
    in_index_root: bool,
    out: &mut Vec<u32>,
) -> Result<(), HiveError> {
    let c = hive.cell(offset)?;
    let bad = |why| HiveError::BadCell { offset, why };
    let count = u16_at(c, 2).ok_or_else(|| bad("subkey list too short"))? as usize;
    let (stride, index_root) = match c.get(..2) {
        Some(b"li") => (4, false),
        Some(b"lf" | b"lh") => (8, false),
        Some(b"ri") if in_index_root => return Err(bad("index root nested in an index root")),
        Some(b"ri") => (4, true),
        _ => return Err(bad("not a subkey list (li, lf, lh or ri)")),
    };
    if c.len() < 4 + count * stride {
        return Err(bad("subkey list runs past its cell"));
    }
    let max = hive.limits().max_list;
    for i in 0..count {
        let entry = u32_at(c, 4 + i * stride).unwrap_or(NONE);
        if index_root {
            read_list(hive, entry, true, out)?;
        } else if out.len() >= max {
            return Err(HiveError::TooLarge {
                what: "subkey list",
                count: out.len() + 1,
                max,
            });
        } else {
            out.push(entry);
        }
    }
    Ok(())
}

/// The subkeys of a key, read one at a time.
#[derive(Debug)]
pub(crate) struct Subkeys<'h> {
    hive: &'h Hive,
    offsets: std::vec::IntoIter<u32>,
}

impl<'h> Iterator for Subkeys<'h> {
    type Item = Result<Key<'h>, HiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offsets.next()?;
        Some(Key::at(self.hive, offset))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.offsets.size_hint()
    }
}

impl ExactSizeIterator for Subkeys<'_> {}
