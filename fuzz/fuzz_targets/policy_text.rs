//! Cedar policy text as `PUT /v1/policy` receives it: compiled against the
//! schema, or refused with diagnostics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = hallmark_policy::PolicyEngine::compile(s, 1);
});
