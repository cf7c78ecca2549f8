//! `hallmark human ...`: the help desk's side of the human track (people
//! who sign in with `hallmark login`), over the admin API's
//! `/v1/people/recoveries` and `/v1/people/break-glass`.
//!
//! - `human recover ...`: a person lost a device or key. Filing a request
//!   revokes the person's certificates at once and locks their logins; an
//!   operator (the help desk) verifies the person and says how in a note; a
//!   second admin, neither the one who filed nor the one who verified,
//!   approves, which lets them sign in again.
//! - `human break-glass ...`: a trust-admin grants a person emergency
//!   logins ahead of time (`hallmark login --break-glass`); each use is a
//!   short certificate marked break-glass, never outliving the grant, and a
//!   finding until an auditor reviews it. Withdrawing the grant revokes what
//!   it issued.
//!
//! Machines have neither: a workload that loses its key fails closed and is
//! re-issued from attestation. The server enforces every rule; the checks
//! here only catch a malformed subject or lifetime before calling it.

use anyhow::{Context, bail};
use clap::Subcommand;
use hallmark_core::{SpiffeId, Ttl, now_unix};
use hyper::Method;
use serde_json::{Value, json};

use crate::Conn;
use crate::client::encode;
use crate::commands::{client, emit as print};
use crate::table::{Table, text, time_rel};

/// `hallmark human --help`.
pub const LONG_ABOUT: &str = "\
The help desk's side of people who sign in with `hallmark login`.

`human recover`: a person lost a device or key. Filing a request revokes every certificate of the \
person at once and locks their logins; an operator verifies the person and records how (--note); a \
second, different admin approves, which lets them sign in again.

`human break-glass`: a trust-admin grants a person emergency logins ahead of time; each use \
(`hallmark login --break-glass`) gets a short certificate marked break-glass, never outliving the \
grant, and stays a finding until an auditor reviews it. Withdrawing the grant revokes what it issued.

Machines have neither: a workload that loses its key fails closed and is re-issued from attestation.";

/// `hallmark human ...`
#[derive(Subcommand)]
pub enum HumanCmd {
    /// Help-desk recovery of a person who lost a device or key: file, verify,
    /// approve (a second admin), cancel, list, show.
    ///
    /// Filing a request revokes every certificate of the person at once and
    /// locks their logins until it is approved or cancelled. An operator
    /// verifies the person and says how (--note); then a second, different
    /// admin (trust-admin, neither the one who filed nor the one who verified,
    /// nor one created by them or that created them) approves, and a new
    /// `hallmark login` is allowed. Machines have no recovery path: they are
    /// re-issued from attestation.
    #[command(subcommand)]
    Recover(RecoverCmd),
    /// Pre-approved emergency logins of a person: grant, revoke, list, review.
    ///
    /// A trust-admin grants a person break-glass logins for a while (default
    /// 30d, at most 90d). Each use (`hallmark login --break-glass`) gets a
    /// short certificate marked break-glass, never outliving the grant, and is
    /// recorded as a finding until an auditor or trust-admin reviews it
    /// (`break-glass review`). Withdrawing the grant revokes what it issued.
    #[command(name = "break-glass", subcommand)]
    BreakGlass(BreakGlassCmd),
}

