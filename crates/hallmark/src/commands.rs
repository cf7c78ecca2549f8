//! The admin commands and the long-running `server` / `agent` commands.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use hallmark_core::{Selector, SpiffeId, Ttl};
use hyper::Method;
use serde_json::{Value, json};

use hallmark_core::time::rfc3339;

use crate::Conn;
use crate::client::{Client, encode};
use crate::table::{Table, text};

/// `hallmark entry ...`
#[derive(Subcommand)]
pub enum EntryCmd {
    /// Register a workload identity.
    Create(EntryFields),
    /// List entries.
    List {
        /// Only entries served by this agent.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Show one entry.
    Show {
        /// Entry id.
        id: String,
    },
    /// Explain why an entry's workloads were refused credentials: each
    /// recorded denial, newest first, with the policy or class rule that decided
    /// it (for a default deny: that no permit matched, and which were considered).
    Denials {
        /// Entry id.
        id: String,
    },
    /// Change an entry; flags not given keep their value. Repeated flags replace the whole list.
    Update {
        /// Entry id.
        id: String,
        #[command(flatten)]
        fields: EntryUpdate,
    },
    /// Delete an entry; agents drop its SVIDs within a second.
    Delete {
        /// Entry id.
        id: String,
    },
    /// Register many entries from a JSON file (an array of entries, each with
    /// the fields of `entry create`: spiffe_id, selectors, owner, parent_id, ...),
    /// 10 000 per transaction: each batch is registered whole or not at all.
    Import {
        /// The JSON file.
        file: std::path::PathBuf,
    },
}

/// Fields of `entry create`.
#[derive(clap::Args)]
pub struct EntryFields {
    /// SPIFFE ID to issue, e.g. spiffe://example.org/web.
    #[arg(long)]
    spiffe_id: String,
    /// TYPE:KEY:VALUE a workload must show, e.g. unix:uid:1000. Repeat for several (all must match).
    #[arg(long = "selector", required = true)]
    selectors: Vec<String>,
    /// TYPE:KEY:VALUE the parent's node must have proved at attestation, e.g.
    /// node:attestation:tpm, x509pop:subject:cn:db-1, tpm:ek:sha256:HEX,
    /// k8s_psat:cluster:prod. Repeat for several (all must hold); the entry is
    /// served only while they do.
    #[arg(long = "node-selector")]
    node_selectors: Vec<String>,
    /// SPIFFE ID of the agent that serves this entry (default under `up`: the local agent).
    #[arg(long)]
    parent: Option<String>,
    /// Accountable owner (team name).
    #[arg(long)]
    owner: String,
    /// Lifecycle class: machine (default), agent or human.
    #[arg(long)]
    class: Option<String>,
    /// X.509-SVID lifetime, e.g. 1h (server default when omitted).
    #[arg(long)]
    x509_ttl: Option<String>,
    /// JWT-SVID lifetime, e.g. 5m (server default when omitted).
    #[arg(long)]
    jwt_ttl: Option<String>,
    /// DNS SAN for the X.509-SVID. Repeatable.
    #[arg(long = "dns-name")]
    dns_names: Vec<String>,
    /// Hint that tells a workload's identities apart.
    #[arg(long)]
    hint: Option<String>,
    /// Attach a recovery path (only for --class human).
    #[arg(long)]
    recovery: bool,
    /// What the credentials belong to: none (default: the workload's evidence),
    /// process (the one process instance that asked; when it exits they are
    /// withdrawn and revoked, and a restarted process gets new ones), or task
    /// (as process, and only for processes of a running AI-agent task: `hallmark task run`).
    #[arg(long, value_parser = ["none", "process", "task"])]
    bind: Option<String>,
}

/// Fields of `entry update`.
#[derive(clap::Args)]
pub struct EntryUpdate {
    /// New SPIFFE ID.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// New selectors (replace all workload selectors).
    #[arg(long = "selector")]
    selectors: Vec<String>,
    /// New node selectors (replace all node selectors).
    #[arg(long = "node-selector")]
    node_selectors: Vec<String>,
    /// New parent agent ID.
    #[arg(long)]
    parent: Option<String>,
    /// New owner.
    #[arg(long)]
    owner: Option<String>,
    /// New class.
    #[arg(long)]
    class: Option<String>,
    /// New X.509 TTL.
    #[arg(long)]
    x509_ttl: Option<String>,
    /// New JWT TTL.
    #[arg(long)]
    jwt_ttl: Option<String>,
    /// New DNS names (replace all).
    #[arg(long = "dns-name")]
    dns_names: Vec<String>,
    /// New hint (empty string removes it).
    #[arg(long)]
    hint: Option<String>,
    /// New bind: none, process or task.
    #[arg(long, value_parser = ["none", "process", "task"])]
    bind: Option<String>,
}

/// `hallmark token ...`
#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a single-use join token for an agent.
    Create {
        /// How long the token is valid, e.g. 10m.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List join tokens: the agent ID each attests as and whether it is
    /// unused, used or expired (never the token itself).
    List,
    /// Revoke an unused join token, so no node can attest with it.
    Revoke {
        /// The token's id (`token list`) or the agent ID it would attest as.
        id: String,
    },
}

/// `hallmark bundle ...`
#[derive(Subcommand)]
pub enum BundleCmd {
    /// Print the trust bundle.
    Show {
        /// pem (X.509 authorities) or jwks (the SPIFFE bundle document).
        #[arg(long, default_value = "pem")]
        format: String,
    },
}

/// Checks flag values locally so a typo gets a one-line error before any network call.
fn precheck(
    spiffe_id: Option<&str>,
    parent: Option<&str>,
    selectors: &[String],
    ttls: &[(&str, &Option<String>)],
) -> anyhow::Result<()> {
    if let Some(id) = spiffe_id {
        SpiffeId::new(id)?;
    }
    if let Some(p) = parent {
        SpiffeId::new(p)?;
    }
    for s in selectors {
        s.parse::<Selector>()?;
    }
    for (flag, v) in ttls {
        if let Some(v) = v {
            Ttl::parse(v).with_context(|| format!("--{flag}"))?;
        }
    }
    Ok(())
}

/// For `entry update`: the new selectors of one kind (node or workload)
/// when given, else the entry's current ones of that kind.
fn kept_or_new(cur: &Value, node: bool, new: &[String]) -> Value {
    if !new.is_empty() {
        return json!(new);
    }
    let current = cur.get("selectors").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
    json!(current.filter(|s| s.parse::<Selector>().is_ok_and(|s| s.is_node()) == node).collect::<Vec<_>>())
}

fn print_entry(e: &Value) {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let n = |k: &str| e.get(k).and_then(Value::as_u64).unwrap_or(0);
    println!("Entry ID     : {}", s("id"));
    println!("SPIFFE ID    : {}", s("spiffe_id"));
    println!("Parent ID    : {}", s("parent_id"));
    println!("Owner        : {}", s("owner"));
    println!("Class        : {}", s("class"));
    println!("Bind         : {}", bind_text(e));
    println!("X509 TTL     : {}", hallmark_core::format_duration(std::time::Duration::from_secs(n("x509_ttl"))));
    println!("JWT TTL      : {}", hallmark_core::format_duration(std::time::Duration::from_secs(n("jwt_ttl"))));
    for sel in e.get("selectors").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let node = sel.parse::<Selector>().is_ok_and(|s| s.is_node());
        println!("{}: {sel}", if node { "Node selector" } else { "Selector     " });
    }
    for d in e.get("dns_names").and_then(Value::as_array).into_iter().flatten() {
        println!("DNS name     : {}", d.as_str().unwrap_or(""));
    }
    if let Some(h) = e.get("hint").and_then(Value::as_str) {
        println!("Hint         : {h}");
    }
    println!("Revision     : {}", n("revision"));
    println!("Created      : {}", crate::table::time(e, "created_at"));
    match e.get("revoked_at").and_then(Value::as_i64) {
        None => println!("State        : active"),
        Some(at) => {
            println!("State        : REVOKED at {} (kept as a record; never served or issued again)", rfc3339(at));
            println!(
                "               to register {} again: hallmark entry delete {}, then entry create",
                s("spiffe_id"),
                s("id")
            );
        }
    }
}

