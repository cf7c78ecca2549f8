//! Propagation: how long until a change reaches a workload's open stream,
//! with many agents connected.
//!
//! A server (SQLite, or `--datastore`) and one real agent run as processes;
//! `--agents` simulated agents attest and hold entry-sync streams open over
//! mTLS, as real agents do; `--entries` entries are spread over them. This
//! process is the workload, watching its X.509-SVID stream on the real agent.
//! Each iteration revokes the workload's serial (it must be withdrawn, and a
//! replacement follows), creates an entry for it (its SVID must appear) and
//! revokes that entry (it must disappear). Every revocation is also pushed to
//! every simulated agent; their arrival times give the fan-out figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hyper::Method;
use serde_json::json;

use super::percentiles;
use super::simagent::{Arrivals, Target, attest, sync};
use crate::drill::probe::Probe;
use crate::drill::report::now_ms;
use crate::local;

/// Flags of `hallmark bench propagation`.
#[derive(clap::Args)]
pub struct Args {
    /// Simulated agents connected.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Entries registered (spread over the simulated agents) before measuring.
    #[arg(long, default_value_t = 0)]
    entries: usize,
    /// Iterations of each measurement.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Datastore URL for the server (default: SQLite in a temporary directory).
    #[arg(long)]
    datastore: Option<String>,
}

fn row(name: &str, v: &mut [i64], target: &str) {
    let (p50, p99, max) = percentiles(v);
    println!("| {name} | {} | {p50} ms | {p99} ms | {max} ms | {target} |", v.len());
}

/// Runs the scenario and prints a Markdown table.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("hallmark-bench-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work)?;
    let result = measure(&a, &work).await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&work);
        }
        Err(_) => eprintln!("logs kept in {}", work.display()),
    }
    result
}

