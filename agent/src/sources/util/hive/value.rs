//! Values (`vk`), value lists and value data, including `db` big data.

use super::{Hive, HiveError, NONE, decode_name, u16_at, u32_at, utf16_lossy};

/// Registry value types this reader interprets.
pub(crate) mod types {
    /// A NUL-terminated UTF-16LE string.
    pub(crate) const REG_SZ: u32 = 1;
    /// A string with `%VARIABLES%` to expand.
    pub(crate) const REG_EXPAND_SZ: u32 = 2;
    /// Bytes.
    #[cfg(test)]
    pub(crate) const REG_BINARY: u32 = 3;
    /// A little-endian 32-bit number.
    pub(crate) const REG_DWORD: u32 = 4;
    /// A big-endian 32-bit number.
    pub(crate) const REG_DWORD_BIG_ENDIAN: u32 = 5;
}

/// Offsets in a `vk` cell's payload.
const VK_NAME_LEN: usize = 0x02;
const VK_DATA_SIZE: usize = 0x04;
const VK_DATA: usize = 0x08;
const VK_TYPE: usize = 0x0C;
const VK_FLAGS: usize = 0x10;
const VK_NAME: usize = 0x14;
/// `vk` flag: the name is stored one byte a character (Latin-1).
const VALUE_COMP_NAME: u16 = 0x0001;
/// Data size high bit: the data (at most 4 bytes) sits in the data offset field itself.
const DATA_INLINE: u32 = 0x8000_0000;
/// Largest data stored in one cell; larger data is split into `db` segments of this size.
const SEGMENT: usize = 16344;

/// One value of a key.
#[derive(Debug, Clone)]
pub(crate) struct Value<'h> {
    hive: &'h Hive,
    offset: u32,
    name: String,
    data_type: u32,
    size: u32,
    data: u32,
}

