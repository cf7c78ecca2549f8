//! AI-agent tasks (issue 18): what minting a task's credential costs, and
//! how long after a task's objective changes, or the task ends, its
//! credentials are withdrawn from open streams and refused by
//! ValidateJWTSVID.
//!
//! A server and an agent run as processes, with an entry bound to tasks
//! whose selectors match this executable.
//!
//! - **Objective changes** (`--rounds`): one task is bound to this very
//!   process, which holds the task's X.509-SVID on an open FetchX509SVID
//!   stream. Each round mints a JWT-SVID (timed: the agent asks the server,
//!   which finds the task, decides and signs), then changes the objective
//!   and times the X.509-SVID's withdrawal from the stream (the arrival of
//!   the message without it) and the refusal of the JWT-SVID by
//!   ValidateJWTSVID (polled about every millisecond).
//! - **Task ends** (`--rounds` tasks): each round starts a task whose process
//!   (a shell, held at a gate until the task is bound) fetches a JWT-SVID
//!   (`hallmark api fetch-jwt`) and then follows its X.509-SVIDs (`exec
//!   hallmark api watch`); once it holds one, the task is ended and the
//!   same two clocks run: the next line of the watch (the withdrawal, or the
//!   stream's end) and ValidateJWTSVID refusing the token.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hallmark_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest};
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::percentiles;
use crate::api::{connect, request};
use crate::client::{Client, encode};
use crate::drill::probe::Probe;
use crate::drill::report::now_ms;
use crate::local;

/// Flags of `hallmark bench tasks`.
#[derive(clap::Args)]
pub struct Args {
    /// Objective changes, and tasks ended, each.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
}

/// Polls `f` about every millisecond until it returns true, for at most
/// 10 s; the time it took from `since`.
async fn until(since: Instant, mut f: impl AsyncFnMut() -> bool) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(10) {
        if f().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Starts a task for `entry` with the bench's scope; returns its id.
async fn start_task(admin: &Client, entry: &str, objective: &str) -> anyhow::Result<String> {
    let body = json!({ "entry_id": entry, "objective": objective, "scope": ["bench"], "ttl": "1h" });
    let t = admin.json(Method::POST, "/v1/tasks", Some(&body)).await?;
    t.get("id").and_then(Value::as_str).map(str::to_owned).context("no task id")
}

async fn bind(admin: &Client, id: &str, pid: u32) -> anyhow::Result<()> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let start_ticks = hallmark_agent::attest::parse_stat_starttime(&stat).context("no start time")?;
    let body = json!({ "pid": pid, "start_ticks": start_ticks });
    admin.json(Method::POST, &format!("/v1/tasks/{}/process", encode(id)), Some(&body)).await?;
    Ok(())
}

/// When ValidateJWTSVID on `socket` refuses `token` as revoked, from `since`.
async fn refused(socket: &str, token: &str, since: Instant) -> Option<Duration> {
    let mut v = connect(socket).await.ok()?;
    until(since, async || {
        let req = ValidateJwtsvidRequest { audience: "bench".into(), svid: token.to_owned() };
        matches!(v.validate_jwtsvid(request(req)).await, Err(s) if s.message().contains("revoked"))
    })
    .await
}

