//! A small, strict HPACK decoder (RFC 7541) and the one representation the
//! agent encodes: a literal that never touches the peer's dynamic table.
//!
//! It exists for [`crate::authority`]: to drop one header from a request, the
//! agent must decode every header block a client sends, in order, keeping a
//! copy of the client's dynamic table, and encode the block again. The
//! re-encoded block uses only static table references and literals without
//! indexing (or never indexed, when the client marked a field so), so the
//! HTTP/2 server behind it keeps an empty dynamic table and never depends on
//! our copy being right.
//!
//! Strict: every error of the RFC is an error here (index 0 or past the
//! table, a size update above the limit or after a field, an integer or
//! string running past the block, bad Huffman padding), and a header list
//! larger than the caller's limit stops decoding, so memory stays bounded.

mod huffman;
mod table;

use table::{DynamicTable, entry_size};

/// Why a header block could not be decoded; the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
    /// The block ended inside a representation.
    #[error("header block truncated inside {0}")]
    Truncated(&'static str),
    /// An integer too large for any limit here.
    #[error("integer in the header block is too large")]
    IntegerOverflow,
    /// Index 0, or an index past the static and dynamic tables.
    #[error("header index {index} is not in the table (static 1-61, dynamic {dynamic} entries)")]
    BadIndex {
        /// The index sent.
        index: usize,
        /// How many dynamic entries there were.
        dynamic: usize,
    },
    /// A dynamic table size update above the limit this side advertised.
    #[error("dynamic table size update to {size} is above the limit of {limit}")]
    TableSizeAboveLimit {
        /// The size asked for.
        size: usize,
        /// SETTINGS_HEADER_TABLE_SIZE.
        limit: usize,
    },
    /// A dynamic table size update after the first header field (§4.2).
    #[error("dynamic table size update after a header field")]
    LateTableSizeUpdate,
    /// Bad Huffman coding (§5.2).
    #[error("bad Huffman string: {0}")]
    Huffman(&'static str),
    /// The decoded header list is larger than the limit.
    #[error("header list larger than {limit} bytes")]
    ListTooLarge {
        /// The limit, counted as in SETTINGS_MAX_HEADER_LIST_SIZE.
        limit: usize,
    },
}

/// One decoded header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name, as sent (HTTP/2 requires lowercase; checking that is the server's job).
    pub name: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The client asked that no intermediary ever index it (§6.2.3).
    pub never_indexed: bool,
}

/// Decodes a connection's header blocks in order, keeping its dynamic table.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// SETTINGS_HEADER_TABLE_SIZE of the receiving side: the most a size
    /// update may ask for.
    limit: usize,
    /// A Huffman-decoded name and value, reused across fields.
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

/// Where a literal's name comes from.
enum Name {
    Indexed(usize),
    Literal,
}

