//! `hallmark drill`: run a failure or response scenario against a deployment
//! and leave evidence of whether the controls held.
//!
//! Every drill joins an agent of its own to the server (with a fresh join
//! token), registers a probe entry for this very process (its uid and the
//! SHA-256 of its executable), and watches what the probe is served while
//! the scenario runs. The deployment is a live one (`HALLMARK_SERVER`,
//! `HALLMARK_TOKEN`, and `--agent-api` for the drill's agent), or one the drill
//! starts itself (`--self-contained`: a server on a throwaway SQLite file).
//! A live server is never stopped: its outage is staged by cutting a relay
//! between it and the drill's agent, which is what an agent sees of a dead
//! server. Nothing of the deployment's own workloads is touched, except in
//! `ca-rotation`, which rotates the deployment's authorities and so needs
//! `--confirm-rotation` when live.

mod agent;
pub mod probe;
pub mod proxy;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hallmark_core::time::rfc3339;
use hallmark_core::{Ttl, now_unix};
use hallmark_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest};
use hyper::Method;
use serde_json::{Value, json};

use crate::Conn;
use crate::api::{connect, request};
use crate::client::{Client, encode};
use crate::local::{self, Spawned, health_get, wait};
use probe::{Probe, expired_served, gaps};
use report::{Report, now_ms};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrillKind {
    /// The server goes away: the agent serves what is still valid, withdraws each
    /// SVID at its expiry, reports itself degraded, and recovers when the server returns.
    ServerOutage,
    /// One serial, one jti and then the whole probe entry are revoked.
    Revocation,
    /// The X.509 authority and JWT key are prepared, activated and the old ones tainted
    /// (and, self-contained, revoked), with no moment without a valid SVID.
    CaRotation,
    /// The drill's own node is banned.
    NodeBan,
    /// An AI-agent task (the probe, bound to this process) asks for a token
    /// outside its scope: refused, recorded, and the task ends with
    /// everything it was issued.
    AgentScopeBreach,
    /// An AI-agent task's objective changes: everything it holds is revoked
    /// at once and re-issued under the new objective.
    AgentObjectiveChange,
}

impl DrillKind {
    fn name(self) -> &'static str {
        match self {
            Self::ServerOutage => "server-outage",
            Self::Revocation => "revocation",
            Self::CaRotation => "ca-rotation",
            Self::NodeBan => "node-ban",
            Self::AgentScopeBreach => "agent-scope-breach",
            Self::AgentObjectiveChange => "agent-objective-change",
        }
    }

    /// Whether the probe is an AI-agent task (its entry `bind: task`).
    fn is_task(self) -> bool {
        matches!(self, Self::AgentScopeBreach | Self::AgentObjectiveChange)
    }
}

/// Flags of `hallmark drill`.
#[derive(Args)]
pub struct DrillArgs {
    /// The scenario.
    #[arg(value_enum)]
    kind: DrillKind,
    /// Start a throwaway server (SQLite) for the drill instead of using HALLMARK_SERVER.
    #[arg(long)]
    self_contained: bool,
    /// A live server's agent API (HOST:PORT), which the drill's own agent joins.
    #[arg(long, value_name = "HOST:PORT")]
    agent_api: Option<String>,
    /// Where to write report.md and report.json (default DATA_DIR/drills/KIND-UNIXTIME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The deployment's data directory, where evidence goes unless --out is
    /// given (`source DIR/env` from `hallmark up` sets it).
    #[arg(long, env = "HALLMARK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Lifetime of the probe's X.509-SVIDs (the outage drill lasts about twice this).
    #[arg(long, default_value = "8s")]
    svid_ttl: String,
    /// A file with the drill agent's `[node_attestor]` table (x509pop, tpm or
    /// k8s_psat, as in an agent configuration): the drill's node proves itself
    /// with it instead of a join token, so `node-ban` is drilled on a node of
    /// that attestor.
    #[arg(long, value_name = "FILE")]
    node_attestor: Option<PathBuf>,
    /// With --self-contained: a file with `[[node_attestor]]` tables for the
    /// throwaway server (the CA, EK CA or cluster --node-attestor's node
    /// proves itself to).
    #[arg(long, value_name = "FILE", requires = "self_contained")]
    server_node_attestor: Option<PathBuf>,
    /// Allow `ca-rotation` against a live deployment: it activates new authorities
    /// and taints the current ones, so every workload is re-issued.
    #[arg(long)]
    confirm_rotation: bool,
    #[command(flatten)]
    conn: Conn,
}

