//! The /proc parsers the agent's attestation reads: status, pidfd fdinfo, stat.
#![no_main]
use hallmark_agent::attest::{parse_pidfd_fdinfo, parse_stat_starttime, parse_status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse_status(s);
    if let Some(pid) = parse_pidfd_fdinfo(s) {
        assert!(pid > 0);
    }
    let _ = parse_stat_starttime(s);
});
