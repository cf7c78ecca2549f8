//! People's logins (issue 19) through the real admin API of a real server:
//! ID tokens signed here by the test's issuer, served over HTTPS by
//! `hallmark_testkit::k8s_issuer` (discovery document and JWKS). This is
//! where every refusal is checked one by one; `tests/it/login.rs` in the
//! `hallmark` crate drives the whole flow with a certified OpenID provider
//! (node-oidc-provider) and the `hallmark login` CLI.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[expect(dead_code, reason = "this test starts its server with the people table, not start_server")]
mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_testkit::k8s_issuer::{IssuerStub, Signer};
use serde_json::{Value, json};

use common::{call, fixture};

const CLIENT: &str = "hallmark-cli";

fn now() -> i64 {
    hallmark_core::now_unix()
}

struct Env {
    srv: hallmark_server::RunningServer,
    addr: String,
    token: String,
    stub: IssuerStub,
    signer: Signer,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with("{email}").await
}

/// A server whose people's issuer renders `claim` (`{email}`, `{sub}`, ...).
async fn env_with(claim: &str) -> Env {
    let signer = Signer::ec("k1");
    let stub = IssuerStub::start(&[&signer]).await;
    let dir = tempfile::tempdir().unwrap();
    let people = format!(
        "[[people.oidc_issuer]]\nname = \"corp\"\nissuer = \"{}\"\nclient_id = \"{CLIENT}\"\nca_file = \"{}\"\n\
         spiffe_id = \"spiffe://example.org/human/{claim}\"\n",
        stub.url,
        stub.ca_path.display()
    );
    let srv = common::start_server_with(dir.path(), None, &people).await;
    let addr = srv.admin_addr.to_string();
    let token = hallmark_store::new_secret();
    let st = &srv.state;
    st.store.add_admin_token(&hallmark_store::hash_secret(&token), "admin", "trust-admin", fixture(st)).await.unwrap();
    Env { srv, addr, token, stub, signer, _dir: dir }
}

impl Env {
    async fn start(&self) -> (String, String) {
        let (st, v) = call(&self.addr, "POST", "/v1/login/start", None, Some(&json!({}))).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["client_id"], CLIENT);
        assert_eq!(v["issuer"], self.stub.url.as_str());
        (v["login_id"].as_str().unwrap().to_owned(), v["nonce"].as_str().unwrap().to_owned())
    }

    fn claims(&self, nonce: &str, email: &str) -> Value {
        json!({"iss": self.stub.url, "sub": "u-1", "aud": CLIENT, "exp": now() + 300, "iat": now(),
               "nonce": nonce, "email": email, "email_verified": true, "name": "Alice Example",
               "groups": ["eng"]})
    }

    async fn login(&self, login_id: &str, id_token: &str) -> (u16, Value) {
        let csr = hallmark_ca::keys::new_key_and_csr(None).unwrap();
        let body = json!({"login_id": login_id, "id_token": id_token, "csr": STANDARD.encode(&csr.csr_der)});
        call(&self.addr, "POST", "/v1/login", None, Some(&body)).await
    }

    /// A fresh login with `claims` changed by `edit`.
    async fn try_with(&self, edit: impl FnOnce(&mut Value)) -> (u16, Value) {
        let (id, nonce) = self.start().await;
        let mut c = self.claims(&nonce, "alice@example.com");
        edit(&mut c);
        self.login(&id, &self.signer.token(&c)).await
    }
}

/// The audit chain as `GET /v1/audit` exports it (JSON lines).
async fn audit_text(e: &Env) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&e.addr).await.unwrap();
    let req =
        format!("GET /v1/audit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", e.token);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[track_caller]
fn refused(got: (u16, Value), status: u16, says: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let msg = got.1["error"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "`{msg}` does not say `{says}`");
}

