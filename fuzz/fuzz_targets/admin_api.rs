//! The admin API as a whole: every route of the real router, over a real
//! server's state (SQLite in a temporary directory), called with fuzzed
//! path segments, query strings, bodies and roles. Whatever arrives, the
//! answer is never a server error (5xx) and nothing panics.
#![no_main]
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use hallmark_server::ServerState;
use hallmark_server::audit::Change;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// Every route (method, path with `{}` for the fuzzed segment).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/bundle?format={}"),
    ("POST", "/v1/entries"),
    ("GET", "/v1/entries?{}"),
    ("POST", "/v1/entries/batch"),
    ("GET", "/v1/entries/{}"),
    ("PUT", "/v1/entries/{}"),
    ("DELETE", "/v1/entries/{}"),
    ("GET", "/v1/entries/{}/denials"),
    ("POST", "/v1/join-tokens"),
    ("POST", "/v1/admin-tokens"),
    ("GET", "/v1/credentials?{}"),
    ("GET", "/v1/reports/{}"),
    ("GET", "/v1/reports/drift?{}"),
    ("GET", "/v1/audit?{}"),
    ("POST", "/v1/owners"),
    ("GET", "/v1/owners/{}"),
    ("POST", "/v1/owners/{}/deactivate"),
    ("POST", "/v1/owners/{}/transfer"),
    ("PUT", "/v1/policy"),
    ("GET", "/v1/policy/versions/{}"),
    ("POST", "/v1/exceptions"),
    ("POST", "/v1/exceptions/{}/approve"),
    ("POST", "/v1/exceptions/{}/revoke"),
    ("POST", "/v1/revocations"),
    ("GET", "/v1/revocations?{}"),
    ("POST", "/v1/authorities/prepare"),
    ("POST", "/v1/authorities/{}/taint"),
    ("GET", "/v1/crl/{}"),
];

struct Fixture {
    rt: tokio::runtime::Runtime,
    state: std::sync::Arc<ServerState>,
    tokens: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("hallmark-fuzz-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
            dir.display()
        );
        let settings = hallmark_server::config::ServerConfig::parse(&text, &Default::default()).unwrap().validate().unwrap();
        let (state, tokens) = rt.block_on(async {
            let server = hallmark_server::start(settings).await.unwrap();
            let state = server.state.clone();
            std::mem::forget(server);
            let mut tokens = vec![state.ensure_admin_token(&dir.join("admin-token")).await.unwrap()];
            for (i, role) in ["operator", "auditor", "owner:ops"].iter().enumerate() {
                let t = format!("hmk_fuzz_{i}");
                // Each stored with its audit record, as the API stores them.
                let rec = state.record_change("fuzz", "admin_token_create", |a: &hallmark_store::AdminToken| {
                    Change::new(&a.name, serde_json::json!({ "role": a.role }))
                });
                state.store.add_admin_token(&hallmark_store::hash_secret(&t), &format!("fuzz{i}"), role, rec).await.unwrap();
                tokens.push(t);
            }
            let rec = state.record_change("fuzz", "owner_create", |o: &hallmark_store::Owner| {
                Change::new(&o.name, serde_json::json!({}))
            });
            let _ = state.store.create_owner("ops", "ops@example.org", "", &Default::default(), rec).await;
            (state, tokens)
        });
        Fixture { rt, state, tokens }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let f = fixture();
    let (method, template) = ROUTES[data[0] as usize % ROUTES.len()];
    let token = f.tokens[data[1] as usize % f.tokens.len()].clone();
    // The rest: the fuzzed segment, then (after a 0xFF byte) the body.
    let rest = &data[2..];
    let (segment, body) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], rest[i + 1..].to_vec()),
        None => (rest, Vec::new()),
    };
    let segment: String = segment.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '_' }).collect();
    let uri = template.replace("{}", &segment);
    let Ok(req) = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(&uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
    else {
        return;
    };
    let router = hallmark_server::admin::router(f.state.clone());
    let res = f.rt.block_on(router.oneshot(req)).unwrap();
    assert!(!res.status().is_server_error(), "{method} {uri}: {}", res.status());
});
