//! `hallmark chaos`: crash consistency under load.
//!
//! Starts a server (SQLite, or `--datastore`), a real agent serving a probe
//! workload (this process), and simulated agents that issue X.509- and
//! JWT-SVIDs and register entries as fast as the server answers. Then, cycle
//! after cycle, it kills the server or the agent with SIGKILL at a random
//! moment (or restarts PostgreSQL abruptly with `--postgres-restart`), lets
//! it come back, and checks what a crash must not break:
//!
//! - the audit chain verifies;
//! - every credential a client received is in the inventory;
//! - every entry whose creation was acknowledged exists, every stored entry
//!   reads back whole, and each has its record in the change log agents
//!   follow;
//! - every stored change has its audit record: while issuing and registering,
//!   the load also updates and deletes entries, creates owners and admin
//!   identities, sets policy versions, asks for and revokes exceptions, and
//!   asks for JWT-SVIDs the policy denies; each owner, policy version, admin
//!   identity, exception (and its revocation), entry (each revision, and each
//!   deletion) and denial found in the datastore must have its record in the
//!   chain (a change and its record are one transaction, so no crash
//!   separates them);
//! - the agent is ready again and the probe holds a valid SVID, with no one
//!   having touched anything; no expired SVID was ever served.
//!
//! Exit status is non-zero when any check failed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use hallmark_ca::keys::new_key_and_csr;
use hallmark_core::SpiffeId;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{MintJwtSvidRequest, SignX509SvidsRequest};
use hallmark_store::Store;
use hyper::Method;
use rand::Rng;
use serde_json::json;
use tonic::transport::Channel;

use crate::bench::simagent::{Target, attest, svid_requests};
use crate::client::Client;
use crate::drill::probe::{Probe, expired_served};
use crate::drill::report::now_ms;
use crate::local::{self, Agent, Server, health_get, wait};

/// The trust domain of the server `local::Server` starts.
const TRUST_DOMAIN: &str = "drill.hallmark.test";

/// What each cycle crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Victim {
    /// The server process (SIGKILL), restarted on the same data.
    Server,
    /// The agent process (SIGKILL), restarted on the same data directory.
    Agent,
    /// PostgreSQL, through `--postgres-restart` (an immediate-mode restart).
    Postgres,
}

/// Flags of `hallmark chaos`.
#[derive(clap::Args)]
pub struct Args {
    /// What to crash each cycle.
    #[arg(long, value_enum, default_value_t = Victim::Server)]
    kill: Victim,
    /// Crash cycles.
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Datastore URL for the server (default: SQLite in a temporary directory).
    #[arg(long)]
    datastore: Option<String>,
    /// Shell command that restarts PostgreSQL abruptly, for `--kill postgres`,
    /// e.g. `pg_ctl -D DIR -m immediate restart`.
    #[arg(long)]
    postgres_restart: Option<String>,
    /// Simulated agents issuing and registering under load.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Longest wait under load before each crash, milliseconds (each wait is
    /// random between a tenth of this and this).
    #[arg(long, default_value_t = 1500)]
    max_interval_ms: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What the load received, waiting to be checked against the datastore.
#[derive(Default)]
struct Received {
    credentials: Vec<String>,
    entries: Vec<String>,
}

/// Totals over the whole run.
#[derive(Default, serde::Serialize)]
struct Totals {
    cycles: usize,
    credentials_checked: u64,
    entries_checked: u64,
    /// Stored changes (and denials) checked for their audit record, last cycle.
    changes_checked: u64,
    audit_records: i64,
    violations: Vec<String>,
}

/// Runs the cycles and prints what held.
pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.kill == Victim::Postgres && a.postgres_restart.is_none() {
        bail!("--kill postgres needs --postgres-restart CMD (and --datastore postgres://...)");
    }
    let work = std::env::temp_dir().join(format!("hallmark-chaos-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work)?;
    let result = cycles(&a, &work).await;
    match &result {
        Ok(t) if t.violations.is_empty() => {
            let _ = std::fs::remove_dir_all(&work);
        }
        _ => eprintln!("logs kept in {}", work.display()),
    }
    let t = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        println!(
            "{} {:?} crashes survived: {} credentials and {} entries checked, {} changes each with its record, audit chain of {} records verifies{}",
            t.cycles,
            a.kill,
            t.credentials_checked,
            t.entries_checked,
            t.changes_checked,
            t.audit_records,
            if t.violations.is_empty() { "" } else { " -- VIOLATIONS:" }
        );
        for v in &t.violations {
            println!("  - {v}");
        }
    }
    if !t.violations.is_empty() {
        bail!("{} violations in {} cycles", t.violations.len(), t.cycles);
    }
    Ok(())
}

#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn cycles(a: &Args, work: &std::path::Path) -> anyhow::Result<Totals> {
    let datastore =
        a.datastore.clone().unwrap_or_else(|| format!("sqlite://{}", work.join("server/hallmark.db").display()));
    let extra = format!("datastore = \"{datastore}\"\ndefault_x509_ttl = \"2m\"\n");
    let Server { proc: mut server, admin, url: _, agent_api } = Server::start(work, &extra).await?;
    let admin = Arc::new(admin);
    let td = TRUST_DOMAIN;
    local::ensure_owner(&admin, "chaos", "identities of hallmark chaos").await?;

