//! Attacks on the trust model, as a holder of a low-privilege admin token or
//! of write access to the database would try them, against a real `hallmark
//! up` and its CLI (security issue 12):
//!
//! - an owner token registers the agent's or the server's SPIFFE ID, another
//!   owner's ID, or a node it may not use;
//! - admin tokens that expired, were revoked or rotated are used;
//! - a trust-admin approves its own exception through an identity it made;
//! - refusals are flooded into the audit chain, or not recorded at all;
//! - the audit chain is rewritten in the database without the audit key.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Row;

use crate::harness::*;

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

/// Runs the CLI against `up` with another token.
fn as_token(up: &Up, token: &str, args: &[&str]) -> Output {
    Command::new(bin()).args(args).envs(&up.env).env("HALLMARK_TOKEN", token).output().unwrap()
}

/// The token a `token create` or `rotate` printed on its last line.
fn last_line(out: Output) -> String {
    ok(out).lines().last().unwrap().trim().to_owned()
}

fn audit_records(up: &Up) -> Vec<Value> {
    ok(up.cli(&["audit", "export"])).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const LOCAL: &str = "spiffe://example.org/hallmark/agent/local";

#[test]
fn an_owner_token_cannot_take_the_agents_the_servers_or_another_owners_identity() {
    let up = Up::start();
    let other_node = "spiffe://example.org/hallmark/agent/join_token/other";
    ok(up.cli(&["owner", "create", "alpha", "--contact", "a@example.org", "--path", "/alpha/", "--node", LOCAL]));
    ok(up.cli(&["owner", "create", "beta", "--contact", "b@example.org", "--path", "/beta/", "--node", "*"]));
    ok(up.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/beta/db",
        "--selector",
        "unix:uid:0",
        "--owner",
        "beta",
    ]));
    let alpha = last_line(up.cli(&["admin", "token", "create", "--role", "owner:alpha", "--name", "alpha-bot"]));
    let create = |id: &str, parent: &str| {
        as_token(
            &up,
            &alpha,
            &[
                "entry",
                "create",
                "--spiffe-id",
                id,
                "--selector",
                "unix:uid:1001",
                "--owner",
                "alpha",
                "--parent",
                parent,
            ],
        )
    };
    // The agent's and the server's identities: reserved.
    for id in [LOCAL, "spiffe://example.org/hallmark/server", "spiffe://example.org/HALLMARK/agent/local"] {
        refused(&create(id, LOCAL), "reserved");
        // Not for the bootstrap trust-admin either.
        let out = up.cli(&["entry", "create", "--spiffe-id", id, "--selector", "unix:uid:1001", "--owner", "alpha"]);
        refused(&out, "reserved");
    }
    // Another owner's ID, outside alpha's scope; a node alpha may not use.
    refused(&create("spiffe://example.org/beta/db", LOCAL), "outside owner `alpha`");
    refused(&create("spiffe://example.org/alpha/api", other_node), "may not use node");
    // Scopes are the trust-admin's: the owner cannot widen its own.
    refused(&as_token(&up, &alpha, &["owner", "update", "alpha", "--path", "/"]), "may not set owners' path scopes");
    // What alpha may do, it can.
    ok(create("spiffe://example.org/alpha/api", LOCAL));
    // The batch import keeps every rule.
    let file = up.dir.path().join("import.json");
    let body = serde_json::json!([
        {"spiffe_id": "spiffe://example.org/alpha/ok", "selectors": ["unix:uid:1001"], "owner": "alpha"},
        {"spiffe_id": LOCAL, "selectors": ["unix:uid:1001"], "owner": "alpha"}
    ]);
    std::fs::write(&file, body.to_string()).unwrap();
    refused(&as_token(&up, &alpha, &["entry", "import", file.to_str().unwrap()]), "reserved");
    let list = up.cli_json(&["entry", "list"]);
    let ids: Vec<&str> = list["entries"].as_array().unwrap().iter().map(|e| e["spiffe_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["spiffe://example.org/alpha/api", "spiffe://example.org/beta/db"], "nothing else was stored");
}

#[test]
fn admin_tokens_expire_are_revoked_and_rotated_at_once() {
    let up = Up::start();
    let short = last_line(up.cli(&["admin", "token", "create", "--role", "auditor", "--name", "brief", "--ttl", "2s"]));
    let kept = last_line(up.cli(&["admin", "token", "create", "--role", "operator", "--name", "olga"]));
    ok(as_token(&up, &short, &["entry", "list"]));
    ok(as_token(&up, &kept, &["entry", "list"]));
    std::thread::sleep(Duration::from_millis(2500));
    refused(&as_token(&up, &short, &["entry", "list"]), "a valid bearer token is required");
    // Revoked: refused at once.
    ok(up.cli(&["admin", "token", "revoke", "olga"]));
    refused(&as_token(&up, &kept, &["entry", "list"]), "a valid bearer token is required");
    let list = up.cli_json(&["admin", "token", "list"]);
    let state = |name: &str| {
        list["admin_tokens"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["state"].clone()
    };
    assert_eq!(state("brief"), "expired");
    assert_eq!(state("olga"), "revoked");
    assert_eq!(state("bootstrap"), "active");
    assert_eq!(list["admin_tokens"][0]["created_by"], Value::Null, "{list}");
    // Over the longest lifetime: refused.
    refused(
        &up.cli(&["admin", "token", "create", "--role", "auditor", "--name", "forever", "--ttl", "3650d"]),
        "may live at most",
    );
    // Rotating the bootstrap token: the old one is refused, the file and the
    // env file (which reads it) give the new one.
    let old = up.env["HALLMARK_TOKEN"].clone();
    let new = last_line(up.cli(&["admin", "token", "rotate", "bootstrap"]));
    assert_ne!(old, new);
    refused(&as_token(&up, &old, &["entry", "list"]), "a valid bearer token is required");
    ok(as_token(&up, &new, &["entry", "list"]));
    let data = up.dir.path().join("data");
    assert_eq!(std::fs::read_to_string(data.join("admin-token")).unwrap().trim(), new);
    let env = data.join("env");
    let sourced = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && exec '{}' entry list --json", env.display(), bin()))
        .env_remove("HALLMARK_TOKEN")
        .output()
        .unwrap();
    ok(sourced);
    // `Bearer` is case-insensitive (RFC 7235).
    let server = up.env["HALLMARK_SERVER"].trim_start_matches("http://").to_owned();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (status, _) = raw_get(&server, "/v1/entries", &format!("{scheme} {new}"));
        assert_eq!(status, 200, "{scheme}");
    }
    assert_eq!(raw_get(&server, "/v1/entries", &format!("Basic {new}")).0, 401);
    // A join token lives at most 24 h by default.
    refused(&as_token(&up, &new, &["token", "create", "--ttl", "2d"]), "may live at most");
    ok(as_token(&up, &new, &["token", "create", "--ttl", "24h"]));
}

/// One HTTP/1.1 GET with an `Authorization` header (none when empty);
/// returns (status, body).
fn raw_get(addr: &str, path: &str, authorization: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = if authorization.is_empty() { String::new() } else { format!("Authorization: {authorization}\r\n") };
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, buf)
}

