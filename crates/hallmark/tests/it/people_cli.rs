//! `hallmark human ...` (the help desk's commands) against a real `hallmark
//! up` whose people sign in at a test issuer (`hallmark_testkit`'s
//! `IssuerStub`, over HTTPS, with ID tokens signed here): a person with a
//! certificate loses their laptop; the help desk files a recovery (which
//! revokes the lost certificate at once) and verifies it, and a second admin
//! approves it through the CLI. Then break-glass: grant, an emergency login,
//! list (an unreviewed use), review, revoke (which revokes what it issued).
//!
//! The logins themselves are `POST /v1/login/start` and `POST /v1/login`
//! made here (tests/it/login.rs drives `hallmark login` with a real
//! provider); every help-desk step is the CLI.

use std::io::{Read, Write};
use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_testkit::k8s_issuer::{IssuerStub, Signer};
use serde_json::{Value, json};

use crate::harness::*;

const CLIENT: &str = "hallmark-cli";
const BOB: &str = "spiffe://example.org/human/example.com/bob";

/// One HTTP/1.1 POST of a JSON body, no admin token; returns (status, JSON body).
fn post(server: &str, path: &str, body: &Value) -> (u16, Value) {
    let authority = server.strip_prefix("http://").unwrap();
    let body = serde_json::to_vec(body).unwrap();
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_slice(&buf[split + 4..]).unwrap_or(Value::Null))
}

/// Bob signs in (a break-glass login with `break_glass`); returns the
/// status and the answer.
fn bob_logs_in(up: &Up, signer: &Signer, stub: &IssuerStub, break_glass: bool) -> (u16, Value) {
    let server = &up.env["HALLMARK_SERVER"];
    let (st, start) = post(server, "/v1/login/start", &json!({}));
    assert_eq!(st, 200, "{start}");
    let now = hallmark_core::now_unix();
    let claims = json!({"iss": stub.url, "sub": "u-bob", "aud": CLIENT, "exp": now + 300, "iat": now,
                        "nonce": start["nonce"], "email": "bob@example.com", "email_verified": true,
                        "name": "Bob Example"});
    let csr = hallmark_ca::keys::new_key_and_csr(None).unwrap();
    let body = json!({"login_id": start["login_id"], "id_token": signer.token(&claims),
                      "csr": STANDARD.encode(&csr.csr_der), "break_glass": break_glass});
    post(server, "/v1/login", &body)
}

/// Runs the CLI as the admin identity holding `token`.
fn as_admin(up: &Up, token: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin()).args(args).envs(&up.env).env("HALLMARK_TOKEN", token).output().unwrap()
}

