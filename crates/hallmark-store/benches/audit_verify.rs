//! `audit verify` throughput over a 1 000 000-record chain, and append
//! throughput in batches, on a real SQLite file (and PostgreSQL when
//! `HALLMARK_BENCH_POSTGRES` names a database).
//!
//! `cargo bench -p hallmark-store --bench audit_verify`

#![expect(clippy::unwrap_used, reason = "a benchmark stops at its first failure")]

use std::time::Instant;

use hallmark_store::{AuditEvent, Store};

fn event(i: i64) -> AuditEvent {
    AuditEvent {
        at: 1_700_000_000 + i / 100,
        actor: "node:spiffe://example.org/hallmark/agent/join_token/0123456789abcdef".into(),
        action: "issue_x509".into(),
        subject: format!("{:032x}", i % 5000),
        outcome: "ok".into(),
        policy_version: 3,
        details: serde_json::json!({
            "spiffe_id": format!("spiffe://example.org/ns/prod/svc{}", i % 5000),
            "serial": format!("{:032x}", i),
            "not_after": 1_700_003_600 + i / 100,
            "evidence_digest": "9f2c1b6e0e5a4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a",
            "policy_ids": ["default-allow"],
        }),
        credential: None,
        denial: None,
        evidence: None,
    }
}

async fn run(label: &str, store: &Store, n: i64) {
    let batch = 10_000;
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let events: Vec<AuditEvent> = (i..(i + batch).min(n)).map(event).collect();
        store.append_audit(&events).await.unwrap();
        i += batch;
    }
    let append = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let v = store.verify_audit().await.unwrap();
    let verify = t.elapsed().as_secs_f64();
    assert!(v.broken.is_none() && v.records == n);
    println!(
        "| {label} | {n} | {:.0} records/s ({append:.1} s) | {:.0} records/s ({verify:.1} s) |",
        n as f64 / append,
        n as f64 / verify
    );
}

#[tokio::main]
async fn main() {
    let n: i64 = std::env::var("HALLMARK_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    println!("| datastore | records | append (batches of 10 000) | verify |");
    println!("|---|---:|---:|---:|");
    let dir = std::env::temp_dir().join(format!("hallmark-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("audit.db").display())).await.unwrap();
    run("SQLite", &store, n).await;
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
    if let Ok(url) = std::env::var("HALLMARK_BENCH_POSTGRES") {
        let store = Store::open(&url).await.unwrap();
        run("PostgreSQL", &store, n).await;
    }
}
