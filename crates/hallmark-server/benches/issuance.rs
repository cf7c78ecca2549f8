//! X.509-SVID issuance throughput with the inventory and audit durably
//! recorded, divided by the same without recording, in one run.
//!
//! `cargo bench -p hallmark-server --features bench-baseline --bench issuance`
//!
//! Each run starts a server on a fresh SQLite file (WAL, synchronous = FULL),
//! registers an owner and an entry, and issues SVIDs from pre-generated CSRs
//! through `ServerState::issue_x509` (entitlement, evidence check, class and
//! Cedar decision, signing, recording) from 64 concurrent tasks. Keys and
//! CSRs are made before timing, as agents make them.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark stops at its first failure")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use hallmark_ca::keys::new_key_and_csr;
use hallmark_core::{EntrySpec, SelectorSet, SpiffeId};
use hallmark_server::issuance::Caller;

/// Process CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// Concurrent issuances in flight.
fn tasks() -> usize {
    std::env::var("HALLMARK_BENCH_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

/// Issuances per second and CPU microseconds per issuance.
async fn rate(record: bool, per_task: usize) -> (f64, f64) {
    let tasks = tasks();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
        dir.path().display()
    );
    let settings = hallmark_server::config::ServerConfig::parse(&cfg, &HashMap::new()).unwrap().validate().unwrap();
    let server = if record {
        hallmark_server::start(settings).await.unwrap()
    } else {
        hallmark_server::start_without_recording(settings).await.unwrap()
    };
    let st = server.state.clone();
    st.store.create_owner("bench", "bench@example.org", "").await.unwrap();
    let agent = SpiffeId::new("spiffe://example.org/hallmark/agent/local").unwrap();
    let spec: EntrySpec = serde_json::from_value(serde_json::json!({
        "spiffe_id": "spiffe://example.org/bench", "parent_id": agent.as_str(),
        "selectors": ["unix:uid:1000"], "owner": "bench",
    }))
    .unwrap();
    let valid = spec.validate(&st.settings.trust_domain, None, st.settings.default_x509_ttl, st.settings.default_jwt_ttl).unwrap();
    let entry = st.store.create_entry(&valid).await.unwrap();
    st.catch_up().await.unwrap();
    let sid = SpiffeId::new("spiffe://example.org/bench").unwrap();
    let csrs: Vec<Vec<Vec<u8>>> =
        (0..tasks).map(|_| (0..per_task).map(|_| new_key_and_csr(Some(&sid)).unwrap().csr_der).collect()).collect();
    let evidence: SelectorSet = ["unix:uid:1000".parse().unwrap()].into();
    let caller = Arc::new(Caller { agent, attestation: "local".into() });
    let (t, cpu) = (Instant::now(), cpu_secs());
    let mut handles = Vec::new();
    for batch in csrs {
        let (st, caller, id, ev) = (st.clone(), caller.clone(), entry.id.clone(), evidence.clone());
        handles.push(tokio::spawn(async move {
            for csr in batch {
                st.issue_x509(&caller, &id, &csr, ev.clone(), false).await.expect("issued");
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
    if record {
        let n = st.store.credentials(&Default::default(), 10_000_000).await.unwrap().len();
        assert_eq!(n, tasks * per_task, "every issued SVID is in the inventory");
        assert!(st.store.verify_audit().await.unwrap().broken.is_none());
    }
    let n = (tasks * per_task) as f64;
    (n / secs, cpu * 1e6 / n)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let per_task: usize = std::env::var("HALLMARK_BENCH_PER_TASK").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    // Alternate the two, three times, so drift on a noisy machine hits both.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        without.push(rate(false, per_task).await);
        with.push(rate(true, per_task).await);
    }
    let mean = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (w, wo) = (mean(&with, |r| r.0), mean(&without, |r| r.0));
    let (wc, woc) = (mean(&with, |r| r.1), mean(&without, |r| r.1));
    let runs = |v: &[(f64, f64)]| v.iter().map(|r| format!("{:.0}", r.0)).collect::<Vec<_>>().join(", ");
    println!("| in flight | issuances per run | with recording | without recording | ratio | CPU per issuance with / without |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {w:.0}/s ({}) | {wo:.0}/s ({}) | {:.2} | {wc:.0} / {woc:.0} µs |",
        tasks(),
        tasks() * per_task,
        runs(&with),
        runs(&without),
        w / wo
    );
}