impl<'h> Value<'h> {
    fn at(hive: &'h Hive, offset: u32) -> Result<Value<'h>, HiveError> {
        let c = hive.cell(offset)?;
        let bad = |why| HiveError::BadCell { offset, why };
        if !c.starts_with(b"vk") {
            return Err(bad("not a value (vk)"));
        }
        let field = |at| u32_at(c, at).ok_or_else(|| bad("value too short"));
        let flags = u16_at(c, VK_FLAGS).ok_or_else(|| bad("value too short"))?;
        let name_len = u16_at(c, VK_NAME_LEN).ok_or_else(|| bad("value too short"))? as usize;
        let name = c
            .get(VK_NAME..VK_NAME + name_len)
            .ok_or_else(|| bad("value name runs past its cell"))?;
        Ok(Value {
            hive,
            offset,
            name: decode_name(name, flags & VALUE_COMP_NAME != 0),
            data_type: field(VK_TYPE)?,
            size: field(VK_DATA_SIZE)?,
            data: field(VK_DATA)?,
        })
    }

    /// The value's name (`""` for the key's default value).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The value's type (see [`types`]).
    #[cfg(test)]
    pub(crate) fn data_type(&self) -> u32 {
        self.data_type
    }

    /// The value's data bytes, at most [`super::Limits::max_data`] of them.
    pub(crate) fn data(&self) -> Result<Vec<u8>, HiveError> {
        let bad = |why| HiveError::BadCell {
            offset: self.offset,
            why,
        };
        if self.size & DATA_INLINE != 0 {
            let len = (self.size & !DATA_INLINE) as usize;
            if len > 4 {
                return Err(bad("inline value data longer than 4 bytes"));
            }
            return Ok(self.data.to_le_bytes()[..len].to_vec());
        }
        let len = self.size as usize;
        let max = self.hive.limits().max_data;
        if len > max {
            return Err(HiveError::TooLarge {
                what: "value data",
                count: len,
                max,
            });
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let c = self.hive.cell(self.data)?;
        if len > SEGMENT && self.hive.minor() >= 4 && c.starts_with(b"db") {
            return self.big_data(c, len);
        }
        c.get(..len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad("value data runs past its cell"))
    }

    /// Reassembles `db` big data: a count of segments and a list of segment cells.
    fn big_data(&self, db: &[u8], len: usize) -> Result<Vec<u8>, HiveError> {
        let bad = |why| HiveError::BadCell {
            offset: self.data,
            why,
        };
        let count = u16_at(db, 2).ok_or_else(|| bad("big data header too short"))? as usize;
        let list_offset = u32_at(db, 4).ok_or_else(|| bad("big data header too short"))?;
        if count < len.div_ceil(SEGMENT) {
            return Err(bad("big data has fewer segments than its size needs"));
        }
        let list = self.hive.cell(list_offset)?;
        let mut out = Vec::with_capacity(len);
        for i in 0..count {
            let want = (len - out.len()).min(SEGMENT);
            if want == 0 {
                break;
            }
            let segment_offset = u32_at(list, i * 4).ok_or(HiveError::BadCell {
                offset: list_offset,
                why: "big data segment list runs past its cell",
            })?;
            let segment = self.hive.cell(segment_offset)?;
            out.extend_from_slice(segment.get(..want).ok_or(HiveError::BadCell {
                offset: segment_offset,
                why: "big data segment shorter than its share",
            })?);
        }
        Ok(out)
    }

    /// The text of a `REG_SZ` or `REG_EXPAND_SZ` value, up to its first NUL; `Ok(None)` for
    /// other types.
    pub(crate) fn string(&self) -> Result<Option<String>, HiveError> {
        if !matches!(self.data_type, types::REG_SZ | types::REG_EXPAND_SZ) {
            return Ok(None);
        }
        let data = self.data()?;
        let end = data
            .chunks_exact(2)
            .position(|c| c == [0, 0])
            .map_or(data.len(), |i| i * 2);
        Ok(Some(utf16_lossy(&data[..end])))
    }

    /// The number in a `REG_DWORD` (or big-endian) value; `Ok(None)` for other types or data
    /// shorter than 4 bytes.
    pub(crate) fn dword(&self) -> Result<Option<u32>, HiveError> {
        let big_endian = match self.data_type {
            types::REG_DWORD => false,
            types::REG_DWORD_BIG_ENDIAN => true,
            _ => return Ok(None),
        };
        let data = self.data()?;
        let Some(b) = data.get(..4) else {
            return Ok(None);
        };
        let b = [b[0], b[1], b[2], b[3]];
        Ok(Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }))
    }
}

/// The values of a key, read one at a time.
#[derive(Debug)]
pub(crate) struct Values<'h> {
    hive: &'h Hive,
    offsets: std::vec::IntoIter<u32>,
}

impl<'h> Values<'h> {
    /// Reads a value list: a cell of `count` offsets of `vk` cells.
    pub(crate) fn read(hive: &'h Hive, count: u32, list: u32) -> Result<Values<'h>, HiveError> {
        let count = count as usize;
        let mut offsets = Vec::new();
        if count != 0 {
            let max = hive.limits().max_list;
            if count > max {
                return Err(HiveError::TooLarge {
                    what: "value list",
                    count,
                    max,
                });
            }
            let c = hive.cell(list)?;
            if c.len() < count * 4 {
                return Err(HiveError::BadCell {
                    offset: list,
                    why: "value list runs past its cell",
                });
            }
            offsets = (0..count)
                .map(|i| u32_at(c, i * 4).unwrap_or(NONE))
                .collect();
        }
        Ok(Values {
            hive,
            offsets: offsets.into_iter(),
        })
    }
}

impl<'h> Iterator for Values<'h> {
    type Item = Result<Value<'h>, HiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offsets.next()?;
        Some(Value::at(self.hive, offset))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.offsets.size_hint()
    }
}

impl ExactSizeIterator for Values<'_> {}