/// The deployment under drill, the drill's agent and its probe.
struct Setup {
    admin: Client,
    server_url: String,
    work: PathBuf,
    server: Option<Spawned>,
    relay: Option<proxy::Relay>,
    agent: Spawned,
    agent_id: String,
    health: String,
    socket: String,
    entry_id: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn setup(a: &DrillArgs, report: &mut Report) -> anyhow::Result<Setup> {
    let ttl = Ttl::parse(&a.svid_ttl).context("--svid-ttl")?;
    let work = std::env::temp_dir().join(format!("hallmark-drill-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work)?;
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let node_attestor = a.node_attestor.as_ref().map(read).transpose()?;
    let server_attestors = a.server_node_attestor.as_ref().map(read).transpose()?.unwrap_or_default();
    let (admin, server_url, server, agent_api) = if a.self_contained {
        // The attestor tables end the file: top-level keys first.
        let s = local::Server::start(&work, &format!("default_x509_ttl = \"{}\"\n{server_attestors}\n", a.svid_ttl))
            .await?;
        report.step(format!("started a throwaway server (SQLite) at {}", s.url));
        (s.admin, s.url, Some(s.proc), s.agent_api)
    } else {
        let url = a.conn.server.clone().context("a live drill needs HALLMARK_SERVER (or --self-contained)")?;
        let api = a.agent_api.clone().context("a live drill needs --agent-api HOST:PORT (the server's agent API)")?;
        (crate::commands::client(&a.conn)?, url, None, api)
    };
    // A live server is reached through a relay the drill can cut.
    let relay = if a.self_contained { None } else { Some(proxy::Relay::start(agent_api.clone()).await?) };
    let server_address = relay.as_ref().map(|r| r.addr.to_string()).unwrap_or(agent_api);
    let proof = match &node_attestor {
        Some(table) => local::NodeProof::Attestor(table),
        None => local::NodeProof::JoinToken,
    };
    let agent = local::Agent::start(&admin, &work, &server_address, "agent", proof).await?;
    report.trust_domain = agent.trust_domain.clone();
    match &node_attestor {
        Some(_) => report.step(format!("attested the drill's agent {} with its node attestor", agent.id)),
        None => report.step(format!("joined the drill's agent {} with a join token", agent.id)),
    }
    local::ensure_owner(&admin, "hallmark-drill", "probe identities created by hallmark drill").await?;
    let spiffe_id = format!("spiffe://{}/hallmark-drill/{}/{}", report.trust_domain, a.kind.name(), now_ms());
    let bind = if a.kind.is_task() { "task" } else { "none" };
    let entry = json!({
        "spiffe_id": spiffe_id, "parent_id": agent.id, "owner": "hallmark-drill",
        "selectors": local::this_process_selectors()?,
        "x509_ttl": format!("{}s", ttl.secs()), "jwt_ttl": "1m", "bind": bind,
    });
    let e = admin.json(Method::POST, "/v1/entries", Some(&entry)).await?;
    let entry_id = e["id"].as_str().context("no entry id")?.to_owned();
    report.step(format!("registered the probe entry {entry_id} ({spiffe_id}) for this process"));
    Ok(Setup {
        admin,
        server_url,
        work,
        server,
        relay,
        agent_id: agent.id,
        health: agent.health,
        socket: agent.socket,
        agent: agent.proc,
        entry_id,
    })
}

/// Removes what the drill registered: the probe entry, and the drill's node
/// (banned, so its credentials cannot be used again).
async fn cleanup(s: &mut Setup, kind: DrillKind, report: &mut Report) {
    let _ = s.admin.send(Method::DELETE, &format!("/v1/entries/{}", encode(&s.entry_id)), None, None).await;
    if kind != DrillKind::NodeBan {
        let body = json!({ "node": s.agent_id, "reason": "hallmark drill finished" });
        let _ = s.admin.send(Method::POST, "/v1/revocations", Some(&body), None).await;
    }
    s.agent.kill().await;
    if let Some(server) = &mut s.server {
        server.kill().await;
    }
    report.step("removed the probe entry and retired the drill's node");
}

/// Where the evidence goes: `--out`, else `DATA_DIR/drills/KIND-UNIXTIME`;
/// never the current directory, which is wherever the operator happened to be.
fn evidence_dir(a: &DrillArgs) -> anyhow::Result<PathBuf> {
    if let Some(out) = &a.out {
        return Ok(out.clone());
    }
    let dir = a.data_dir.as_ref().context(
        "no place for the evidence: pass --out DIR, or --data-dir (HALLMARK_DATA_DIR, which `source DIR/env` sets)",
    )?;
    Ok(dir.join("drills").join(format!("{}-{}", a.kind.name(), now_unix())))
}

/// `hallmark drill ...`
pub async fn run(a: DrillArgs) -> anyhow::Result<()> {
    // Checked first: a drill that cannot keep its evidence is not started.
    evidence_dir(&a)?;
    if a.kind == DrillKind::CaRotation && !a.self_contained && !a.confirm_rotation {
        bail!("ca-rotation against a live deployment rotates and taints its authorities: pass --confirm-rotation");
    }
    let mode = if a.self_contained { "self-contained" } else { "live" };
    let mut report = Report::new(a.kind.name(), mode, a.conn.server.as_deref().unwrap_or(""));
    let mut s = setup(&a, &mut report).await?;
    report.server = s.server_url.clone();
    // A task drill's probe is a task: this process, bound before it asks.
    let task = match a.kind {
        DrillKind::AgentScopeBreach => Some(agent::start_task(&s, true, &mut report).await?),
        DrillKind::AgentObjectiveChange => Some(agent::start_task(&s, false, &mut report).await?),
        _ => None,
    };
    let probe = Probe::start(s.socket.clone());
    let first = probe.wait_for(60, |_| true).await;
    let outcome = match first {
        None => {
            report.control("the probe workload obtains an SVID", false, "none within 60 s");
            Ok(())
        }
        Some((_, h)) => {
            report.step(format!("the probe holds serial {} (expires {})", h.serial, rfc3339(h.not_after)));
            match a.kind {
                DrillKind::ServerOutage => server_outage(&mut s, &probe, &mut report).await,
                DrillKind::Revocation => revocation(&s, &probe, &mut report).await,
                DrillKind::CaRotation => ca_rotation(&s, &probe, a.self_contained, &mut report).await,
                DrillKind::NodeBan => node_ban(&s, &probe, &mut report).await,
                DrillKind::AgentScopeBreach | DrillKind::AgentObjectiveChange => match &task {
                    Some(t) if a.kind == DrillKind::AgentScopeBreach => {
                        agent::scope_breach(&s, t, &probe, &mut report).await
                    }
                    Some(t) => agent::objective_change(&s, t, &probe, &mut report).await,
                    None => Ok(()),
                },
            }
        }
    };
    let expired = expired_served(&probe.messages());
    report.control(
        "no expired SVID was ever served",
        expired.is_empty(),
        if expired.is_empty() { "every SVID received was unexpired on arrival".to_owned() } else { expired.join("; ") },
    );
    drop(probe);
    if let Some(t) = &task {
        agent::end_task(&s, t).await;
    }
    cleanup(&mut s, a.kind, &mut report).await;
    if let Err(e) = outcome {
        report.control("the drill ran to the end", false, format!("{e:#}"));
    }
    report.finish();
    let out = evidence_dir(&a)?;
    report.write(&out)?;
    if a.conn.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.markdown());
    }
    eprintln!("evidence written to {}/report.md and report.json", out.display());
    let failed: Vec<&str> = report.controls.iter().filter(|c| !c.held).map(|c| c.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("drill {} failed: {}", a.kind.name(), failed.join("; "));
    }
    Ok(())
}

async fn server_outage(s: &mut Setup, probe: &Probe, r: &mut Report) -> anyhow::Result<()> {
    let t_out = now_ms();
    match (&mut s.server, &s.relay) {
        (Some(server), _) => {
            server.kill().await;
            r.step("server outage: the server process was killed (SIGKILL)");
        }
        (None, Some(relay)) => {
            relay.cut();
            r.step("server outage: the relay to the live server was cut");
        }
        (None, None) => bail!("no way to stage an outage"),
    }
    let health = s.health.clone();
    let degraded = wait(30, async || (health_status(&health).await? == 503).then(now_ms)).await;
    r.measure("time until the agent reports itself not ready", degraded.map(|t| t - t_out), "under 10000 ms");
    r.control(
        "the agent reports the outage (/ready fails)",
        degraded.is_some(),
        match degraded {
            Some(t) => format!("/ready answered 503 {} ms after the outage began", t - t_out),
            None => "/ready kept answering 200".into(),
        },
    );
    // Held until it expires, then withdrawn: never served expired.
    let gone = probe.wait_until_gone(120, |_| true).await;
    let samples = probe.samples();
    let last = samples.iter().rev().find_map(|x| x.held.clone().filter(|_| x.at_ms >= t_out));
    match (gone, last) {
        (Some(t_gone), Some(h)) => {
            let expiry = h.not_after * 1000;
            r.step(format!("the probe's SVID {} was withdrawn", h.serial));
            r.measure("time from the SVID's expiry to its withdrawal", Some(t_gone - expiry), "under 1500 ms");
            r.control(
                "an SVID that expired without renewal is withdrawn at once",
                t_gone - expiry <= 1500,
                format!("withdrawn {} ms after its expiry", t_gone - expiry),
            );
            let served_until_expiry = gaps(&samples, t_out, expiry - 1000).is_empty();
            r.control(
                "still-valid SVIDs keep being served during the outage",
                served_until_expiry,
                format!("valid at every 50 ms sample from the outage until 1 s before expiry ({} ms)", expiry - t_out),
            );
        }
        _ => r.control("an SVID that expired without renewal is withdrawn at once", false, "it was never withdrawn"),
    }
    let t_restore = now_ms();
    match (&mut s.server, &s.relay) {
        (Some(server), _) => {
            server.restart().await?;
            r.step("the server was started again");
        }
        (_, Some(relay)) => {
            relay.restore();
            r.step("the relay to the live server was restored");
        }
        _ => {}
    }
    let back = probe.wait_for(60, |h| h.not_after > now_unix()).await;
    r.measure("time to recovery (a valid SVID again)", back.as_ref().map(|(t, _)| t - t_restore), "under 30000 ms");
    let agent_alive = s.agent.alive();
    r.control(
        "identities come back without restarting the agent",
        back.is_some() && agent_alive,
        match &back {
            Some((t, h)) => {
                format!("serial {} {} ms after the server returned; agent still running", h.serial, t - t_restore)
            }
            None => "no SVID within 60 s of the server's return".into(),
        },
    );
    let ready = wait(30, async || (health_status(&health).await? == 200).then_some(())).await;
    r.control("the agent is ready again", ready.is_some(), "/ready answers 200 after the server returned");
    Ok(())
}

/// A JWT-SVID for `audience` from the Workload API at `socket`, or why not.
async fn fetch_jwt(socket: &str, audience: &str) -> Result<String, String> {
    let mut wl = connect(socket).await.map_err(|e| format!("{e:#}"))?;
    let r =
        wl.fetch_jwtsvid(request(JwtsvidRequest { audience: vec![audience.into()], spiffe_id: String::new() })).await;
    match r {
        Ok(r) => r.into_inner().svids.into_iter().next().map(|s| s.svid).ok_or_else(|| "no JWT-SVID".to_owned()),
        Err(e) => Err(format!("FetchJWTSVID: {}", e.message())),
    }
}

/// The claims of a compact JWT (not verified: the drill reads what it was given).
fn jwt_claims(token: &str) -> anyhow::Result<Value> {
    let claims = token.split('.').nth(1).context("not a JWT")?;
    Ok(serde_json::from_slice(&base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)?)?)
}