/// `hallmark human recover ...`
#[derive(Subcommand)]
pub enum RecoverCmd {
    /// File a recovery request: the person's certificates are revoked now and
    /// their logins refused until it is approved or cancelled (operator or
    /// trust-admin).
    ///
    /// Whoever holds the lost device cannot use its certificate from now on.
    /// One open request per person. The next steps are `recover verify` by the
    /// help desk and `recover approve` by a second admin.
    Request {
        /// The person's SPIFFE ID (spiffe://TRUST_DOMAIN/human/...); a machine's
        /// ID is refused.
        #[arg(long, value_name = "SPIFFE_ID")]
        subject: String,
        /// What happened, as the person reported it (recorded).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Record that the help desk verified the person, and how (operator or
    /// trust-admin).
    ///
    /// The note is required and recorded in the audit chain (e.g. "video call,
    /// badge checked against the HR photo"). The one who verifies may not
    /// approve.
    Verify {
        /// Recovery request id.
        id: String,
        /// How the person was verified (required, recorded).
        #[arg(long, value_name = "TEXT")]
        note: String,
    },
    /// Approve a verified request: the person may sign in again (trust-admin).
    ///
    /// A second, different admin approves: never the identity that filed or
    /// verified the request, nor one created by them or that created them. Any
    /// certificate of the person still live is revoked first (those of the
    /// lost device were revoked when the request was filed).
    Approve {
        /// Recovery request id.
        id: String,
    },
    /// Withdraw an open request: the person may sign in again (operator or
    /// trust-admin). Certificates revoked when it was filed stay revoked.
    Cancel {
        /// Recovery request id.
        id: String,
    },
    /// List recovery requests, newest first.
    List {
        /// Only this person's (SPIFFE ID).
        #[arg(long, value_name = "SPIFFE_ID")]
        subject: Option<String>,
        /// Only open requests (requested or verified), which lock logins.
        #[arg(long)]
        open: bool,
    },
    /// Show one recovery request.
    Show {
        /// Recovery request id.
        id: String,
    },
}

/// `hallmark human break-glass ...`
#[derive(Subcommand)]
pub enum BreakGlassCmd {
    /// Grant a person break-glass logins until the grant expires or is revoked
    /// (trust-admin).
    ///
    /// While it lasts, `hallmark login --break-glass` gives the person a short
    /// certificate marked break-glass, never outliving the grant; every use is
    /// a finding until reviewed.
    Grant {
        /// The person's SPIFFE ID (spiffe://TRUST_DOMAIN/human/...); a machine's
        /// ID is refused.
        #[arg(long, value_name = "SPIFFE_ID")]
        subject: String,
        /// Why the person may need it (recorded).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// How long the grant can be used: 12h, 7d... (default 30d, at most 90d).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Withdraw a grant now (trust-admin): no further break-glass login under
    /// it, and the certificates it issued are revoked.
    Revoke {
        /// Grant id.
        id: String,
    },
    /// List grants and their uses; an unreviewed use is a finding.
    List,
    /// Mark a use reviewed, with what the review found (auditor or
    /// trust-admin); it stops being a finding.
    Review {
        /// Use id (from `break-glass list`).
        use_id: String,
        /// What the review found (required, recorded).
        #[arg(long, value_name = "TEXT")]
        note: String,
    },
}

/// `subject` as a person's SPIFFE ID, checked before calling the server (which
/// also checks the trust domain).
fn person(subject: &str) -> anyhow::Result<()> {
    let id = SpiffeId::new(subject).with_context(|| format!("--subject `{subject}`"))?;
    if !id.is_human() {
        bail!(
            "--subject `{subject}` is not a person's SPIFFE ID (spiffe://TRUST_DOMAIN/human/...): machines have no \
             recovery path or break-glass; they fail closed and are re-issued from attestation"
        );
    }
    Ok(())
}

/// A text flag that must say something.
fn required(flag: &str, value: &str) -> anyhow::Result<()> {
    if value.trim().is_empty() {
        bail!("{flag} must not be empty");
    }
    Ok(())
}

/// A person's recovery request, one field a line.
fn print_request(v: &Value) {
    let now = now_unix();
    let s = |k: &str| text(v, k);
    println!("Request ID   : {}", s("id"));
    println!("Subject      : {}", s("subject"));
    println!("State        : {}", s("state"));
    println!("Reason       : {}", s("reason"));
    println!("Requested by : {} at {}", s("requested_by"), time_rel(v, "requested_at", now));
    if v["verified_by"].is_string() {
        println!("Verified by  : {} at {}", s("verified_by"), time_rel(v, "verified_at", now));
        println!("Verify note  : {}", s("verify_note"));
    }
    if v["approved_by"].is_string() {
        println!("Approved by  : {} at {}", s("approved_by"), time_rel(v, "approved_at", now));
    }
    if v["closed_at"].is_i64() {
        println!("Closed       : {}", time_rel(v, "closed_at", now));
    }
    match v["state"].as_str() {
        Some("requested") => {
            println!("Next         : the help desk verifies the person (`recover verify ID --note ...`)")
        }
        Some("verified") => println!("Next         : a second, different admin approves (`recover approve ID`)"),
        _ => {}
    }
}

/// A break-glass grant, one field a line.
fn print_grant(v: &Value) {
    let now = now_unix();
    let s = |k: &str| text(v, k);
    println!("Grant ID   : {}", s("id"));
    println!("Subject    : {}", s("subject"));
    println!("State      : {}", grant_state(v, now));
    println!("Reason     : {}", s("reason"));
    println!("Granted by : {} at {}", s("granted_by"), time_rel(v, "granted_at", now));
    println!("Expires    : {}", time_rel(v, "expires_at", now));
    if v["revoked_at"].is_i64() {
        println!("Revoked    : {}", time_rel(v, "revoked_at", now));
    }
}

/// Whether a grant is usable at `now`: active, expired or revoked.
fn grant_state(v: &Value, now: i64) -> &'static str {
    if v["revoked_at"].is_i64() {
        "revoked"
    } else if v["expires_at"].as_i64().is_some_and(|t| t <= now) {
        "expired"
    } else {
        "active"
    }
}

/// A break-glass use's review: who reviewed it, or UNREVIEWED (a finding).
fn review_state(v: &Value) -> String {
    match v["reviewed_by"].as_str() {
        Some(by) => format!("reviewed by {by}"),
        None => "UNREVIEWED".to_owned(),
    }
}

/// At most `n` characters of a JSON text field, for a table cell.
fn cut(v: &Value, key: &str, n: usize) -> String {
    let t = text(v, key).replace('\n', " ");
    if t.chars().count() > n { format!("{}…", t.chars().take(n.saturating_sub(1)).collect::<String>()) } else { t }
}

/// `hallmark human ...`
pub async fn human(cmd: HumanCmd, conn: &Conn) -> anyhow::Result<()> {
    match cmd {
        HumanCmd::Recover(cmd) => recover(cmd, conn).await,
        HumanCmd::BreakGlass(cmd) => break_glass(cmd, conn).await,
    }
}

/// `hallmark human recover ...`
async fn recover(cmd: RecoverCmd, conn: &Conn) -> anyhow::Result<()> {
    let path = |id: &str, step: &str| format!("/v1/people/recoveries/{}/{step}", encode(id));
    match cmd {
        RecoverCmd::Request { subject, reason } => {
            person(&subject)?;
            required("--reason", &reason)?;
            let body = json!({ "subject": subject, "reason": reason });
            let v = client(conn)?.json(Method::POST, "/v1/people/recoveries", Some(&body)).await?;
            print(conn, &v, |v| {
                print_request(v);
                eprintln!(
                    "the certificates of {} are revoked; their logins are refused until the request is approved or cancelled",
                    text(v, "subject")
                );
            })
        }
        RecoverCmd::Verify { id, note } => {
            required("--note (how the person was verified)", &note)?;
            let body = json!({ "note": note });
            let v = client(conn)?.json(Method::POST, &path(&id, "verify"), Some(&body)).await?;
            print(conn, &v, print_request)
        }
        RecoverCmd::Approve { id } => {
            let v = client(conn)?.json(Method::POST, &path(&id, "approve"), None).await?;
            print(conn, &v, |v| {
                print_request(&v["request"]);
                let revoked: Vec<&str> =
                    v["revoked"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!("Revoked now  : {} certificate(s) still live", revoked.len());
                for serial in revoked {
                    println!("               {serial}");
                }
                println!("The person may sign in again with `hallmark login`.");
            })
        }
        RecoverCmd::Cancel { id } => {
            let v = client(conn)?.json(Method::POST, &path(&id, "cancel"), None).await?;
            print(conn, &v, print_request)
        }
        RecoverCmd::List { subject, open } => {
            let mut q = vec![format!("open={open}")];
            if let Some(s) = subject {
                q.push(format!("subject={}", encode(&s)));
            }
            let v = client(conn)?.json(Method::GET, &format!("/v1/people/recoveries?{}", q.join("&")), None).await?;
            print(conn, &v, |v| {
                let now = now_unix();
                let mut t = Table::new(&[
                    "REQUEST ID",
                    "SUBJECT",
                    "STATE",
                    "REQUESTED",
                    "REQUESTED BY",
                    "VERIFIED BY",
                    "APPROVED BY",
                    "REASON",
                ]);
                for r in v.as_array().into_iter().flatten() {
                    t.row(vec![
                        text(r, "id"),
                        text(r, "subject"),
                        text(r, "state"),
                        time_rel(r, "requested_at", now),
                        text(r, "requested_by"),
                        text(r, "verified_by"),
                        text(r, "approved_by"),
                        cut(r, "reason", 40),
                    ]);
                }
                t.print_or(if open { "no open recovery requests" } else { "no recovery requests" });
            })
        }
        RecoverCmd::Show { id } => {
            let v = client(conn)?.json(Method::GET, &format!("/v1/people/recoveries/{}", encode(&id)), None).await?;
            print(conn, &v, print_request)
        }
    }
}

/// `hallmark human break-glass ...`
async fn break_glass(cmd: BreakGlassCmd, conn: &Conn) -> anyhow::Result<()> {
    match cmd {
        BreakGlassCmd::Grant { subject, reason, expires_in } => {
            person(&subject)?;
            required("--reason", &reason)?;
            if let Some(e) = &expires_in {
                Ttl::parse(e).with_context(|| format!("--expires-in `{e}`"))?;
            }
            let body = json!({ "subject": subject, "reason": reason, "expires_in": expires_in });
            let v = client(conn)?.json(Method::POST, "/v1/people/break-glass", Some(&body)).await?;
            print(conn, &v, print_grant)
        }
        BreakGlassCmd::Revoke { id } => {
            let v = client(conn)?
                .json(Method::POST, &format!("/v1/people/break-glass/{}/revoke", encode(&id)), None)
                .await?;
            print(conn, &v, print_grant)
        }
        BreakGlassCmd::List => {
            let v = client(conn)?.json(Method::GET, "/v1/people/break-glass", None).await?;
            print(conn, &v, |v| {
                let now = now_unix();
                let mut grants = Table::new(&["GRANT ID", "SUBJECT", "STATE", "EXPIRES", "GRANTED BY", "REASON"]);
                for g in v["grants"].as_array().into_iter().flatten() {
                    grants.row(vec![
                        text(g, "id"),
                        text(g, "subject"),
                        grant_state(g, now).to_owned(),
                        time_rel(g, "expires_at", now),
                        text(g, "granted_by"),
                        cut(g, "reason", 40),
                    ]);
                }
                println!("Grants:");
                grants.print_or("no break-glass grants");
                let mut uses = Table::new(&["USE ID", "SUBJECT", "GRANT", "CERTIFICATE", "USED", "REVIEW"]);
                let mut unreviewed = 0;
                for u in v["uses"].as_array().into_iter().flatten() {
                    if u["reviewed_by"].is_null() {
                        unreviewed += 1;
                    }
                    uses.row(vec![
                        text(u, "id"),
                        text(u, "subject"),
                        text(u, "grant_id"),
                        text(u, "credential"),
                        time_rel(u, "used_at", now),
                        review_state(u),
                    ]);
                }
                println!();
                println!("Uses:");
                uses.print_or("no break-glass uses");
                if unreviewed > 0 {
                    println!();
                    println!(
                        "{unreviewed} unreviewed use(s): review each with `hallmark human break-glass review USE_ID --note ...`"
                    );
                }
            })
        }
        BreakGlassCmd::Review { use_id, note } => {
            required("--note (what the review found)", &note)?;
            let body = json!({ "note": note });
            let v = client(conn)?
                .json(Method::POST, &format!("/v1/people/break-glass/uses/{}/review", encode(&use_id)), Some(&body))
                .await?;
            print(conn, &v, |v| {
                let now = now_unix();
                println!("Use ID      : {}", text(v, "id"));
                println!("Subject     : {}", text(v, "subject"));
                println!("Grant       : {}", text(v, "grant_id"));
                println!("Certificate : {}", text(v, "credential"));
                println!("Used        : {}", time_rel(v, "used_at", now));
                println!("Review      : {} at {}", review_state(v), time_rel(v, "reviewed_at", now));
                println!("Note        : {}", text(v, "review_note"));
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn only_a_persons_id_is_a_subject() {
        assert!(super::person("spiffe://example.org/human/example.com/alice").is_ok());
        let machine = super::person("spiffe://example.org/web").unwrap_err().to_string();
        assert!(machine.contains("machines have no recovery path"), "{machine}");
        assert!(super::person("not a spiffe id").is_err());
    }

    #[test]
    fn grants_and_uses_read_as_their_state() {
        let g = json!({ "expires_at": 100, "revoked_at": null });
        assert_eq!(super::grant_state(&g, 50), "active");
        assert_eq!(super::grant_state(&g, 100), "expired");
        assert_eq!(super::grant_state(&json!({ "expires_at": 100, "revoked_at": 10 }), 50), "revoked");
        assert_eq!(super::review_state(&json!({ "reviewed_by": null })), "UNREVIEWED");
        assert_eq!(super::review_state(&json!({ "reviewed_by": "audit" })), "reviewed by audit");
    }

    #[test]
    fn long_cells_are_cut() {
        let v = json!({ "reason": "abcdef\nghij" });
        assert_eq!(super::cut(&v, "reason", 20), "abcdef ghij");
        assert_eq!(super::cut(&v, "reason", 5), "abcd…");
    }
}
