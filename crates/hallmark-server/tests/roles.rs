//! The admin role matrix: every role against every endpoint, and no
//! credential at all. Expectations are written here as data, independent of
//! the server's own table.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)]

use std::collections::HashMap;

use hallmark_core::EntrySpec;
use hallmark_store::hash_secret;
use serde_json::{Value, json};

mod common;
use common::{call, fixture, start_server};

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
        st.store
            .add_admin_token(&hash_secret(&t), &format!("user-{}", r.replace(':', "-")), r, fixture(st))
            .await
            .unwrap();
        tokens.insert(r, t);
    }
    let parent = "spiffe://example.org/hallmark/agent/join_token/x";
    let mk = |id: &str, owner: &str| json!({"spiffe_id": format!("spiffe://example.org/{id}"), "parent_id": parent, "selectors": ["unix:uid:1"], "owner": owner});
    let team_a_scopes =
        hallmark_core::ScopeLists { paths: vec!["/a".into(), "/new-a".into()], nodes: vec![parent.into()] };
    st.store.create_owner("team-a", "a@example.org", "", &team_a_scopes, fixture(st)).await.unwrap();
    st.store.create_owner("team-b", "b@example.org", "", &Default::default(), fixture(st)).await.unwrap();
    let mut ids = HashMap::new();
    for (name, owner) in [("a", "team-a"), ("b", "team-b")] {
        let spec: EntrySpec = serde_json::from_value(mk(name, owner)).unwrap();
        let v = spec
            .validate(&st.settings.trust_domain, None, st.settings.default_x509_ttl, st.settings.default_jwt_ttl)
            .unwrap();
        ids.insert(name, st.store.create_entry(&v, fixture(st)).await.unwrap().id);
        st.catch_up().await.unwrap();
    }
    let (a, b) = (ids["a"].clone(), ids["b"].clone());
    // An exception requested by the operator, for approve/revoke checks.
    let x = st
        .store
        .request_exception(
            &hallmark_store::NewException {
                entry_id: &a,
                rule: "ttl_above_class_max",
                value: "48h",
                justification: "test",
                expires_at: hallmark_core::now_unix() + 3600,
                requested_by: "user-operator",
            },
            fixture(st),
        )
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
        ("GET", "/v1/nodes".into(), None, [true, true, true, false]),
        ("PUT", "/v1/owners/team-b/scopes".into(), Some(json!({"paths": ["/b"]})), [true, false, false, false]),
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