    // The real agent and its probe workload (this process).
    let mut agent = Agent::join(&admin, work, &agent_api, "agent").await?;
    let probe_entry = json!({
        "spiffe_id": format!("spiffe://{td}/chaos/probe"), "parent_id": agent.id, "owner": "chaos",
        "selectors": local::this_process_selectors()?, "x509_ttl": "2m",
    });
    admin.json(Method::POST, "/v1/entries", Some(&probe_entry)).await?;
    let probe = Probe::start(agent.socket.clone());
    wait(60, async || probe.current()).await.context("the probe never received its SVID")?;
    // JWT-SVIDs for this audience are denied, so the load makes denials.
    let policy = admin.json(Method::GET, "/v1/policy", None).await?["policy"].as_str().context("no policy")?.to_owned();
    let policy = format!("{policy}\n{DENY_AUDIENCE_POLICY}\n");
    admin.json(Method::PUT, "/v1/policy", Some(&json!({ "policy": policy }))).await?;

    // The load.
    let store = Store::open(&datastore).await.context("cannot open the datastore to check it")?;
    let target = Target::new(&admin, &agent_api, td).await?;
    let received = Arc::new(Mutex::new(Received::default()));
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..a.agents {
        let sim = attest(&admin, &target).await?;
        let spiffe = format!("spiffe://{td}/chaos/load{i}");
        let e = json!({ "spiffe_id": spiffe, "parent_id": sim.id, "selectors": ["unix:uid:1000"], "owner": "chaos" });
        let entry =
            admin.json(Method::POST, "/v1/entries", Some(&e)).await?["id"].as_str().context("no id")?.to_owned();
        let id = SpiffeId::new(&spiffe)?;
        let csrs: Vec<Vec<u8>> =
            (0..32).map(|_| new_key_and_csr(Some(&id)).map(|k| k.csr_der)).collect::<Result<_, _>>()?;
        tasks.push(tokio::spawn(issue(
            sim.client,
            entry.clone(),
            csrs,
            received.clone(),
            answered.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(register(admin.clone(), sim.id.clone(), i, received.clone(), stop.clone())));
        tasks.push(tokio::spawn(govern(admin.clone(), sim.id, entry, policy.clone(), i, stop.clone())));
    }

    let mut totals = Totals::default();
    let mut rng = rand::rng();
    for cycle in 1..=a.cycles {
        let pause = rng.random_range(a.max_interval_ms / 10..=a.max_interval_ms.max(1));
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let crashed_at = now_ms();
        match a.kill {
            Victim::Server => {
                server.restart().await?;
                wait(60, async || (health_get(admin.authority(), "/ready").await?.0 == 200).then_some(()))
                    .await
                    .with_context(|| format!("cycle {cycle}: the server did not come back"))?;
            }
            Victim::Agent => agent.proc.restart().await?,
            Victim::Postgres => {
                let cmd = a.postgres_restart.as_deref().unwrap_or_default();
                let out = tokio::process::Command::new("sh").args(["-c", cmd]).output().await?;
                if !out.status.success() {
                    bail!("cycle {cycle}: `{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
        // Recovery, with no intervention: issuance resumes, the agent is ready,
        // and the probe holds an SVID again (after an agent crash: one it
        // received after the crash).
        let before = answered.load(Ordering::Relaxed);
        let resumed = wait(60, async || (answered.load(Ordering::Relaxed) > before + 32).then_some(())).await;
        let mut violations = Vec::new();
        if resumed.is_none() {
            violations.push(format!("cycle {cycle}: issuance did not resume within 60 s"));
        }
        if wait(60, async || (health_get(&agent.health, "/ready").await?.0 == 200).then_some(())).await.is_none() {
            violations.push(format!("cycle {cycle}: the agent did not become ready within 60 s"));
        }
        let after = if a.kill == Victim::Agent { crashed_at } else { 0 };
        if probe.wait_message(60, after, |m| !m.svids.is_empty()).await.is_none() {
            violations.push(format!("cycle {cycle}: the probe workload holds no SVID 60 s after the crash"));
        }
        // Consistency.
        let (credentials, entries) = {
            let mut g = lock(&received);
            (std::mem::take(&mut g.credentials), std::mem::take(&mut g.entries))
        };
        match store.credentials_present(&credentials).await {
            Ok(present) => violations.extend(
                credentials
                    .iter()
                    .filter(|id| !present.contains(*id))
                    .map(|id| format!("cycle {cycle}: credential {id} was received but is not in the inventory")),
            ),
            Err(e) => violations.push(format!("cycle {cycle}: cannot read the inventory: {e}")),
        }
        totals.credentials_checked += credentials.len() as u64;
        match store.entries_by_id(&entries).await {
            Ok(found) => {
                let found: std::collections::HashSet<&str> = found.iter().map(|e| e.id.as_str()).collect();
                violations.extend(
                    entries
                        .iter()
                        .filter(|id| !found.contains(id.as_str()))
                        .map(|id| format!("cycle {cycle}: entry {id} was acknowledged but is not stored")),
                );
            }
            Err(e) => violations.push(format!("cycle {cycle}: acknowledged entries do not read back: {e}")),
        }
        totals.entries_checked += entries.len() as u64;
        violations.extend(entries_whole(&store).await.into_iter().map(|v| format!("cycle {cycle}: {v}")));
        match changes_recorded(&store).await {
            Ok((checked, missing)) => {
                totals.changes_checked = checked;
                violations.extend(missing.into_iter().map(|v| format!("cycle {cycle}: {v}")));
            }
            Err(e) => violations.push(format!("cycle {cycle}: cannot read the changes and their records: {e:#}")),
        }
        match admin.json(Method::GET, "/v1/audit/verify", None).await {
            Ok(v) if v["broken"].is_null() => totals.audit_records = v["records"].as_i64().unwrap_or(0),
            Ok(v) => violations.push(format!("cycle {cycle}: the audit chain does not verify: {v}")),
            Err(e) => violations.push(format!("cycle {cycle}: audit verify failed: {e:#}")),
        }
        eprintln!(
            "cycle {cycle}: {:?} crashed after {pause} ms under load; {} credentials, {} entries checked{}",
            a.kill,
            credentials.len(),
            entries.len(),
            if violations.is_empty() { String::new() } else { format!("; {} violations", violations.len()) }
        );
        totals.violations.extend(violations);
        totals.cycles = cycle;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let expired = expired_served(&probe.messages());
    if !expired.is_empty() {
        totals.violations.push(format!("the probe was served expired SVIDs: {expired:?}"));
    }
    drop(agent);
    server.kill().await;
    Ok(totals)
}

/// Issuance load from one simulated agent: batches of 16 X.509-SVIDs and a
/// JWT-SVID, noting every serial and jti received, until `stop`.
async fn issue(
    mut client: NodeClient<Channel>,
    entry: String,
    csrs: Vec<Vec<u8>>,
    received: Arc<Mutex<Received>>,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let requests = svid_requests(&entry, &csrs, n, 16);
        n += 16;
        let x509 = client.sign_x509_svids(SignX509SvidsRequest { requests }).await;
        let jwt = client
            .mint_jwt_svid(MintJwtSvidRequest {
                entry_id: entry.clone(),
                audience: vec!["chaos".into()],
                evidence: vec!["unix:uid:1000".into()],
                // A new evidence set each time: its row is written with the
                // records, and must survive or vanish with them.
                process: Some(hallmark_proto::node::ProcessInstance {
                    pid: u32::try_from(n).unwrap_or(1).max(1),
                    start_ticks: 1,
                    started_at: 1,
                }),
                lineage: Vec::new(),
            })
            .await;
        let mut got = Vec::new();
        if let Ok(r) = x509 {
            for r in r.into_inner().results {
                if let Some(leaf) = r.cert_chain.first() {
                    got.push(hallmark_ca::svid::parse_leaf(leaf).map(|l| l.serial).unwrap_or_default());
                }
            }
        }
        if let Ok(r) = jwt {
            got.push(r.into_inner().jti);
        }
        // A denial, stored with its record (or, crashed, neither).
        let _ = client
            .mint_jwt_svid(MintJwtSvidRequest {
                entry_id: entry.clone(),
                audience: vec![DENIED_AUDIENCE.into()],
                evidence: vec!["unix:uid:1000".into()],
                process: None,
                lineage: Vec::new(),
            })
            .await;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        answered.fetch_add(got.len() as u64, Ordering::Relaxed);
        lock(&received).credentials.extend(got);
        // Steady load, not a flood: each cycle verifies the whole audit
        // chain, so its length sets how long a cycle takes.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Registration load: entries for simulated agent `parent` through the admin
/// API, noting every one acknowledged, until `stop`.
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn register(admin: Arc<Client>, parent: String, i: usize, received: Arc<Mutex<Received>>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let e = json!({
            "spiffe_id": format!("spiffe://{TRUST_DOMAIN}/chaos/registered{i}/{n}"), "parent_id": parent,
            "selectors": [format!("unix:uid:{}", 2000 + n % 1000), "unix:user:chaos"], "owner": "chaos",
        });
        match admin.send(Method::POST, "/v1/entries", Some(&e), None).await {
            Ok(r) if r.status.as_u16() == 201 => {
                if let Ok(v) = r.json() {
                    lock(&received).entries.push(v["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The audience the chaos policy denies.
const DENIED_AUDIENCE: &str = "chaos-denied";

/// Added to the policy in force: JWT-SVIDs for [`DENIED_AUDIENCE`] are denied.
const DENY_AUDIENCE_POLICY: &str =
    "@id(\"chaos-deny\")\nforbid(principal, action == Action::\"issue_jwt\", resource == Audience::\"chaos-denied\");";

/// Governance load from task `i`, until `stop`: round after round, an entry
/// registered, updated and deleted, an owner and an admin identity created,
/// a policy version set (the policy in force, `policy`, with a comment), an
/// exception asked for on `entry` and revoked. Whatever is acknowledged or
/// not, [`changes_recorded`] checks that what is stored has its record.
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
async fn govern(admin: Arc<Client>, parent: String, entry: String, policy: String, i: usize, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let spiffe = format!("spiffe://{TRUST_DOMAIN}/chaos/governed{i}/{n}");
        let spec = |uid: u64| {
            json!({
                "spiffe_id": spiffe, "parent_id": parent, "owner": "chaos",
                "selectors": [format!("unix:uid:{uid}"), "unix:user:governed"],
            })
        };
        // Each step is tried once; a crash fails some, which is what is checked.
        if let Ok(v) = admin.json(Method::POST, "/v1/entries", Some(&spec(3000 + n % 1000))).await
            && let Some(id) = v["id"].as_str()
        {
            let path = format!("/v1/entries/{id}");
            let _ = admin.json(Method::PUT, &path, Some(&spec(4000 + n % 1000))).await;
            if n.is_multiple_of(2) {
                let _ = admin.send(Method::DELETE, &path, None, None).await;
            }
        }
        let owner = json!({ "name": format!("chaos-{i}-{n}"), "contact": "chaos@example.org" });
        let _ = admin.json(Method::POST, "/v1/owners", Some(&owner)).await;
        let token = json!({ "name": format!("chaos-{i}-{n}"), "role": "auditor", "ttl": "1h" });
        let _ = admin.json(Method::POST, "/v1/admin-tokens", Some(&token)).await;
        if n.is_multiple_of(4) {
            let text = format!("{policy}// chaos {i}/{n}\n");
            let _ = admin.json(Method::PUT, "/v1/policy", Some(&json!({ "policy": text }))).await;
        }
        let exception = json!({
            "entry_id": entry, "rule": "ttl_above_class_max", "value": "2h",
            "justification": "chaos", "expires_at": hallmark_core::now_unix() + 3600,
        });
        if let Ok(x) = admin.json(Method::POST, "/v1/exceptions", Some(&exception)).await
            && let Some(id) = x["id"].as_str()
        {
            let _ = admin.json(Method::POST, &format!("/v1/exceptions/{id}/revoke"), None).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every stored change has its audit record: each owner, policy version,
/// admin identity, exception (and its revocation), entry (its creation and
/// each update since) and deleted entry, and each stored denial. Returns how
/// many were checked, and what lacks its record.
///
/// The load goes on meanwhile, so what is stored is read before the records:
/// a change and its record commit together, so the records read after a
/// change was seen hold its record.
async fn changes_recorded(store: &Store) -> anyhow::Result<(u64, Vec<String>)> {
    let owners = store.owners().await?;
    let policies = store.policy_history().await?;
    let admins = store.admin_tokens().await?;
    let exceptions = store.exceptions().await?;
    let entries = store.entries(None).await?;
    let mut denials: HashMap<String, u64> = HashMap::new();
    for d in store.denials_since(0).await? {
        *denials.entry(d.entry_id).or_default() += 1;
    }
    let records = records_by_subject(store).await?;

    let (mut checked, mut missing) = (0u64, Vec::new());
    // `what` is stored, so at least `n` records of `actions` name `subject`.
    let mut expect = |records: &Records, what: String, actions: &[&str], subject: &str, n: u64| {
        checked += 1;
        let found: u64 =
            actions.iter().map(|a| records.get(&((*a).to_owned(), subject.to_owned())).copied().unwrap_or(0)).sum();
        if found < n {
            missing.push(format!("{what} is stored but has {found} of its {n} `{}` records", actions.join("`/`")));
        }
    };
    for o in owners {
        expect(&records, format!("owner {}", o.name), &["owner_create"], &o.name, 1);
    }
    for p in policies {
        expect(&records, format!("policy version {}", p.version), &["policy_set"], &p.version.to_string(), 1);
    }
    for t in admins {
        expect(&records, format!("admin identity {}", t.name), &["admin_token_create"], &t.name, 1);
    }
    for x in exceptions {
        expect(&records, format!("exception {}", x.id), &["exception_request"], &x.id, 1);
        if x.revoked_at.is_some() {
            expect(&records, format!("the revocation of exception {}", x.id), &["exception_revoke"], &x.id, 1);
        }
    }
    for e in entries {
        expect(&records, format!("entry {}", e.id), &["entry_create"], &e.id, 1);
        // Under this load only updates, and the revocation that begins a
        // deletion, change an entry's revision.
        let revision = format!("entry {} at revision {}", e.id, e.revision);
        expect(&records, revision, &["entry_update", "revoke"], &e.id, e.revision.saturating_sub(1));
        if e.revoked_at.is_some() {
            expect(&records, format!("the revocation of entry {}", e.id), &["revoke"], &e.id, 1);
        }
    }
    for (entry, n) in denials {
        expect(&records, format!("{n} denials of entry {entry}"), &["deny"], &entry, n);
    }
    // An entry recorded as created and no longer stored was deleted: its
    // deletion has its record (read after the entries that show it gone).
    let stored: HashSet<String> = store.entries(None).await?.into_iter().map(|e| e.id).collect();
    let later = records_by_subject(store).await?;
    for (_, id) in records.keys().filter(|(action, id)| action == "entry_create" && !stored.contains(id)) {
        expect(&later, format!("the deletion of entry {id}"), &["entry_delete"], id, 1);
    }
    Ok((checked, missing))
}

/// How many audit records there are of each (action, subject).
type Records = HashMap<(String, String), u64>;

/// Reads the whole chain into [`Records`].
async fn records_by_subject(store: &Store) -> anyhow::Result<Records> {
    let mut records = Records::new();
    let mut after = 0;
    loop {
        let page = store.audit_records(after, 0, i64::MAX, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in page {
            *records.entry((r.event.action, r.event.subject)).or_default() += 1;
        }
    }
    Ok(records)
}

fn lock(m: &Mutex<Received>) -> std::sync::MutexGuard<'_, Received> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every stored entry reads back whole (a row that does not parse fails the
/// read) and has a record in the change log agents follow.
async fn entries_whole(store: &Store) -> Vec<String> {
    let entries = match store.entries(None).await {
        Ok(e) => e,
        Err(e) => return vec![format!("stored entries do not read back: {e}")],
    };
    let mut logged = std::collections::HashSet::new();
    let mut seq = 0;
    loop {
        match store.changes_since(seq, 5000).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                seq = page.last().map_or(seq, |c| c.seq);
                logged.extend(page.into_iter().map(|c| c.entry_id));
            }
            Err(e) => return vec![format!("the change log does not read back: {e}")],
        }
    }
    entries
        .iter()
        .filter(|e| !logged.contains(&e.id))
        .map(|e| format!("entry {} is stored but missing from the change log", e.id))
        .collect()
}