#[expect(
    clippy::indexing_slicing,
    reason = "the position is reduced modulo the slice's length, which is not zero; serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn measure(a: &Args, work: &std::path::Path) -> anyhow::Result<()> {
    let extra = a.datastore.as_ref().map(|d| format!("datastore = \"{d}\"\n")).unwrap_or_default();
    let server = local::Server::start(work, &extra).await?;
    let admin = &server.admin;
    let agent = local::Agent::join(admin, work, &server.agent_api, "agent").await?;
    let target = Target::new(admin, &server.agent_api, &agent.trust_domain).await?;

    let t = now_ms();
    let sims: Vec<_> = futures_util::stream::iter(0..a.agents)
        .map(|_| attest(admin, &target))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    eprintln!("attested {} simulated agents in {} ms", sims.len(), now_ms() - t);
    let sim_ids: Vec<String> = sims.iter().map(|s| s.id.clone()).collect();
    let arrivals: Arrivals = Arc::default();
    let snapshots = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = sims.into_iter().map(|s| sync(s, arrivals.clone(), snapshots.clone())).collect();
    local::wait(120, async || (snapshots.load(Ordering::Relaxed) >= a.agents).then_some(()))
        .await
        .context("simulated agents did not all sync")?;
    eprintln!("{} simulated agents hold sync streams", a.agents);

    local::ensure_owner(admin, "bench", "benchmark identities").await?;
    if a.entries > 0 && a.agents == 0 {
        bail!("--entries needs simulated agents to parent them");
    }
    let t = now_ms();
    let all: Vec<serde_json::Value> = (0..a.entries)
        .map(|i| {
            json!({
                "spiffe_id": format!("spiffe://{}/bench/e{i}", agent.trust_domain),
                "parent_id": sim_ids[i % sim_ids.len()],
                "selectors": [format!("unix:uid:{}", 100_000 + i)],
                "owner": "bench",
            })
        })
        .collect();
    for chunk in all.chunks(5_000) {
        admin.json(Method::POST, "/v1/entries/batch", Some(&json!({ "entries": chunk }))).await?;
    }
    if a.entries > 0 {
        let ms = (now_ms() - t).max(1);
        eprintln!("registered {} entries in {ms} ms ({:.0}/s)", a.entries, a.entries as f64 * 1000.0 / ms as f64);
    }

    let selectors = local::this_process_selectors()?;
    let probe_entry = json!({
        "spiffe_id": format!("spiffe://{}/bench/probe", agent.trust_domain),
        "parent_id": agent.id, "selectors": selectors, "owner": "bench",
    });
    admin.json(Method::POST, "/v1/entries", Some(&probe_entry)).await?;
    let probe = Probe::start(agent.socket.clone());
    probe.wait_for(60, |_| true).await.context("the workload got no SVID")?;

    let (mut serial_ms, mut create_ms, mut entry_revoke_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut revoked: Vec<(String, i64)> = Vec::new();
    for i in 0..a.iterations {
        // A serial: withdrawn from the open stream, then replaced.
        let h = probe.wait_for(30, |h| h.spiffe_id.ends_with("/bench/probe")).await.context("no probe SVID")?.1;
        let t0 = now_ms();
        admin.json(Method::POST, "/v1/revocations", Some(&json!({ "serial": h.serial, "reason": "bench" }))).await?;
        let gone = probe.wait_until_gone(10, |x| x.serial == h.serial).await.context("serial never withdrawn")?;
        serial_ms.push(gone - t0);
        revoked.push((h.serial.clone(), t0));
        probe
            .wait_for(30, |x| x.spiffe_id.ends_with("/bench/probe") && x.serial != h.serial)
            .await
            .context("no replacement")?;

        // An entry: its SVID appears on the stream, then disappears when the entry is revoked.
        let id = format!("spiffe://{}/bench/new{i}", agent.trust_domain);
        let body = json!({ "spiffe_id": id, "parent_id": agent.id, "selectors": selectors, "owner": "bench" });
        let t0 = now_ms();
        let e = admin.json(Method::POST, "/v1/entries", Some(&body)).await?;
        let seen = probe
            .wait_message(30, t0, |m| m.svids.iter().any(|x| x.spiffe_id == id))
            .await
            .context("a new entry's SVID never reached the stream")?;
        create_ms.push(seen - t0);
        let t0 = now_ms();
        let entry_id = e["id"].as_str().unwrap_or("").to_owned();
        admin.json(Method::POST, "/v1/revocations", Some(&json!({ "entry": entry_id, "reason": "bench" }))).await?;
        let gone = probe
            .wait_message(30, t0, |m| !m.svids.iter().any(|x| x.spiffe_id == id))
            .await
            .context("a revoked entry's SVID stayed on the stream")?;
        entry_revoke_ms.push(gone - t0);
    }
    // Fan-out: when each simulated agent received each revoked serial.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (mut fanout, mut missing) = (Vec::new(), 0usize);
    {
        let g = arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (serial, t0) in &revoked {
            let seen = g.get(serial).map(Vec::as_slice).unwrap_or(&[]);
            missing += a.agents.saturating_sub(seen.len());
            fanout.extend(seen.iter().map(|at| at - t0));
        }
    }
    for t in tasks {
        t.abort();
    }
    println!(
        "\n{} simulated agents, {} entries, {} iterations, datastore {}\n",
        a.agents,
        a.entries,
        a.iterations,
        if a.datastore.is_some() { "PostgreSQL" } else { "SQLite" }
    );
    println!("| measurement | samples | p50 | p99 | max | target |\n|---|---:|---:|---:|---:|---|");
    row("serial revoked → withdrawn from the workload's open stream", &mut serial_ms, "p99 under 1000 ms");
    row("serial revoked → pushed to every simulated agent", &mut fanout, "p99 under 1000 ms");
    row("entry created → its SVID on the workload's stream", &mut create_ms, "p99 under 1000 ms");
    row("entry revoked → its SVID gone from the stream", &mut entry_revoke_ms, "p99 under 1000 ms");
    if missing > 0 {
        bail!("{missing} revocation deliveries to simulated agents never arrived");
    }
    Ok(())
}