/// When (ms) ValidateJWTSVID at `socket` first refused `token`, waiting up to 10 s.
async fn refused_by_validate(socket: &str, audience: &str, token: &str) -> Option<i64> {
    wait(10, async || {
        let req = request(ValidateJwtsvidRequest { audience: audience.into(), svid: token.to_owned() });
        connect(socket).await.ok()?.validate_jwtsvid(req).await.is_err().then(now_ms)
    })
    .await
}

async fn health_status(addr: &str) -> Option<u16> {
    health_get(addr, "/ready").await.map(|(s, _)| s)
}

async fn revoke(s: &Setup, body: Value) -> anyhow::Result<Value> {
    s.admin.json(Method::POST, "/v1/revocations", Some(&body)).await
}

#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn crl_lists(s: &Setup, serial: &str) -> bool {
    let Ok(list) = s.admin.json(Method::GET, "/v1/authorities", None).await else { return false };
    for a in list["authorities"].as_array().into_iter().flatten().filter(|a| a["kind"] == "x509") {
        let path = format!("/v1/crl/{}", a["id"].as_str().unwrap_or(""));
        let Ok(r) = s.admin.send(Method::GET, &path, None, None).await else { continue };
        if !r.status.is_success() {
            continue;
        }
        if let Ok((_, crl)) =
            <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<_>>::from_der(
                &r.body,
            )
            && crl.iter_revoked_certificates().any(|c| hex::encode(c.raw_serial()) == serial)
        {
            return true;
        }
    }
    false
}

