//! Envoy SDS requests, as a stream receives them: framed `DiscoveryRequest`s
//! through one stream's protocol state (ACK, NACK, stale nonces, names).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hallmark_agent::sds::drive_stream(data);
});
