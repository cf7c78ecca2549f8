//! Entry bodies of the admin API (create, update, batch): decoded and
//! validated as the server does, before anything is stored.
#![no_main]
use hallmark_core::{EntrySpec, SpiffeId, TrustDomain, Ttl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<EntrySpec>(data) else { return };
    let td = TrustDomain::new("example.org").unwrap();
    let parent = SpiffeId::new("spiffe://example.org/hallmark/agent/local").unwrap();
    let ttl = Ttl::parse("1h").unwrap();
    if let Ok(v) = spec.validate(&td, Some(&parent), ttl, ttl) {
        assert_eq!(v.spiffe_id.trust_domain().to_string(), "example.org", "entries stay in their trust domain");
        assert!(!v.selectors.is_empty());
    }
});
