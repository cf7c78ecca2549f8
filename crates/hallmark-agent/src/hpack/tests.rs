//! The decoder against RFC 7541 Appendix C (tests/data/hpack-rfc7541-appendix-c.txt)
//! and against every error the RFC names.

use super::*;

const APPENDIX_C: &str = include_str!("../../tests/data/hpack-rfc7541-appendix-c.txt");

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Splits `name: value` at the first ": " after the first character.
fn split_field(s: &str) -> (String, String) {
    let at = s[1..].find(": ").unwrap() + 1;
    (s[..at].to_owned(), s[at + 2..].to_owned())
}

fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String, bool)>, HpackError> {
    let mut got = Vec::new();
    d.decode(block, 1 << 20, |f| {
        got.push((
            String::from_utf8_lossy(f.name).into_owned(),
            String::from_utf8_lossy(f.value).into_owned(),
            f.never_indexed,
        ))
    })?;
    Ok(got)
}

/// Runs one block's expectations: the header list, then the table.
struct Expect {
    headers: Vec<(String, String)>,
    entries: Vec<(String, String)>,
    table_size: usize,
}

#[test]
fn rfc7541_appendix_c() {
    let mut decoder: Option<Decoder> = None;
    let mut blocks: Vec<(String, Vec<u8>, Expect)> = Vec::new();
    let mut case = String::new();
    let (mut integers, mut checked) = (0, 0);
    let mut run = |decoder: &mut Option<Decoder>, blocks: &mut Vec<(String, Vec<u8>, Expect)>| {
        let d = decoder.as_mut().unwrap();
        for (case, block, want) in blocks.drain(..) {
            let got = decode_all(d, &block).unwrap_or_else(|e| panic!("{case}: {e}"));
            let never: Vec<bool> = got.iter().map(|g| g.2).collect();
            let got: Vec<(String, String)> = got.into_iter().map(|(n, v, _)| (n, v)).collect();
            assert_eq!(got, want.headers, "{case}: header list");
            // Only C.2.3 marks its field never indexed.
            assert_eq!(never.iter().any(|n| *n), case.starts_with("C.2.3"), "{case}: never-indexed flag");
            assert_eq!(d.table_size(), want.table_size, "{case}: table size");
            let entries: Vec<(String, String)> = d
                .table
                .entries()
                .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            assert_eq!(entries, want.entries, "{case}: dynamic table");
            checked += 1;
        }
    };
    for line in APPENDIX_C.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (kw, rest) = line.split_once(' ').unwrap();
        match kw {
            "integer" => {
                let w: Vec<&str> = rest.split(' ').collect();
                let bytes = hex(w[1]);
                let mut b = &bytes[..];
                assert_eq!(integer(&mut b, w[0].parse().unwrap()).unwrap(), w[2].parse::<usize>().unwrap(), "{line}");
                assert!(b.is_empty(), "{line}: every octet read");
                let mut enc = Vec::new();
                // The examples leave the prefix's high bits zero.
                encode_integer(&mut enc, 0, w[0].parse().unwrap(), w[2].parse().unwrap());
                assert_eq!(enc, bytes, "{line}: encoded the same way");
                integers += 1;
            }
            "case" => {
                if decoder.is_some() {
                    run(&mut decoder, &mut blocks);
                }
                case = rest.to_owned();
                decoder = None;
            }
            "max_table_size" => decoder = Some(Decoder::new(rest.parse().unwrap())),
            "block" => blocks.push((
                case.clone(),
                hex(rest),
                Expect { headers: Vec::new(), entries: Vec::new(), table_size: usize::MAX },
            )),
            "header" => blocks.last_mut().unwrap().2.headers.push(split_field(rest)),
            "entry" => blocks.last_mut().unwrap().2.entries.push(split_field(rest)),
            "table_size" => blocks.last_mut().unwrap().2.table_size = rest.parse().unwrap(),
            other => panic!("unknown line `{other}`"),
        }
    }
    run(&mut decoder, &mut blocks);
    assert_eq!((integers, checked), (3, 16), "every example of Appendix C was run");
}