#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn revocation(s: &Setup, probe: &Probe, r: &mut Report) -> anyhow::Result<()> {
    // One serial: withdrawn at once, replaced (the entry is still valid), on the CRL.
    let h = probe.current().context("the probe holds no SVID")?;
    let t_cmd = now_ms();
    revoke(s, json!({ "serial": h.serial, "reason": "hallmark drill" })).await?;
    r.step(format!("revoked serial {}", h.serial));
    let dropped = probe.wait_until_gone(10, |x| x.serial == h.serial).await;
    r.measure(
        "serial revocation: command to withdrawal on the open stream",
        dropped.map(|t| t - t_cmd),
        "under 1000 ms",
    );
    r.control(
        "a revoked SVID is withdrawn from the workload within 1 s",
        dropped.is_some_and(|t| t - t_cmd <= 1000),
        dropped.map(|t| format!("{} ms", t - t_cmd)).unwrap_or_else(|| "still served after 10 s".into()),
    );
    let replaced = probe.wait_for(30, |x| x.serial != h.serial).await;
    r.measure("time to a replacement SVID", replaced.as_ref().map(|(t, _)| t - t_cmd), "under 5000 ms");
    r.control(
        "a replacement is issued while the entry is valid",
        replaced.is_some(),
        replaced.map(|(_, x)| format!("new serial {}", x.serial)).unwrap_or_else(|| "none within 30 s".into()),
    );
    let again: Vec<i64> = probe
        .messages()
        .iter()
        .filter(|m| dropped.is_some_and(|t| m.at_ms > t) && m.svids.iter().any(|x| x.serial == h.serial))
        .map(|m| m.at_ms)
        .collect();
    r.control(
        "the revoked serial is never served again",
        again.is_empty(),
        if again.is_empty() {
            "absent from every later message".to_owned()
        } else {
            format!("served again at {again:?}")
        },
    );
    let listed = wait(15, async || crl_lists(s, &h.serial).await.then(now_ms)).await;
    r.measure("time until the CRL lists the serial", listed.map(|t| t - t_cmd), "under 10000 ms");
    r.control("relying parties see it on the authority's CRL", listed.is_some(), "GET /v1/crl/{authority}");

    // One jti: ValidateJWTSVID refuses it.
    let jwt = fetch_jwt(&s.socket, "drill").await.map_err(anyhow::Error::msg)?;
    let jti = jwt_claims(&jwt)?["jti"].as_str().context("no jti")?.to_owned();
    let t_jwt = now_ms();
    revoke(s, json!({ "jti": jti, "reason": "hallmark drill" })).await?;
    r.step(format!("revoked jti {jti}"));
    let rejected = refused_by_validate(&s.socket, "drill", &jwt).await;
    r.measure("jti revocation: command to ValidateJWTSVID refusing it", rejected.map(|t| t - t_jwt), "under 1000 ms");
    r.control(
        "a revoked JWT-SVID no longer validates",
        rejected.is_some_and(|t| t - t_jwt <= 1000),
        rejected.map(|t| format!("{} ms", t - t_jwt)).unwrap_or_else(|| "still valid after 10 s".into()),
    );

    // The whole entry: withdrawn and never replaced.
    let t_entry = now_ms();
    revoke(s, json!({ "entry": s.entry_id, "reason": "hallmark drill" })).await?;
    r.step(format!("revoked the probe entry {}", s.entry_id));
    let gone = probe.wait_until_gone(10, |_| true).await;
    r.measure("entry revocation: command to withdrawal", gone.map(|t| t - t_entry), "under 1000 ms");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let none_after = probe.samples().iter().filter(|x| gone.is_some_and(|t| x.at_ms > t)).all(|x| x.held.is_none());
    r.control(
        "a revoked entry is withdrawn within 1 s and not replaced",
        gone.is_some_and(|t| t - t_entry <= 1000) && none_after,
        match gone {
            Some(t) => format!("withdrawn after {} ms; nothing served in the 3 s after", t - t_entry),
            None => "still served after 10 s".into(),
        },
    );
    Ok(())
}

