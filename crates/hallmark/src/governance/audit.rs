//! `hallmark audit ...`: verify, checkpoint and export the audit chain.

use anyhow::{Context, bail};
use clap::Subcommand;
use hallmark_core::now_unix;
use hyper::Method;
use serde_json::{Value, json};

use super::when::parse_past;
use crate::Conn;
use crate::commands::{client, emit as print};

/// `hallmark audit ...`
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check the whole hash chain and its signed head; exits non-zero and
    /// names the first broken record.
    Verify {
        /// A checkpoint kept from `hallmark audit checkpoint` (repeatable): the
        /// chain must still hold what it signed, which shows a rewrite or a
        /// cut even by someone who holds the audit key now.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<std::path::PathBuf>,
    },
    /// Print the newest signed checkpoint of the chain (JSON, with the public
    /// key that checks it), for an auditor to keep outside Hallmark.
    Checkpoint,
    /// Write the audit records as JSON lines.
    Export {
        /// From: a duration ago (24h), unix seconds, or 2026-12-31T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        /// Until: a duration ago, unix seconds, or an RFC 3339 UTC time.
        #[arg(long)]
        until: Option<String>,
    },
}

/// `hallmark audit ...`
pub async fn audit(cmd: AuditCmd, conn: &Conn) -> anyhow::Result<()> {
    let c = client(conn)?;
    match cmd {
        AuditCmd::Checkpoint => {
            let v = c.json(Method::GET, "/v1/audit/checkpoint", None).await?;
            println!("{v}");
            Ok(())
        }
        AuditCmd::Verify { checkpoints } => {
            let v = if checkpoints.is_empty() {
                c.json(Method::GET, "/v1/audit/verify", None).await?
            } else {
                let mut kept = Vec::new();
                for p in &checkpoints {
                    let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
                    // A file holds one checkpoint, or several, one per line.
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        let cp: Value = serde_json::from_str(line)
                            .with_context(|| format!("{}: not a checkpoint (JSON, one per line)", p.display()))?;
                        kept.push(cp);
                    }
                }
                c.json(Method::POST, "/v1/audit/verify", Some(&json!({ "checkpoints": kept }))).await?
            };
            print(conn, &v, |v| match v.get("broken").filter(|b| !b.is_null()) {
                None => println!("audit chain verifies: {} records", v["records"]),
                Some(b) => {
                    println!("audit chain BROKEN at record {}: {}", b["seq"], b["problem"].as_str().unwrap_or(""))
                }
            })?;
            if let Some(b) = v.get("broken").filter(|b| !b.is_null()) {
                bail!("audit chain broken at record {}", b["seq"]);
            }
            Ok(())
        }
        AuditCmd::Export { since, until } => {
            let now = now_unix();
            let mut q = Vec::new();
            if let Some(s) = since {
                q.push(format!("since={}", parse_past(&s, now)?));
            }
            if let Some(u) = until {
                q.push(format!("until={}", parse_past(&u, now)?));
            }
            let path = if q.is_empty() { "/v1/audit".to_owned() } else { format!("/v1/audit?{}", q.join("&")) };
            let r = c.send(Method::GET, &path, None, None).await?;
            if !r.status.is_success() {
                r.json()?;
                bail!("audit export failed");
            }
            print!("{}", String::from_utf8_lossy(&r.body));
            Ok(())
        }
    }
}
