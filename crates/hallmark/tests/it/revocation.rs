//! Every revocation path through real processes: a serial, a jti, an entry,
//! an owner, a node; what a workload's open stream sees, what replaces it,
//! what relying parties see (CRL over HTTP and in the Workload API, and
//! ValidateJWTSVID), and what is recorded.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::harness::*;
use crate::separate::{join_agent, start_server_with};

/// Revokes with the CLI and returns its JSON answer.
fn revoke(cli: &dyn Fn(&[&str]) -> std::process::Output, flag: &str, value: &str) -> Value {
    let out = cli(&["revoke", flag, value, "--reason", "integration test", "--json"]);
    assert!(out.status.success(), "revoke {flag} {value}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The serials a CRL (DER) lists.
fn crl_serials(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
    crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect()
}

fn active_x509_authority(cli: &dyn Fn(&[&str]) -> std::process::Output) -> String {
    let out = cli(&["ca", "show", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["authorities"].as_array().unwrap().iter().find(|a| a["kind"] == "x509" && a["state"] == "active").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_serial_is_withdrawn_replaced_and_listed() {
    let up = Up::start();
    up.create_entry("spiffe://example.org/rev", &["--selector", &format!("unix:uid:{}", my_uid())]);
    let client = up.client().await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let serial = serial_of(first.default_svid().unwrap().leaf().as_bytes());

    let t = Instant::now();
    let out = revoke(&|a| up.cli(a), "--serial", &serial);
    assert_eq!(out["credentials"], serde_json::json!([serial]));
    // The open stream drops the SVID at once: it was the only one, so PermissionDenied.
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("pushed within 5s");
    assert!(next.is_none_or(|r| r.is_err()), "the revoked SVID is not sent again");
    let withdrawn = t.elapsed();
    // The entry is still valid: a replacement is issued.
    let replacement = crate::separate::wait_for_svid(&client).await.expect("a replacement SVID");
    let new_serial = serial_of(replacement.leaf().as_bytes());
    assert_ne!(new_serial, serial);
    eprintln!("withdrawn after {withdrawn:?}");

    // Relying parties: the CRL over HTTP and in the Workload API lists the serial.
    let ca = active_x509_authority(&|a| up.cli(a));
    let url = format!("{}/v1/crl/{ca}", up.env["HALLMARK_SERVER"]);
    let der = wait_for("the CRL to list the serial", 10, || {
        let (status, body) = http_get(&url);
        (status == 200 && crl_serials(&body).contains(&serial)).then_some(body)
    });
    assert!(!crl_serials(&der).contains(&new_serial));
    let crl_pem = up.dir.path().join("crl.pem");
    std::fs::write(&crl_pem, pem::encode(&pem::Pem::new("X509 CRL", der.clone()))).unwrap();
    let bundle_pem = up.dir.path().join("bundle.pem");
    std::fs::write(&bundle_pem, up.cli(&["bundle", "show"]).stdout).unwrap();
    let check = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-CAfile"])
        .arg(&bundle_pem)
        .arg("-in")
        .arg(&crl_pem)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stderr).contains("verify OK"), "{check:?}");
    let mut raw = raw_client(&up.socket()).await;
    let mut req = tonic::Request::new(hallmark_proto::workload::X509svidRequest {});
    req.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    let msg = raw.fetch_x509svid(req).await.unwrap().into_inner().message().await.unwrap().unwrap();
    assert!(msg.crl.iter().any(|c| crl_serials(c).contains(&serial)), "the Workload API carries the CRL");

    // Recorded: revoked in the inventory with its reason, and in the audit chain.
    let inv = up.cli_json(&["credential", "list"]);
    let c = inv["credentials"].as_array().unwrap().iter().find(|c| c["id"] == serial.as_str()).unwrap().clone();
    assert_eq!(c["revoke_reason"], "integration test");
    let audit = String::from_utf8_lossy(&up.cli(&["audit", "export"]).stdout).to_string();
    assert!(audit.lines().any(|l| l.contains("\"revoke\"") && l.contains(&serial)));
    // An owner's token lists the revocations of its own credentials only.
    up.ensure_owner("other");
    let listed_for = |role: &str| {
        let name = role.replace(':', "-");
        let tok = up.cli_json(&["admin", "token", "create", "--role", role, "--name", &name]);
        let token = tok["token"].as_str().unwrap().to_owned();
        let text = authorized_get(&up.env["HALLMARK_SERVER"], "/v1/revocations", &token);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["revocations"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert!(listed_for("owner:team-test").contains(&serial));
    assert_eq!(listed_for("owner:other"), Vec::<String>::new());
    assert!(listed_for("auditor").contains(&serial));
    // Unknown serial: a clear error, nothing changed.
    let out = up.cli(&["revoke", "--serial", "00ff", "--reason", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // Exactly one target.
    let out = up.cli(&["revoke", "--serial", "00ff", "--jti", "x", "--reason", "x"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_jti_no_longer_validates_and_is_replaced() {
    let up = Up::start();
    up.create_entry("spiffe://example.org/jwt", &["--selector", &format!("unix:uid:{}", my_uid())]);
    let client = up.client().await;
    let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.token().split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let jti = claims["jti"].as_str().unwrap().to_owned();
    client.validate_jwt_token("db", jwt.token()).await.expect("valid before revocation");
    revoke(&|a| up.cli(a), "--jti", &jti);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.validate_jwt_token("db", jwt.token()).await {
            Err(e) => {
                assert!(format!("{e:?}").contains("revoked"), "{e:?}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the revoked JWT still validates"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fetch gets a new token, not the revoked one.
    let again = client.fetch_jwt_svid(["db"], None).await.unwrap();
    assert_ne!(again.token(), jwt.token());
    client.validate_jwt_token("db", again.token()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_entry_or_an_owner_withdraws_for_good() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    let e = up.create_entry("spiffe://example.org/gone", &["--selector", &uid]);
    let client = up.client().await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    stream.next().await.unwrap().unwrap();
    let out = revoke(&|a| up.cli(a), "--entry", e["id"].as_str().unwrap());
    assert_eq!(out["entries"], serde_json::json!([e["id"]]));
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("pushed within 5s");
    assert!(next.is_none_or(|r| r.is_err()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(denied(&format!("{:?}", client.fetch_x509_svid().await.unwrap_err())), "no replacement");
    let shown = up.cli_json(&["entry", "show", e["id"].as_str().unwrap()]);
    assert!(shown["revoked_at"].as_i64().is_some());

    // An owner: every one of its entries.
    up.ensure_owner("leaving");
    for name in ["a", "b"] {
        let out = up.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://example.org/leaving/{name}"),
            "--selector",
            &uid,
            "--selector",
            &format!("unix:path:{}", std::env::current_exe().unwrap().display()),
            "--owner",
            "leaving",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let svids = wait_for_all(&client, 2).await;
    assert_eq!(svids, 2);
    let out = revoke(&|a| up.cli(a), "--owner", "leaving");
    assert_eq!(out["entries"].as_array().unwrap().len(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.fetch_all_x509_svids().await.is_ok() {
        assert!(Instant::now() < deadline, "the owner's identities are withdrawn");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_all(client: &spiffe::WorkloadApiClient, n: usize) -> usize {
    for _ in 0..200 {
        if let Ok(s) = client.fetch_all_x509_svids().await
            && s.len() >= n
        {
            return s.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    0
}

async fn ban_a_node(datastore: Option<String>) {
    let dep = start_server_with(datastore, "");
    let (agent, agent_id, socket) = join_agent(&dep, "banned");
    let (client, svid) = dep.serve_me("spiffe://example.org/on-node", &agent, &agent_id, &socket).await;
    let serial = serial_of(svid.leaf().as_bytes());
    let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    let mut stream = client.stream_x509_contexts().await.unwrap();
    stream.next().await.unwrap().unwrap();

    let out = revoke(&|a| dep.cli(a), "--node", &agent_id);
    assert_eq!(out["node"], agent_id.as_str());
    assert_eq!(out["credentials"].as_array().unwrap().len(), 2, "the SVID and the JWT issued through it");
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("pushed within 5s");
    assert!(next.is_none_or(|r| r.is_err()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(denied(&format!("{:?}", client.fetch_x509_svid().await.unwrap_err())));
    assert!(client.fetch_jwt_svid(["db"], None).await.is_err(), "nothing more is minted through a banned node");
    let nodes = String::from_utf8_lossy(&dep.cli(&["node", "list"]).stdout).to_string();
    assert!(nodes.lines().any(|l| l.contains(&agent_id) && l.contains("banned: integration test")), "{nodes}");
    // The node's own SVID is on its authority's CRL, as are the workload's.
    let ca = active_x509_authority(&|a| dep.cli(a));
    let agent_serial = serial_of(
        &pem::parse(std::fs::read_to_string(dep.dir.path().join("banned/data/agent.chain.pem")).unwrap())
            .unwrap()
            .into_contents(),
    );
    let url = format!("{}/v1/crl/{ca}", dep.env["HALLMARK_SERVER"]);
    wait_for("the CRL to list the node and its workload", 10, || {
        let (status, body) = http_get(&url);
        let listed = if status == 200 { crl_serials(&body) } else { Vec::new() };
        (listed.contains(&serial) && listed.contains(&agent_serial)).then_some(())
    });
    let inv: Value =
        serde_json::from_slice(&dep.cli(&["credential", "list", "--node", &agent_id, "--json"]).stdout).unwrap();
    assert!(inv["credentials"].as_array().unwrap().iter().all(|c| !c["revoked_at"].is_null()));
    drop(jwt);
    let log = agent.log();
    assert!(log.contains("banned"), "the agent says why it withdrew everything:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn banning_a_node_on_sqlite() {
    ban_a_node(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn banning_a_node_on_postgres() {
    if let Some(url) = postgres_db("hm_ban") {
        ban_a_node(Some(url)).await;
    }
}

/// One authorized HTTP/1.1 GET against the admin API; returns the body.
fn authorized_get(server: &str, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let authority = server.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    buf.split_once("\r\n\r\n").unwrap().1.to_owned()
}
