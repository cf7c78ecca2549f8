//! `hallmark admin token ...`: named admin identities and their tokens.

use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};

/// `hallmark admin ...`
#[derive(Subcommand)]
pub enum AdminCmd {
    /// Manage admin API tokens.
    #[command(subcommand)]
    Token(AdminTokenCmd),
}

/// `hallmark admin token ...`
#[derive(Subcommand)]
pub enum AdminTokenCmd {
    /// Create a named admin identity with a role; prints its token on the last line.
    Create {
        /// trust-admin, operator, auditor, scim (SCIM provisioning only), or owner:NAME.
        #[arg(long)]
        role: String,
        /// A unique name for the identity (shown in audit and approvals).
        #[arg(long)]
        name: String,
        /// How long the token is valid (default 90d, at most 366d).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List admin identities: role, creator, expiry and state (never tokens).
    List,
    /// Revoke an admin identity's token: refused from now on.
    Revoke {
        /// The identity's name.
        name: String,
    },
    /// Give an identity a new token, refusing the old one from now on; prints
    /// the new token on the last line. `rotate bootstrap` also rewrites the
    /// server's bootstrap token file (and so `hallmark up`'s env).
    Rotate {
        /// The identity's name.
        name: String,
    },
}

/// `hallmark admin ...`
pub async fn admin(cmd: AdminCmd, conn: &Conn) -> anyhow::Result<()> {
    let AdminCmd::Token(cmd) = cmd;
    let c = client(conn)?;
    let print_token = |v: &Value| {
        println!("Name    : {}", v["name"].as_str().unwrap_or(""));
        println!("Role    : {}", v["role"].as_str().unwrap_or(""));
        if let Some(t) = v["expires_at"].as_i64() {
            println!("Expires : {t}");
        }
        if let Some(f) = v["file"].as_str() {
            println!("File    : {f}");
        }
        println!("{}", v["token"].as_str().unwrap_or(""));
    };
    match cmd {
        AdminTokenCmd::Create { role, name, ttl } => {
            let body = json!({ "name": name, "role": role, "ttl": ttl });
            let v = c.json(Method::POST, "/v1/admin-tokens", Some(&body)).await?;
            print(conn, &v, print_token)
        }
        AdminTokenCmd::List => {
            let v = c.json(Method::GET, "/v1/admin-tokens", None).await?;
            print(conn, &v, |v| {
                println!("NAME\tROLE\tSTATE\tCREATED BY\tEXPIRES");
                for t in v["admin_tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        t["name"].as_str().unwrap_or(""),
                        t["role"].as_str().unwrap_or(""),
                        t["state"].as_str().unwrap_or(""),
                        t["created_by"].as_str().unwrap_or("-"),
                        t["expires_at"].as_i64().map_or("never".to_owned(), |e| e.to_string())
                    );
                }
            })
        }
        AdminTokenCmd::Revoke { name } => {
            let v = c.json(Method::POST, &format!("/v1/admin-tokens/{}/revoke", encode(&name)), None).await?;
            print(conn, &v, |v| println!("revoked {} token(s) of {}", v["revoked"], v["name"].as_str().unwrap_or("")))
        }
        AdminTokenCmd::Rotate { name } => {
            let v = c.json(Method::POST, &format!("/v1/admin-tokens/{}/rotate", encode(&name)), None).await?;
            print(conn, &v, print_token)
        }
    }
}
