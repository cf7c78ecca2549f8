//! The Workload API's HTTP/2 rewriter, which drops `:authority` from what
//! clients send: frames and HPACK header blocks after a valid preface, fed in
//! pieces of any size. It must never panic, and what it lets through must
//! pass through it again unchanged (no `:authority` left, nothing in the
//! server's dynamic table, frames the server accepts).
#![no_main]
use hallmark_agent::authority::{PREFACE, Rewriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte sets how the input is split; the rest follows the preface.
    let Some((&split, frames)) = data.split_first() else { return };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(frames);
    let mut rewriter = Rewriter::new();
    let mut out = Vec::new();
    for piece in input.chunks(usize::from(split).max(1)) {
        if rewriter.feed(piece, &mut out).is_err() {
            break;
        }
    }
    let mut again = Vec::new();
    Rewriter::new().feed(&out, &mut again).expect("the rewriter's own output is accepted");
    assert_eq!(again, out, "the rewriter's own output passes through unchanged");
});
