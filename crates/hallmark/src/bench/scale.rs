//! Scale: what a large registry costs.
//!
//! 1. Server start to ready with `--entries` entries (1 000 000) already in
//!    the datastore, and the server's resident memory once ready.
//! 2. The authorized-entry lookup an agent sync makes (the entries one agent
//!    may serve), with `--agents` agents (50 000) sharing those entries.
//! 3. (The agent's memory per cached SVID is counted exactly by
//!    `cargo bench -p hallmark-agent --bench cache_memory`.)
//!
//! The registry for (1) is written straight into a fresh SQLite file (or
//! `--datastore`) through the store's batch registration, before the server
//! starts: what is timed is the start, not the registration.

use std::time::Instant;

use crate::drill::report::now_ms;
use crate::local;
use anyhow::Context;
use hallmark_core::{EntrySpec, TrustDomain, Ttl};
use hallmark_server::registry::Registry;

/// Flags of `hallmark bench scale`.
#[derive(clap::Args)]
pub struct Args {
    /// Entries in the datastore when the server starts.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Agents the entries are spread over for the lookup measurement.
    #[arg(long, default_value_t = 50_000)]
    agents: usize,
    /// Datastore URL (default: SQLite in a temporary directory).
    #[arg(long)]
    datastore: Option<String>,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn spec(td: &TrustDomain, i: usize, agents: usize) -> anyhow::Result<hallmark_core::ValidEntrySpec> {
    let ttl = Ttl::parse("1h")?;
    Ok(EntrySpec {
        spiffe_id: format!("spiffe://{td}/scale/svc{i}"),
        parent_id: Some(format!("spiffe://{td}/hallmark/agent/join_token/{:016x}", i % agents)),
        selectors: vec![format!("unix:uid:{}", i % 60_000), "unix:path:/usr/bin/service".into()],
        owner: "scale".into(),
        ..Default::default()
    }
    .validate(td, None, ttl, ttl)?)
}

/// Nanoseconds per authorized-entry lookup, over `lookups` lookups.
#[expect(clippy::indexing_slicing, reason = "the position is reduced modulo the slice's length, which is not zero")]
fn lookup_ns(entries: usize, agents: usize, lookups: usize) -> anyhow::Result<(f64, usize)> {
    let td = TrustDomain::new("drill.hallmark.test")?;
    let registry = Registry::default();
    for i in 0..entries {
        let s = spec(&td, i, agents)?;
        let e = s.into_entry(format!("{i:032x}"), 0);
        registry.apply(&e.id.clone(), Some(e), 0);
    }
    let parents: Vec<String> =
        (0..agents).map(|a| format!("spiffe://{td}/hallmark/agent/join_token/{a:016x}")).collect();
    let mut found = 0;
    let t = Instant::now();
    for k in 0..lookups {
        // A stride through the agents, so caches see no pattern.
        let p = &parents[(k * 7919) % agents];
        found += registry.snapshot(p).0.len();
    }
    Ok((t.elapsed().as_nanos() as f64 / lookups as f64, found / lookups.max(1)))
}

/// Runs the scenario and prints a Markdown table.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("hallmark-bench-scale-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(work.join("server"))?;
    let result = measure(&a, &work).await;
    if std::env::var_os("HALLMARK_BENCH_KEEP").is_some() {
        eprintln!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

async fn measure(a: &Args, work: &std::path::Path) -> anyhow::Result<()> {
    println!();
    println!("| measurement | value | target |\n|---|---:|---|");
    // 2. Lookup, in memory: the same structure the server's sync uses.
    let (ns, per_agent) = tokio::task::spawn_blocking({
        let (e, ag) = (a.entries, a.agents);
        move || lookup_ns(e, ag, 200_000)
    })
    .await??;
    println!(
        "| authorized-entry lookup, {} entries over {} agents ({per_agent} each) | {:.2} µs | under 2 µs |",
        a.entries,
        a.agents,
        ns / 1000.0
    );

    // 1. Start to ready with the entries already stored.
    let url = a.datastore.clone().unwrap_or_else(|| format!("sqlite://{}", work.join("server/hallmark.db").display()));
    {
        let store = hallmark_store::Store::open(&url).await?;
        // Written before the server (and its audit key) exists: one unsigned
        // record per write, which the server adopts at its first start.
        let seeded = |what: &str, subject: String, details: serde_json::Value| hallmark_store::AuditEvent {
            at: hallmark_core::now_unix(),
            actor: "hallmark bench scale".into(),
            action: what.into(),
            subject,
            outcome: "ok".into(),
            policy_version: 0,
            details,
            credential: None,
            denial: None,
            evidence: None,
        };
        let rec = hallmark_store::Recorder::unsigned(|o: &hallmark_store::Owner| {
            vec![seeded("owner_create", o.name.clone(), serde_json::json!({}))]
        });
        store.create_owner("scale", "scale@hallmark.invalid", "", &Default::default(), rec).await.ok();
        let td = TrustDomain::new("drill.hallmark.test")?;
        let t = now_ms();
        for chunk in (0..a.entries).collect::<Vec<_>>().chunks(10_000) {
            let specs = chunk.iter().map(|i| spec(&td, *i, a.agents)).collect::<Result<Vec<_>, _>>()?;
            let rec = hallmark_store::Recorder::unsigned(|e: &[hallmark_core::Entry]| {
                vec![seeded("entry_create", "scale".into(), serde_json::json!({ "entries": e.len() }))]
            });
            store.create_entries(&specs, rec).await?;
        }
        eprintln!("wrote {} entries in {} ms", a.entries, now_ms() - t);
    }
    let t = Instant::now();
    let server = local::Server::start(work, &format!("datastore = \"{url}\"\n")).await?;
    let started = t.elapsed();
    let pid = server.proc.pid().context("server pid")?;
    let rss = rss_kib(pid)?;
    println!("| server start to ready with {} entries | {:.2} s | under 10 s |", a.entries, started.as_secs_f64());
    println!(
        "| server resident memory once ready | {} MiB ({} bytes per entry) | |",
        rss / 1024,
        rss * 1024 / a.entries.max(1) as u64
    );

    // 3. Agent memory per cached SVID is counted exactly, in process, by
    // `cargo bench -p hallmark-agent --bench cache_memory`: an RSS delta here
    // would mostly measure the allocator's retention.
    println!(
        "| agent memory per cached SVID | see `cargo bench -p hallmark-agent --bench cache_memory` | under 1024 bytes beyond certificate and key |"
    );
    Ok(())
}
