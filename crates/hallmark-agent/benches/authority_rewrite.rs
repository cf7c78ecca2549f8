//! What dropping `:authority` costs per Workload API request: the client's
//! bytes for one call (a HEADERS frame and a DATA frame) through the
//! [`Rewriter`], against copying the same bytes, which is all a connection
//! cost before.
//!
//! `cargo bench -p hallmark-agent --bench authority_rewrite`
//!
//! Two header blocks, each as a client sends it on a connection it reuses:
//! every field indexed from the client's dynamic table (the steady state of
//! tonic, grpc-go and grpcio: a few bytes per request, each expanded here to
//! a literal), and the first request of a grpcio connection (literals with
//! incremental indexing, the percent-encoded socket path as `:authority`).

#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "a benchmark stops at its first failure")]

use std::hint::black_box;
use std::time::Instant;

use hallmark_agent::authority::{PREFACE, Rewriter};

/// The allocator the `hallmark` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIELDS: [(&str, &str); 8] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/SpiffeWorkloadAPI/FetchJWTSVID"),
    (":authority", "run%2Fhallmark%2Fagent%2Fpublic%2Fapi.sock"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-python/1.85.3 grpc-c/51.0.0 (linux; chttp2)"),
    ("workload.spiffe.io", "true"),
];

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let [_, a, b, c] = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![a, b, c, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Literals with incremental indexing, literal names: the client's first request.
fn first_block() -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in FIELDS {
        b.push(0x40);
        for s in [n, v] {
            b.push(u8::try_from(s.len()).unwrap());
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

/// Every field indexed: entries 62..=69 of the client's table, newest first.
fn indexed_block() -> Vec<u8> {
    (0..FIELDS.len()).rev().map(|i| 0x80 | (62 + u8::try_from(i).unwrap())).collect()
}

/// One call: HEADERS, then a DATA frame with a FetchJWTSVIDRequest.
fn call(block: &[u8], stream: u32) -> Vec<u8> {
    let mut bytes = frame(0x1, 0x4, stream, block);
    bytes.extend(frame(0x0, 0x1, stream, &[0, 0, 0, 0, 7, 0x0a, 5, b'b', b'e', b'n', b'c', b'h']));
    bytes
}

fn main() {
    const CALLS: u32 = 500_000;
    let mut connection = Rewriter::new();
    let mut out = Vec::new();
    connection.feed(PREFACE, &mut out).unwrap();
    // The first request fills the client's table; every later one names it.
    let first = call(&first_block(), 1);
    connection.feed(&first, &mut out).unwrap();
    let later: Vec<Vec<u8>> = (0..CALLS).map(|i| call(&indexed_block(), 3 + 2 * i)).collect();
    println!("| per call | bytes in | bytes out | ns per call |\n|---|---:|---:|---:|");

    let t = Instant::now();
    let mut copied = Vec::new();
    for c in &later {
        copied.clear();
        copied.extend_from_slice(black_box(c));
        black_box(&copied);
    }
    let copy_ns = t.elapsed().as_nanos() as f64 / f64::from(CALLS);
    println!("| copy only (before) | {} | {} | {copy_ns:.0} |", later[0].len(), later[0].len());

    let t = Instant::now();
    for c in &later {
        out.clear();
        connection.feed(black_box(c), &mut out).unwrap();
        black_box(&out);
    }
    let indexed_ns = t.elapsed().as_nanos() as f64 / f64::from(CALLS);
    println!("| rewrite, fields indexed (steady state) | {} | {} | {indexed_ns:.0} |", later[0].len(), out.len());

    let t = Instant::now();
    for _ in 0..CALLS / 10 {
        let mut fresh = Rewriter::new();
        out.clear();
        fresh.feed(PREFACE, &mut out).unwrap();
        fresh.feed(black_box(&first), &mut out).unwrap();
        black_box(&out);
    }
    let first_ns = t.elapsed().as_nanos() as f64 / f64::from(CALLS / 10);
    println!(
        "| rewrite, a new connection's first call (literals, table filled) | {} | {} | {first_ns:.0} |",
        PREFACE.len() + first.len(),
        out.len()
    );
}