#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn node_ban(s: &Setup, probe: &Probe, r: &mut Report) -> anyhow::Result<()> {
    let agent_chain = std::fs::read_to_string(s.work.join("agent/data/agent.chain.pem"))?;
    let agent_serial = hallmark_ca::svid::parse_leaf(
        pem::parse_many(&agent_chain)?.first().context("agent SVID missing")?.contents(),
    )?
    .serial;
    let t_cmd = now_ms();
    let out = revoke(s, json!({ "node": s.agent_id, "reason": "hallmark drill" })).await?;
    r.step(format!(
        "banned the drill's node {} ({} credentials revoked with it)",
        s.agent_id,
        out["credentials"].as_array().map(Vec::len).unwrap_or(0)
    ));
    let gone = probe.wait_until_gone(10, |_| true).await;
    r.measure("node ban: command to withdrawal on the workload's stream", gone.map(|t| t - t_cmd), "under 1000 ms");
    r.control(
        "everything issued through a banned node is withdrawn within 1 s",
        gone.is_some_and(|t| t - t_cmd <= 1000),
        gone.map(|t| format!("{} ms", t - t_cmd)).unwrap_or_else(|| "still served after 10 s".into()),
    );
    let health = s.health.clone();
    let refused =
        wait(10, async || health_get(&health, "/ready").await.filter(|(st, b)| *st == 503 && b.contains("banned")))
            .await;
    r.control(
        "the banned node's agent SVID is refused by the server",
        refused.is_some(),
        refused.map(|(_, b)| format!("agent /ready: {b}")).unwrap_or_else(|| "the agent still reports ready".into()),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let none_after = probe.samples().iter().filter(|x| gone.is_some_and(|t| x.at_ms > t)).all(|x| x.held.is_none());
    r.control("no SVID is served through the node afterwards", none_after, "nothing held in the 3 s after");
    let listed = wait(15, async || crl_lists(s, &agent_serial).await.then_some(())).await;
    r.control(
        "the node's own SVID is on its authority's CRL",
        listed.is_some(),
        format!("serial {agent_serial} in GET /v1/crl/{{authority}}"),
    );
    let nodes = s.admin.json(Method::GET, "/v1/nodes", None).await?;
    let banned =
        nodes["nodes"].as_array().into_iter().flatten().any(|n| n["agent_id"] == s.agent_id && n["banned"] == true);
    r.control("the node is recorded as banned", banned, "GET /v1/nodes");
    Ok(())
}

