//! `hallmark exception ...`: ask for, approve, revoke and list exceptions.

use clap::Subcommand;
use hallmark_core::now_unix;
use hyper::Method;
use serde_json::{Value, json};

use super::when::parse_expiry;
use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};
use crate::table::{Table, text, time_rel};

/// `hallmark exception ...`
#[derive(Subcommand)]
pub enum ExceptionCmd {
    /// Ask for a recorded, expiring permission to break one rule.
    Request {
        /// The entry it applies to.
        #[arg(long)]
        entry: String,
        /// ttl_above_class_max or long_lived_certificate.
        #[arg(long)]
        rule: String,
        /// The rule's value, e.g. 48h.
        #[arg(long)]
        value: String,
        /// Why it is needed.
        #[arg(long)]
        justification: String,
        /// When it ends: a duration from now (48h), unix seconds, or 2026-12-31T00:00:00Z.
        #[arg(long)]
        expires: String,
    },
    /// Approve a pending exception (trust-admin, and not the requester).
    Approve {
        /// Exception id.
        id: String,
    },
    /// Revoke an exception now.
    Revoke {
        /// Exception id.
        id: String,
    },
    /// List exceptions.
    List {
        /// Only active (approved, unexpired) ones.
        #[arg(long, conflicts_with_all = ["expired", "pending"])]
        active: bool,
        /// Only expired ones.
        #[arg(long, conflicts_with = "pending")]
        expired: bool,
        /// Only those awaiting approval.
        #[arg(long)]
        pending: bool,
    },
}

fn print_exception(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    println!("Exception ID  : {}", s("id"));
    println!("Entry         : {}", s("entry_id"));
    println!("Rule          : {} = {}", s("rule"), s("value"));
    println!("Justification : {}", s("justification"));
    println!("Requested by  : {}", s("requested_by"));
    if let Some(a) = v["approved_by"].as_str() {
        println!("Approved by   : {a}");
    }
    if let Some(st) = v["state"].as_str() {
        println!("State         : {st}");
    }
    println!("Expires at    : {}", time_rel(v, "expires_at", now_unix()));
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or(""));
    }
}

/// `hallmark exception ...`
pub async fn exception(cmd: ExceptionCmd, conn: &Conn) -> anyhow::Result<()> {
    match cmd {
        ExceptionCmd::Request { entry, rule, value, justification, expires } => {
            let rule_parsed: hallmark_policy::ExceptionRule = rule.parse()?;
            rule_parsed.check_value(&value)?;
            let expires_at = parse_expiry(&expires, now_unix())?;
            let body = json!({ "entry_id": entry, "rule": rule, "value": value, "justification": justification, "expires_at": expires_at });
            let v = client(conn)?.json(Method::POST, "/v1/exceptions", Some(&body)).await?;
            print(conn, &v, print_exception)
        }
        ExceptionCmd::Approve { id } => {
            let v = client(conn)?.json(Method::POST, &format!("/v1/exceptions/{}/approve", encode(&id)), None).await?;
            print(conn, &v, print_exception)
        }
        ExceptionCmd::Revoke { id } => {
            let v = client(conn)?.json(Method::POST, &format!("/v1/exceptions/{}/revoke", encode(&id)), None).await?;
            print(conn, &v, print_exception)
        }
        ExceptionCmd::List { active, expired, pending } => {
            let state = match (active, expired, pending) {
                (true, _, _) => "active",
                (_, true, _) => "expired",
                (_, _, true) => "pending",
                _ => "all",
            };
            let v = client(conn)?.json(Method::GET, &format!("/v1/exceptions?state={state}"), None).await?;
            print(conn, &v, |v| {
                let now = now_unix();
                let mut t = Table::new(&[
                    "EXCEPTION ID",
                    "ENTRY",
                    "RULE",
                    "VALUE",
                    "STATE",
                    "EXPIRES",
                    "REQUESTED BY",
                    "APPROVED BY",
                ]);
                for x in v["exceptions"].as_array().into_iter().flatten() {
                    t.row(vec![
                        text(x, "id"),
                        text(x, "entry_id"),
                        text(x, "rule"),
                        text(x, "value"),
                        text(x, "state"),
                        time_rel(x, "expires_at", now),
                        text(x, "requested_by"),
                        text(x, "approved_by"),
                    ]);
                }
                t.print_or(&format!("no exceptions ({state})"));
            })
        }
    }
}