/// What an entry's credentials belong to, as `entry show` and `list` say it.
fn bind_text(e: &Value) -> &'static str {
    match e.get("bind").and_then(Value::as_str) {
        Some("process") => "process (credentials end with their process)",
        _ => "none",
    }
}

fn entry_state(e: &Value) -> String {
    match e.get("revoked_at").and_then(Value::as_i64) {
        None => "active".to_owned(),
        Some(at) => format!("revoked {}", rfc3339(at)),
    }
}

fn print_entry_table(list: &[Value]) {
    let mut t =
        Table::new(&["ENTRY ID", "SPIFFE ID", "OWNER", "CLASS", "BIND", "X509 TTL", "JWT TTL", "STATE", "SELECTORS"]);
    for e in list {
        let ttl = |k: &str| hallmark_core::format_duration(std::time::Duration::from_secs(e[k].as_u64().unwrap_or(0)));
        let selectors: Vec<&str> = e["selectors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        t.row(vec![
            text(e, "id"),
            text(e, "spiffe_id"),
            text(e, "owner"),
            text(e, "class"),
            text(e, "bind"),
            ttl("x509_ttl"),
            ttl("jwt_ttl"),
            entry_state(e),
            selectors.join(","),
        ]);
    }
    t.print_or("no entries");
}

