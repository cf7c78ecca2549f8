//! `hallmark policy ...`, `hallmark exception ...`, `hallmark admin ...`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use hallmark_core::{now_unix, parse_duration};
use hyper::Method;
use serde_json::{Value, json};

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};
use crate::table::{Table, text, time, time_rel};

/// `hallmark policy ...`
#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate a Cedar policy file and put it in force as the next version.
    Set {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the policy in force.
    Show {
        /// A specific version instead of the current one.
        #[arg(value_name = "VERSION")]
        number: Option<i64>,
    },
    /// List every policy version.
    History,
    /// Show what changed between two versions.
    Diff {
        /// Older version.
        v1: i64,
        /// Newer version.
        v2: i64,
    },
    /// Run a table of cases against a policy file, without a server; exits
    /// non-zero on any mismatch.
    Test {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The cases (JSON: {"cases": [...]}; see the README).
        #[arg(long)]
        cases: PathBuf,
    },
}

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

/// `hallmark report KIND`
#[derive(clap::Args)]
pub struct ReportArgs {
    /// expiring, orphans, exceptions, drift, rotation, or compliance (OWASP NHI Top 10).
    kind: String,
    /// Window for "expiring soon".
    #[arg(long, default_value = "24h")]
    within: String,
    /// An entry with no credential issued for this long counts as unused (drift).
    #[arg(long, default_value = "30d")]
    unused_for: String,
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Exit non-zero when there are findings (for CI and cron).
    #[arg(long)]
    fail_on_findings: bool,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// `hallmark report KIND`
pub async fn report(a: ReportArgs, conn: &Conn) -> anyhow::Result<()> {
    let within = parse_duration(&a.within).map_err(|e| anyhow::anyhow!("--within: {e}"))?.as_secs();
    let unused = parse_duration(&a.unused_for).map_err(|e| anyhow::anyhow!("--unused-for: {e}"))?.as_secs();
    let path = format!("/v1/reports/{}?within={within}&unused_for={unused}", encode(&a.kind));
    let v = client(conn)?.json(Method::GET, &path, None).await?;
    let findings = v["findings"].as_array().cloned().unwrap_or_default();
    let field = |f: &Value, k: &str| f[k].as_str().unwrap_or("").to_owned();
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&crate::table::with_rfc3339(&v))?);
    } else if a.csv {
        println!("check,subject,nhi,detail");
        for f in &findings {
            let row = [field(f, "check"), field(f, "subject"), field(f, "nhi"), field(f, "detail")];
            println!("{}", row.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(","));
        }
    } else {
        if let Some(items) = v["nhi"].as_array() {
            println!("OWASP Non-Human Identities Top 10 (2025)");
            for i in items {
                println!(
                    "  {:<6} {:<42} {}",
                    i["id"].as_str().unwrap_or(""),
                    i["title"].as_str().unwrap_or(""),
                    i["findings"]
                );
            }
            println!();
        }
        println!("{} report: {} finding(s)", a.kind, findings.len());
        for f in &findings {
            println!("  [{}] {:<26} {}", field(f, "nhi"), field(f, "check"), field(f, "detail"));
        }
        let notes = v["notes"].as_array().cloned().unwrap_or_default();
        if !notes.is_empty() {
            println!("{} note(s), for information (not findings):", notes.len());
            for f in &notes {
                println!("  {:<26} {}", field(f, "check"), field(f, "detail"));
            }
        }
    }
    if a.fail_on_findings && !findings.is_empty() {
        bail!("{} finding(s) in the {} report", findings.len(), a.kind);
    }
    Ok(())
}

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

