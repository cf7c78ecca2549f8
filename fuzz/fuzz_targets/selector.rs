//! Selectors (`type:key:value`) and sets of them: a valid one round-trips.
#![no_main]
use hallmark_core::{Selector, SelectorSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let set: SelectorSet = s.lines().filter_map(|l| l.parse::<Selector>().ok()).collect();
    for sel in &set {
        let again: Selector = sel.to_string().parse().expect("a valid selector re-parses");
        assert_eq!(&again, sel);
    }
    assert!(set.is_subset(&set));
    let _ = hallmark_core::evidence_digest(&set);
});