#[test]
fn an_approver_made_by_the_requester_is_no_second_person() {
    let up = Up::start();
    up.ensure_owner("ops");
    let e = up.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/legacy",
        "--selector",
        "unix:uid:4242",
        "--owner",
        "ops",
    ]);
    let entry = e["id"].as_str().unwrap();
    let alice = last_line(up.cli(&["admin", "token", "create", "--role", "trust-admin", "--name", "alice"]));
    // Alice makes a second trust-admin, and that one a third.
    let mallory =
        last_line(as_token(&up, &alice, &["admin", "token", "create", "--role", "trust-admin", "--name", "mallory"]));
    let mole =
        last_line(as_token(&up, &mallory, &["admin", "token", "create", "--role", "trust-admin", "--name", "mole"]));
    let bob = last_line(up.cli(&["admin", "token", "create", "--role", "trust-admin", "--name", "bob"]));
    let req = as_token(
        &up,
        &alice,
        &[
            "exception",
            "request",
            "--entry",
            entry,
            "--rule",
            "ttl_above_class_max",
            "--value",
            "48h",
            "--justification",
            "migration",
            "--expires",
            "1h",
            "--json",
        ],
    );
    let xid = serde_json::from_str::<Value>(&ok(req)).unwrap()["id"].as_str().unwrap().to_owned();
    refused(&as_token(&up, &mallory, &["exception", "approve", &xid]), "created by the requester");
    refused(&as_token(&up, &mole, &["exception", "approve", &xid]), "mole <- created by mallory <- created by alice");
    // An independent trust-admin may; the report notes that it is new.
    ok(as_token(&up, &bob, &["exception", "approve", &xid]));
    let r = up.cli_json(&["report", "exceptions"]);
    let found = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "approved_by_new_admin" && f["subject"] == xid.as_str());
    assert!(found, "{r}");
}

