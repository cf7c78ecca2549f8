//! Pages of entries read from the datastore (which someone may have edited
//! by hand): parsed or refused as corrupt, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = hallmark_store::parse_entries_page(s);
});
