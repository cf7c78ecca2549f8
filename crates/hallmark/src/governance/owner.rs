//! `hallmark owner ...`: accountable owners, their scopes and their entries.

use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};
use crate::table::{Table, text};

/// `hallmark owner ...`
#[derive(Subcommand)]
pub enum OwnerCmd {
    /// Register an accountable owner (a team).
    Create {
        /// Unique name.
        name: String,
        /// Accountable contact (email).
        #[arg(long)]
        contact: String,
        /// What the team is.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        scopes: ScopeArgs,
    },
    /// Set an owner's SPIFFE-ID path scopes and nodes, replacing the old ones
    /// (trust-admin). Entries already registered are not touched.
    Update {
        /// Owner name.
        name: String,
        #[command(flatten)]
        scopes: ScopeArgs,
    },
    /// List owners.
    List,
    /// Show one owner and how many entries it has.
    Show {
        /// Owner name.
        name: String,
    },
    /// Deactivate an owner: its entries become orphans until transferred.
    Deactivate {
        /// Owner name.
        name: String,
    },
    /// Move every entry of an owner to another, active owner.
    Transfer {
        /// Current owner.
        name: String,
        /// New owner.
        #[arg(long)]
        to: String,
    },
    /// Link an owner to the person accountable for it (provisioned over
    /// SCIM). When that person leaves, the owner's machines keep their
    /// identities and `report orphans` lists them as "owner left" until
    /// transferred.
    #[command(group = clap::ArgGroup::new("link").required(true).multiple(false))]
    Link {
        /// Owner name.
        name: String,
        /// The person: SCIM id or userName.
        #[arg(long, group = "link", value_name = "ID|USERNAME")]
        person: Option<String>,
        /// Remove the link.
        #[arg(long, group = "link")]
        unlink: bool,
    },
}

/// What an owner may register (set by a trust-admin).
#[derive(clap::Args)]
pub struct ScopeArgs {
    /// A SPIFFE-ID path its entries lie under, e.g. `/billing/` (repeatable).
    /// An `owner:NAME` token may register only under these; `/` is every path.
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    /// A node its entries may name as parent: an agent's SPIFFE ID, a prefix
    /// ending in `/*`, or `*` for any (repeatable).
    #[arg(long = "node", value_name = "AGENT_ID")]
    nodes: Vec<String>,
}

fn print_owner(v: &Value) {
    println!("Owner       : {}", v["name"].as_str().unwrap_or(""));
    println!("Contact     : {}", v["contact"].as_str().unwrap_or(""));
    if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
        println!("Description : {d}");
    }
    println!("Active      : {}", v["active"]);
    for (label, key) in [("Paths       : ", "paths"), ("Nodes       : ", "nodes")] {
        let list: Vec<&str> = v[key].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if !list.is_empty() {
            println!("{label}{}", list.join(", "));
        }
    }
    if let Some(p) = v["person"].as_str() {
        let left = if v["person_left"].as_bool() == Some(true) { " (left: owner left)" } else { "" };
        println!("Person      : {} ({p}){left}", v["person_user_name"].as_str().unwrap_or(""));
    }
    if let Some(n) = v["entries"].as_u64() {
        println!("Entries     : {n}");
    }
}

/// `hallmark owner ...`
pub async fn owner(cmd: OwnerCmd, conn: &Conn) -> anyhow::Result<()> {
    let c = client(conn)?;
    match cmd {
        OwnerCmd::Create { name, contact, description, scopes } => {
            let body = json!({ "name": name, "contact": contact, "description": description,
                "paths": scopes.paths, "nodes": scopes.nodes });
            let v = c.json(Method::POST, "/v1/owners", Some(&body)).await?;
            print(conn, &v, print_owner)
        }
        OwnerCmd::Update { name, scopes } => {
            let body = json!({ "paths": scopes.paths, "nodes": scopes.nodes });
            let v = c.json(Method::PUT, &format!("/v1/owners/{}/scopes", encode(&name)), Some(&body)).await?;
            print(conn, &v, print_owner)
        }
        OwnerCmd::List => {
            let v = c.json(Method::GET, "/v1/owners", None).await?;
            print(conn, &v, |v| {
                let mut t = Table::new(&["OWNER", "CONTACT", "STATE", "PERSON", "DESCRIPTION"]);
                for o in v["owners"].as_array().into_iter().flatten() {
                    let state = if o["active"].as_bool() == Some(true) { "active" } else { "deactivated" };
                    let person = match (o["person_user_name"].as_str(), o["person_left"].as_bool()) {
                        (Some(p), Some(true)) => format!("{p} (left)"),
                        (Some(p), _) => p.to_owned(),
                        (None, _) => String::new(),
                    };
                    t.row(vec![text(o, "name"), text(o, "contact"), state.into(), person, text(o, "description")]);
                }
                t.print_or("no owners");
            })
        }
        OwnerCmd::Show { name } => {
            let v = c.json(Method::GET, &format!("/v1/owners/{}", encode(&name)), None).await?;
            print(conn, &v, print_owner)
        }
        OwnerCmd::Deactivate { name } => {
            let v = c.json(Method::POST, &format!("/v1/owners/{}/deactivate", encode(&name)), None).await?;
            print(conn, &v, print_owner)
        }
        OwnerCmd::Link { name, person, unlink } => {
            let body = json!({ "person": if unlink { None } else { person } });
            let v = c.json(Method::POST, &format!("/v1/owners/{}/person", encode(&name)), Some(&body)).await?;
            print(conn, &v, print_owner)
        }
        OwnerCmd::Transfer { name, to } => {
            let v = c
                .json(Method::POST, &format!("/v1/owners/{}/transfer", encode(&name)), Some(&json!({ "to": to })))
                .await?;
            print(conn, &v, |v| {
                println!(
                    "moved {} entries from {} to {}",
                    v["entries"],
                    v["from"].as_str().unwrap_or(""),
                    v["to"].as_str().unwrap_or("")
                )
            })
        }
    }
}