/// Parses a point in the past: a duration ago, unix seconds, or `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_past(s: &str, now: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if (t.len() >= 9 && t.bytes().all(|b| b.is_ascii_digit())) || t.ends_with('Z') {
        return parse_expiry(t, now);
    }
    let d = parse_duration(t).map_err(|_| {
        anyhow::anyhow!("invalid time `{s}`: use a duration ago (24h), unix seconds, or 2026-12-31T00:00:00Z")
    })?;
    Ok(now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
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
                let mut t = Table::new(&["OWNER", "CONTACT", "STATE", "DESCRIPTION"]);
                for o in v["owners"].as_array().into_iter().flatten() {
                    let state = if o["active"].as_bool() == Some(true) { "active" } else { "deactivated" };
                    t.row(vec![text(o, "name"), text(o, "contact"), state.into(), text(o, "description")]);
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
        /// trust-admin, operator, auditor, or owner:NAME.
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

/// `hallmark policy ...`
pub async fn policy(cmd: PolicyCmd, conn: &Conn) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Set { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let v = client(conn)?.json(Method::PUT, "/v1/policy", Some(&json!({ "policy": text }))).await?;
            print(conn, &v, |v| {
                println!(
                    "policy version {} in force ({} policies, sha256 {})",
                    v["version"],
                    v["policies"],
                    v["sha256"].as_str().unwrap_or("")
                );
            })
        }
        PolicyCmd::Show { number } => {
            let path = match number {
                Some(n) => format!("/v1/policy/versions/{n}"),
                None => "/v1/policy".into(),
            };
            let v = client(conn)?.json(Method::GET, &path, None).await?;
            print(conn, &v, |v| {
                println!("// version {} set by {} at {}", v["version"], text(v, "created_by"), time(v, "created_at"));
                print!("{}", v["policy"].as_str().unwrap_or(""));
            })
        }
        PolicyCmd::History => {
            let v = client(conn)?.json(Method::GET, "/v1/policy/versions", None).await?;
            print(conn, &v, |v| {
                let mut t = Table::new(&["VERSION", "SET AT", "SET BY", "SHA-256"]);
                for p in v["versions"].as_array().into_iter().flatten() {
                    t.row(vec![text(p, "version"), time(p, "created_at"), text(p, "created_by"), text(p, "sha256")]);
                }
                t.print_or("no policy versions");
            })
        }
        PolicyCmd::Diff { v1, v2 } => {
            let c = client(conn)?;
            let a = c.json(Method::GET, &format!("/v1/policy/versions/{v1}"), None).await?;
            let b = c.json(Method::GET, &format!("/v1/policy/versions/{v2}"), None).await?;
            let diff = line_diff(a["policy"].as_str().unwrap_or(""), b["policy"].as_str().unwrap_or(""));
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "from": v1, "to": v2, "diff": diff }))?);
            } else {
                println!("--- version {v1}\n+++ version {v2}");
                for l in diff {
                    println!("{l}");
                }
            }
            Ok(())
        }
        PolicyCmd::Test { policy, cases } => {
            let text = std::fs::read_to_string(&policy).with_context(|| format!("cannot read {}", policy.display()))?;
            let engine =
                hallmark_policy::PolicyEngine::compile(&text, 0).with_context(|| policy.display().to_string())?;
            let raw = std::fs::read_to_string(&cases).with_context(|| format!("cannot read {}", cases.display()))?;
            let file: hallmark_policy::cases::CaseFile =
                serde_json::from_str(&raw).with_context(|| format!("{}: not a case file", cases.display()))?;
            let outcomes = hallmark_policy::cases::run(&engine, &hallmark_policy::Classes::default(), &file)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let failed = outcomes.iter().filter(|o| !o.pass).count();
            if conn.json {
                let list: Vec<Value> = outcomes
                    .iter()
                    .map(|o| json!({ "name": o.name, "pass": o.pass, "expected": o.expected, "got": o.got }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&json!({ "cases": list, "failed": failed }))?);
            } else {
                for o in &outcomes {
                    if o.pass {
                        println!("ok   {}: {}", o.name, o.got);
                    } else {
                        println!("FAIL {}: expected {}, got {}", o.name, o.expected, o.got);
                    }
                }
                println!("{} passed, {} failed", outcomes.len() - failed, failed);
            }
            if failed > 0 {
                bail!("{failed} of {} policy cases failed", outcomes.len());
            }
            Ok(())
        }
    }
}

/// A line diff (longest common subsequence): ` ` kept, `-` removed, `+` added.
pub fn line_diff(a: &str, b: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    if a.len().saturating_mul(b.len()) > 16_000_000 {
        // Too large for the quadratic table: show a whole replacement.
        return a.iter().map(|l| format!("-{l}")).chain(b.iter().map(|l| format!("+{l}"))).collect();
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", b[j]));
            j += 1;
        } else {
            out.push(format!("-{}", a[i]));
            i += 1;
        }
    }
    out
}

/// Parses `--expires`: a duration from now, unix seconds, or `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_expiry(s: &str, now: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if t.len() >= 9 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().with_context(|| format!("invalid time `{s}`"));
    }
    if let Some(ts) = parse_rfc3339_utc(t) {
        return Ok(ts);
    }
    let d = parse_duration(t.trim_start_matches('+')).map_err(|_| {
        anyhow::anyhow!("invalid time `{s}`: use a duration (48h), unix seconds, or 2026-12-31T00:00:00Z")
    })?;
    Ok(now + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
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
            let rule_parsed: hallmark_policy::ExceptionRule = rule.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            rule_parsed.check_value(&value).map_err(|e| anyhow::anyhow!(e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_and_expiry() {
        let d = line_diff("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(d, vec![" a", "-b", " c", "+d"]);
        assert_eq!(parse_expiry("48h", 1000).unwrap(), 1000 + 48 * 3600);
        assert_eq!(parse_expiry("+10m", 0).unwrap(), 600);
        assert_eq!(parse_expiry("1800000000", 0).unwrap(), 1_800_000_000);
        assert_eq!(parse_expiry("2026-11-22T00:00:00Z", 0).unwrap(), 1_795_305_600);
        assert_eq!(parse_expiry("1970-01-01T00:00:00Z", 0).unwrap(), 0);
        assert!(parse_expiry("tomorrow", 0).is_err());
        assert!(parse_expiry("2026-13-01T00:00:00Z", 0).is_err());
    }
}
