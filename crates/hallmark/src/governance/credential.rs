//! `hallmark credential ...`: the inventory of issued credentials.

use clap::Subcommand;
use hallmark_core::{now_unix, parse_duration};
use hyper::Method;
use serde_json::Value;

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};
use crate::table::{Table, text, time, time_rel};

/// `hallmark credential ...`
#[derive(Subcommand)]
pub enum CredentialCmd {
    /// List issued credentials (X.509 serials and JWT jtis), soonest expiry first:
    /// kind, id, SPIFFE ID, owner, node, expiry, state, and where the holder
    /// reported delivering it (`delivered_to=files:DIR` from `hallmark helper`, else `-`).
    List {
        /// Only this entry.
        #[arg(long)]
        entry: Option<String>,
        /// Only this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only issued through this agent (SPIFFE ID).
        #[arg(long)]
        node: Option<String>,
        /// Only those expiring within this duration (e.g. 24h).
        #[arg(long)]
        expiring_within: Option<String>,
        /// Only unexpired, unrevoked credentials.
        #[arg(long)]
        live: bool,
        /// Only those issued for this AI-agent task.
        #[arg(long, value_name = "TASK_ID")]
        task: Option<String>,
    },
    /// Show one credential and the workload evidence it was issued on: which
    /// executable (its SHA-256 and path), as which user and groups, in which
    /// process (PID and start time).
    Show {
        /// The X.509-SVID serial (hex) or the JWT-SVID jti.
        id: String,
    },
}

/// `hallmark credential ...`
pub async fn credential(cmd: CredentialCmd, conn: &Conn) -> anyhow::Result<()> {
    match cmd {
        CredentialCmd::List { entry, owner, node, expiring_within, live, task } => {
            list(conn, ListFilter { entry, owner, node, expiring_within, live, task }).await
        }
        CredentialCmd::Show { id } => show(conn, &id).await,
    }
}

/// `hallmark credential show ID`
async fn show(conn: &Conn, id: &str) -> anyhow::Result<()> {
    let v = client(conn)?.json(Method::GET, &format!("/v1/credentials/{}", encode(id)), None).await?;
    print(conn, &v, |v| {
        let now = now_unix();
        let c = &v["credential"];
        let line = |label: &str, value: String| println!("{label:<15}: {value}");
        line("Kind", text(c, "kind"));
        line("Serial / jti", text(c, "id"));
        line("SPIFFE ID", text(c, "spiffe_id"));
        if !c["audience"].is_null() {
            line("Audience", text(c, "audience"));
        }
        line("Entry", text(c, "entry_id"));
        line("Owner", text(c, "owner"));
        line("Class", text(c, "class"));
        line("Node", text(c, "node_id"));
        let n = &v["node"];
        if n.is_object() {
            let selectors: Vec<&str> =
                n["selectors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            line("  attestation", text(n, "attestation_type"));
            line("  node selectors", selectors.join(", "));
            line("  last attested", time_rel(n, "attested_at", now));
            if n["banned"].as_bool() == Some(true) {
                line("  BANNED", text(n, "ban_reason"));
            }
        }
        line("Issued", time_rel(c, "issued_at", now));
        line("Expires", time_rel(c, "not_after", now));
        if !c["revoked_at"].is_null() {
            line("Revoked", format!("{} ({})", time_rel(c, "revoked_at", now), text(c, "revoke_reason")));
        }
        line("Policy version", text(c, "policy_version"));
        line("Authority", text(c, "authority_id"));
        line("Audit record", text(c, "audit_seq"));
        if !c["delivered_to"].is_null() {
            line("Delivered to", format!("{} at {}", text(c, "delivered_to"), time_rel(c, "delivered_at", now)));
        }
        line("Evidence", text(c, "evidence_digest"));
        let e = &v["evidence"];
        for s in e["selectors"].as_array().into_iter().flatten() {
            line("  selector", s.as_str().unwrap_or_default().to_owned());
        }
        let p = &e["process"];
        if p.is_object() {
            line("  pid", text(p, "pid"));
            line("  started", format!("{} ({} clock ticks after boot)", time(p, "started_at"), text(p, "start_ticks")));
        } else if e.is_object() {
            line("  process", "not reported by the agent".into());
        }
        if let Some(err) = v["evidence_error"].as_str() {
            line("  NOT SHOWN", format!("{err}; run `hallmark audit verify`"));
        } else if e.is_null() {
            line("  selectors", "not stored (issued before evidence sets were kept)".into());
        }
    })
}

/// `hallmark credential list ...`
/// What `credential list` filters on.
struct ListFilter {
    entry: Option<String>,
    owner: Option<String>,
    node: Option<String>,
    expiring_within: Option<String>,
    live: bool,
    task: Option<String>,
}

async fn list(conn: &Conn, f: ListFilter) -> anyhow::Result<()> {
    let ListFilter { entry, owner, node, expiring_within, live, task } = f;
    let mut q = Vec::new();
    for (k, v) in [("entry", entry), ("owner", owner), ("node", node), ("task", task)] {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode(&v)));
        }
    }
    if let Some(w) = expiring_within {
        let d = parse_duration(&w).map_err(|e| anyhow::anyhow!("--expiring-within: {e}"))?;
        q.push(format!("expiring_within={}", d.as_secs()));
    }
    if live {
        q.push("live=true".into());
    }
    let path = if q.is_empty() { "/v1/credentials".to_owned() } else { format!("/v1/credentials?{}", q.join("&")) };
    let v = client(conn)?.json(Method::GET, &path, None).await?;
    print(conn, &v, |v| {
        let now = now_unix();
        let all: Vec<&Value> = v["credentials"].as_array().into_iter().flatten().collect();
        // Two tracks, two sections: workloads (machines and AI agents,
        // issued on attestation through an agent) and people (issued on an
        // OpenID Connect login, or a break-glass grant).
        let (people, workloads): (Vec<&Value>, Vec<&Value>) =
            all.into_iter().partition(|c| c["class"].as_str() == Some("human"));
        let mut t = Table::new(&[
            "KIND",
            "SERIAL / JTI",
            "SPIFFE ID",
            "AUDIENCE",
            "OWNER",
            "EXPIRES",
            "STATE",
            "NODE",
            "DELIVERED TO",
        ]);
        for c in &workloads {
            let state = state(c, now);
            t.row(vec![
                text(c, "kind"),
                text(c, "id"),
                text(c, "spiffe_id"),
                text(c, "audience"),
                text(c, "owner"),
                time_rel(c, "not_after", now),
                state,
                text(c, "node_id"),
                text(c, "delivered_to"),
            ]);
        }
        println!("Workloads (machines and AI agents; approved by attestation and policy):");
        t.print_or("  no credentials");
        if !people.is_empty() {
            println!();
            println!(
                "People (approved by an OpenID Connect login and policy; `hallmark report people` shows break-glass):"
            );
            let mut p = Table::new(&["SERIAL", "SPIFFE ID", "PERSON", "EXPIRES", "STATE"]);
            for c in &people {
                p.row(vec![
                    text(c, "id"),
                    text(c, "spiffe_id"),
                    text(c, "person_id"),
                    time_rel(c, "not_after", now),
                    state(c, now),
                ]);
            }
            p.print_or("  none");
        }
    })
}

/// A credential's state as the inventory shows it: live, expired, or revoked with its reason.
fn state(c: &serde_json::Value, now: i64) -> String {
    if !c["revoked_at"].is_null() {
        format!("revoked: {}", text(c, "revoke_reason"))
    } else if c["not_after"].as_i64().unwrap_or(0) <= now {
        "expired".into()
    } else {
        "live".into()
    }
}
