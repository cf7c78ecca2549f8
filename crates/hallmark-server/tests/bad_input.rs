//! Malformed, oversized, wrong-type and out-of-range input to the admin API:
//! each gets a 4xx with a JSON error, never a 5xx, on SQLite and on
//! PostgreSQL (which cannot store a NUL character at all), and nothing stored
//! changes. Regression tests for what schemathesis and the fuzzers found.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)]

use hallmark_store::hash_secret;
use serde_json::json;

mod common;
use common::{call, call_raw, fixture, start_server};

/// (method, path, token, content type, body, expected status)
type Case = (&'static str, String, &'static str, &'static str, Vec<u8>, u16);

async fn bad_input_gets_4xx(datastore: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), datastore.as_deref()).await;
    let st = &server.state;
    let addr = server.admin_addr.to_string();
    st.store.add_admin_token(&hash_secret("tok"), "admin", "trust-admin", fixture(st)).await.unwrap();
    st.store.add_admin_token(&hash_secret("op"), "op", "operator", fixture(st)).await.unwrap();
    st.store.create_owner("ops", "ops@example.org", "", &Default::default(), fixture(st)).await.unwrap();
    let parent = "spiffe://example.org/hallmark/agent/join_token/x";

    let big = format!("{{\"name\":\"{}\",\"contact\":\"a@b\"}}", "x".repeat(2 << 20));
    let cases: Vec<Case> = vec![
        // Arrays where objects belong: derived deserializers would take them.
        ("POST", "/v1/join-tokens".into(), "op", "application/json", b"[]".to_vec(), 422),
        ("POST", "/v1/admin-tokens".into(), "tok", "application/json", br#"["x","trust-admin"]"#.to_vec(), 422),
        (
            "POST",
            "/v1/entries".into(),
            "op",
            "application/json",
            format!(r#"["spiffe://example.org/arr","{parent}",["unix:uid:7"],"ops"]"#).into_bytes(),
            422,
        ),
        (
            "POST",
            "/v1/entries/batch".into(),
            "op",
            "application/json",
            format!(r#"{{"entries":[["spiffe://example.org/arr","{parent}",["unix:uid:7"],"ops"]]}}"#).into_bytes(),
            422,
        ),
        // NUL characters, in a body string and in the path or query.
        ("POST", "/v1/owners".into(), "tok", "application/json", br#"{"name":"n\u0000","contact":"a@b"}"#.to_vec(), 400),
        (
            "POST",
            "/v1/entries".into(),
            "op",
            "application/json",
            format!(r#"{{"spiffe_id":"spiffe://example.org/a","parent_id":"{parent}","selectors":["unix:uid:1"],"owner":"ops","hint":"h\u0000"}}"#).into_bytes(),
            400,
        ),
        ("GET", "/v1/owners/a%00b".into(), "tok", "application/json", Vec::new(), 400),
        ("GET", "/v1/credentials?owner=a%00".into(), "tok", "application/json", Vec::new(), 400),
        // Not JSON, wrong content type, wrong types, unknown fields, too big.
        ("POST", "/v1/owners".into(), "tok", "application/json", b"{not json".to_vec(), 400),
        ("POST", "/v1/owners".into(), "tok", "text/plain", br#"{"name":"n","contact":"a@b"}"#.to_vec(), 415),
        ("POST", "/v1/owners".into(), "tok", "application/json", br#"{"name":7,"contact":"a@b"}"#.to_vec(), 422),
        ("POST", "/v1/owners".into(), "tok", "application/json", br#"{"name":"n","contact":"a@b","x":1}"#.to_vec(), 422),
        ("POST", "/v1/owners".into(), "tok", "application/json", big.into_bytes(), 413),
        // Out of range.
        ("POST", "/v1/join-tokens".into(), "op", "application/json", br#"{"ttl":"99999999999d"}"#.to_vec(), 400),
        ("GET", "/v1/reports/expiring?within=9223372036854775807".into(), "tok", "application/json", Vec::new(), 200),
        ("GET", "/v1/reports/expiring?within=-1".into(), "tok", "application/json", Vec::new(), 400),
        ("GET", "/v1/credentials?limit=abc".into(), "tok", "application/json", Vec::new(), 400),
        ("GET", "/v1/bundle?format=%ff".into(), "tok", "application/json", Vec::new(), 400),
    ];
    for (method, path, token, ct, body, want) in cases {
        let (status, reply) = call_raw(&addr, method, &path, Some(token), ct, &body).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        assert_eq!(status, want, "{method} {path} {shown}: {reply}");
        if status >= 400 {
            assert!(reply["error"].is_string(), "{method} {path}: error not in the JSON shape: {reply}");
        }
    }
    // Nothing was created by any of them.
    let (_, owners) = call(&addr, "GET", "/v1/owners", Some("tok"), None).await;
    assert_eq!(owners["owners"].as_array().map(Vec::len), Some(1), "{owners}");
    let (_, entries) = call(&addr, "GET", "/v1/entries", Some("tok"), None).await;
    assert_eq!(entries["entries"], json!([]), "{entries}");
    assert!(!st.store.admin_name_taken("x").await.unwrap(), "the array body created no admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_4xx_on_sqlite() {
    bad_input_gets_4xx(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_4xx_on_postgres() {
    let Some(url) = hallmark_testkit::postgres_db("bad_input") else { return };
    bad_input_gets_4xx(Some(url)).await;
}
