//! `POST /v1/token` bodies (RFC 8693, form-encoded): any bytes are a parsed
//! request or an RFC 6749 error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hallmark_server::token_exchange::parse_request(data);
});