#[tokio::test]
async fn a_verified_person_gets_a_client_certificate_from_the_human_authority() {
    let e = env().await;
    let (id, nonce) = e.start().await;
    let (st, v) = e.login(&id, &e.signer.token(&e.claims(&nonce, "Alice@Example.com"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["spiffe_id"], "spiffe://example.org/human/example.com/alice");
    assert!(v["not_after"].as_i64().unwrap() <= now() + 8 * 3600 + 1, "the human class caps at 8h");

    // The certificate: clientAuth only, issued by the human issuing
    // authority (not the workload CA), which the bundle publishes.
    let chain = hallmark_ca::svid::pem_certs(v["certificate_chain"].as_str().unwrap()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert!(leaf.issuer().to_string().contains("Hallmark human CA example.org"), "{}", leaf.issuer());
    assert!(leaf.subject().to_string().contains("OU=people"), "{}", leaf.subject());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let bundle = hallmark_ca::svid::pem_certs(v["trust_bundle"].as_str().unwrap()).unwrap();
    let human_ca = e.srv.state.authorities.human().unwrap();
    let workload_ca = e.srv.state.authorities.x509().unwrap();
    assert_ne!(human_ca.id(), workload_ca.id());
    assert!(bundle.contains(&human_ca.cert_der().to_vec()) && bundle.contains(&workload_ca.cert_der().to_vec()));
    assert_eq!(v["authority_id"], human_ca.id());

    // `ca show` lists it as its own kind.
    let (st, list) = call(&e.addr, "GET", "/v1/authorities", Some(&e.token), None).await;
    assert_eq!(st, 200, "{list}");
    assert!(list.to_string().contains("\"human\""), "{list}");

    // In the inventory as a person's, with its record in the audit chain.
    let serial = v["serial"].as_str().unwrap();
    let (st, c) = call(&e.addr, "GET", &format!("/v1/credentials/{serial}"), Some(&e.token), None).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["credential"]["class"], "human");
    assert_eq!(c["credential"]["spiffe_id"], "spiffe://example.org/human/example.com/alice");
    let audit = audit_text(&e).await;
    assert!(audit.contains(serial) && audit.contains("\"login\""), "{audit}");
    assert!(!audit.contains("eyJ"), "no token in the audit chain");
}

#[tokio::test]
async fn every_bad_token_is_refused_and_a_login_is_used_once() {
    let e = env().await;
    // A replayed login: the same login id and token twice.
    let (id, nonce) = e.start().await;
    let tok = e.signer.token(&e.claims(&nonce, "alice@example.com"));
    assert_eq!(e.login(&id, &tok).await.0, 200);
    refused(e.login(&id, &tok).await, 401, "already used");
    // The same token on a new login: its nonce is the old login's.
    let (id2, _) = e.start().await;
    refused(e.login(&id2, &tok).await, 401, "nonce is not this login's");

    refused(e.try_with(|c| c["aud"] = json!("other-app")).await, 401, "audience does not include `hallmark-cli`");
    refused(e.try_with(|c| c["aud"] = json!([CLIENT, "other-app"])).await, 401, "several audiences, and `azp` is not");
    refused(e.try_with(|c| c["exp"] = json!(now() - 10)).await, 401, "expired");
    refused(e.try_with(|c| c["iat"] = json!(now() + 3600)).await, 401, "`iat` is in the future");
    refused(e.try_with(|c| c["email_verified"] = json!(false)).await, 401, "email_verified");
    refused(
        e.try_with(|c| c.as_object_mut().unwrap().remove("email_verified").map(|_| ()).unwrap()).await,
        401,
        "email_verified",
    );
    refused(e.try_with(|c| c["nonce"] = json!("x")).await, 401, "nonce");
    refused(e.try_with(|c| c["email"] = json!("a+b@example.com")).await, 403, "cannot form a SPIFFE ID");
    // Another issuer: its own key, its own `iss`, or ours with its key.
    let other = Signer::ec("k1");
    let other_stub = IssuerStub::start(&[&other]).await;
    let (id, nonce) = e.start().await;
    let mut c = e.claims(&nonce, "alice@example.com");
    c["iss"] = json!(other_stub.url);
    refused(e.login(&id, &other.token(&c)).await, 401, "not by");
    let (id, nonce) = e.start().await;
    refused(e.login(&id, &other.token(&e.claims(&nonce, "alice@example.com"))).await, 401, "signature");
    // Not a token at all, and a CSR that is not one.
    let (id, _) = e.start().await;
    refused(e.login(&id, "not.a.token").await, 401, "ID token");
    let (id, nonce) = e.start().await;
    let body =
        json!({"login_id": id, "id_token": e.signer.token(&e.claims(&nonce, "alice@example.com")), "csr": "AAAA"});
    refused(call(&e.addr, "POST", "/v1/login", None, Some(&body)).await, 400, "csr");
    // An unknown issuer name.
    refused(call(&e.addr, "POST", "/v1/login/start", None, Some(&json!({"issuer": "nope"}))).await, 404, "no issuer");
}

#[tokio::test]
async fn policy_decides_each_login_and_a_leaver_cannot_sign_in() {
    let e = env().await;
    // A policy for workloads only: no permit names `login`.
    let (st, v) = call(
        &e.addr,
        "PUT",
        "/v1/policy",
        Some(&e.token),
        Some(&json!({"policy": "permit(principal, action, resource);"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    refused(e.try_with(|_| {}).await, 403, "no permit names action `login`");
    let audit = audit_text(&e).await;
    assert!(audit.contains("\"denied\"") && audit.contains("\"login\""), "the denial is recorded: {audit}");

    // Only the eng group, at most one hour.
    let text = r#"permit(principal, action, resource);
        @id("eng") @max_ttl("1h") permit(principal, action == Action::"login", resource) when { context.groups.contains("eng") };"#;
    let (st, v) = call(&e.addr, "PUT", "/v1/policy", Some(&e.token), Some(&json!({"policy": text}))).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = e.try_with(|_| {}).await;
    assert_eq!(st, 200, "{v}");
    assert!(v["not_after"].as_i64().unwrap() <= now() + 3600 + 1);
    refused(e.try_with(|c| c["groups"] = json!(["sales"])).await, 403, "no permit matched");

    // A person SCIM says left is refused, whatever policy says.
    let pool = e.srv.state.store.pool();
    sqlx::query(
        "INSERT INTO people (id, user_name, user_name_key, email, active, resource, created_at, updated_at, left_at) \
         VALUES ('p1', 'alice@example.com', 'alice@example.com', 'alice@example.com', 0, '{}', 1, 1, 1)",
    )
    .execute(pool)
    .await
    .unwrap();
    refused(e.try_with(|_| {}).await, 403, "has left");
}

/// A workload entry can never carry a person's ID, through the API either.
#[tokio::test]
async fn no_entry_may_hold_a_persons_id() {
    let e = env().await;
    for (id, class) in
        [("spiffe://example.org/human/example.com/alice", "machine"), ("spiffe://example.org/web", "human")]
    {
        let body = json!({"spiffe_id": id, "parent_id": "spiffe://example.org/hallmark/agent/local",
                          "selectors": ["unix:uid:1000"], "owner": "team", "class": class});
        let (st, v) = call(&e.addr, "POST", "/v1/entries", Some(&e.token), Some(&body)).await;
        assert_eq!(st, 400, "{v}");
    }
}

/// An admin identity `name` with `role`; returns its token.
async fn admin(e: &Env, name: &str, role: &str) -> String {
    let t = hallmark_store::new_secret();
    let st = &e.srv.state;
    st.store.add_admin_token(&hallmark_store::hash_secret(&t), name, role, fixture(st)).await.unwrap();
    t
}

/// The serials the human issuing authority's CRL lists now.
async fn human_crl_serials(e: &Env) -> Vec<String> {
    let id = e.srv.state.authorities.human().unwrap().id();
    let der = e.srv.state.authorities.crl(&id).await.unwrap().unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect()
}

/// Help-desk recovery: filing locks the person out; a note is required to
/// verify; neither the one who filed nor the one who verified may approve;
/// approval revokes every earlier certificate (CRL) and lets them in again.
/// Machines have no such path.
#[tokio::test]
async fn recovery_needs_the_help_desk_and_a_second_admin() {
    let e = env().await;
    let helpdesk = admin(&e, "helpdesk", "operator").await;
    let second = admin(&e, "second", "trust-admin").await;
    let (st, v) = e.try_with(|_| {}).await;
    assert_eq!(st, 200, "{v}");
    let old_serial = v["serial"].as_str().unwrap().to_owned();
    let alice = "spiffe://example.org/human/example.com/alice";

    let body = json!({"subject": "spiffe://example.org/web", "reason": "lost"});
    refused(
        call(&e.addr, "POST", "/v1/people/recoveries", Some(&helpdesk), Some(&body)).await,
        400,
        "machines have no recovery path",
    );
    let body = json!({"subject": alice, "reason": "laptop stolen, ticket HD-7"});
    let (st, r) = call(&e.addr, "POST", "/v1/people/recoveries", Some(&helpdesk), Some(&body)).await;
    assert_eq!(st, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    refused(e.try_with(|_| {}).await, 403, "recovery request");
    // Filing revoked the lost certificate at once (the CRL, within a second).
    let mut on_crl = false;
    for _ in 0..40 {
        if human_crl_serials(&e).await.contains(&old_serial) {
            on_crl = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(on_crl, "the lost certificate is on the human authority's CRL within 2 s of filing");

    let path = |step: &str| format!("/v1/people/recoveries/{id}/{step}");
    refused(call(&e.addr, "POST", &path("approve"), Some(&second), None).await, 409, "verifies it first");
    refused(
        call(&e.addr, "POST", &path("verify"), Some(&helpdesk), Some(&json!({"note": " "}))).await,
        400,
        "note is required",
    );
    let note = json!({"note": "video call, badge checked against HR photo"});
    let (st, v) = call(&e.addr, "POST", &path("verify"), Some(&helpdesk), Some(&note)).await;
    assert_eq!(st, 200, "{v}");
    // The help desk cannot approve (role), nor could a trust-admin who verified or filed.
    refused(call(&e.addr, "POST", &path("approve"), Some(&helpdesk), None).await, 403, "may not approve");
    let (st, v) = call(&e.addr, "POST", &path("approve"), Some(&second), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["request"]["state"], "approved");
    assert_eq!(v["revoked"], json!([]), "already revoked when the request was filed: {v}");
    let (st, v) = e.try_with(|_| {}).await;
    assert_eq!(st, 200, "a new login after approval: {v}");

    // Self-approval: the trust-admin who filed and verified cannot approve.
    let body = json!({"subject": alice, "reason": "phone lost"});
    let (_, r) = call(&e.addr, "POST", "/v1/people/recoveries", Some(&second), Some(&body)).await;
    let id2 = r["id"].as_str().unwrap();
    let (st, _) =
        call(&e.addr, "POST", &format!("/v1/people/recoveries/{id2}/verify"), Some(&second), Some(&note)).await;
    assert_eq!(st, 200);
    refused(
        call(&e.addr, "POST", &format!("/v1/people/recoveries/{id2}/approve"), Some(&second), None).await,
        403,
        "a second, different admin",
    );
}

/// Break-glass: only under a live grant, minutes long, marked in its
/// subject, and a finding until reviewed.
#[tokio::test]
async fn break_glass_is_short_granted_and_reviewed() {
    let e = env().await;
    let auditor = admin(&e, "auditor", "auditor").await;
    let helpdesk = admin(&e, "helpdesk", "operator").await;
    let (id, nonce) = e.start().await;
    let csr = hallmark_ca::keys::new_key_and_csr(None).unwrap();
    let tok = e.signer.token(&e.claims(&nonce, "alice@example.com"));
    let body = json!({"login_id": id, "id_token": tok, "csr": STANDARD.encode(&csr.csr_der), "break_glass": true});
    refused(call(&e.addr, "POST", "/v1/login", None, Some(&body)).await, 403, "no live break-glass grant");

    let grant =
        json!({"subject": "spiffe://example.org/human/example.com/alice", "reason": "on-call DBA", "expires_in": "7d"});
    refused(call(&e.addr, "POST", "/v1/people/break-glass", Some(&helpdesk), Some(&grant)).await, 403, "may not grant");
    let (st, g) = call(&e.addr, "POST", "/v1/people/break-glass", Some(&e.token), Some(&grant)).await;
    assert_eq!(st, 201, "{g}");

    let (id, nonce) = e.start().await;
    let tok = e.signer.token(&e.claims(&nonce, "alice@example.com"));
    let body = json!({"login_id": id, "id_token": tok, "csr": STANDARD.encode(&csr.csr_der), "break_glass": true});
    let (st, v) = call(&e.addr, "POST", "/v1/login", None, Some(&body)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["break_glass"], true);
    assert!(v["not_after"].as_i64().unwrap() <= now() + 15 * 60 + 1, "15 minutes by default");
    let chain = hallmark_ca::svid::pem_certs(v["certificate_chain"].as_str().unwrap()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert!(leaf.subject().to_string().contains("OU=break-glass"), "{}", leaf.subject());

    let (_, list) = call(&e.addr, "GET", "/v1/people/break-glass", Some(&auditor), None).await;
    let uses = list["uses"].as_array().unwrap();
    assert_eq!(uses.len(), 1, "{list}");
    assert!(uses[0]["reviewed_at"].is_null());
    let use_id = uses[0]["id"].as_str().unwrap();
    let review = format!("/v1/people/break-glass/uses/{use_id}/review");
    refused(call(&e.addr, "POST", &review, Some(&auditor), Some(&json!({"note": ""}))).await, 400, "note");
    let (st, r) =
        call(&e.addr, "POST", &review, Some(&auditor), Some(&json!({"note": "INC-42 outage, justified"}))).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["reviewed_by"], "auditor");

    // Withdrawing the grant withdraws what it issued, and refuses more.
    let serial = v["serial"].as_str().unwrap().to_owned();
    let gid = g["id"].as_str().unwrap();
    let (st, w) = call(&e.addr, "POST", &format!("/v1/people/break-glass/{gid}/revoke"), Some(&e.token), None).await;
    assert_eq!(st, 200, "{w}");
    let (_, c) = call(&e.addr, "GET", &format!("/v1/credentials/{serial}"), Some(&e.token), None).await;
    assert!(!c["credential"]["revoked_at"].is_null(), "{c}");
    let (id, nonce) = e.start().await;
    let tok = e.signer.token(&e.claims(&nonce, "alice@example.com"));
    let body = json!({"login_id": id, "id_token": tok, "csr": STANDARD.encode(&csr.csr_der), "break_glass": true});
    refused(call(&e.addr, "POST", "/v1/login", None, Some(&body)).await, 403, "no live break-glass grant");
}

/// Two issuers whose templates could render the same ID are refused at start.
#[test]
fn overlapping_issuer_templates_are_refused() {
    let issuer = |name: &str, url: &str, id: &str| {
        format!(
            "[[people.oidc_issuer]]\nname = \"{name}\"\nissuer = \"{url}\"\nclient_id = \"c\"\nspiffe_id = \"{id}\"\n"
        )
    };
    let cfg = |extra: &str| {
        let text = format!("trust_domain = \"example.org\"\ndata_dir = \"/tmp/x\"\n{extra}");
        hallmark_server::config::ServerConfig::parse(&text, &Default::default()).unwrap().validate()
    };
    let a = issuer("a", "https://a.example.com", "spiffe://example.org/human/{email}");
    let b = issuer("b", "https://b.example.com", "spiffe://example.org/human/b/{email}");
    let err = cfg(&format!("{a}{b}")).unwrap_err().to_string();
    assert!(err.contains("overlaps issuer `a`"), "{err}");
    let b2 = issuer("b", "https://b.example.com", "spiffe://example.org/human/partner/{sub}");
    let a2 = issuer("a", "https://a.example.com", "spiffe://example.org/human/corp/{email}");
    assert!(cfg(&format!("{a2}{b2}")).is_ok());
    let err = cfg(&issuer("c", "https://c.example.com", "spiffe://example.org/human/{preferred_username}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("{email} or {sub}"), "{err}");
}

/// An unverified email never matches a person SCIM knows: with a `{sub}`
/// template, an account claiming someone else's address must not get that
/// person's groups (nor be refused as that person when they left).
#[tokio::test]
async fn an_unverified_email_is_not_someone_elses_person() {
    let e = env_with("corp/{sub}").await;
    let pool = e.srv.state.store.pool();
    for q in [
        "INSERT INTO people (id, user_name, user_name_key, email, active, resource, created_at, updated_at) \
         VALUES ('p-admin', 'root@example.com', 'root@example.com', 'root@example.com', 1, '{}', 1, 1)",
        "INSERT INTO person_groups (id, display_name, display_name_key, resource, created_at, updated_at) \
         VALUES ('g1', 'admins', 'admins', '{}', 1, 1)",
        "INSERT INTO group_members (group_id, person_id) VALUES ('g1', 'p-admin')",
    ] {
        sqlx::query(q).execute(pool).await.unwrap();
    }
    let text = r#"@id("admins") permit(principal, action == Action::"login", resource) when { context.groups.contains("admins") };"#;
    let (st, v) = call(&e.addr, "PUT", "/v1/policy", Some(&e.token), Some(&json!({"policy": text}))).await;
    assert_eq!(st, 201, "{v}");
    // The same address, verified: that is the person, and an admin.
    let (st, v) = e.try_with(|c| c["email"] = json!("root@example.com")).await;
    assert_eq!(st, 200, "{v}");
    // Unverified: not the person, no groups, no login.
    let got = e
        .try_with(|c| {
            c["email"] = json!("root@example.com");
            c["email_verified"] = json!(false);
        })
        .await;
    refused(got, 403, "no permit matched");
}
