//! Policy decisions through a real agent: forbids, flips on renewal, TTL caps
//! by @max_ttl and by class, exceptions that raise the cap until they expire,
//! approval rules, and invalid policies refused with the old one in force.

use std::time::Duration;

use futures_util::StreamExt;

use crate::harness::*;
use crate::separate::{Deployment, join_agent, start_server_with, wait_for_svid};

/// Seconds between not_before and not_after of the default SVID in `ctx`.
fn span(ctx: &spiffe::X509Context) -> i64 {
    let leaf = ctx.default_svid().unwrap().leaf().as_bytes().to_vec();
    let (_, c) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
}

fn set_policy(dep: &Deployment, text: &str) -> std::process::Output {
    let f = dep.dir.path().join(format!("policy-{}.cedar", rand_tag()));
    std::fs::write(&f, text).unwrap();
    dep.cli(&["policy", "set", f.to_str().unwrap()])
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Backdating adds 10 s to every certificate's span.
const BACKDATE: i64 = 10;

#[tokio::test(flavor = "multi_thread")]
async fn policy_decides_each_issuance_through_a_real_agent() {
    let dep = start_server_with(None, "[classes.machine]\nmax_ttl = \"2m\"\n");
    let (_agent, agent_id, socket) = join_agent(&dep, "pol");
    dep.owner("web-team");
    let uid = format!("unix:uid:{}", my_uid());
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())).await.unwrap();

    // The class ceiling caps a 1h entry at 2m.
    let web: serde_json::Value = serde_json::from_str(&ok(dep.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--selector",
        &uid,
        "--parent",
        &agent_id,
        "--owner",
        "web-team",
        "--x509-ttl",
        "1h",
        "--jwt-ttl",
        "1h",
        "--json",
    ])))
    .unwrap();
    wait_for_svid(&client).await.expect("allowed by the default policy");
    let ctx = client.fetch_x509_context().await.unwrap();
    assert_eq!(span(&ctx), 120 + BACKDATE, "class machine max_ttl 2m");

    // An invalid policy is refused with Cedar's diagnostics; the old one stays in force.
    let bad = set_policy(&dep, "permit(principal, action, resource) when { context.no_such_attr == 1 };");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no_such_attr") && err.contains("line 1"), "{err}");
    let shown = ok(dep.cli(&["policy", "show"]));
    assert!(shown.contains("default-allow"), "{shown}");

    // @max_ttl caps the JWT for one audience; another audience is not permitted at all.
    ok(set_policy(
        &dep,
        r#"
        @id("x509") permit(principal, action in [Action::"issue_x509", Action::"renew"], resource);
        @id("db") @max_ttl("45s") permit(principal, action == Action::"issue_jwt", resource == Audience::"db");
    "#,
    ));
    let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    let exp = jwt.expiry().unix_timestamp();
    let now = hallmark_core::now_unix();
    assert!(exp > now && exp <= now + 46, "JWT capped at 45s: exp {exp}, now {now}");
    let refused = client.fetch_jwt_svid(["s3"], None).await.unwrap_err();
    assert!(denied(&format!("{refused:?}")), "{refused:?}");

    // A policy change flips the workload to denied at its next renewal: the
    // open stream sees PermissionDenied, without the SVID expiring first.
    ok(set_policy(
        &dep,
        r#"
        @id("short") @max_ttl("8s") permit(principal, action, resource);
    "#,
    ));
    // (The first entry's SVID was issued under an older policy; only new issuances see the new one.)
    ok(dep.cli(&["entry", "delete", web["id"].as_str().unwrap()]));
    let flip: serde_json::Value = serde_json::from_str(&ok(dep.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/flip",
        "--selector",
        &uid,
        "--selector",
        "unix:gid:0",
        "--parent",
        &agent_id,
        "--owner",
        "web-team",
        "--json",
    ])))
    .unwrap();
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ctx = tokio::time::timeout_at(deadline, stream.next()).await.unwrap().unwrap().unwrap();
        if ctx.svids().len() == 1
            && ctx.svids().iter().all(|s| {
                let (_, c) = x509_parser::parse_x509_certificate(s.leaf().as_bytes()).unwrap();
                c.validity().not_after.timestamp() - c.validity().not_before.timestamp() == 8 + BACKDATE
            })
        {
            break;
        }
    }
    ok(set_policy(
        &dep,
        r#"@id("stop-web") forbid(principal in Owner::"web-team", action, resource);
permit(principal, action, resource);"#,
    ));
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("denied at the next renewal, before the SVID would expire");
    match end {
        Some(Err(e)) => assert!(denied(&format!("{e:?}")), "{e:?}"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    // A fresh request is denied too, and the denial is recorded with the policy id.
    let err = client.fetch_x509_svid().await.unwrap_err();
    assert!(denied(&format!("{err:?}")), "{err:?}");
    let denials = admin_get(&dep, &format!("/v1/entries/{}/denials", flip["id"].as_str().unwrap())).await;
    let first = &denials["denials"][0];
    assert_eq!(first["policy_ids"], serde_json::json!(["stop-web"]), "{denials}");
    assert!(first["reason"].as_str().unwrap().contains("policy v4"), "{denials}");
    assert_eq!(first["action"], "renew", "the denial came at the renewal");
    let history = ok(dep.cli(&["policy", "history"]));
    assert!(history.lines().count() >= 4, "{history}");
    let diff = ok(dep.cli(&["policy", "diff", "3", "4"]));
    assert!(diff.contains("+@id(\"stop-web\")"), "{diff}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exceptions_raise_the_cap_until_they_expire() {
    let dep = start_server_with(None, "[classes.machine]\nmax_ttl = \"12s\"\nrenew_at = 0.5\n");
    let (_agent, agent_id, socket) = join_agent(&dep, "exc");
    dep.owner("legacy-team");
    let uid = format!("unix:uid:{}", my_uid());
    let e: serde_json::Value = serde_json::from_str(&ok(dep.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/legacy",
        "--selector",
        &uid,
        "--parent",
        &agent_id,
        "--owner",
        "legacy-team",
        "--x509-ttl",
        "1h",
        "--json",
    ])))
    .unwrap();
    let entry_id = e["id"].as_str().unwrap();

    // Two trust-admin identities: the requester cannot approve its own exception.
    let alice = ok(dep.cli(&["admin", "token", "create", "--role", "trust-admin", "--name", "alice"]));
    let bob = ok(dep.cli(&["admin", "token", "create", "--role", "trust-admin", "--name", "bob"]));
    let alice = alice.lines().last().unwrap().to_owned();
    let bob = bob.lines().last().unwrap().to_owned();
    let as_user = |token: &str, args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .env("HALLMARK_SERVER", &dep.env["HALLMARK_SERVER"])
            .env("HALLMARK_TOKEN", token)
            .output()
            .unwrap()
    };
    let req: serde_json::Value = serde_json::from_str(&ok(as_user(
        &alice,
        &[
            "exception",
            "request",
            "--entry",
            entry_id,
            "--rule",
            "ttl_above_class_max",
            "--value",
            "40s",
            "--justification",
            "legacy client cannot renew fast",
            "--expires",
            "15s",
            "--json",
        ],
    )))
    .unwrap();
    let xid = req["id"].as_str().unwrap();
    let own = as_user(&alice, &["exception", "approve", xid]);
    assert!(!own.status.success());
    assert!(String::from_utf8_lossy(&own.stderr).contains("cannot be approved by the identity that requested it"));
    let operator = ok(dep.cli(&["admin", "token", "create", "--role", "operator", "--name", "olga"]));
    let olga = operator.lines().last().unwrap().to_owned();
    let forbidden = as_user(&olga, &["exception", "approve", xid]);
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("trust-admin"), "only trust-admin approves");
    ok(as_user(&bob, &["exception", "approve", xid]));
    let active = ok(dep.cli(&["exception", "list", "--active", "--json"]));
    assert!(active.contains(xid));

    // With the exception the SVID lives 40s; once it has expired, the next
    // issuance is back under the 12s class cap, with no one doing anything.
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())).await.unwrap();
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(span(&first), 40 + BACKDATE, "exception raises the cap to 40s");
    let later = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let ctx = stream.next().await.unwrap().unwrap();
            if span(&ctx) != 40 + BACKDATE {
                return ctx;
            }
        }
    })
    .await
    .expect("a renewal after the exception expired");
    assert_eq!(span(&later), 12 + BACKDATE, "back under the class cap");
    let expired = ok(dep.cli(&["exception", "list", "--expired", "--json"]));
    assert!(expired.contains(xid), "{expired}");
}