#[test]
fn refusals_are_recorded_with_their_source_and_counted_not_copied() {
    let up = Up::start();
    let server = up.env["HALLMARK_SERVER"].trim_start_matches("http://").to_owned();
    let before = audit_records(&up).len();
    let long_path = format!("/v1/entries/{}", "x".repeat(60_000));
    let started = Instant::now();
    for i in 0..1000 {
        let (status, _) = raw_get(&server, if i % 2 == 0 { &long_path } else { "/v1/entries" }, "Bearer wrong");
        assert_eq!(status, 401);
    }
    let secs = started.elapsed().as_secs() + 2;
    // A 403: an owner token setting the policy.
    ok(up.cli(&["owner", "create", "team", "--contact", "t@example.org"]));
    let owner = last_line(up.cli(&["admin", "token", "create", "--role", "owner:team", "--name", "team-bot"]));
    let policy = up.dir.path().join("p.cedar");
    std::fs::write(&policy, "permit(principal, action, resource);").unwrap();
    refused(&as_token(&up, &owner, &["policy", "set", policy.to_str().unwrap()]), "may not set the policy");
    // No Authorization header at all.
    let (status, _) = raw_get(&server, "/v1/owners", "");
    assert_eq!(status, 401);
    std::thread::sleep(Duration::from_millis(2500));
    let records = audit_records(&up);
    let refusals: Vec<&Value> = records[before..].iter().filter(|r| r["outcome"] == "refused").collect();
    let auth: Vec<&&Value> = refusals.iter().filter(|r| r["action"] == "admin_auth").collect();
    let counted: u64 = auth.iter().map(|r| r["details"]["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 1001, "every 401 is counted, in {} records", auth.len());
    assert!(auth.len() as u64 <= 2 * (secs + 1), "{} records for 1001 refusals in {secs}s", auth.len());
    for r in &refusals {
        assert!(r.to_string().len() < 4096, "a refusal record is bounded: {} bytes", r.to_string().len());
        assert_eq!(r["details"]["source"], "127.0.0.1", "counted per address: {r}");
    }
    let reasons: Vec<String> = auth.iter().map(|r| r["details"]["reasons"].to_string()).collect();
    assert!(reasons.iter().any(|r| r.contains("no Authorization header")), "{reasons:?}");
    let forbidden = refusals.iter().find(|r| r["action"] == "admin_forbidden").expect("the 403 is recorded");
    assert_eq!(forbidden["actor"], "team-bot");
    assert_eq!(forbidden["subject"], "/v1/policy");
    assert!(forbidden["details"]["reasons"].to_string().contains("set the policy"), "{forbidden}");
}

#[test]
fn a_replayed_join_token_is_recorded() {
    let up = Up::start();
    let out = ok(up.cli(&["token", "create"]));
    let token = out.lines().last().unwrap().trim().to_owned();
    let agent_api = up.env["HALLMARK_AGENT_API"].clone();
    let bundle = up.dir.path().join("bundle.pem");
    std::fs::write(&bundle, ok(up.cli(&["bundle", "show"]))).unwrap();
    let join = |name: &str| {
        let data = up.dir.path().join(name);
        let cfg = up.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "trust_domain = \"example.org\"\nserver_address = \"{agent_api}\"\ndata_dir = \"{}\"\njoin_token = \"{token}\"\ntrust_bundle_path = \"{}\"\n",
                data.display(),
                bundle.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["agent", "--config"]).arg(&cfg);
        Proc::spawn(cmd, &up.dir.path().join(format!("{name}.log")))
    };
    let first = join("first");
    wait_for("the first agent to attest", 60, || first.log().contains("node attested").then_some(()));
    let mut second = join("second");
    wait_for("the second agent to be refused", 60, || {
        (second.log().contains("already been used") || second.child.try_wait().ok().flatten().is_some()).then_some(())
    });
    second.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let records = audit_records(&up);
    let replay = records
        .iter()
        .find(|r| r["action"] == "attest_node" && r["outcome"] == "refused")
        .unwrap_or_else(|| panic!("no refused attestation in {records:?}"));
    assert!(replay["details"]["reasons"].to_string().contains("already been used"), "{replay}");
    assert_eq!(replay["details"]["source"], "127.0.0.1", "{replay}");
    assert!(!replay.to_string().contains(&token), "the token itself is never recorded");
}

/// Whoever can write the database but lacks the audit key rewrites a record
/// and every hash after it, and deletes the signed checkpoints: the server
/// finds the head it extends unsigned, says so first, and `audit verify`
/// fails; a checkpoint an auditor kept fails too.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_rewritten_without_the_audit_key_fails_verification() {
    let mut up = Up::start();
    up.ensure_owner("ops");
    for i in 0..5 {
        up.cli_json(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://example.org/a{i}"),
            "--selector",
            "unix:uid:7",
            "--owner",
            "ops",
        ]);
    }
    ok(up.cli(&["audit", "verify"]));
    let kept = up.dir.path().join("kept.jsonl");
    std::fs::write(&kept, ok(up.cli(&["audit", "checkpoint"]))).unwrap();
    ok(up.cli(&["audit", "verify", "--checkpoint", kept.to_str().unwrap()]));
    up.proc.kill();

    // The rewrite, with the unkeyed algorithm only.
    let db = up.dir.path().join("data").join("hallmark.db");
    let store = hallmark_store::Store::open(&format!("sqlite://{}", db.display())).await.unwrap();
    let records = store.audit_records(0, 0, i64::MAX, 100_000).await.unwrap();
    let target = records.iter().find(|r| r.event.action == "entry_create").unwrap().seq;
    let mut prev =
        records.iter().find(|r| r.seq == target - 1).map(|r| r.hash.clone()).unwrap_or(hallmark_store::GENESIS.into());
    for r in records.iter().filter(|r| r.seq >= target) {
        let mut e = r.event.clone();
        if r.seq == target {
            e.actor = "nobody".into();
        }
        let hash = hallmark_store::record_hash(r.seq, &e, &prev);
        sqlx::query("UPDATE audit SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(e.actor.clone())
            .bind(prev.clone())
            .bind(hash.clone())
            .bind(r.seq)
            .execute(store.pool())
            .await
            .unwrap();
        prev = hash;
    }
    let deleted = sqlx::query("DELETE FROM audit_checkpoints").execute(store.pool()).await.unwrap().rows_affected();
    assert!(deleted > 0);
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit").fetch_one(store.pool()).await.unwrap().get("n");
    assert_eq!(n as usize, records.len());
    drop(store);

    // The server, restarted, extends the chain.
    let dir = std::mem::replace(&mut up.dir, tempfile::tempdir().unwrap());
    drop(up);
    let up = Up::start_in(dir);
    let out = up.cli(&["audit", "verify"]);
    refused(&out, "broken");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no signed checkpoint") || text.contains("not signed"), "{text}");
    let out = up.cli(&["audit", "verify", "--checkpoint", kept.to_str().unwrap()]);
    refused(&out, "broken");
}
