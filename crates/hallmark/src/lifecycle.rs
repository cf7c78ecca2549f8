//! `hallmark revoke`, `hallmark ca ...` and `hallmark node list`: revocation
//! in one step, the signing authorities' lifecycle, and the nodes to ban.

use anyhow::bail;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use hallmark_core::now_unix;

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit};
use crate::table::{Table, text, time, time_rel};

/// `hallmark revoke`: exactly one target, and a reason.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(false))]
pub struct RevokeArgs {
    /// One X.509-SVID, by serial number (hex, as `credential list` shows it).
    #[arg(long, group = "target")]
    serial: Option<String>,
    /// One JWT-SVID or WIT-SVID, by its `jti`.
    #[arg(long, group = "target")]
    jti: Option<String>,
    /// An entry: it is never served again and its live credentials are revoked.
    #[arg(long, group = "target", value_name = "ENTRY_ID")]
    entry: Option<String>,
    /// Every entry of an owner, and their live credentials.
    #[arg(long, group = "target", value_name = "NAME")]
    owner: Option<String>,
    /// A node (agent SPIFFE ID): banned, and everything issued through it revoked.
    #[arg(long, group = "target", value_name = "AGENT_ID")]
    node: Option<String>,
    /// An AI-agent task: it ends, and every credential issued for it is revoked.
    #[arg(long, group = "target", value_name = "TASK_ID")]
    task: Option<String>,
    /// Every running task of an agent's entry, as `--task` (the entry stays).
    #[arg(long, group = "target", value_name = "ENTRY_ID")]
    agent_entry: Option<String>,
    /// Every live credential issued to a person (SCIM id or userName).
    #[arg(long, group = "target", value_name = "ID|USERNAME")]
    person: Option<String>,
    /// Every live credential of class `human` with this SPIFFE ID.
    #[arg(long, group = "target", value_name = "SPIFFE_ID")]
    human: Option<String>,
    /// Why (recorded in the inventory and the audit chain).
    #[arg(long)]
    reason: String,
}

/// `hallmark revoke ...`
pub async fn revoke(a: RevokeArgs, conn: &Conn) -> anyhow::Result<()> {
    if a.reason.trim().is_empty() {
        bail!("--reason must not be empty");
    }
    let mut body = json!({ "reason": a.reason });
    let targets = [
        ("serial", a.serial),
        ("jti", a.jti),
        ("entry", a.entry),
        ("owner", a.owner),
        ("node", a.node),
        ("task", a.task),
        ("agent_entry", a.agent_entry),
        ("person", a.person),
        ("human", a.human),
    ];
    for (k, v) in targets {
        if let (Some(v), Some(fields)) = (v, body.as_object_mut()) {
            fields.insert(k.to_owned(), json!(v));
        }
    }
    let v = client(conn)?.json(Method::POST, "/v1/revocations", Some(&body)).await?;
    emit(conn, &v, |v| {
        let list = |k: &str| v[k].as_array().map(Vec::len).unwrap_or(0);
        println!("Revoked {} {}", v["target"].as_str().unwrap_or(""), v["subject"].as_str().unwrap_or(""));
        if let Some(n) = v["node"].as_str() {
            println!("Node banned : {n}");
        }
        println!("Entries     : {}", list("entries"));
        if list("tasks") > 0 {
            println!("Tasks ended : {}", list("tasks"));
        }
        println!("Credentials : {}", list("credentials"));
        for c in v["credentials"].as_array().into_iter().flatten() {
            println!("  {}", c.as_str().unwrap_or(""));
        }
    })
}

/// `hallmark ca ...`
#[derive(Subcommand)]
pub enum CaCmd {
    /// List the signing authorities: the workload X.509 CA (`x509`), the JWT
    /// keys (`jwt`) and the human issuing authority (`human`, people's
    /// certificates from `hallmark login`): state, taint, validity, holder.
    Show,
    /// Create the next authority of a kind: published in the bundle, not yet signing.
    Prepare {
        /// x509, jwt or human.
        #[arg(long, default_value = "x509")]
        kind: String,
    },
    /// Make the prepared authority of a kind the one that signs; the current
    /// one stays in the bundle until it expires.
    Activate {
        /// x509, jwt or human.
        #[arg(long, default_value = "x509")]
        kind: String,
    },
    /// Mark a non-active authority tainted: agents re-issue everything it
    /// signed under the active one, at once.
    Taint {
        /// Authority id (from `ca show`).
        id: String,
    },
    /// Remove a tainted, non-active authority from the bundle: nothing it
    /// signed validates any more.
    Revoke {
        /// Authority id (from `ca show`).
        id: String,
    },
}

