//! SPIFFE bundle documents (what an agent stores and federation exchanges):
//! a parsed bundle serializes and parses to the same bundle.
#![no_main]
use hallmark_ca::Bundle;
use hallmark_core::TrustDomain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let td = TrustDomain::new("example.org").unwrap();
    if let Ok(b) = Bundle::from_spiffe_json(&td, s) {
        if let Ok(doc) = b.to_spiffe_json() {
            let again = Bundle::from_spiffe_json(&td, &doc.to_string()).expect("what we write we read");
            assert_eq!(again.x509_authorities, b.x509_authorities);
        }
    }
});
