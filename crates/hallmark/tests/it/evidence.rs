//! Evidence an auditor can read (issue 16), with real processes on SQLite
//! and on PostgreSQL: a workload gets an SVID and a JWT-SVID through a
//! separate agent; `credential show` says which executable (by digest), as
//! which uid, in which process (pid, start time) got each; `audit export`
//! carries the same evidence set with the issuance records; the set holds
//! no key material or token; and a stored set edited in the database makes
//! `audit verify` fail, naming it.

use serde_json::Value;

use crate::harness::*;
use crate::separate::{join_agent, start_server_with};

#[tokio::test(flavor = "multi_thread")]
async fn credential_show_and_audit_export_name_the_binary_user_and_process_on_sqlite() {
    auditor_reads_the_evidence(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_show_and_audit_export_name_the_binary_user_and_process_on_postgres() {
    let Some(url) = postgres_db("hm_evidence") else { return };
    auditor_reads_the_evidence(Some(url)).await;
}

async fn auditor_reads_the_evidence(datastore: Option<String>) {
    let dep = start_server_with(datastore.clone(), "");
    let (agent, agent_id, socket) = join_agent(&dep, "a");
    let (client, svid) = dep.serve_me("spiffe://example.org/audited", &agent, &agent_id, &socket).await;
    let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    let serial = serial_of(svid.leaf().as_bytes());
    let me = std::process::id();
    let exe = format!("unix:sha256:{}", sha256_file(&std::env::current_exe().unwrap()));
    let uid = format!("unix:uid:{}", my_uid());

    // `credential show`: the credential, and which binary, uid and process got it.
    let out = dep.cli(&["credential", "show", &serial, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["credential"]["id"], serial.as_str());
    let evidence = &shown["evidence"];
    let selectors: Vec<&str> = evidence["selectors"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(selectors.contains(&exe.as_str()), "the executable's digest: {selectors:?}");
    assert!(selectors.contains(&uid.as_str()), "the uid: {selectors:?}");
    assert_eq!(evidence["process"]["pid"], me, "this test's process asked: {evidence}");
    let started = evidence["process"]["started_at"].as_i64().unwrap();
    let now = hallmark_core::now_unix();
    assert!(started <= now && started > now - 3600, "started {started}, now {now}");
    assert!(evidence["process"]["started_at_rfc3339"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(evidence["digest"], shown["credential"]["evidence_digest"]);
    let text = dep.cli(&["credential", "show", &serial]);
    let text = String::from_utf8_lossy(&text.stdout);
    let pid_line = text.lines().any(|l| l.trim_start().starts_with("pid") && l.ends_with(&format!(": {me}")));
    assert!(text.contains(&exe) && text.contains(&uid) && pid_line, "{text}");
    let jti = jwt_claims(jwt.token())["jti"].as_str().unwrap().to_owned();
    let shown_jwt: Value = serde_json::from_slice(&dep.cli(&["credential", "show", &jti, "--json"]).stdout).unwrap();
    assert_eq!(shown_jwt["evidence"]["process"]["pid"], me, "{shown_jwt}");
    assert_eq!(dep.cli(&["credential", "show", "no-such-credential"]).status.code(), Some(1));

    // `audit export`: the issuance record carries the same set, under the
    // digest its details (which its hash covers) name.
    let out = dep.cli(&["audit", "export"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let export = String::from_utf8_lossy(&out.stdout).into_owned();
    let records: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let issued = records.iter().find(|r| r["details"]["serial"] == serial.as_str()).expect("issuance exported");
    assert_eq!(issued["evidence"], shown["evidence"].as_object().map(without_rfc3339).unwrap());
    assert_eq!(issued["details"]["evidence_digest"], evidence["digest"]);

    // No secrets in the stored set: not the JWT, not the admin token, no key.
    for what in [&export, &String::from_utf8_lossy(&serde_json::to_vec(&shown).unwrap()).into_owned()] {
        assert!(!what.contains(jwt.token()) && !what.contains(&dep.env["HALLMARK_TOKEN"]));
        assert!(!what.contains("PRIVATE KEY"));
    }
    let key = svid.private_key().as_ref();
    let db_url =
        datastore.unwrap_or_else(|| format!("sqlite://{}", dep.dir.path().join("server/hallmark.db").display()));
    let store = hallmark_store::Store::open(&db_url).await.unwrap();
    let rows = sqlx::query("SELECT digest, selectors FROM evidence").fetch_all(store.pool()).await.unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        use sqlx::Row;
        let text: String = r.get("selectors");
        assert!(!text.contains(jwt.token()) && !text.contains(&dep.env["HALLMARK_TOKEN"]) && !text.contains("KEY"));
        assert!(!text.contains(&hex::encode(key)), "no workload key in the stored set");
    }
    let ok = dep.cli(&["audit", "verify"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    // Tamper: the stored set now names another user. `audit verify` fails, naming it.
    let digest = evidence["digest"].as_str().unwrap();
    let other = if my_uid() == "0" { "unix:uid:1000" } else { "unix:uid:0" };
    sqlx::query("UPDATE evidence SET selectors = REPLACE(selectors, $1, $2) WHERE digest = $3")
        .bind(uid.clone())
        .bind(other)
        .bind(digest.to_owned())
        .execute(store.pool())
        .await
        .unwrap();
    let bad = dep.cli(&["audit", "verify"]);
    let said = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "an edited evidence set verifies: {said}");
    assert!(said.contains(digest) && said.contains("edited"), "{said}");
    // And `credential show` no longer shows it.
    let shown: Value = serde_json::from_slice(&dep.cli(&["credential", "show", &serial, "--json"]).stdout).unwrap();
    assert!(shown["evidence"].is_null() && shown["evidence_error"].as_str().is_some(), "{shown}");
}

/// The claims of a compact JWS.
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `v` without the `*_rfc3339` twins the CLI adds to `--json` output.
fn without_rfc3339(v: &serde_json::Map<String, Value>) -> Value {
    let mut out = serde_json::Map::new();
    for (k, x) in v {
        if k.ends_with("_rfc3339") {
            continue;
        }
        out.insert(k.clone(), x.as_object().map(without_rfc3339).unwrap_or_else(|| x.clone()));
    }
    Value::Object(out)
}