fn authority_table(list: &[Value]) {
    let now = now_unix();
    let mut t = Table::new(&["KIND", "ID", "STATE", "EXPIRES", "HELD BY"]);
    for a in list {
        let taint = if a["tainted_at"].is_null() { "" } else { ", tainted" };
        t.row(vec![
            text(a, "kind"),
            text(a, "id"),
            format!("{}{taint}", text(a, "state")),
            time_rel(a, "not_after", now),
            if a["held_here"].as_bool() == Some(true) { "this server" } else { "another server" }.into(),
        ]);
    }
    t.print_or("no authorities");
}

fn print_authority(a: &Value) {
    authority_table(std::slice::from_ref(a));
}

fn kind_body(kind: &str) -> anyhow::Result<Value> {
    if !matches!(kind, "x509" | "jwt" | "human") {
        bail!("unknown authority kind `{kind}` (x509, jwt, human)");
    }
    Ok(json!({ "kind": kind }))
}

/// `hallmark ca ...`
pub async fn ca(cmd: CaCmd, conn: &Conn) -> anyhow::Result<()> {
    let c = client(conn)?;
    let v = match cmd {
        CaCmd::Show => {
            let v = c.json(Method::GET, "/v1/authorities", None).await?;
            return emit(conn, &v, |v| {
                authority_table(v["authorities"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            });
        }
        CaCmd::Prepare { kind } => c.json(Method::POST, "/v1/authorities/prepare", Some(&kind_body(&kind)?)).await?,
        CaCmd::Activate { kind } => c.json(Method::POST, "/v1/authorities/activate", Some(&kind_body(&kind)?)).await?,
        CaCmd::Taint { id } => c.json(Method::POST, &format!("/v1/authorities/{}/taint", encode(&id)), None).await?,
        CaCmd::Revoke { id } => c.json(Method::POST, &format!("/v1/authorities/{}/revoke", encode(&id)), None).await?,
    };
    emit(conn, &v, print_authority)
}

/// `hallmark node ...`
#[derive(Subcommand)]
pub enum NodeCmd {
    /// List attested nodes (agents), banned or not.
    List,
    /// Lift a node's ban (`revoke --node`): its agent may connect and be
    /// served again. What the ban revoked stays revoked; workloads get new credentials.
    Unban {
        /// The node's agent ID.
        agent_id: String,
    },
}

/// `hallmark node ...`
pub async fn node(cmd: NodeCmd, conn: &Conn) -> anyhow::Result<()> {
    if let NodeCmd::Unban { agent_id } = cmd {
        let path = format!("/v1/nodes/{}/unban", encode(&agent_id));
        let v = client(conn)?.json(Method::POST, &path, None).await?;
        return emit(conn, &v, |v| {
            if v["was_banned"].as_bool() == Some(true) {
                println!("ban lifted: {agent_id} may connect again");
            } else {
                println!("{agent_id} was not banned; nothing changed");
            }
        });
    }
    let v = client(conn)?.json(Method::GET, "/v1/nodes", None).await?;
    emit(conn, &v, |v| {
        let now = now_unix();
        let mut t = Table::new(&[
            "AGENT ID",
            "ATTESTATION",
            "SELECTORS",
            "LAST ATTESTED",
            "RE-ATTESTS",
            "AGENT SVID EXPIRES",
            "STATE",
        ]);
        for n in v["nodes"].as_array().into_iter().flatten() {
            let state = if n["banned"].as_bool() == Some(true) {
                format!("banned: {}", text(n, "ban_reason"))
            } else {
                "active".into()
            };
            // `node:attestation:` repeats the ATTESTATION column.
            let selectors: Vec<&str> = n["selectors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|s| !s.starts_with("node:attestation:"))
                .collect();
            let due = if n["reattest_at"].is_i64() { time_rel(n, "reattest_at", now) } else { "-".into() };
            t.row(vec![
                text(n, "agent_id"),
                text(n, "attestation_type"),
                selectors.join(","),
                time_rel(n, "attested_at", now),
                due,
                time_rel(n, "not_after", now),
                state,
            ]);
        }
        t.print_or("no attested nodes");
    })
}

/// `hallmark revocation ...`
#[derive(Subcommand)]
pub enum RevocationCmd {
    /// List revoked credentials that have not expired yet (what agents refuse
    /// and CRLs list), newest last.
    List,
}

/// `hallmark revocation ...`
pub async fn revocation(cmd: RevocationCmd, conn: &Conn) -> anyhow::Result<()> {
    let RevocationCmd::List = cmd;
    let v = client(conn)?.json(Method::GET, "/v1/revocations", None).await?;
    emit(conn, &v, |v| {
        let now = now_unix();
        let mut t = Table::new(&["KIND", "ID", "REVOKED AT", "WOULD EXPIRE", "REASON"]);
        for r in v["revocations"].as_array().into_iter().flatten() {
            t.row(vec![
                text(r, "kind"),
                text(r, "id"),
                time(r, "at"),
                time_rel(r, "not_after", now),
                text(r, "reason"),
            ]);
        }
        t.print_or("no revoked credential is still unexpired");
    })
}
