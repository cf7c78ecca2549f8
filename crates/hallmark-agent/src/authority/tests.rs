//! The rewriter on hand-built HTTP/2 byte streams: what clients send, what
//! comes out, and everything that must end the connection.

use super::*;
use crate::hpack::{Decoder, Field, encode_literal};

const SETTINGS: u8 = 0x4;
const DATA: u8 = 0x0;
const WINDOW_UPDATE: u8 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let [_, a, b, c] = u32::try_from(payload.len()).unwrap().to_be_bytes();
    f.extend_from_slice(&[a, b, c, kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block of literals without indexing.
fn literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        encode_literal(&mut b, Field { name: n.as_bytes(), value: v.as_bytes(), never_indexed: false });
    }
    b
}

fn string(s: &str) -> Vec<u8> {
    let mut b = vec![u8::try_from(s.len()).unwrap()];
    b.extend_from_slice(s.as_bytes());
    b
}

/// The request fields grpc clients send, after their `:authority`.
const GRPC_FIELDS: [(&str, &str); 6] = [
    (":scheme", "http"),
    (":method", "POST"),
    (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("workload.spiffe.io", "true"),
];

fn rewrite(input: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut out = Vec::new();
    Rewriter::new().feed(input, &mut out)?;
    Ok(out)
}

/// One output frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Splits rewriter output into the preface and frames.
fn frames(out: &[u8]) -> Vec<Frame> {
    assert_eq!(&out[..24], PREFACE);
    let mut rest = &out[24..];
    let mut all = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        all.push(Frame { kind: rest[3], flags: rest[4], stream, payload: rest[9..9 + len].to_vec() });
        rest = &rest[9 + len..];
    }
    all
}

/// The header lists of the output, decoded as the server would decode them;
/// also checks that nothing was put in the server's dynamic table.
fn header_lists(out: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut d = Decoder::new(HEADER_TABLE_SIZE);
    let mut lists = Vec::new();
    let mut block = Vec::new();
    for f in frames(out) {
        if f.kind != HEADERS && f.kind != CONTINUATION {
            continue;
        }
        let mut p = &f.payload[..];
        if f.kind == HEADERS && f.flags & PRIORITY != 0 {
            p = &p[5..];
        }
        assert_eq!(f.flags & PADDED, 0, "no padding is written");
        block.extend_from_slice(p);
        if f.flags & END_HEADERS != 0 {
            let mut list = Vec::new();
            d.decode(&block, usize::MAX, |f| {
                list.push((String::from_utf8_lossy(f.name).into_owned(), String::from_utf8_lossy(f.value).into_owned()))
            })
            .unwrap();
            assert_eq!(d.table_size(), 0, "the server's dynamic table stays empty");
            lists.push(list);
            block.clear();
        }
    }
    lists
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn grpc_c_percent_encoded_authority_is_dropped_even_when_indexed() {
    // grpcio's first request: `:authority` added to its dynamic table...
    let mut first = vec![0x41];
    first.extend(string("run%2Fhallmark%2Fapi.sock"));
    first.extend(literals(&GRPC_FIELDS));
    // ...and the second names it by index 62.
    let mut second = vec![0xbe];
    second.extend(literals(&GRPC_FIELDS));
    let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let data = frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]);
    let window = frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(&settings);
    input.extend(frame(HEADERS, END_HEADERS, 1, &first));
    input.extend(&data);
    input.extend(&window);
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
    let out = rewrite(&input).unwrap();
    assert_eq!(header_lists(&out), vec![owned(&GRPC_FIELDS), owned(&GRPC_FIELDS)]);
    let fs = frames(&out);
    assert_eq!(fs.iter().map(|f| (f.kind, f.stream)).collect::<Vec<_>>(), [(4, 0), (1, 1), (0, 1), (8, 0), (1, 3)]);
    // Every other frame byte for byte.
    assert_eq!(frame(fs[0].kind, fs[0].flags, fs[0].stream, &fs[0].payload), settings);
    assert_eq!(frame(fs[2].kind, fs[2].flags, fs[2].stream, &fs[2].payload), data);
    assert_eq!(frame(fs[3].kind, fs[3].flags, fs[3].stream, &fs[3].payload), window);
    assert_eq!((fs[1].flags, fs[4].flags), (END_HEADERS, END_HEADERS | END_STREAM), "flags kept");
}

