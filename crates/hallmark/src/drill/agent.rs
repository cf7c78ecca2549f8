//! The AI-agent task drills. The probe entry is bound to tasks, and the
//! drill binds a task to this very process (the probe's Workload API client
//! runs in it), so the probe is the task's agent: it holds an X.509-SVID
//! for the task on its stream and asks for JWT-SVIDs as an agent's tool
//! calls would.
#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]

use anyhow::Context;
use hyper::Method;
use serde_json::{Value, json};

use super::probe::Probe;
use super::report::{Report, now_ms};
use super::{Setup, crl_lists, fetch_jwt, jwt_claims, refused_by_validate};
use crate::client::encode;
use crate::local::wait;

/// The audience in the drill task's scope.
const TOOL: &str = "drill-tool";
/// An audience outside it.
const OUTSIDE: &str = "drill-outside";

/// Starts a task for the probe entry and binds it to this process; returns
/// its id. With `revoke_on_breach`, the first breach ends it.
pub(super) async fn start_task(s: &Setup, revoke_on_breach: bool, r: &mut Report) -> anyhow::Result<String> {
    let body = json!({
        "entry_id": s.entry_id,
        "objective": "hallmark drill: read the drill tool",
        "scope": [format!("{TOOL}:read")],
        "ttl": "10m",
        "revoke_on_breach": revoke_on_breach,
    });
    let t = s.admin.json(Method::POST, "/v1/tasks", Some(&body)).await?;
    let id = t["id"].as_str().context("no task id")?.to_owned();
    let pid = std::process::id();
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let start_ticks = hallmark_agent::attest::parse_stat_starttime(&stat).context("no start time for this process")?;
    let bind = json!({ "pid": pid, "start_ticks": start_ticks });
    s.admin.json(Method::POST, &format!("/v1/tasks/{}/process", encode(&id)), Some(&bind)).await?;
    r.step(format!("started task {id} (scope `{TOOL}:read`) bound to this process (pid {pid})"));
    Ok(id)
}

/// Ends the drill's task (already ended: nothing happens).
pub(super) async fn end_task(s: &Setup, id: &str) {
    let body = json!({ "reason": "hallmark drill finished" });
    let _ = s.admin.send(Method::POST, &format!("/v1/tasks/{}/end", encode(id)), Some(&body), None).await;
}

async fn task(s: &Setup, id: &str) -> anyhow::Result<Value> {
    s.admin.json(Method::GET, &format!("/v1/tasks/{}", encode(id)), None).await
}

/// A token for the tool, checked to carry task `id`; its jti.
async fn token_in_scope(s: &Setup, id: &str, r: &mut Report) -> anyhow::Result<(String, Value)> {
    let token = fetch_jwt(&s.socket, TOOL).await;
    let claims = match &token {
        Ok(t) => jwt_claims(t)?,
        Err(_) => Value::Null,
    };
    let carries = claims["task"]["id"] == id;
    r.control(
        "a token in the task's scope is issued and carries the task",
        carries,
        match &token {
            Ok(_) => format!("task claim: {}", claims["task"]),
            Err(e) => e.clone(),
        },
    );
    Ok((token.map_err(anyhow::Error::msg)?, claims))
}

