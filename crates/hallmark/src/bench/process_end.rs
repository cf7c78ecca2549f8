//! Credentials that end with their process (`bind: process`, issue 16): how
//! long after a workload process exits its credential is withdrawn by the
//! agent, and refused by ValidateJWTSVID (revoked by the server and pushed
//! back to the agent).
//!
//! A server and an agent run as processes; each round starts a workload
//! process (`hallmark api fetch-jwt`, a real Workload API client) that
//! fetches a JWT-SVID of an entry bound to its process and exits. From the
//! moment this process has reaped it, two clocks run: until the agent's
//! `hallmark_agent_process_ended_withdrawn` counter moves (withdrawn), and
//! until ValidateJWTSVID on the agent refuses the token's `jti` as revoked
//! (the server revoked it and the revocation came back to the agent). Both
//! are polled, every millisecond at most, so each figure carries up to
//! about a millisecond of polling.

use std::time::{Duration, Instant};

use anyhow::Context;
use hallmark_proto::workload::ValidateJwtsvidRequest;
use hyper::Method;
use serde_json::json;

use super::percentiles;
use crate::api::{connect, request};
use crate::drill::report::now_ms;
use crate::local;

/// Flags of `hallmark bench process-end`.
#[derive(clap::Args)]
pub struct Args {
    /// Workload processes started and ended, one after another.
    #[arg(long, default_value_t = 100)]
    exits: usize,
}

/// The agent's count of credentials withdrawn because their process ended.
async fn withdrawn(health: &str) -> Option<u64> {
    let (_, text) = local::health_get(health, "/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix("hallmark_agent_process_ended_withdrawn_total "))
        .and_then(|v| v.parse().ok())
}

/// Polls `f` about every millisecond until it returns true, for at most
/// `secs`; the time it took from `since`.
async fn until(since: Instant, secs: u64, mut f: impl AsyncFnMut() -> bool) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Runs the scenario and prints a Markdown table.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("hallmark-bench-pe-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work)?;
    let server = local::Server::start(&work, "").await?;
    let agent = local::Agent::join(&server.admin, &work, &server.agent_api, "agent").await?;
    local::ensure_owner(&server.admin, "bench", "benchmark identities").await?;
    // The workload processes run this same executable as this process.
    let spiffe_id = format!("spiffe://{}/bench/job", agent.trust_domain);
    let entry = json!({
        "spiffe_id": spiffe_id, "parent_id": agent.id, "bind": "process",
        "selectors": local::this_process_selectors()?, "owner": "bench",
    });
    server.admin.json(Method::POST, "/v1/entries", Some(&entry)).await?;
    let exe = std::env::current_exe()?;
    let mut validator = connect(&agent.socket).await?;
    let (mut to_withdrawn, mut to_refused) = (Vec::new(), Vec::new());
    for round in 0..a.exits {
        let before = withdrawn(&agent.health).await.context("agent metrics")?;
        let out = tokio::process::Command::new(&exe)
            .args(["api", "fetch-jwt", "--socket", &agent.socket, "--audience", "bench", "--json"])
            .output()
            .await?;
        // The workload has exited and been reaped: both clocks start here.
        let exited = Instant::now();
        if !out.status.success() {
            anyhow::bail!("round {round}: the workload got no JWT-SVID: {}", String::from_utf8_lossy(&out.stderr));
        }
        let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let token = list
            .as_array()
            .and_then(|l| l.iter().find_map(|s| s.get("svid").and_then(|t| t.as_str())))
            .context("no token in the workload's answer")?
            .to_owned();
        let w = until(exited, 10, async || withdrawn(&agent.health).await.is_some_and(|n| n > before))
            .await
            .with_context(|| format!("round {round}: not withdrawn within 10 s"))?;
        let r = until(exited, 10, async || {
            let req = ValidateJwtsvidRequest { audience: "bench".into(), svid: token.clone() };
            matches!(validator.validate_jwtsvid(request(req)).await, Err(s) if s.message().contains("revoked"))
        })
        .await
        .with_context(|| format!("round {round}: the jti was still accepted 10 s after its process exited"))?;
        to_withdrawn.push(i64::try_from(w.as_micros()).unwrap_or(i64::MAX));
        to_refused.push(i64::try_from(r.as_micros()).unwrap_or(i64::MAX));
    }
    println!("\n{} workload processes, each fetching a JWT-SVID of a `bind: process` entry, then exiting\n", a.exits);
    println!("| from the workload's exit to | p50 | p99 | max | target |\n|---|---:|---:|---:|---|");
    for (name, v) in [
        ("withdrawn by the agent", &mut to_withdrawn),
        ("jti refused by ValidateJWTSVID (revoked by the server)", &mut to_refused),
    ] {
        let (p50, p99, max) = percentiles(v);
        let ms = |us: i64| us as f64 / 1000.0;
        println!("| {name} | {:.1} ms | {:.1} ms | {:.1} ms | under 1 s |", ms(p50), ms(p99), ms(max));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
