//! Kubernetes projected service-account tokens as an agent presents them to
//! the `k8s_psat` node attestor: parsing the JWS and reading its claims must
//! never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = hallmark_server::node_attest::psat::parse_for_fuzzing(s);
});
