//! SPIFFE IDs and trust domains from any text: a valid one round-trips.
#![no_main]
use hallmark_core::{SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = SpiffeId::new(s) {
        assert_eq!(SpiffeId::new(id.as_str()).as_ref(), Ok(&id), "a valid SPIFFE ID re-parses to itself");
        assert!(id.as_str().len() <= 2048);
    }
    let _ = TrustDomain::new(s);
});