impl Decoder {
    /// A decoder for a peer that may use a dynamic table of up to
    /// `table_size_limit` bytes (the receiver's SETTINGS_HEADER_TABLE_SIZE;
    /// the table starts at that size, §4.2).
    pub fn new(table_size_limit: usize) -> Self {
        Self {
            table: DynamicTable::new(table_size_limit),
            limit: table_size_limit,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// The dynamic table's current size (§4.1).
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Decodes one complete header block, calling `emit` for each field in
    /// order. Stops with an error once the list passes `max_list_size`
    /// (counted as SETTINGS_MAX_HEADER_LIST_SIZE counts: octets plus 32 per
    /// field). After an error the decoder's table is unspecified: the
    /// connection must end.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        max_list_size: usize,
        mut emit: impl FnMut(Field<'_>),
    ) -> Result<(), HpackError> {
        let mut list_size = 0usize;
        let mut seen_field = false;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // §6.1 indexed header field.
                let index = integer(&mut block, 7)?;
                let (name, value) = self.entry(index)?;
                list_size = add_field(list_size, name, value, max_list_size)?;
                emit(Field { name, value, never_indexed: false });
            } else if first & 0x40 != 0 {
                // §6.2.1 literal with incremental indexing: the name is copied
                // before inserting, since inserting may evict the entry it names.
                let name = self.literal_name(&mut block, 6)?;
                string(&mut block, &mut self.value_buf)?;
                let name: Box<[u8]> = match name {
                    Name::Indexed(i) => self.entry(i)?.0.into(),
                    Name::Literal => self.name_buf.as_slice().into(),
                };
                list_size = add_field(list_size, &name, &self.value_buf, max_list_size)?;
                self.table.insert(name, self.value_buf.as_slice().into());
                let (name, value) = self.entry(62)?;
                emit(Field { name, value, never_indexed: false });
            } else if first & 0x20 != 0 {
                // §6.3 dynamic table size update: only before the first field (§4.2).
                if seen_field {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size = integer(&mut block, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeAboveLimit { size, limit: self.limit });
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // §6.2.2 without indexing (0000), §6.2.3 never indexed (0001).
                let never_indexed = first & 0x10 != 0;
                let name = self.literal_name(&mut block, 4)?;
                string(&mut block, &mut self.value_buf)?;
                let name = match name {
                    Name::Indexed(i) => self.entry(i)?.0,
                    Name::Literal => &self.name_buf,
                };
                list_size = add_field(list_size, name, &self.value_buf, max_list_size)?;
                emit(Field { name, value: &self.value_buf, never_indexed });
            }
            seen_field = true;
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        self.table.get(index).ok_or(HpackError::BadIndex { index, dynamic: self.table.entry_count() })
    }

    /// Reads a literal's name index (0: a literal name follows, read into `name_buf`).
    fn literal_name(&mut self, block: &mut &[u8], prefix: u8) -> Result<Name, HpackError> {
        match integer(block, prefix)? {
            0 => {
                string(block, &mut self.name_buf)?;
                Ok(Name::Literal)
            }
            i => {
                self.entry(i)?;
                Ok(Name::Indexed(i))
            }
        }
    }
}

fn add_field(list_size: usize, name: &[u8], value: &[u8], limit: usize) -> Result<usize, HpackError> {
    let size = list_size.saturating_add(entry_size(name, value));
    if size > limit { Err(HpackError::ListTooLarge { limit }) } else { Ok(size) }
}

/// Most continuation octets an integer may have: 5 carry 35 bits, more than
/// any size or index that can be valid here.
const MAX_INTEGER_OCTETS: u32 = 5;

/// Reads an integer with an N-bit prefix (§5.1), the prefix being the low
/// bits of the first octet.
fn integer(block: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, rest) = block.split_first().ok_or(HpackError::Truncated("an integer"))?;
    *block = rest;
    let max_prefix = (1u16 << prefix) - 1;
    let mut value = usize::from(u16::from(first) & max_prefix);
    if value < usize::from(max_prefix) {
        return Ok(value);
    }
    for i in 0..MAX_INTEGER_OCTETS {
        let (&b, rest) = block.split_first().ok_or(HpackError::Truncated("an integer"))?;
        *block = rest;
        let part = usize::from(b & 0x7f).checked_shl(7 * i).ok_or(HpackError::IntegerOverflow)?;
        value = value.checked_add(part).ok_or(HpackError::IntegerOverflow)?;
        if b & 0x80 == 0 {
            return u32::try_from(value).map(|_| value).map_err(|_| HpackError::IntegerOverflow);
        }
    }
    Err(HpackError::IntegerOverflow)
}

/// Reads a string literal (§5.2) into `out` (cleared first), Huffman-decoding it if flagged.
fn string(block: &mut &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated("a string"))? & 0x80 != 0;
    let len = integer(block, 7)?;
    if len > block.len() {
        return Err(HpackError::Truncated("a string"));
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    out.clear();
    if huffman {
        return huffman::decode(raw, out);
    }
    out.extend_from_slice(raw);
    Ok(())
}

/// Appends `field` in a representation that never changes a dynamic table:
/// the static table's entry when it holds the whole field (§6.1), else a
/// literal without indexing (§6.2.2), or never indexed (§6.2.3) when the
/// client marked it so, naming the static table's entry for the name when
/// there is one, with plain (not Huffman) strings. Static references spare
/// the server parsing names it already knows.
pub fn encode_literal(out: &mut Vec<u8>, field: Field<'_>) {
    if !field.never_indexed
        && let Some(index) = table::static_field(field.name, field.value)
    {
        encode_integer(out, 0x80, 7, index);
        return;
    }
    let flags = if field.never_indexed { 0x10 } else { 0x00 };
    match table::static_name(field.name) {
        Some(index) => encode_integer(out, flags, 4, index),
        None => {
            out.push(flags);
            encode_string(out, field.name);
        }
    }
    encode_string(out, field.value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// Appends `value` with an N-bit prefix (§5.1); `flags` are the first octet's high bits.
fn encode_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let max_prefix = (1usize << prefix) - 1;
    if value < max_prefix {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix as u8);
    value -= max_prefix;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests;