/// The admin API client for `conn`.
pub(crate) fn client(conn: &Conn) -> anyhow::Result<Client> {
    Client::new(conn.server.clone(), conn.token.clone())
}

/// Prints `v` as JSON with `--json` (unix seconds, each with an RFC 3339
/// twin), else as `human` writes it.
pub(crate) fn emit(conn: &Conn, v: &Value, human: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&crate::table::with_rfc3339(v))?);
    } else {
        human(v);
    }
    Ok(())
}

/// `hallmark entry ...`
pub async fn entry(cmd: EntryCmd, conn: &Conn) -> anyhow::Result<()> {
    // Validate flags before needing a server, so mistakes are caught first.
    match &cmd {
        EntryCmd::Create(f) => precheck(
            Some(&f.spiffe_id),
            f.parent.as_deref(),
            &[f.selectors.as_slice(), f.node_selectors.as_slice()].concat(),
            &[("x509-ttl", &f.x509_ttl), ("jwt-ttl", &f.jwt_ttl)],
        )?,
        EntryCmd::Update { fields: f, .. } => precheck(
            f.spiffe_id.as_deref(),
            f.parent.as_deref(),
            &[f.selectors.as_slice(), f.node_selectors.as_slice()].concat(),
            &[("x509-ttl", &f.x509_ttl), ("jwt-ttl", &f.jwt_ttl)],
        )?,
        _ => {}
    }
    let c = client(conn)?;
    match cmd {
        EntryCmd::Create(f) => {
            let mut body = json!({
                "spiffe_id": f.spiffe_id,
                "selectors": f.selectors,
                "node_selectors": f.node_selectors,
                "owner": f.owner,
                "dns_names": f.dns_names,
            });
            for (k, v) in [
                ("parent_id", f.parent),
                ("class", f.class),
                ("x509_ttl", f.x509_ttl),
                ("jwt_ttl", f.jwt_ttl),
                ("hint", f.hint),
                ("bind", f.bind),
            ] {
                if let (Some(v), Some(fields)) = (v, body.as_object_mut()) {
                    fields.insert(k.to_owned(), json!(v));
                }
            }
            if let (true, Some(fields)) = (f.recovery, body.as_object_mut()) {
                fields.insert("recovery".to_owned(), json!(true));
            }
            let e = c.json(Method::POST, "/v1/entries", Some(&body)).await?;
            emit(conn, &e, print_entry)
        }
        EntryCmd::List { parent } => {
            let path = match parent {
                Some(p) => format!("/v1/entries?parent={}", encode(&p)),
                None => "/v1/entries".to_owned(),
            };
            let v = c.json(Method::GET, &path, None).await?;
            emit(conn, &v, |v| {
                print_entry_table(v.get("entries").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]))
            })
        }
        EntryCmd::Show { id } => {
            let e = c.json(Method::GET, &format!("/v1/entries/{}", encode(&id)), None).await?;
            emit(conn, &e, print_entry)
        }
        EntryCmd::Denials { id } => {
            let v = c.json(Method::GET, &format!("/v1/entries/{}/denials", encode(&id)), None).await?;
            emit(conn, &v, |v| {
                let mut t = Table::new(&["TIME", "ACTION", "DECIDED BY", "WHY"]);
                for d in v["denials"].as_array().into_iter().flatten() {
                    let ids: Vec<&str> =
                        d["policy_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    let by = if ids.is_empty() { "(no policy: default deny)".to_owned() } else { ids.join(", ") };
                    t.row(vec![crate::table::time(d, "at"), text(d, "action"), by, text(d, "reason")]);
                }
                t.print_or(&format!("no denials recorded for entry {id}"));
            })
        }
        EntryCmd::Update { id, fields: f } => {
            let path = format!("/v1/entries/{}", encode(&id));
            let cur = c.json(Method::GET, &path, None).await?;
            let revision = cur.get("revision").and_then(Value::as_u64);
            let secs = |k: &str| cur.get(k).and_then(Value::as_u64).map(|s| format!("{s}s"));
            let mut body = json!({
                "spiffe_id": f.spiffe_id.clone().or_else(|| cur.get("spiffe_id").and_then(Value::as_str).map(str::to_owned)),
                "parent_id": f.parent.clone().or_else(|| cur.get("parent_id").and_then(Value::as_str).map(str::to_owned)),
                "selectors": kept_or_new(&cur, false, &f.selectors),
                "node_selectors": kept_or_new(&cur, true, &f.node_selectors),
                "owner": f.owner.clone().or_else(|| cur.get("owner").and_then(Value::as_str).map(str::to_owned)),
                "class": f.class.clone().or_else(|| cur.get("class").and_then(Value::as_str).map(str::to_owned)),
                "x509_ttl": f.x509_ttl.clone().or_else(|| secs("x509_ttl")),
                "jwt_ttl": f.jwt_ttl.clone().or_else(|| secs("jwt_ttl")),
                "dns_names": if f.dns_names.is_empty() { cur.get("dns_names").cloned().unwrap_or(json!([])) } else { json!(f.dns_names) },
                "bind": f.bind.clone().or_else(|| cur.get("bind").and_then(Value::as_str).map(str::to_owned)),
            });
            match f.hint.or_else(|| cur.get("hint").and_then(Value::as_str).map(str::to_owned)) {
                Some(h) if !h.is_empty() => {
                    if let Some(fields) = body.as_object_mut() {
                        fields.insert("hint".to_owned(), json!(h));
                    }
                }
                _ => {}
            }
            let e = c.send(Method::PUT, &path, Some(&body), revision).await?.json()?;
            emit(conn, &e, print_entry)
        }
        EntryCmd::Import { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            let doc: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
            let list = doc.get("entries").unwrap_or(&doc).as_array().cloned().with_context(|| {
                format!("{}: expected an array of entries (or {{\"entries\": [...]}})", file.display())
            })?;
            let mut created = Vec::new();
            for (n, chunk) in list.chunks(10_000).enumerate() {
                let v =
                    c.json(Method::POST, "/v1/entries/batch", Some(&json!({ "entries": chunk }))).await.with_context(
                        || format!("batch {} (entries {} to {})", n + 1, n * 10_000, n * 10_000 + chunk.len() - 1),
                    )?;
                created.extend(v.get("entries").and_then(Value::as_array).cloned().unwrap_or_default());
            }
            emit(conn, &json!({ "entries": created }), |v| {
                println!("Registered {} entries", v["entries"].as_array().map(Vec::len).unwrap_or(0));
            })
        }
        EntryCmd::Delete { id } => {
            let e = c.json(Method::DELETE, &format!("/v1/entries/{}", encode(&id)), None).await?;
            emit(conn, &e, |e| {
                let revoked = e["revoked_credentials"].as_array().map(Vec::len).unwrap_or(0);
                println!(
                    "Deleted entry {} ({}); revoked {revoked} live credential{}",
                    text(e, "id"),
                    text(e, "spiffe_id"),
                    if revoked == 1 { "" } else { "s" }
                );
            })
        }
    }
}