#[test]
fn raw_path_huffman_and_missing_authorities_all_come_out_without_one() {
    // grpc-java: the raw path, never indexed; RFC 7541 C.4.1: a Huffman-coded one; and none at all.
    let mut java = vec![0x10];
    java.extend(string(":authority"));
    java.extend(string("/run/hallmark/api.sock"));
    java.extend(literals(&GRPC_FIELDS));
    let huffman = hex::decode("828684418cf1e3c2e5f23a6ba0ab90f4ff").unwrap();
    let none = literals(&GRPC_FIELDS);
    for (name, block, want) in [
        ("raw path", java, owned(&GRPC_FIELDS)),
        ("huffman", huffman, owned(&[(":method", "GET"), (":scheme", "http"), (":path", "/")])),
        ("none", none, owned(&GRPC_FIELDS)),
    ] {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        assert_eq!(header_lists(&rewrite(&input).unwrap()), vec![want], "{name}");
    }
}

#[test]
fn never_indexed_fields_stay_never_indexed() {
    let mut block = vec![0x10];
    block.extend(string("authorization"));
    block.extend(string("Bearer x"));
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let out = rewrite(&input).unwrap();
    let f = &frames(&out)[0];
    let mut seen = Vec::new();
    Decoder::new(4096).decode(&f.payload, usize::MAX, |f| seen.push(f.never_indexed)).unwrap();
    assert_eq!(seen, [true]);
}

#[test]
fn padding_priority_and_continuation_are_handled() {
    let mut block = vec![0x41];
    block.extend(string("/run/x.sock"));
    block.extend(literals(&GRPC_FIELDS));
    let (a, b) = block.split_at(7);
    let (b, c) = b.split_at(10);
    // HEADERS: PADDED (3 octets) and PRIORITY, END_STREAM; then two CONTINUATION frames.
    let mut payload = vec![3];
    payload.extend([0x80, 0, 0, 1, 15]); // exclusive, depends on stream 1, weight 16
    payload.extend(a);
    payload.extend([0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
    input.extend(frame(CONTINUATION, 0, 3, b));
    input.extend(frame(CONTINUATION, END_HEADERS, 3, c));
    let out = rewrite(&input).unwrap();
    let fs = frames(&out);
    assert_eq!(fs.len(), 1, "one block, one frame");
    assert_eq!(fs[0].flags, PRIORITY | END_STREAM | END_HEADERS);
    assert_eq!(fs[0].payload[..5], [0x80, 0, 0, 1, 15], "priority fields kept");
    assert_eq!(header_lists(&out), vec![owned(&GRPC_FIELDS)]);
}

#[test]
fn a_large_block_is_cut_into_frames_the_server_accepts() {
    let big = "v".repeat(20_000);
    let fields = [(":authority", "x"), (":method", "POST"), ("x-big", big.as_str()), ("x-big2", big.as_str())];
    let block = literals(&fields);
    let mut input = PREFACE.to_vec();
    // Sent in 10 000-byte pieces, the last one carrying END_HEADERS.
    let pieces: Vec<&[u8]> = block.chunks(10_000).collect();
    for (i, p) in pieces.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == pieces.len() { END_HEADERS } else { 0 };
        input.extend(frame(kind, flags, 1, p));
    }
    let out = rewrite(&input).unwrap();
    let fs = frames(&out);
    assert!(fs.len() >= 3, "{}", fs.len());
    for (i, f) in fs.iter().enumerate() {
        assert!(f.payload.len() <= 16_384);
        assert_eq!(f.kind, if i == 0 { HEADERS } else { CONTINUATION });
        assert_eq!(f.flags & END_HEADERS != 0, i + 1 == fs.len(), "END_HEADERS on the last frame only");
    }
    assert_eq!(header_lists(&out), vec![owned(&fields[1..])]);
}

#[test]
fn any_split_of_the_input_gives_the_same_output() {
    let mut block = vec![0x41];
    block.extend(string("run%2Fa.sock"));
    block.extend(literals(&GRPC_FIELDS));
    let mut input = PREFACE.to_vec();
    input.extend(frame(SETTINGS, 0, 0, &[]));
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    input.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    input.extend(frame(HEADERS, 0, 3, &[0xbe]));
    input.extend(frame(CONTINUATION, END_HEADERS, 3, &literals(&GRPC_FIELDS)));
    let whole = rewrite(&input).unwrap();
    for size in [1, 2, 7, 9, 10, 23, 24, 25, 100] {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            r.feed(chunk, &mut out).unwrap();
        }
        assert_eq!(out, whole, "fed {size} bytes at a time");
    }
    // What comes out goes through unchanged a second time.
    assert_eq!(rewrite(&whole).unwrap(), whole);
}

