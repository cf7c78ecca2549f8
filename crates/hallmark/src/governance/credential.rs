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
}

/// `hallmark credential ...`
pub async fn credential(cmd: CredentialCmd, conn: &Conn) -> anyhow::Result<()> {
    let CredentialCmd::List { entry, owner, node, expiring_within, live } = cmd;
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
            let na = c["not_after"].as_i64().unwrap_or(0);
            let state = if !c["revoked_at"].is_null() {
                format!("revoked: {}", text(c, "revoke_reason"))
            } else if na <= now {
                "expired".into()
            } else {
                "live".into()
            };
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
