//! `hallmark up`: the Workload API against the independent `spiffe` client.

use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use serde_json::Value;
use spiffe::{JwtSvid, TrustDomain};

use crate::harness::*;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn x509_and_jwt_svids_conform() {
    let up = Up::start();
    up.create_entry(
        "spiffe://example.org/web",
        &["--selector", &format!("unix:uid:{}", my_uid()), "--dns-name", "web.internal"],
    );
    let client = up.client().await;

    let ctx = client.fetch_x509_context().await.unwrap();
    let svid = ctx.default_svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/web");
    let bundle = ctx.bundle_set().get(&td()).expect("own trust domain bundle");
    let ca = bundle.authorities().first().unwrap().as_bytes().to_vec();
    check_x509_svid_rules(svid.leaf().as_bytes(), &ca, "spiffe://example.org/web");
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf().as_bytes()).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(
        san.value
            .general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName("web.internal"))),
        "the entry's DNS name is a SAN"
    );

    // openssl agrees the chain verifies against the published bundle.
    let dir = tempfile::tempdir().unwrap();
    let leaf_pem: String = svid.cert_chain().iter().map(|c| pem_cert(c.as_bytes())).collect();
    std::fs::write(dir.path().join("leaf.pem"), leaf_pem).unwrap();
    let bundle_pem = up.cli(&["bundle", "show", "--format", "pem"]);
    assert!(bundle_pem.status.success());
    std::fs::write(dir.path().join("bundle.pem"), &bundle_pem.stdout).unwrap();
    openssl_verify(&dir.path().join("bundle.pem"), &dir.path().join("leaf.pem"));

    let bundles = client.fetch_x509_bundles().await.unwrap();
    assert_eq!(bundles.len(), 1);

    // JWT-SVID: header and claims per the JWT-SVID standard.
    let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    let token = jwt.token().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let header_keys: Vec<&String> = header.as_object().unwrap().keys().collect();
    assert!(header_keys.iter().all(|k| ["alg", "kid", "typ"].contains(&k.as_str())), "{header}");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["sub"], "spiffe://example.org/web");
    assert_eq!(claims["aud"], serde_json::json!(["db"]));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 300 + 5, "default JWT TTL is 5m: exp {exp}, now {now}");

    // Verified independently with the JWT bundle, and through ValidateJWTSVID.
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    let verified = JwtSvid::parse_and_validate(&token, &jwt_bundles, &["db"]).unwrap();
    assert_eq!(verified.spiffe_id().to_string(), "spiffe://example.org/web");
    assert!(JwtSvid::parse_and_validate(&token, &jwt_bundles, &["other"]).is_err());
    let validated = client.validate_jwt_token("db", &token).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), "spiffe://example.org/web");
    assert!(client.validate_jwt_token("other", &token).await.is_err());
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string().replace("web", "admin")), parts[2]);
    assert!(client.validate_jwt_token("db", &tampered).await.is_err());

    // The SPIFFE bundle document (JWKS) published by the server.
    let jwks = up.cli(&["bundle", "show", "--format", "jwks"]);
    let doc: Value = serde_json::from_slice(&jwks.stdout).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["use"] == "x509-svid" && k.get("kid").is_none() && k["x5c"].as_array().map(Vec::len) == Some(1))
    );
    assert!(keys.iter().any(|k| k["use"] == "jwt-svid" && k["kid"] == header["kid"]));
    assert!(doc["spiffe_sequence"].is_u64());
}