fn active_id(list: &Value, kind: &str) -> Option<String> {
    list["authorities"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == kind && a["state"] == "active" && a["held_here"] == true)
        .and_then(|a| a["id"].as_str().map(str::to_owned))
}

#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn ca_rotation(s: &Setup, probe: &Probe, revoke_old: bool, r: &mut Report) -> anyhow::Result<()> {
    let t_start = now_ms();
    let before = s.admin.json(Method::GET, "/v1/authorities", None).await?;
    let old_x509 = active_id(&before, "x509").context("no active X.509 authority on this server")?;
    let old_jwt = active_id(&before, "jwt").context("no active JWT key on this server")?;
    let old_issuer = probe.current().context("the probe holds no SVID")?.issuer;
    for kind in ["x509", "jwt"] {
        s.admin.json(Method::POST, "/v1/authorities/prepare", Some(&json!({ "kind": kind }))).await?;
        r.step(format!("prepared the next {kind} authority (published, not yet signing)"));
        // Relying parties learn the new authority before it signs anything.
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.admin.json(Method::POST, "/v1/authorities/activate", Some(&json!({ "kind": kind }))).await?;
        r.step(format!("activated it; the previous {kind} authority stays in the bundle"));
    }
    let t_taint = now_ms();
    for id in [&old_x509, &old_jwt] {
        s.admin.json(Method::POST, &format!("/v1/authorities/{}/taint", encode(id)), None).await?;
    }
    r.step("tainted the previous X.509 authority and JWT key");
    let reissued = probe.wait_for(30, |h| h.issuer != old_issuer).await;
    r.measure(
        "taint to the workload holding an SVID from the new authority",
        reissued.as_ref().map(|(t, _)| t - t_taint),
        "under 10000 ms",
    );
    r.control(
        "tainting an authority re-issues what it signed under the active one",
        reissued.is_some(),
        reissued
            .map(|(_, h)| format!("serial {} from the new authority", h.serial))
            .unwrap_or_else(|| "not within 30 s".into()),
    );
    let mut wl = connect(&s.socket).await?;
    let jwt = wl
        .fetch_jwtsvid(request(JwtsvidRequest { audience: vec!["drill".into()], spiffe_id: String::new() }))
        .await
        .map_err(|e| anyhow::anyhow!("FetchJWTSVID: {}", e.message()))?
        .into_inner();
    let kid = jwt
        .svids
        .first()
        .and_then(|j| j.svid.split('.').next())
        .and_then(|h| base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h).ok())
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h["kid"].as_str().map(str::to_owned))
        .unwrap_or_default();
    r.control(
        "JWT-SVIDs are signed by the new key once the old one is tainted",
        !kid.is_empty() && kid != old_jwt,
        format!("kid {kid}"),
    );
    if revoke_old {
        for id in [&old_x509, &old_jwt] {
            s.admin.json(Method::POST, &format!("/v1/authorities/{}/revoke", encode(id)), None).await?;
        }
        r.step("revoked the previous X.509 authority and JWT key (removed from the bundle)");
        let bundle = s.admin.send(Method::GET, "/v1/bundle?format=jwks", None, None).await?;
        let text = String::from_utf8_lossy(&bundle.body).into_owned();
        r.control("a revoked JWT key leaves the bundle", !text.contains(&old_jwt), "GET /v1/bundle?format=jwks");
        tokio::time::sleep(Duration::from_secs(2)).await;
    } else {
        r.step("left the previous authorities tainted in the bundle (live: revoke them with `hallmark ca revoke` once every agent has re-issued)");
    }
    let windows = gaps(&probe.samples(), t_start, now_ms());
    r.control(
        "at no moment did the workload hold no valid SVID",
        windows.is_empty(),
        if windows.is_empty() {
            "valid at every 50 ms sample throughout the rotation".to_owned()
        } else {
            format!("no valid SVID during {windows:?} (start ms, length ms)")
        },
    );
    Ok(())
}