#[test]
fn policy_test_command_checks_a_case_table() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hallmark-policy/tests/corpus");
    let out = std::process::Command::new(bin())
        .args(["policy", "test", "--policy"])
        .arg(corpus.join("scoped.cedar"))
        .arg("--cases")
        .arg(corpus.join("scoped.cases.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("9 passed, 0 failed"));
    // A wrong expectation fails the command and shows the mismatch.
    let cases = r#"{"cases": [{"name": "db is 15m, not 1h", "action": "issue_jwt", "audience": "db",
        "entry": {"spiffe_id": "spiffe://example.org/api", "jwt_ttl": "1h"},
        "evidence": {"selectors": ["unix:sha256:1111111111111111111111111111111111111111111111111111111111111111"]},
        "expect": {"decision": "allow", "ttl": "1h"}}]}"#;
    std::fs::write(dir.path().join("bad.json"), cases).unwrap();
    let out = std::process::Command::new(bin())
        .args(["policy", "test", "--policy"])
        .arg(corpus.join("scoped.cedar"))
        .arg("--cases")
        .arg(dir.path().join("bad.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL db is 15m, not 1h: expected allow 1h, got allow 15m"), "{stdout}");
}

/// A GET on the admin API with the deployment's token.
async fn admin_get(dep: &Deployment, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = dep.env["HALLMARK_SERVER"].trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        dep.env["HALLMARK_TOKEN"]
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {buf}"))
}
