//! Workload API: FetchJWTSVID and FetchX509SVID served from the agent's
//! cache to many concurrent clients, attestation of the caller included in
//! every call (that is how the agent works: it never trusts a connection,
//! only what the kernel says of the calling process at that call).
//!
//! A server and an agent run as processes; this process is every client,
//! each on its own connection to the agent's socket, so the clients and the
//! agent share the machine's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hallmark_proto::workload::{JwtsvidRequest, X509svidRequest};
use hyper::Method;
use serde_json::json;

use super::percentiles;
use crate::api::{connect, request};
use crate::drill::probe::Probe;
use crate::drill::report::now_ms;
use crate::local;

/// Flags of `hallmark bench workload-api`.
#[derive(clap::Args)]
pub struct Args {
    /// Concurrent clients for the throughput pass, each on its own connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Concurrent clients for the latency pass (below saturation, where
    /// latency is service time rather than queueing).
    #[arg(long, default_value_t = 4)]
    latency_clients: usize,
    /// Seconds per RPC measured.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Measure against the agent already serving this socket (`unix:///…`)
    /// instead of starting a server and agent: an entry must already match
    /// this process. `scripts/bench-containers.sh` runs it in a container.
    #[arg(long, value_name = "SOCKET")]
    socket: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Jwt,
    X509,
}

/// Latencies (µs) of every call made by `clients` clients for `secs` seconds.
async fn hammer(socket: &str, clients: usize, secs: u64, rpc: Rpc) -> anyhow::Result<(Vec<i64>, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = connect(socket).await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match rpc {
                    Rpc::Jwt => {
                        let r = JwtsvidRequest { audience: vec!["bench".into()], spiffe_id: String::new() };
                        c.fetch_jwtsvid(request(r)).await.map_err(|e| anyhow::anyhow!("FetchJWTSVID: {e}"))?;
                    }
                    Rpc::X509 => {
                        let mut s = c
                            .fetch_x509svid(request(X509svidRequest {}))
                            .await
                            .map_err(|e| anyhow::anyhow!("FetchX509SVID: {e}"))?
                            .into_inner();
                        s.message().await.map_err(|e| anyhow::anyhow!("FetchX509SVID: {e}"))?.context("no message")?;
                    }
                }
                lat.push(i64::try_from(t.elapsed().as_micros()).unwrap_or(i64::MAX));
            }
            anyhow::Ok(lat)
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let rate = all.len() as f64 / t.elapsed().as_secs_f64();
    Ok((all, rate))
}

/// Runs the scenario and prints a Markdown table.
pub async fn run(a: Args) -> anyhow::Result<()> {
    if let Some(socket) = &a.socket {
        return measure(&a, socket).await;
    }
    let work = std::env::temp_dir().join(format!("hallmark-bench-wl-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work)?;
    let server = local::Server::start(&work, "").await?;
    let agent = local::Agent::join(&server.admin, &work, &server.agent_api, "agent").await?;
    local::ensure_owner(&server.admin, "bench", "benchmark identities").await?;
    let entry = json!({
        "spiffe_id": format!("spiffe://{}/bench/client", agent.trust_domain), "parent_id": agent.id,
        "selectors": local::this_process_selectors()?, "owner": "bench",
    });
    server.admin.json(Method::POST, "/v1/entries", Some(&entry)).await?;
    let probe = Probe::start(agent.socket.clone());
    probe.wait_for(60, |_| true).await.context("no SVID for the benchmark's clients")?;
    drop(probe);
    measure(&a, &agent.socket).await?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Measures both RPCs at both concurrencies against `socket`; prints the table.
async fn measure(a: &Args, socket: &str) -> anyhow::Result<()> {
    // Warm the agent's JWT cache and the executable digest cache.
    hammer(socket, 1, 1, Rpc::Jwt).await?;
    println!("\n{} s per pass; every client on its own connection\n", a.seconds);
    println!(
        "| RPC | clients | calls | per second | p50 | p99 | max | target |\n|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for (rpc, name, target) in [
        (Rpc::Jwt, "FetchJWTSVID (cached)", "p99 under 1000 µs; at least 20 000/s"),
        (Rpc::X509, "FetchX509SVID (first message)", "p99 under 1000 µs"),
    ] {
        for clients in [a.latency_clients, a.clients] {
            let (mut lat, rate) = hammer(socket, clients, a.seconds, rpc).await?;
            let n = lat.len();
            let (p50, p99, max) = percentiles(&mut lat);
            println!("| {name} | {clients} | {n} | {rate:.0} | {p50} µs | {p99} µs | {max} µs | {target} |");
        }
    }
    Ok(())
}