/// Runs the scenario and prints a Markdown table.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("hallmark-bench-tasks-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work)?;
    let server = local::Server::start(&work, "").await?;
    let agent = local::Agent::join(&server.admin, &work, &server.agent_api, "agent").await?;
    local::ensure_owner(&server.admin, "bench", "benchmark identities").await?;
    let entry = json!({
        "spiffe_id": format!("spiffe://{}/bench/agent", agent.trust_domain), "parent_id": agent.id,
        "bind": "task", "class": "agent", "selectors": local::this_process_selectors()?, "owner": "bench",
    });
    let e = server.admin.json(Method::POST, "/v1/entries", Some(&entry)).await?;
    let entry = e.get("id").and_then(Value::as_str).context("no entry id")?.to_owned();
    let admin = &server.admin;

    // Objective changes, on a task bound to this process.
    let task = start_task(admin, &entry, "bench objective 0").await?;
    bind(admin, &task, std::process::id()).await?;
    let probe = Probe::start(agent.socket.clone());
    let mut wl = connect(&agent.socket).await?;
    let (mut mint, mut obj_x509, mut obj_jwt) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let held = probe.wait_for(30, |_| true).await.context("the task's X.509-SVID never came")?.1;
        let t = Instant::now();
        let r = wl.fetch_jwtsvid(request(JwtsvidRequest { audience: vec!["bench".into()], spiffe_id: String::new() }));
        let token = r
            .await
            .map_err(|s| anyhow::anyhow!("round {round}: FetchJWTSVID: {}", s.message()))?
            .into_inner()
            .svids
            .into_iter()
            .next()
            .context("no JWT-SVID")?
            .svid;
        mint.push(micros(t.elapsed()));
        let body = json!({ "objective": format!("bench objective {round}") });
        let since_ms = now_ms();
        let since = Instant::now();
        admin.json(Method::POST, &format!("/v1/tasks/{}/objective", encode(&task)), Some(&body)).await?;
        let gone = probe
            .wait_message(10, since_ms, |m| m.svids.iter().all(|x| x.serial != held.serial))
            .await
            .with_context(|| format!("round {round}: the X.509-SVID was still served 10 s after"))?;
        obj_x509.push((gone - since_ms) * 1000);
        let r = refused(&agent.socket, &token, since)
            .await
            .with_context(|| format!("round {round}: the JWT-SVID was still accepted 10 s after"))?;
        obj_jwt.push(micros(r));
    }
    drop(probe);

    // Task ends, each task its own process.
    let exe = std::env::current_exe()?;
    let (mut end_x509, mut end_jwt) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let task = start_task(admin, &entry, "bench task").await?;
        let gate = crate::task::Gate::new()?;
        let token_file = work.join(format!("token-{round}"));
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(
                "IFS= read -r _ < \"$0\" && \"$1\" api fetch-jwt --socket \"$2\" --audience bench --json > \"$3\" \
                 && exec \"$1\" api watch --socket \"$2\" --json",
            )
            .arg(gate.path())
            .arg(&exe)
            .arg(&agent.socket)
            .arg(&token_file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        bind(admin, &task, child.id().context("no pid")?).await?;
        gate.open()?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        if !matches!(&first, Ok(Ok(Some(l))) if l.contains("serial")) {
            bail!("round {round}: the task's process got no X.509-SVID: {first:?}");
        }
        let list: Value = serde_json::from_str(&std::fs::read_to_string(&token_file)?)?;
        let token = list
            .as_array()
            .and_then(|l| l.iter().find_map(|s| s.get("svid").and_then(Value::as_str)))
            .context("no token")?
            .to_owned();
        let since = Instant::now();
        let body = json!({ "reason": "bench" });
        admin.json(Method::POST, &format!("/v1/tasks/{}/end", encode(&task)), Some(&body)).await?;
        // The next line (an update without it) or the end of the stream.
        let _ = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .with_context(|| format!("round {round}: still served 10 s after the task ended"))?;
        end_x509.push(micros(since.elapsed()));
        let r = refused(&agent.socket, &token, since)
            .await
            .with_context(|| format!("round {round}: the JWT-SVID was still accepted 10 s after"))?;
        end_jwt.push(micros(r));
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    let ms = |us: i64| us as f64 / 1000.0;
    println!("\n{} rounds of each, one server and one agent on this machine\n", a.rounds);
    println!("| measured | p50 | p99 | max | target |\n|---|---:|---:|---:|---|");
    for (name, v, target) in [
        ("task JWT-SVID minted (FetchJWTSVID: agent to server and back)", &mut mint, "-"),
        ("objective change to the X.509-SVID withdrawn from the open stream", &mut obj_x509, "under 1 s"),
        ("objective change to the JWT-SVID refused by ValidateJWTSVID", &mut obj_jwt, "under 1 s"),
        ("task end to the X.509-SVID withdrawn from the open stream", &mut end_x509, "under 1 s"),
        ("task end to the JWT-SVID refused by ValidateJWTSVID", &mut end_jwt, "under 1 s"),
    ] {
        let (p50, p99, max) = percentiles(v);
        println!("| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {target} |", ms(p50), ms(p99), ms(max));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