pub fn pem_cert(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

fn with_header<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_errors_follow_the_spec() {
    let up = Up::start();
    up.create_entry("spiffe://example.org/web", &["--selector", &format!("unix:uid:{}", my_uid())]);
    let mut raw = raw_client(&up.socket()).await;
    use hallmark_proto::workload::*;
    // No security header: InvalidArgument on every RPC.
    let s = raw.fetch_x509svid(X509svidRequest {}).await.err().unwrap();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let s =
        raw.fetch_jwtsvid(JwtsvidRequest { audience: vec!["a".into()], spiffe_id: String::new() }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    let s = raw.fetch_jwt_bundles(JwtBundlesRequest {}).await.err().unwrap();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    // A header with the wrong value is the same as none.
    let mut r = tonic::Request::new(X509svidRequest {});
    r.metadata_mut().insert("workload.spiffe.io", "yes".parse().unwrap());
    assert_eq!(raw.fetch_x509svid(r).await.err().unwrap().code(), tonic::Code::InvalidArgument);
    // Missing mandatory fields: InvalidArgument.
    let s = raw.fetch_jwtsvid(with_header(JwtsvidRequest::default())).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    let s = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest { audience: "a".into(), svid: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    // WIT profile: the same header rule; a malformed SPIFFE ID is InvalidArgument;
    // with the header, the first message of each stream at once.
    let s = raw.fetch_witsvid(WitsvidRequest::default()).await.err().unwrap();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    let s = raw.fetch_wit_bundles(WitBundlesRequest::default()).await.err().unwrap();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    let s = raw.fetch_witsvid(with_header(WitsvidRequest { spiffe_id: "not an id".into() })).await.err().unwrap();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    let mut wits = raw.fetch_witsvid(with_header(WitsvidRequest::default())).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), wits.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    assert!(first.svids[0].wit_svid.split('.').count() == 3 && first.svids[0].wit_svid_key.contains("\"d\""));
    let mut bundles = raw.fetch_wit_bundles(with_header(WitBundlesRequest::default())).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), bundles.message()).await.unwrap().unwrap().unwrap();
    assert!(first.bundles["spiffe://example.org"].contains("\"wit-svid\""), "{first:?}");
    // With the header, the first stream message arrives at once and holds the full state.
    let mut stream = raw.fetch_x509svid(with_header(X509svidRequest {})).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    assert!(!first.svids[0].x509_svid_key.is_empty() && !first.svids[0].bundle.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_uid_is_permission_denied() {
    let up = Up::start();
    let other_uid = if my_uid() == "65534" { "65533" } else { "65534" };
    up.create_entry("spiffe://example.org/nobody", &["--selector", &format!("unix:uid:{other_uid}")]);
    let client = up.client().await;
    let err = client.fetch_x509_svid().await.unwrap_err();
    assert!(denied(&format!("{err:?}")), "{err:?}");
    let err = client.fetch_jwt_svid(["db"], None).await.unwrap_err();
    assert!(denied(&format!("{err:?}")), "{err:?}");
    let err = client.fetch_x509_bundles().await.unwrap_err();
    assert!(denied(&format!("{err:?}")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sha256_selects_one_binary_and_not_another() {
    let up = Up::start();
    let me = std::env::current_exe().unwrap();
    let cli = std::path::Path::new(bin());
    up.create_entry("spiffe://example.org/tests", &["--selector", &format!("unix:sha256:{}", sha256_file(&me))]);
    up.create_entry("spiffe://example.org/cli", &["--selector", &format!("unix:sha256:{}", sha256_file(cli))]);
    // This test binary gets its entry and not the CLI's.
    let client = up.client().await;
    let all = client.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = all.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, vec!["spiffe://example.org/tests"]);
    // The hallmark binary, as another process, gets the CLI's entry and not this one.
    let out = up.cli(&["api", "fetch-x509", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|s| s["spiffe_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["spiffe://example.org/cli"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_is_pushed_on_an_open_stream() {
    let up = Up::start();
    up.create_entry(
        "spiffe://example.org/short",
        &["--selector", &format!("unix:uid:{}", my_uid()), "--x509-ttl", "6s"],
    );
    let client = up.client().await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let mut leaves = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while leaves.len() < 3 {
        let ctx =
            tokio::time::timeout_at(deadline, stream.next()).await.expect("rotations within 40s").unwrap().unwrap();
        let leaf = ctx.default_svid().unwrap().leaf().as_bytes().to_vec();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert!(cert.validity().is_valid(), "an SVID on the stream is never expired");
        if leaves.last() != Some(&leaf) {
            leaves.push(leaf);
        }
    }
    assert_eq!(leaves.len(), 3, "three distinct SVIDs seen on one stream");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_entry_disappears_from_the_stream() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    let a = up.create_entry("spiffe://example.org/a", &["--selector", &uid, "--hint", "a"]);
    let b = up.create_entry("spiffe://example.org/b", &["--selector", &uid, "--hint", "b"]);
    let client = up.client().await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let ids = |ctx: &spiffe::X509Context| ctx.svids().iter().map(|s| s.spiffe_id().to_string()).collect::<Vec<_>>();
    let mut ctx = stream.next().await.unwrap().unwrap();
    while ids(&ctx).len() < 2 {
        ctx = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(ids(&ctx), vec!["spiffe://example.org/a", "spiffe://example.org/b"]);
    // Deleting revokes the entry's credentials, then removes it: the stream
    // may carry the same state more than once, never `a` again.
    up.cli_json(&["entry", "delete", a["id"].as_str().unwrap()]);
    let ctx = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ids(&ctx), vec!["spiffe://example.org/b"]);
    up.cli_json(&["entry", "delete", b["id"].as_str().unwrap()]);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
            Some(Ok(ctx)) => assert_eq!(ids(&ctx), vec!["spiffe://example.org/b"], "only b's state may be repeated"),
            Some(Err(e)) => {
                assert!(denied(&format!("{e:?}")), "{e:?}");
                break;
            }
            None => panic!("the stream ended without PermissionDenied"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_resumes_with_the_same_ca_entries_and_token() {
    let mut up = Up::start();
    let e = up.create_entry("spiffe://example.org/keep", &["--selector", &format!("unix:uid:{}", my_uid())]);
    let bundle_before = up.cli(&["bundle", "show"]).stdout;
    let token_before = up.env["HALLMARK_TOKEN"].clone();
    up.proc.kill();
    let Up { dir, proc, .. } = up;
    drop(proc);
    let up = Up::start_in(dir);
    assert_eq!(up.env["HALLMARK_TOKEN"], token_before);
    assert_eq!(up.cli(&["bundle", "show"]).stdout, bundle_before);
    let shown = up.cli_json(&["entry", "show", e["id"].as_str().unwrap()]);
    assert_eq!(shown["spiffe_id"], "spiffe://example.org/keep");
    let client = up.client().await;
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/keep");
    // Key material on disk is private.
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec!["data/agent/agent.key.der".to_owned(), "data/admin-token".into(), "data/env".into()];
    for kind in ["x509", "jwt"] {
        let keys: Vec<String> = std::fs::read_dir(up.dir.path().join("data/server/keys").join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".key.pem"))
            .map(|n| format!("data/server/keys/{kind}/{n}"))
            .collect();
        assert_eq!(keys.len(), 1, "one {kind} authority key: {keys:?}");
        files.extend(keys);
    }
    for f in files {
        let mode = std::fs::metadata(up.dir.path().join(&f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_issuance_and_change_is_in_the_audit_chain() {
    let up = Up::start();
    let e = up.create_entry("spiffe://example.org/audited", &["--selector", &format!("unix:uid:{}", my_uid())]);
    let client = up.client().await;
    let svid = client.fetch_x509_svid().await.unwrap();
    let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    let serial = {
        let (_, c) = x509_parser::parse_x509_certificate(svid.leaf().as_bytes()).unwrap();
        hex::encode(c.raw_serial())
    };
    let out = up.cli(&["audit", "export", "--since", "1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |action: &str| records.iter().find(|r| r["action"] == action).cloned();
    let issued = find("issue_x509").expect("issuance recorded");
    assert_eq!(issued["details"]["serial"], serial.as_str(), "the serial the client received is in the chain");
    assert_eq!(issued["subject"], e["id"]);
    assert!(issued["actor"].as_str().unwrap().starts_with("node:spiffe://example.org/hallmark/agent/"));
    assert_eq!(issued["details"]["policy_ids"], serde_json::json!(["default-allow"]));
    assert!(issued["details"]["evidence_digest"].as_str().is_some_and(|d| d.len() == 64));
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwt.token().split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(find("issue_jwt").unwrap()["details"]["jti"], claims["jti"]);
    assert!(find("entry_create").is_some() && find("owner_create").is_some());
    // Nothing secret in any record.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("PRIVATE KEY") && !text.contains(&up.env["HALLMARK_TOKEN"]) && !text.contains(jwt.token()));
    // A failed authentication is recorded too.
    let bad = std::process::Command::new(bin())
        .args(["entry", "list"])
        .env("HALLMARK_SERVER", &up.env["HALLMARK_SERVER"])
        .env("HALLMARK_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    // The inventory holds both credentials, with owner, node and evidence.
    let inv = up.cli_json(&["credential", "list", "--entry", e["id"].as_str().unwrap()]);
    let list = inv["credentials"].as_array().unwrap();
    let x = list.iter().find(|c| c["kind"] == "x509").expect("X.509 serial in the inventory");
    assert_eq!(x["id"], serial.as_str());
    assert_eq!((x["owner"].as_str(), x["class"].as_str()), (Some("team-test"), Some("machine")));
    assert_eq!(x["evidence_digest"], issued["details"]["evidence_digest"]);
    assert!(list.iter().any(|c| c["kind"] == "jwt" && c["id"] == claims["jti"]));
    let live = up.cli_json(&["credential", "list", "--live", "--owner", "team-test"]);
    assert!(live["credentials"].as_array().unwrap().len() >= 2);
    let soon = up.cli_json(&["credential", "list", "--expiring-within", "10m"]);
    assert!(
        soon["credentials"].as_array().unwrap().iter().all(|c| c["kind"] == "jwt"),
        "only the 5m JWT expires within 10m"
    );
    let verify = up.cli_json(&["audit", "verify"]);
    assert!(verify["broken"].is_null(), "{verify}");
    assert!(verify["records"].as_i64().unwrap() >= 5);
    // Refusals are counted and written once a second.
    wait_for("the refused call in the audit chain", 10, || {
        let all = up.cli(&["audit", "export"]);
        String::from_utf8_lossy(&all.stdout).contains("\"admin_auth\"").then_some(())
    });
}
