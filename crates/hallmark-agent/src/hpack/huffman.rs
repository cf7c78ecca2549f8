//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B): decoding only.
//!
//! The code is canonical: codes of one length are consecutive and follow
//! symbol order, and each length's first code follows from the one before
//! (a unit test checks this against every code of Appendix B). So a string is
//! decoded from the code lengths alone, one bit at a time: short strings, no
//! lookup tables to get wrong, and every rule of §5.2 checked at the end.

use super::HpackError;

/// Appendix B as printed: (code, length in bits) for symbols 0..=255 and
/// EOS (256). Only the lengths drive decoding; the codes are there so that
/// the test can prove the canonical construction reproduces the RFC.
#[rustfmt::skip]
const CODES: [(u32, u8); 257] = [
    /*   0 */ (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),
    /*   4 */ (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    /*   8 */ (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    /*  12 */ (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    /*  16 */ (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    /*  20 */ (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    /*  24 */ (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),
    /*  28 */ (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    /*  32 */ (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    /*  36 */ (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    /*  40 */ (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),
    /*  44 */ (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    /*  48 */ (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    /*  52 */ (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    /*  56 */ (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    /*  60 */ (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    /*  64 */ (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),
    /*  68 */ (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    /*  72 */ (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    /*  76 */ (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    /*  80 */ (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    /*  84 */ (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    /*  88 */ (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),
    /*  92 */ (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    /*  96 */ (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    /* 100 */ (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    /* 104 */ (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    /* 108 */ (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    /* 112 */ (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),
    /* 116 */ (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    /* 120 */ (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),
    /* 124 */ (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    /* 128 */ (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    /* 132 */ (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    /* 136 */ (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    /* 140 */ (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    /* 144 */ (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),
    /* 148 */ (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    /* 152 */ (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    /* 156 */ (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    /* 160 */ (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    /* 164 */ (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    /* 168 */ (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    /* 172 */ (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    /* 176 */ (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    /* 180 */ (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    /* 184 */ (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    /* 188 */ (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    /* 192 */ (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    /* 196 */ (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    /* 200 */ (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    /* 204 */ (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    /* 208 */ (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    /* 212 */ (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    /* 216 */ (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),
    /* 220 */ (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    /* 224 */ (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    /* 228 */ (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    /* 232 */ (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),
    /* 236 */ (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    /* 240 */ (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),
    /* 244 */ (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    /* 248 */ (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    /* 252 */ (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
    /* 256 */ (0x3fffffff, 30),
];

/// The end-of-string symbol, which must never appear in a decoded string.
const EOS: u16 = 256;
/// The longest code (EOS and a few rare bytes).
const MAX_LEN: usize = 30;

/// The canonical decoding tables, computed from the code lengths at compile time.
struct Canonical {
    /// First code of each length.
    first: [u32; MAX_LEN + 1],
    /// How many codes have each length.
    count: [u16; MAX_LEN + 1],
    /// Where each length's symbols start in `symbols`.
    offset: [u16; MAX_LEN + 1],
    /// Symbols ordered by (length, symbol).
    symbols: [u16; 257],
}

#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: code lengths are at most MAX_LEN and symbols fewer than 257, and an index out of bounds would fail the build, not a request"
)]
const fn canonical() -> Canonical {
    let mut count = [0u16; MAX_LEN + 1];
    let mut i = 0;
    while i < CODES.len() {
        count[CODES[i].1 as usize] += 1;
        i += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut code = 0u32;
    let mut len = 1;
    while len <= MAX_LEN {
        code = (code + count[len - 1] as u32) << 1;
        first[len] = code;
        offset[len] = offset[len - 1] + count[len - 1];
        len += 1;
    }
    let mut symbols = [0u16; 257];
    let mut next = offset;
    let mut s = 0;
    while s < CODES.len() {
        let l = CODES[s].1 as usize;
        symbols[next[l] as usize] = s as u16;
        next[l] += 1;
        s += 1;
    }
    Canonical { first, count, offset, symbols }
}

static TABLES: Canonical = canonical();

/// Decodes a Huffman-coded string literal, appending to `out`.
///
/// Refuses (RFC 7541 §5.2) the EOS symbol inside the string, padding longer
/// than 7 bits, and padding that is not the most significant bits of EOS
/// (all ones).
pub(super) fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let t = &TABLES;
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            // Every sequence of MAX_LEN bits starts with a complete code (the
            // code is complete), so `len` never passes MAX_LEN.
            let (Some(&first), Some(&count), Some(&offset)) = (t.first.get(len), t.count.get(len), t.offset.get(len))
            else {
                return Err(HpackError::Huffman("code longer than 30 bits"));
            };
            let rank = code.wrapping_sub(first);
            if code >= first && rank < u32::from(count) {
                let symbol = t.symbols.get(usize::from(offset) + rank as usize).copied().unwrap_or(EOS);
                let byte = u8::try_from(symbol).map_err(|_| HpackError::Huffman("EOS symbol inside a string"))?;
                out.push(byte);
                code = 0;
                len = 0;
            }
        }
    }
    if len > 7 {
        return Err(HpackError::Huffman("padding longer than 7 bits"));
    }
    if code != (1 << len) - 1 {
        return Err(HpackError::Huffman("padding is not a prefix of EOS"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_construction_reproduces_every_code_of_appendix_b() {
        let t = &TABLES;
        for (symbol, &(code, len)) in CODES.iter().enumerate() {
            let len = usize::from(len);
            let rank = (t.offset[len]..t.offset[len] + t.count[len])
                .position(|i| usize::from(t.symbols[usize::from(i)]) == symbol)
                .unwrap();
            assert_eq!(t.first[len] + rank as u32, code, "symbol {symbol}");
        }
        // EOS is thirty ones: every shorter all-ones string is an incomplete code.
        assert_eq!(CODES[256], (0x3fff_ffff, 30));
    }

    /// Encodes with the table, for round trips (the agent never Huffman-encodes).
    fn encode(s: &[u8]) -> Vec<u8> {
        let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
        for &b in s {
            let (code, len) = CODES[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
        }
        out
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        decode(&encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
        for b in 0..=255u8 {
            out.clear();
            decode(&encode(&[b, b, b]), &mut out).unwrap();
            assert_eq!(out, [b, b, b]);
        }
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // `a` is 00011 (5 bits): three bits of padding, all ones, is right...
        assert!(decode(&[0b0001_1111], &mut out).is_ok());
        // ...padding with a zero is not.
        assert!(decode(&[0b0001_1110], &mut out).is_err());
        // A whole byte of ones after a complete string is 8 bits of padding.
        assert!(decode(&[0b0001_1111, 0xff], &mut out).is_err());
        // EOS itself (30 ones), padded with two ones.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
        // Empty input is the empty string.
        out.clear();
        decode(&[], &mut out).unwrap();
        assert!(out.is_empty());
    }
}
