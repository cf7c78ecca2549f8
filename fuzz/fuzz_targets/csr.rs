//! CSRs as an agent sends them: the CA verifies, checks the identity asked
//! for, and signs or refuses; it never panics.
#![no_main]
use std::sync::OnceLock;

use hallmark_ca::X509Authority;
use hallmark_ca::x509::SvidTemplate;
use hallmark_core::{SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fn ca() -> &'static X509Authority {
    static CA: OnceLock<X509Authority> = OnceLock::new();
    CA.get_or_init(|| {
        X509Authority::generate_self_signed(&TrustDomain::new("example.org").unwrap(), 86_400, 1_800_000_000).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let id = SpiffeId::new("spiffe://example.org/web").unwrap();
    let t = SvidTemplate { csr_der: data, spiffe_id: &id, dns_names: &[], ttl_secs: 60, now: 1_800_000_000, profile: hallmark_ca::x509::SvidProfile::Workload, task_id: None, person_name: None };
    if let Ok(s) = ca().sign_svid(&t) {
        let leaf = hallmark_ca::svid::parse_leaf(&s.chain[0]).expect("what the CA signs parses");
        assert_eq!(leaf.spiffe_id, id, "a CSR never obtains another identity");
    }
});