#[test]
fn literals_round_trip_and_leave_the_receivers_table_empty() {
    let fields = [
        (&b":method"[..], &b"POST"[..], false),
        (b":authority", b"run%2Fhallmark%2Fapi.sock", false),
        (b"x-long", &[b'v'; 300][..], false),
        (b"authorization", b"secret", true),
        (b"", b"", false),
    ];
    let mut block = Vec::new();
    for (name, value, never_indexed) in fields {
        encode_literal(&mut block, Field { name, value, never_indexed });
    }
    let mut d = Decoder::new(4096);
    let got = decode_all(&mut d, &block).unwrap();
    let want: Vec<(String, String, bool)> = fields
        .iter()
        .map(|(n, v, s)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned(), *s))
        .collect();
    assert_eq!(got, want);
    assert_eq!(d.table_size(), 0);
}

#[test]
fn every_error_of_the_rfc_is_an_error() {
    let err = |table: usize, block: &str| decode_all(&mut Decoder::new(table), &hex(block)).unwrap_err();
    // Index 0 and indices past the tables (§2.3.3, §6.1).
    assert!(matches!(err(4096, "80"), HpackError::BadIndex { index: 0, .. }));
    assert!(matches!(err(4096, "be"), HpackError::BadIndex { index: 62, dynamic: 0 }));
    assert!(matches!(err(4096, "7f00"), HpackError::BadIndex { index: 63, .. }), "literal naming a missing entry");
    // Size updates: above the limit, and after a field (§4.2, §6.3).
    assert_eq!(err(256, "3fe11f"), HpackError::TableSizeAboveLimit { size: 4096, limit: 256 });
    assert_eq!(err(4096, "8220"), HpackError::LateTableSizeUpdate);
    // Truncation inside an integer, a string length, a string.
    assert!(matches!(err(4096, "ff"), HpackError::Truncated(_)));
    assert!(matches!(err(4096, "00"), HpackError::Truncated(_)));
    assert!(matches!(err(4096, "0003616263"), HpackError::Truncated(_)), "value missing");
    assert!(matches!(err(4096, "000561"), HpackError::Truncated(_)));
    // Integers longer than any valid value.
    assert_eq!(err(4096, "ffffffffffffff7f"), HpackError::IntegerOverflow);
    assert_eq!(err(4096, "3fffffffff0f"), HpackError::IntegerOverflow, "2^32 + 30");
    // Huffman: padding of zeros, and EOS in the string (§5.2).
    assert!(matches!(err(4096, "00818000"), HpackError::Huffman(_)));
    assert!(matches!(err(4096, "0084ffffffff00"), HpackError::Huffman(_)));
}

#[test]
fn size_updates_at_the_start_shrink_and_regrow_the_table() {
    let mut d = Decoder::new(4096);
    decode_all(&mut d, &hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572")).unwrap();
    assert_eq!(d.table_size(), 55);
    // Two updates in a row (to 0, then back to 4096) before a field: allowed, and the entry is gone.
    let got = decode_all(&mut d, &hex("203fe11f82")).unwrap();
    assert_eq!(got, vec![(":method".into(), "GET".into(), false)]);
    assert_eq!(d.table_size(), 0);
    assert!(matches!(decode_all(&mut d, &hex("be")), Err(HpackError::BadIndex { index: 62, dynamic: 0 })));
}

#[test]
fn the_header_list_limit_stops_decoding() {
    // Two indexed fields referring to one 4 000-byte entry: tiny on the wire, large decoded.
    let mut block = vec![0x40, 0x01, b'x'];
    encode_integer(&mut block, 0, 7, 4000);
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend([0xbe; 20]);
    let mut d = Decoder::new(4096);
    let mut n = 0;
    let e = d.decode(&block, 16 * 1024, |_| n += 1).unwrap_err();
    assert_eq!(e, HpackError::ListTooLarge { limit: 16 * 1024 });
    assert_eq!(n, 4, "fields past the limit are never emitted");
}

#[test]
fn the_static_table_is_used_and_the_dynamic_one_never() {
    let enc = |name: &str, value: &str, never_indexed: bool| {
        let mut out = Vec::new();
        encode_literal(&mut out, Field { name: name.as_bytes(), value: value.as_bytes(), never_indexed });
        hex::encode(out)
    };
    // A whole static entry: one octet (§6.1).
    assert_eq!(enc(":method", "POST", false), "83");
    // A static name (content-type is 31: 15 in the prefix, 16 after), literal value (§6.2.2).
    assert_eq!(enc("content-type", "application/grpc", false), "0f10106170706c69636174696f6e2f67727063");
    // Never indexed stays so, even for a whole static entry (§6.2.3): name index 2, literal value.
    assert_eq!(enc(":method", "POST", true), "1204504f5354");
    // A name the static table lacks: a literal name.
    assert_eq!(enc("te", "trailers", false), "0002746508747261696c657273");
}