/// `hallmark token ...`
pub async fn token(cmd: TokenCmd, conn: &Conn) -> anyhow::Result<()> {
    let ttl = match cmd {
        TokenCmd::Create { ttl } => ttl,
        TokenCmd::List => {
            let v = client(conn)?.json(Method::GET, "/v1/join-tokens", None).await?;
            return emit(conn, &v, |v| {
                let now = hallmark_core::now_unix();
                let mut t = Table::new(&["ID", "STATE", "EXPIRES", "AGENT ID"]);
                for j in v["join_tokens"].as_array().into_iter().flatten() {
                    t.row(vec![
                        text(j, "id"),
                        text(j, "state"),
                        crate::table::time_rel(j, "expires_at", now),
                        text(j, "agent_id"),
                    ]);
                }
                t.print_or("no join tokens");
            });
        }
        TokenCmd::Revoke { id } => {
            let v = client(conn)?.json(Method::DELETE, &format!("/v1/join-tokens/{}", encode(&id)), None).await?;
            return emit(conn, &v, |v| println!("join token {} revoked", text(v, "id")));
        }
    };
    if let Some(t) = &ttl {
        Ttl::parse(t).context("--ttl")?;
    }
    let c = client(conn)?;
    let body = match ttl {
        Some(t) => json!({ "ttl": t }),
        None => json!({}),
    };
    let v = c.json(Method::POST, "/v1/join-tokens", Some(&body)).await?;
    emit(conn, &v, |v| {
        println!("Agent ID : {}", v.get("agent_id").and_then(Value::as_str).unwrap_or(""));
        println!("Expires  : {}", crate::table::time_rel(v, "expires_at", hallmark_core::now_unix()));
        println!("{}", v.get("token").and_then(Value::as_str).unwrap_or(""));
    })
}

