//! The admin role matrix: every role against every endpoint, and no
//! credential at all. Expectations are written here as data, independent of
//! the server's own table.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use hallmark_core::EntrySpec;
use hallmark_store::hash_secret;
use serde_json::{Value, json};

mod common;
use common::{call, start_server};

#[tokio::test(flavor = "multi_thread")]
async fn every_role_against_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None).await;
    let st = &server.state;
    let addr = server.admin_addr.to_string();
    let roles = ["trust-admin", "operator", "auditor", "owner:team-a"];
    let mut tokens = HashMap::new();
    for r in roles {
        let t = format!("tok-{r}");
        st.store.add_admin_token(&hash_secret(&t), &format!("user-{}", r.replace(':', "-")), r).await.unwrap();
        tokens.insert(r, t);
    }
    let parent = "spiffe://example.org/hallmark/agent/join_token/x";
    let mk = |id: &str, owner: &str| json!({"spiffe_id": format!("spiffe://example.org/{id}"), "parent_id": parent, "selectors": ["unix:uid:1"], "owner": owner});
    st.store.create_owner("team-a", "a@example.org", "").await.unwrap();
    st.store.create_owner("team-b", "b@example.org", "").await.unwrap();
    let mut ids = HashMap::new();
    for (name, owner) in [("a", "team-a"), ("b", "team-b")] {
        let spec: EntrySpec = serde_json::from_value(mk(name, owner)).unwrap();
        let v = spec
            .validate(&st.settings.trust_domain, None, st.settings.default_x509_ttl, st.settings.default_jwt_ttl)
            .unwrap();
        ids.insert(name, st.store.create_entry(&v).await.unwrap().id);
        st.catch_up().await.unwrap();
    }
    let (a, b) = (ids["a"].clone(), ids["b"].clone());
    // An exception requested by the operator, for approve/revoke checks.
    let x = st
        .store
        .request_exception(&a, "ttl_above_class_max", "48h", "test", hallmark_core::now_unix() + 3600, "user-operator")
        .await
        .unwrap();
    let policy = json!({"policy": "permit(principal, action, resource);"});
    let exc = |entry: &str| json!({"entry_id": entry, "rule": "ttl_above_class_max", "value": "30h", "justification": "j", "expires_at": hallmark_core::now_unix() + 600});

    // An owner may not hand its own entry to another owner.
    let (status, _) =
        call(&addr, "PUT", &format!("/v1/entries/{a}"), Some(&tokens["owner:team-a"]), Some(&mk("a", "team-b"))).await;
    assert_eq!(status, 403, "an owner cannot transfer its entry away");

    // (method, path, body, allowed for [trust-admin, operator, auditor, owner:team-a])
    let mut n = 0;
    let cases: Vec<(&str, String, Option<Value>, [bool; 4])> = vec![
        ("GET", "/v1/entries".into(), None, [true, true, true, true]),
        ("POST", "/v1/entries".into(), Some(mk("new-a", "team-a")), [true, true, false, true]),
        ("POST", "/v1/entries".into(), Some(mk("new-b", "team-b")), [true, true, false, false]),
        ("GET", format!("/v1/entries/{a}"), None, [true, true, true, true]),
        ("GET", format!("/v1/entries/{b}"), None, [true, true, true, false]),
        ("PUT", format!("/v1/entries/{a}"), Some(mk("a", "team-a")), [true, true, false, true]),
        ("PUT", format!("/v1/entries/{b}"), Some(mk("b", "team-b")), [true, true, false, false]),
        ("GET", format!("/v1/entries/{a}/denials"), None, [true, true, true, true]),
        ("GET", format!("/v1/entries/{b}/denials"), None, [true, true, true, false]),
        ("POST", "/v1/join-tokens".into(), Some(json!({})), [true, true, false, false]),
        ("POST", "/v1/admin-tokens".into(), None, [true, false, false, false]),
        ("GET", "/v1/owners".into(), None, [true, true, true, true]),
        ("GET", "/v1/owners/team-a".into(), None, [true, true, true, true]),
        (
            "POST",
            "/v1/owners".into(),
            Some(json!({"name": "team-c", "contact": "c@example.org"})),
            [true, true, false, false],
        ),
        ("POST", "/v1/owners/team-c/transfer".into(), Some(json!({"to": "team-b"})), [true, true, false, false]),
        ("POST", "/v1/owners/team-c/deactivate".into(), None, [true, true, false, false]),
        ("GET", "/v1/credentials".into(), None, [true, true, true, true]),
        ("GET", "/v1/credentials?owner=team-b".into(), None, [true, true, true, false]),
        ("GET", "/v1/audit".into(), None, [true, false, true, false]),
        ("GET", "/v1/audit/verify".into(), None, [true, false, true, false]),
        ("GET", "/v1/policy".into(), None, [true, true, true, true]),
        ("GET", "/v1/policy/versions".into(), None, [true, true, true, true]),
        ("GET", "/v1/policy/versions/1".into(), None, [true, true, true, true]),
        ("PUT", "/v1/policy".into(), Some(policy.clone()), [true, false, false, false]),
        ("POST", "/v1/exceptions".into(), Some(exc(&a)), [true, true, false, true]),
        ("POST", "/v1/exceptions".into(), Some(exc(&b)), [true, true, false, false]),
        ("GET", "/v1/exceptions".into(), None, [true, true, true, true]),
        ("POST", format!("/v1/exceptions/{}/approve", x.id), None, [true, false, false, false]),
        ("POST", format!("/v1/exceptions/{}/revoke", x.id), None, [true, false, false, false]),
        ("GET", "/v1/revocations".into(), None, [true, true, true, true]),
        ("GET", "/v1/nodes".into(), None, [true, true, false, false]),
        ("GET", "/v1/authorities".into(), None, [true, true, true, false]),
        // Unknown kinds and ids: the allowed role gets 400 or 404, the others 403.
        ("POST", "/v1/authorities/prepare".into(), Some(json!({"kind": "none"})), [true, false, false, false]),
        ("POST", "/v1/authorities/activate".into(), Some(json!({"kind": "none"})), [true, false, false, false]),
        ("POST", "/v1/authorities/none/taint".into(), None, [true, false, false, false]),
        ("POST", "/v1/authorities/none/revoke".into(), None, [true, false, false, false]),
        ("POST", "/v1/revocations".into(), Some(json!({"serial": "00ff", "reason": "r"})), [true, true, false, true]),
        (
            "POST",
            "/v1/revocations".into(),
            Some(json!({"node": "spiffe://example.org/hallmark/agent/none", "reason": "r"})),
            [true, true, false, false],
        ),
        ("POST", "/v1/revocations".into(), Some(json!({"entry": b, "reason": "r"})), [true, true, false, false]),
    ];
    for (method, path, body, allowed) in &cases {
        for (i, role) in roles.iter().enumerate() {
            // Each role gets its own admin-token name, so creation never collides.
            let body = if path == "/v1/admin-tokens" {
                n += 1;
                Some(json!({"name": format!("made-{n}"), "role": "auditor"}))
            } else {
                body.clone()
            };
            let (status, reply) = call(&addr, method, path, Some(&tokens[role]), body.as_ref()).await;
            if allowed[i] {
                assert!(
                    status != 401 && status != 403,
                    "{role} {method} {path}: expected allowed, got {status} {reply}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}: expected 403, got {status} {reply}");
            }
        }
        // No credential, or a wrong one: 401.
        assert_eq!(call(&addr, method, path, None, body.as_ref()).await.0, 401, "{method} {path} without a token");
        assert_eq!(
            call(&addr, method, path, Some("nope"), body.as_ref()).await.0,
            401,
            "{method} {path} with a bad token"
        );
    }
    // Deletion, last: the owner may delete only its own entry, the auditor nothing.
    assert_eq!(call(&addr, "DELETE", &format!("/v1/entries/{b}"), Some(&tokens["owner:team-a"]), None).await.0, 403);
    assert_eq!(call(&addr, "DELETE", &format!("/v1/entries/{b}"), None, None).await.0, 401);
    assert_eq!(call(&addr, "DELETE", &format!("/v1/entries/{a}"), Some(&tokens["auditor"]), None).await.0, 403);
    assert_eq!(call(&addr, "DELETE", &format!("/v1/entries/{a}"), Some(&tokens["owner:team-a"]), None).await.0, 200);
    assert_eq!(call(&addr, "DELETE", &format!("/v1/entries/{b}"), Some(&tokens["operator"]), None).await.0, 200);
    // Owners list only their own entries.
    let (_, list) = call(&addr, "GET", "/v1/entries", Some(&tokens["owner:team-a"]), None).await;
    assert!(list["entries"].as_array().unwrap().iter().all(|e| e["owner"] == "team-a"), "{list}");
    // The bundle and the CRLs are public.
    let active = st.authorities.x509().unwrap().id();
    assert_eq!(call(&addr, "GET", &format!("/v1/crl/{active}"), None, None).await.0, 200);
    assert_eq!(call(&addr, "GET", "/bundle", None, None).await.0, 200);
    assert_eq!(call(&addr, "GET", "/v1/bundle?format=pem", None, None).await.0, 200);
}