/// `agent-scope-breach`: a token in scope, then one outside it: refused,
/// recorded, and (the task is strict) the task ends with everything it
/// holds withdrawn and revoked.
pub(super) async fn scope_breach(s: &Setup, id: &str, probe: &Probe, r: &mut Report) -> anyhow::Result<()> {
    let held = probe.current().context("the probe holds no SVID")?;
    let (token, _) = token_in_scope(s, id, r).await?;
    let t_breach = now_ms();
    let refused = fetch_jwt(&s.socket, OUTSIDE).await;
    r.step(format!("asked for a token for `{OUTSIDE}`, outside the task's scope"));
    r.control(
        "a token outside the task's scope is refused as a scope breach",
        refused.as_ref().is_err_and(|e| e.contains("scope breach")),
        match &refused {
            Ok(_) => "it was issued".to_owned(),
            Err(e) => e.clone(),
        },
    );
    let gone = probe.wait_until_gone(10, |x| x.serial == held.serial).await;
    r.measure("breach to the task's X.509-SVID withdrawn from the stream", gone.map(|t| t - t_breach), "under 1000 ms");
    r.control(
        "the breach ends the task: its X.509-SVID is withdrawn within 1 s",
        gone.is_some_and(|t| t - t_breach <= 1000),
        gone.map(|t| format!("{} ms", t - t_breach)).unwrap_or_else(|| "still served after 10 s".into()),
    );
    let rejected = refused_by_validate(&s.socket, TOOL, &token).await;
    r.measure(
        "breach to the task's JWT-SVID refused by ValidateJWTSVID",
        rejected.map(|t| t - t_breach),
        "under 1000 ms",
    );
    r.control(
        "the task's JWT-SVID no longer validates within 1 s",
        rejected.is_some_and(|t| t - t_breach <= 1000),
        rejected.map(|t| format!("{} ms", t - t_breach)).unwrap_or_else(|| "still valid after 10 s".into()),
    );
    let listed = wait(15, async || crl_lists(s, &held.serial).await.then_some(())).await;
    r.control("the task's serial is on its authority's CRL", listed.is_some(), format!("serial {}", held.serial));
    let t = task(s, id).await?;
    r.control(
        "the task is recorded as ended by the breach, with the breach counted",
        t["task"]["state"] == "ended" && t["task"]["breaches"] == 1,
        format!("state {}, breaches {}, reason {}", t["task"]["state"], t["task"]["breaches"], t["task"]["end_reason"]),
    );
    let after = fetch_jwt(&s.socket, TOOL).await;
    r.control(
        "nothing is issued for the ended task",
        after.as_ref().is_err_and(|e| e.contains("no running task")),
        match &after {
            Ok(_) => "a token was issued".to_owned(),
            Err(e) => e.clone(),
        },
    );
    let report = s.admin.json(Method::GET, "/v1/reports/tasks", None).await?;
    let found = report["findings"].as_array().into_iter().flatten().any(|f| f["subject"] == id);
    r.control("the tasks report lists the breach (ASI02, NHI5)", found, "GET /v1/reports/tasks");
    Ok(())
}

/// `agent-objective-change`: the objective changes; everything the task
/// holds is revoked at once, and what it gets next carries the new objective.
pub(super) async fn objective_change(s: &Setup, id: &str, probe: &Probe, r: &mut Report) -> anyhow::Result<()> {
    let held = probe.current().context("the probe holds no SVID")?;
    let (token, claims) = token_in_scope(s, id, r).await?;
    let objective = "hallmark drill: a new objective";
    let t_cmd = now_ms();
    let body = json!({ "objective": objective });
    let out = s.admin.json(Method::POST, &format!("/v1/tasks/{}/objective", encode(id)), Some(&body)).await?;
    r.step(format!(
        "changed the task's objective ({} credentials revoked)",
        out["revoked"].as_array().map(Vec::len).unwrap_or(0)
    ));
    let gone = probe.wait_until_gone(10, |x| x.serial == held.serial).await;
    r.measure("objective change to the X.509-SVID withdrawn from the stream", gone.map(|t| t - t_cmd), "under 1000 ms");
    r.control(
        "the task's X.509-SVID is withdrawn within 1 s",
        gone.is_some_and(|t| t - t_cmd <= 1000),
        gone.map(|t| format!("{} ms", t - t_cmd)).unwrap_or_else(|| "still served after 10 s".into()),
    );
    let rejected = refused_by_validate(&s.socket, TOOL, &token).await;
    r.measure(
        "objective change to the JWT-SVID refused by ValidateJWTSVID",
        rejected.map(|t| t - t_cmd),
        "under 1000 ms",
    );
    r.control(
        "the task's JWT-SVID no longer validates within 1 s",
        rejected.is_some_and(|t| t - t_cmd <= 1000),
        rejected.map(|t| format!("{} ms", t - t_cmd)).unwrap_or_else(|| "still valid after 10 s".into()),
    );
    let replaced = probe.wait_for(30, |x| x.serial != held.serial).await;
    r.control(
        "a new X.509-SVID is issued for the task under the new objective",
        replaced.is_some(),
        replaced.map(|(_, x)| format!("new serial {}", x.serial)).unwrap_or_else(|| "none within 30 s".into()),
    );
    let fresh = fetch_jwt(&s.socket, TOOL).await.map_err(anyhow::Error::msg)?;
    let new_hash = jwt_claims(&fresh)?["task"]["objective_sha256"].clone();
    let expected = hallmark_core::objective_sha256(objective);
    r.control(
        "the next token carries the new objective's hash",
        new_hash == expected.as_str() && new_hash != claims["task"]["objective_sha256"],
        format!("objective_sha256 {new_hash}"),
    );
    Ok(())
}