/// [`as_admin`] with `--json`, which must succeed; its JSON.
fn as_admin_json(up: &Up, token: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = as_admin(up, token, &all);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether the inventory has credential `serial` revoked.
fn revoked(up: &Up, serial: &str) -> bool {
    up.cli_json(&["credential", "show", serial])["credential"]["revoked_at"].is_i64()
}

/// `out` failed, and its error says `says`.
#[track_caller]
fn fails(out: &Output, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(says), "`{err}` does not say `{says}`");
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Recovery through the CLI: filing revokes the lost certificate and locks
/// the person out, a note is required, the help desk cannot approve, a
/// second admin can, and that lets the person in again. Then break-glass:
/// grant, use, list (unreviewed), review, revoke.
#[tokio::test(flavor = "multi_thread")]
async fn help_desk_recovers_a_person_and_manages_break_glass_through_the_cli() {
    let signer = Signer::ec("k1");
    let stub = IssuerStub::start(&[&signer]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("people.toml");
    std::fs::write(
        &config,
        format!(
            "[[people.oidc_issuer]]\nname = \"corp\"\nissuer = \"{}\"\nclient_id = \"{CLIENT}\"\nca_file = \"{}\"\n\
             spiffe_id = \"spiffe://example.org/human/{{email}}\"\n",
            stub.url,
            stub.ca_path.display()
        ),
    )
    .unwrap();
    let up = Up::start_with(dir, &["--config", config.to_str().unwrap()]);
    let boot = up.env["HALLMARK_TOKEN"].clone();
    let token = |name: &str, role: &str| {
        let v = up.cli_json(&["admin", "token", "create", "--name", name, "--role", role]);
        v["token"].as_str().unwrap().to_owned()
    };
    let helpdesk = token("helpdesk", "operator");
    let second = token("second", "trust-admin");
    let auditor = token("audit", "auditor");

    // Bob has a certificate, then loses the laptop holding its key.
    let (st, cert) = bob_logs_in(&up, &signer, &stub, false);
    assert_eq!(st, 200, "{cert}\n{}", up.proc.log());
    assert_eq!(cert["spiffe_id"], BOB);
    let lost = cert["serial"].as_str().unwrap().to_owned();

    // A machine has no recovery path: refused before the server is asked.
    let out = as_admin(
        &up,
        &helpdesk,
        &["human", "recover", "request", "--subject", "spiffe://example.org/web", "--reason", "x"],
    );
    fails(&out, "machines have no recovery path");

    // Filing revokes the lost certificate at once and locks Bob's logins.
    assert!(!revoked(&up, &lost));
    let filed = as_admin_json(
        &up,
        &helpdesk,
        &["human", "recover", "request", "--subject", BOB, "--reason", "laptop stolen, ticket HD-7"],
    );
    assert_eq!(filed["state"], "requested", "{filed}");
    assert_eq!(filed["requested_by"], "helpdesk");
    assert!(filed["requested_at_rfc3339"].is_string(), "--json adds RFC 3339 twins: {filed}");
    let id = filed["id"].as_str().unwrap().to_owned();
    assert!(revoked(&up, &lost), "the lost certificate is revoked when the request is filed");
    let (st, v) = bob_logs_in(&up, &signer, &stub, false);
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&id), "{v}");

    // Approval waits for verification; verification needs a note.
    fails(&as_admin(&up, &second, &["human", "recover", "approve", &id]), "verifies it first");
    fails(&as_admin(&up, &helpdesk, &["human", "recover", "verify", &id]), "--note");
    fails(&as_admin(&up, &helpdesk, &["human", "recover", "verify", &id, "--note", "  "]), "--note");
    let verified = as_admin_json(
        &up,
        &helpdesk,
        &["human", "recover", "verify", &id, "--note", "video call, badge checked against the HR photo"],
    );
    assert_eq!(verified["state"], "verified", "{verified}");
    assert_eq!(verified["verified_by"], "helpdesk");

    // The help desk (operator) cannot approve; a second, different admin can.
    fails(&as_admin(&up, &helpdesk, &["human", "recover", "approve", &id]), "may not approve");
    let approved = as_admin_json(&up, &second, &["human", "recover", "approve", &id]);
    assert_eq!(approved["request"]["state"], "approved", "{approved}");
    assert_eq!(approved["request"]["approved_by"], "second");
    assert_eq!(approved["revoked"], json!([]), "nothing was live any more: {approved}");
    let (st, v) = bob_logs_in(&up, &signer, &stub, false);
    assert_eq!(st, 200, "Bob signs in again after approval: {v}");

    // Show and list, as people and as scripts read them.
    let shown = as_admin_json(&up, &auditor, &["human", "recover", "show", &id]);
    assert_eq!(shown["state"], "approved");
    let listed = as_admin_json(&up, &auditor, &["human", "recover", "list", "--subject", BOB]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let table = stdout(&as_admin(&up, &auditor, &["human", "recover", "list"]));
    assert!(table.starts_with("REQUEST ID"), "{table}");
    assert!(table.contains(&id) && table.contains("approved"), "{table}");
    let open = stdout(&as_admin(&up, &auditor, &["human", "recover", "list", "--open"]));
    assert_eq!(open.trim(), "no open recovery requests");
    fails(&as_admin(&up, &helpdesk, &["human", "recover", "cancel", &id]), "already closed");

    // Break-glass: only a trust-admin grants, for at most 90 days.
    let grant = ["human", "break-glass", "grant", "--subject", BOB, "--reason", "on-call DBA"];
    fails(&as_admin(&up, &helpdesk, &grant), "may not grant");
    fails(&as_admin(&up, &boot, &[&grant[..], &["--expires-in", "91d"][..]].concat()), "at most 90d");
    fails(&as_admin(&up, &boot, &[&grant[..], &["--expires-in", "soon"][..]].concat()), "--expires-in");
    let (st, v) = bob_logs_in(&up, &signer, &stub, true);
    assert_eq!(st, 403, "no break-glass without a grant: {v}");
    let g = as_admin_json(&up, &boot, &[&grant[..], &["--expires-in", "7d"][..]].concat());
    let grant_id = g["id"].as_str().unwrap().to_owned();
    let week = g["expires_at"].as_i64().unwrap() - g["granted_at"].as_i64().unwrap();
    assert_eq!(week, 7 * 86_400, "{g}");

    // An emergency login is a finding until reviewed.
    let (st, bg) = bob_logs_in(&up, &signer, &stub, true);
    assert_eq!(st, 200, "{bg}");
    assert_eq!(bg["break_glass"], true);
    let list = as_admin_json(&up, &auditor, &["human", "break-glass", "list"]);
    assert_eq!(list["grants"].as_array().unwrap().len(), 1, "{list}");
    let uses = list["uses"].as_array().unwrap();
    assert_eq!(uses.len(), 1, "{list}");
    assert_eq!(uses[0]["credential"], bg["serial"]);
    assert!(uses[0]["reviewed_by"].is_null());
    let use_id = uses[0]["id"].as_str().unwrap().to_owned();
    let text = stdout(&as_admin(&up, &auditor, &["human", "break-glass", "list"]));
    assert!(text.contains("Grants:") && text.contains("Uses:"), "{text}");
    assert!(text.contains(&grant_id) && text.contains("active"), "{text}");
    assert!(text.contains(&use_id) && text.contains("UNREVIEWED"), "{text}");

    fails(&as_admin(&up, &helpdesk, &["human", "break-glass", "review", &use_id, "--note", "x"]), "may not review");
    let reviewed = as_admin_json(
        &up,
        &auditor,
        &["human", "break-glass", "review", &use_id, "--note", "INC-42 outage, justified"],
    );
    assert_eq!(reviewed["reviewed_by"], "audit", "{reviewed}");
    let text = stdout(&as_admin(&up, &auditor, &["human", "break-glass", "list"]));
    assert!(text.contains("reviewed by audit") && !text.contains("UNREVIEWED"), "{text}");

    // Withdrawn: what it issued is revoked, and no more emergency logins under it.
    let emergency = bg["serial"].as_str().unwrap();
    assert!(!revoked(&up, emergency));
    let r = as_admin_json(&up, &boot, &["human", "break-glass", "revoke", &grant_id]);
    assert!(r["revoked_at"].is_i64(), "{r}");
    assert!(revoked(&up, emergency), "withdrawing the grant revokes what it issued");
    fails(&as_admin(&up, &boot, &["human", "break-glass", "revoke", &grant_id]), "already revoked");
    let text = stdout(&as_admin(&up, &auditor, &["human", "break-glass", "list"]));
    assert!(text.contains("revoked"), "{text}");
    let (st, v) = bob_logs_in(&up, &signer, &stub, true);
    assert_eq!(st, 403, "{v}");
}
