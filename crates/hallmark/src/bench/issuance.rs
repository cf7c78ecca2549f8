//! Issuance: X.509-SVIDs per second through the real agent → server path
//! (mTLS gRPC, CSR check, policy decision, signing, inventory and audit
//! durably recorded), beside the raw ECDSA P-256 sign + verify rate of the
//! same crypto library on the same cores, measured in the same run.
//!
//! The server runs as a process on SQLite (or `--datastore`); simulated
//! agents attest with their own join tokens and send `SignX509Svids` batches
//! for entries they serve, as real agents do. CSRs come from a pool made
//! before timing: a real agent makes its keys on its own node. Built with the
//! `bench-baseline` feature, the same run also measures a server that records
//! nothing, and prints the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use futures_util::StreamExt;
use hallmark_ca::keys::new_key_and_csr;
use hallmark_core::SpiffeId;
use hallmark_proto::node::SignX509SvidsRequest;
use hyper::Method;
use serde_json::json;

use super::simagent::{Target, attest, svid_requests};
use crate::drill::report::now_ms;
use crate::local;

/// Flags of `hallmark bench issuance`.
#[derive(clap::Args)]
pub struct Args {
    /// Simulated agents sending batches.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Batches in flight per agent.
    #[arg(long, default_value_t = 2)]
    in_flight: usize,
    /// SVIDs per SignX509Svids request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds to measure each configuration (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Datastore URL for the server (default: SQLite in a temporary directory).
    #[arg(long)]
    datastore: Option<String>,
    /// Times each configuration is measured, alternating.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// Raw ECDSA P-256 (SHA-256) sign + verify pairs per second on `threads` threads.
pub fn raw_sign_verify_rate(threads: usize, secs: f64) -> anyhow::Result<f64> {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pkcs8 = doc.as_ref().to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count, pkcs8) = (stop.clone(), count.clone(), pkcs8.clone());
            std::thread::spawn(move || {
                let rng = SystemRandom::new();
                let Ok(key) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8) else {
                    return;
                };
                let public =
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, key.public_key().as_ref().to_vec());
                let msg = [7u8; 300];
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(sig) = key.sign(&rng, &msg) else { return };
                    if public.verify(&msg, sig.as_ref()).is_err() {
                        return;
                    }
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// SVIDs per second for one server configuration.
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn rate(a: &Args, record: bool) -> anyhow::Result<f64> {
    let work = std::env::temp_dir().join(format!("hallmark-bench-iss-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work)?;
    let extra = a.datastore.as_ref().map(|d| format!("datastore = \"{d}\"\n")).unwrap_or_default();
    let server = if record {
        local::Server::start(&work, &extra).await?
    } else {
        local::Server::start_with_env(&work, &extra, &[("HALLMARK_BENCH_NO_RECORD", "1")]).await?
    };
    let admin = &server.admin;
    let td = "drill.hallmark.test";
    let target = Target::new(admin, &server.agent_api, td).await?;
    local::ensure_owner(admin, "bench", "benchmark identities").await?;
    let mut agents = Vec::new();
    for i in 0..a.agents {
        let sim = attest(admin, &target).await?;
        let spiffe = format!("spiffe://{td}/bench/issue{i}");
        let e = admin
            .json(
                Method::POST,
                "/v1/entries",
                Some(&json!({ "spiffe_id": spiffe, "parent_id": sim.id, "selectors": ["unix:uid:1000"], "owner": "bench", "x509_ttl": "1h" })),
            )
            .await?;
        let id = SpiffeId::new(&spiffe)?;
        let csrs: Vec<Vec<u8>> =
            (0..256).map(|_| new_key_and_csr(Some(&id)).map(|k| k.csr_der)).collect::<Result<_, _>>()?;
        agents.push((sim, e["id"].as_str().context("no entry id")?.to_owned(), Arc::new(csrs)));
    }
    let issued = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (sim, entry, csrs) in &agents {
        for k in 0..a.in_flight {
            let (mut client, entry, csrs) = (sim.client.clone(), entry.clone(), csrs.clone());
            let (issued, counting, stop, batch) = (issued.clone(), counting.clone(), stop.clone(), a.batch);
            tasks.push(tokio::spawn(async move {
                let mut n = k * batch;
                while !stop.load(Ordering::Relaxed) {
                    let requests = svid_requests(&entry, &csrs, n, batch);
                    n += batch;
                    let resp = client.sign_x509_svids(SignX509SvidsRequest { requests }).await?.into_inner();
                    let ok = resp.results.iter().filter(|r| !r.cert_chain.is_empty()).count() as u64;
                    if ok as usize != batch {
                        let why = resp.results.iter().find(|r| r.cert_chain.is_empty()).map(|r| r.error.clone());
                        bail!("the server refused SVIDs: {why:?}");
                    }
                    if counting.load(Ordering::Relaxed) {
                        issued.fetch_add(ok, Ordering::Relaxed);
                    }
                }
                Ok(())
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let n = issued.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in futures_util::stream::iter(tasks).then(|t| t).collect::<Vec<_>>().await {
        t??;
    }
    if record {
        // Every SVID a client received is in the inventory.
        let inv = admin.json(Method::GET, "/v1/credentials?live=true", None).await?;
        let recorded = inv["credentials"].as_array().map(Vec::len).unwrap_or(0) as u64;
        if recorded < n {
            bail!("{n} SVIDs issued but {recorded} in the inventory");
        }
        let v = admin.json(Method::GET, "/v1/audit/verify", None).await?;
        if !v["broken"].is_null() {
            bail!("the audit chain does not verify: {v}");
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
    Ok(n as f64 / secs)
}

/// Runs the scenario and prints a Markdown table.
pub async fn run(a: Args) -> anyhow::Result<()> {
    // Alternate the configurations, twice, so drift on a noisy machine hits each alike.
    let limit = tokio::task::spawn_blocking(|| raw_sign_verify_rate(2, 3.0)).await??;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        with.push(rate(&a, true).await?);
        if cfg!(feature = "bench-baseline") {
            without.push(rate(&a, false).await?);
        }
    }
    let limit_after = tokio::task::spawn_blocking(|| raw_sign_verify_rate(2, 3.0)).await??;
    let limit = (limit + limit_after) / 2.0;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let with = mean(&with);
    let without = (!without.is_empty()).then(|| mean(&without));
    println!(
        "\n{} simulated agents x {} batches of {} in flight, {} s per configuration, datastore {}\n",
        a.agents,
        a.in_flight,
        a.batch,
        a.seconds,
        if a.datastore.is_some() { "PostgreSQL" } else { "SQLite" }
    );
    println!("| measurement | per second | ratio | target |\n|---|---:|---:|---|");
    println!("| raw ECDSA P-256 sign + verify (aws-lc-rs, 2 threads) | {limit:.0} | 1.00 | the limit |");
    println!("| X.509-SVIDs issued, recorded durably | {with:.0} | {:.2} of the limit | at least 0.5 |", with / limit);
    if let Some(wo) = without {
        println!("| X.509-SVIDs issued, nothing recorded (baseline) | {wo:.0} | {:.2} of the limit | |", wo / limit);
        println!("| recorded / unrecorded | | {:.2} | at least 0.9 |", with / wo);
    }
    Ok(())
}