#[test]
fn the_preface_is_tracked_and_checked() {
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    r.feed(&PREFACE[..10], &mut out).unwrap();
    assert!(!r.preface_complete());
    r.feed(&PREFACE[10..], &mut out).unwrap();
    assert!(r.preface_complete());
    assert_eq!(out, PREFACE);
    assert_eq!(rewrite(b"GET / HTTP/1.1\r\n"), Err(RewriteError::BadPreface));
    assert_eq!(rewrite(b"PRI * HTTP/2.0\r\n\r\nXX"), Err(RewriteError::BadPreface));
}

#[test]
fn frames_out_of_place_end_the_connection() {
    let block = literals(&GRPC_FIELDS);
    let after_preface = |frames: &[Vec<u8>]| {
        let mut input = PREFACE.to_vec();
        for f in frames {
            input.extend(f);
        }
        rewrite(&input).unwrap_err()
    };
    let open = frame(HEADERS, 0, 1, &block);
    let protocol = |e: RewriteError| matches!(e, RewriteError::Protocol { .. });
    assert!(protocol(after_preface(&[open.clone(), frame(DATA, 0, 1, &[])])), "DATA inside a block");
    assert!(protocol(after_preface(&[open.clone(), frame(CONTINUATION, END_HEADERS, 3, &[])])), "other stream");
    assert!(protocol(after_preface(&[frame(CONTINUATION, END_HEADERS, 1, &block)])), "no block open");
    assert!(protocol(after_preface(&[frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])])));
    assert!(protocol(after_preface(&[frame(HEADERS, END_HEADERS, 0, &block)])), "stream 0");
    assert!(protocol(after_preface(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 1, 2])])), "padding too long");
    assert!(protocol(after_preface(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[])])), "no pad length");
    assert!(protocol(after_preface(&[frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0])])), "short priority");
    let bad_index = after_preface(&[frame(HEADERS, END_HEADERS, 1, &[0xff, 0x00])]);
    assert!(matches!(bad_index, RewriteError::Hpack { stream: 1, .. }), "{bad_index}");
}

#[test]
fn header_blocks_are_bounded() {
    // A CONTINUATION flood: 1 KiB at a time, never ending the block.
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    r.feed(PREFACE, &mut out).unwrap();
    r.feed(&frame(HEADERS, 0, 1, &[0x82]), &mut out).unwrap();
    let mut refused = None;
    for i in 0..100 {
        if let Err(e) = r.feed(&frame(CONTINUATION, 0, 1, &[0x82; 1024]), &mut out) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.unwrap();
    assert_eq!(e, RewriteError::HeaderBlockTooLarge { stream: 1 });
    assert_eq!(i, 63, "refused at the 64th CONTINUATION, which takes the block past 64 KiB");
    assert_eq!(r.feed(&[0], &mut out), Err(RewriteError::AlreadyRefused));
    // One HEADERS frame announcing more than the limit is refused before its payload is read.
    let mut r = Rewriter::new();
    let mut input = PREFACE.to_vec();
    input.extend([0x01, 0x10, 0x00, HEADERS, END_HEADERS, 0, 0, 0, 1]);
    assert_eq!(r.feed(&input, &mut out), Err(RewriteError::HeaderBlockTooLarge { stream: 1 }));
    // A small block that decodes to a huge list: one 3 033-byte entry, then named 30 times.
    let value = "v".repeat(3000);
    let mut block = literals(&[("x", value.as_str())]);
    block[0] = 0x40; // the same literal, with incremental indexing
    block.extend([0xbe; 30]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let e = rewrite(&input).unwrap_err();
    assert!(matches!(e, RewriteError::Hpack { source: HpackError::ListTooLarge { .. }, .. }), "{e}");
}
