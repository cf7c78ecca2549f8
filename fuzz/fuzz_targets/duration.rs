//! Durations as flags and configuration give them (`90s`, `1h30m`, `7d`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = hallmark_core::parse_duration(s) {
        let again = hallmark_core::parse_duration(&hallmark_core::format_duration(d)).expect("formatted durations parse");
        assert_eq!(again, d);
    }
    let _ = hallmark_core::Ttl::parse(s);
});