/// Security issue 12: an owner token cannot become an agent or the server,
/// take another owner's SPIFFE ID, or name a node it may not use; path scopes
/// are set by a trust-admin only and never overlap.
#[tokio::test(flavor = "multi_thread")]
async fn owner_tokens_stay_inside_their_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None).await;
    let st = &server.state;
    let addr = server.admin_addr.to_string();
    let node = "spiffe://example.org/hallmark/agent/join_token/alpha-node";
    let other_node = "spiffe://example.org/hallmark/agent/join_token/other";
    for (t, name, role) in [
        ("tok-admin", "admin", "trust-admin"),
        ("tok-op", "op", "operator"),
        ("tok-alpha", "alpha-bot", "owner:alpha"),
        ("tok-gamma", "gamma-bot", "owner:gamma"),
    ] {
        st.store.add_admin_token(&hash_secret(t), name, role, fixture(st)).await.unwrap();
    }
    let post = |token: &'static str, path: &'static str, body: Value| {
        let addr = addr.clone();
        async move { call(&addr, "POST", path, Some(token), Some(&body)).await }
    };
    // Scopes are the trust-admin's to set.
    let alpha = json!({"name": "alpha", "contact": "a@example.org", "paths": ["/alpha/"], "nodes": [node]});
    assert_eq!(post("tok-op", "/v1/owners", alpha.clone()).await.0, 403, "an operator cannot set scopes");
    assert_eq!(post("tok-admin", "/v1/owners", alpha).await.0, 201);
    let beta = json!({"name": "beta", "contact": "b@example.org", "paths": ["/beta"], "nodes": ["*"]});
    assert_eq!(post("tok-admin", "/v1/owners", beta).await.0, 201);
    assert_eq!(post("tok-op", "/v1/owners", json!({"name": "gamma", "contact": "g@example.org"})).await.0, 201);
    // Overlapping path scopes are refused: a path belongs to one owner.
    let (status, reply) = call(
        &addr,
        "PUT",
        "/v1/owners/gamma/scopes",
        Some("tok-admin"),
        Some(&json!({"paths": ["/alpha/x"], "nodes": ["*"]})),
    )
    .await;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("overlaps"), "{reply}");
    // Bad scopes are refused with the value named.
    for bad in
        [json!({"paths": ["/hallmark/"]}), json!({"paths": ["nope"]}), json!({"nodes": ["spiffe://example.org/web"]})]
    {
        let (status, reply) = call(&addr, "PUT", "/v1/owners/gamma/scopes", Some("tok-admin"), Some(&bad)).await;
        assert_eq!(status, 400, "{bad}: {reply}");
    }

    let entry = |id: &str, owner: &str, parent: &str| json!({"spiffe_id": format!("spiffe://example.org{id}"), "parent_id": parent, "selectors": ["unix:uid:1001"], "owner": owner});
    // The beta entry an attacker wants to take over.
    assert_eq!(post("tok-admin", "/v1/entries", entry("/beta/db", "beta", other_node)).await.0, 201);

    // Hallmark's own identities: refused for every role.
    for token in ["tok-alpha", "tok-admin"] {
        for id in ["/hallmark/agent/local", "/hallmark/server", "/hallmark/agent/join_token/x", "/Hallmark/server"] {
            let (status, reply) = post(token, "/v1/entries", entry(id, "alpha", node)).await;
            assert_eq!(status, 400, "{token} {id}: {reply}");
            assert!(reply["error"].as_str().unwrap().contains("reserved"), "{reply}");
        }
    }
    // Outside alpha's path scope (another owner's ID), or on a node alpha may not use.
    let (status, reply) = post("tok-alpha", "/v1/entries", entry("/beta/db", "alpha", node)).await;
    assert_eq!(status, 403, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("outside owner `alpha`"), "{reply}");
    let (status, reply) = post("tok-alpha", "/v1/entries", entry("/alpha/api", "alpha", other_node)).await;
    assert_eq!(status, 403, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("may not use node"), "{reply}");
    // A parent that is not an agent at all.
    let (status, _) =
        post("tok-alpha", "/v1/entries", entry("/alpha/api", "alpha", "spiffe://example.org/alpha/x")).await;
    assert_eq!(status, 400);
    // Inside both: allowed.
    assert_eq!(post("tok-alpha", "/v1/entries", entry("/alpha/api", "alpha", node)).await.0, 201);
    // An owner with no scopes: its token may register nothing.
    let (status, reply) = post("tok-gamma", "/v1/entries", entry("/gamma/x", "gamma", node)).await;
    assert_eq!(status, 403, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("no SPIFFE-ID path scopes"), "{reply}");
    // One SPIFFE ID, one owner, whoever registers it: even an operator
    // registering beta's ID for gamma (which has no scopes) is refused.
    let (status, reply) = post("tok-op", "/v1/entries", entry("/beta/db", "gamma", other_node)).await;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("held by entries of owner `beta`"), "{reply}");
    // And the batch endpoint keeps every rule.
    let batch = json!({"entries": [entry("/alpha/b1", "alpha", node), entry("/hallmark/server", "alpha", node)]});
    assert_eq!(post("tok-alpha", "/v1/entries/batch", batch).await.0, 400);
    let batch = json!({"entries": [entry("/alpha/b1", "alpha", node), entry("/beta/db", "alpha", node)]});
    assert_eq!(post("tok-alpha", "/v1/entries/batch", batch).await.0, 403);
    let batch = json!({"entries": [entry("/x/same", "gamma", node), entry("/x/same", "beta", other_node)]});
    assert_eq!(post("tok-op", "/v1/entries/batch", batch).await.0, 403, "/x is outside beta's scope");
    let (_, list) = call(&addr, "GET", "/v1/entries", Some("tok-admin"), None).await;
    let ids: Vec<&str> = list["entries"].as_array().unwrap().iter().map(|e| e["spiffe_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["spiffe://example.org/alpha/api", "spiffe://example.org/beta/db"], "nothing else was stored");
}
