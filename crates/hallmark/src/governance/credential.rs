//! `hallmark credential ...`: the inventory of issued credentials.

use clap::Subcommand;
use hallmark_core::{now_unix, parse_duration};
use hyper::Method;

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};
use crate::table::{Table, text, time_rel};

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
    },
    /// Show one credential: where it came from, its lifetime and state (a
    /// revoked one with its reason, e.g. `ended with its process`).
    Show {
        /// X.509 serial (hex) or JWT jti.
        id: String,
    },
}

/// `hallmark credential ...`
pub async fn credential(cmd: CredentialCmd, conn: &Conn) -> anyhow::Result<()> {
    let (entry, owner, node, expiring_within, live) = match cmd {
        CredentialCmd::List { entry, owner, node, expiring_within, live } => {
            (entry, owner, node, expiring_within, live)
        }
        CredentialCmd::Show { id } => return show(&id, conn).await,
    };
    let mut q = Vec::new();
    for (k, v) in [("entry", entry), ("owner", owner), ("node", node)] {
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
        for c in v["credentials"].as_array().into_iter().flatten() {
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
        t.print_or("no credentials");
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

/// `hallmark credential show ID`
async fn show(id: &str, conn: &Conn) -> anyhow::Result<()> {
    let v = client(conn)?.json(Method::GET, &format!("/v1/credentials?id={}", encode(id)), None).await?;
    let Some(c) = v.get("credentials").and_then(serde_json::Value::as_array).and_then(|l| l.first()).cloned() else {
        anyhow::bail!("credential `{id}` is not in the inventory");
    };
    print(conn, &c, |c| {
        let now = now_unix();
        for (label, value) in [
            ("Kind", text(c, "kind")),
            ("Serial / jti", text(c, "id")),
            ("SPIFFE ID", text(c, "spiffe_id")),
            ("Entry", text(c, "entry_id")),
            ("Owner", text(c, "owner")),
            ("Class", text(c, "class")),
            ("Node", text(c, "node_id")),
            ("Audience", text(c, "audience")),
            ("Issued", crate::table::time(c, "issued_at")),
            ("Expires", time_rel(c, "not_after", now)),
            ("State", state(c, now)),
            ("Revoked", crate::table::time(c, "revoked_at")),
            ("Delivered to", text(c, "delivered_to")),
        ] {
            println!("{label:<13}: {value}");
        }
    })
}
