//! JWTs as given to ValidateJWTSVID, against a bundle with an EC and an RSA
//! key: anything accepted is a token that key signed for that audience.
#![no_main]
use std::sync::OnceLock;

use hallmark_ca::{JwtAuthority, JwtKey};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static (JwtKey, Vec<JwtAuthority>) {
    static K: OnceLock<(JwtKey, Vec<JwtAuthority>)> = OnceLock::new();
    K.get_or_init(|| {
        let k = JwtKey::generate().unwrap();
        let a = vec![k.authority()];
        (k, a)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (_, authorities) = key();
    // The input as a token, and split as `audience\ntoken`.
    let _ = hallmark_ca::jwt::validate(s, "db", "example.org", authorities, 1_800_000_000);
    if let Some((aud, token)) = s.split_once('\n') {
        if hallmark_ca::jwt::validate(token, aud, "example.org", authorities, 1_800_000_000).is_ok() {
            panic!("a token nobody signed validated");
        }
    }
});