/// `hallmark bundle ...`
pub async fn bundle(cmd: BundleCmd, conn: &Conn) -> anyhow::Result<()> {
    let BundleCmd::Show { format } = cmd;
    if !matches!(format.as_str(), "pem" | "jwks") {
        bail!("unknown bundle format `{format}` (pem, jwks)");
    }
    let c = client(conn)?;
    let r = c.send(Method::GET, &format!("/v1/bundle?format={format}"), None, None).await?;
    if !r.status.is_success() {
        r.json()?;
        bail!("bundle request failed");
    }
    print!("{}", String::from_utf8_lossy(&r.body));
    if format == "jwks" {
        println!();
    }
    Ok(())
}

/// The `HALLMARK_*` environment, for configuration overrides.
pub(crate) fn env_map() -> HashMap<String, String> {
    std::env::vars().filter(|(k, _)| k.starts_with("HALLMARK_")).collect()
}

fn read_config(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))
}

/// `hallmark server --config FILE`
pub async fn run_server(config: &Path) -> anyhow::Result<()> {
    let text = read_config(config)?;
    let settings = hallmark_server::config::ServerConfig::parse(&text, &env_map())
        .and_then(|c| c.validate())
        .with_context(|| config.display().to_string())?;
    let token_path = settings.data_dir.join("admin-token");
    // An exposed admin token stops the start before any listener opens.
    hallmark_ca::keys::refuse_exposed_secret_file(&token_path)?;
    let running = start_server(settings).await?;
    running.state.ensure_admin_token(&token_path).await?;
    println!("agent API: {}", running.agent_addr);
    println!("admin API: http://{}", running.admin_addr);
    println!("admin token: {}", token_path.display());
    tokio::select! {
        r = running.wait() => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}

#[cfg(feature = "bench-baseline")]
async fn start_server(
    settings: hallmark_server::config::ServerSettings,
) -> Result<hallmark_server::RunningServer, hallmark_server::ServerError> {
    if std::env::var("HALLMARK_BENCH_NO_RECORD").is_ok_and(|v| v == "1") {
        tracing::warn!("benchmark baseline: recording NOTHING in the audit chain or inventory");
        return hallmark_server::start_without_recording(settings).await;
    }
    hallmark_server::start(settings).await
}

#[cfg(not(feature = "bench-baseline"))]
async fn start_server(
    settings: hallmark_server::config::ServerSettings,
) -> Result<hallmark_server::RunningServer, hallmark_server::ServerError> {
    hallmark_server::start(settings).await
}

/// The agent configuration file at `config`, read and checked.
pub fn agent_settings(config: &Path) -> anyhow::Result<hallmark_agent::config::AgentSettings> {
    let text = read_config(config)?;
    hallmark_agent::config::AgentConfig::parse(&text, &env_map())
        .and_then(|c| c.validate())
        .with_context(|| config.display().to_string())
}

/// `hallmark agent --config FILE`
pub async fn run_agent(config: &Path) -> anyhow::Result<()> {
    let settings = agent_settings(config)?;
    let running = hallmark_agent::start(settings).await?;
    println!("SPIFFE_ENDPOINT_SOCKET=unix://{}", running.socket_path.display());
    tokio::select! {
        r = running.wait() => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}
