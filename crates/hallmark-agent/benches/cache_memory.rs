//! The agent's memory per cached X.509-SVID beyond the certificate and key
//! bytes, counted exactly: a counting allocator wraps the agent's allocator
//! and reports live bytes requested, so the figure is the cache's own and not
//! the allocator's retention (which makes process RSS deltas swing by tens of
//! kilobytes per SVID from run to run).
//!
//! `cargo bench -p hallmark-agent --bench cache_memory`
//!
//! The cache holds N entries and one workload's interest; then N SVIDs,
//! signed by a real CA from real CSRs (as the agent receives them), are made
//! and stored. Live bytes after, minus live bytes before the SVIDs were made,
//! divided by N, is the memory per SVID; the certificate and key bytes are
//! subtracted to give the overhead. Allocator size-class rounding is not
//! counted (mimalloc's classes waste at most 12.5% of a block).

#![expect(clippy::unwrap_used, reason = "a benchmark stops at its first failure")]

use cap::Cap;
use hallmark_agent::cache::{Cache, HeldSvid, SvidKey};
use hallmark_agent::evidence::Evidence;
use hallmark_ca::keys::new_key_and_csr;
use hallmark_ca::x509::SvidTemplate;
use hallmark_ca::{AuthorityStatus, Bundle, X509Authority};
use hallmark_core::{Entry, EntrySpec, SelectorSet, SpiffeId, TrustDomain, Ttl, evidence_digest, now_unix};

#[global_allocator]
static ALLOC: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

fn entry(td: &TrustDomain, i: usize, selectors: &[String]) -> Entry {
    let ttl = Ttl::parse("1h").unwrap();
    let v = EntrySpec {
        spiffe_id: format!("spiffe://{td}/held/svc{i}"),
        parent_id: Some(format!("spiffe://{td}/hallmark/agent/join_token/0123456789abcdef")),
        selectors: selectors.to_vec(),
        owner: "team".into(),
        ..Default::default()
    }
    .validate(td, None, ttl, ttl)
    .unwrap();
    v.into_entry(format!("{i:032x}"), 0)
}

fn main() {
    let n: usize = std::env::var("HALLMARK_BENCH_SVIDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let td = TrustDomain::new("example.org").unwrap();
    let now = now_unix();
    let ca = X509Authority::generate_self_signed(&td, 86_400, now).unwrap();
    let selectors = vec![
        "unix:uid:1000".to_owned(),
        "unix:sha256:9f2c1b6e0e5a4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a".to_owned(),
    ];
    let workload: SelectorSet = selectors.iter().map(|s| s.parse().unwrap()).collect();
    let cache = Cache::default();
    cache.set_bundle(
        Bundle {
            trust_domain: td.clone(),
            x509_authorities: ca.anchors().to_vec(),
            jwt_authorities: Vec::new(),
            sequence: 1,
            refresh_hint: 300,
            status: AuthorityStatus::default(),
        },
        now,
    );
    let entries: Vec<Entry> = (0..n).map(|i| entry(&td, i, &selectors)).collect();
    cache.replace_entries(entries.clone());
    let digest = cache.open_interest(&Evidence::new(workload.clone()), None, now);
    assert_eq!(digest, evidence_digest(&workload));

    let before = ALLOC.allocated();
    let mut material = 0;
    let mut held = Vec::with_capacity(n);
    for e in &entries {
        let kc = new_key_and_csr(Some(&e.spiffe_id)).unwrap();
        let id: &SpiffeId = &e.spiffe_id;
        let t = SvidTemplate {
            csr_der: &kc.csr_der,
            spiffe_id: id,
            dns_names: &[],
            ttl_secs: 3600,
            now,
            profile: hallmark_ca::x509::SvidProfile::Workload,
            task_id: None,
            person_name: None,
        };
        let s = ca.sign_svid(&t).unwrap();
        material += s.chain.iter().map(Vec::len).sum::<usize>() + kc.key_pkcs8.len();
        let svid = HeldSvid {
            revision: 1,
            serial: s.serial,
            authority_id: ca.id(),
            chain: s.chain,
            key: kc.key_pkcs8,
            not_before: s.not_before,
            not_after: s.not_after,
            rotate_at: s.not_after - 1800,
        };
        held.push((SvidKey::new(&e.id, &digest), svid));
    }
    for (key, svid) in held.drain(..) {
        let _ = cache.put_svid(key, svid);
    }
    // `held` itself was scaffolding: its buffer is not part of the cache.
    drop(held);
    let after = ALLOC.allocated();
    assert_eq!(cache.svid_count(), n);
    let total = (after - before) as f64 / n as f64;
    let material = material as f64 / n as f64;
    println!("| SVIDs cached | bytes per SVID | certificate and key | beyond them | target |");
    println!("|---:|---:|---:|---:|---|");
    println!("| {n} | {total:.0} | {material:.0} | **{:.0}** | under 1024 |", total - material);
}
