//! Delegation by OAuth 2.0 Token Exchange (RFC 8693) with real `hallmark
//! server` and `hallmark agent` processes: JWT-SVIDs fetched through the
//! real Workload API (the Rust `spiffe` crate), exchanged at `POST
//! /v1/token` with `curl` (an independent client), and the tokens it issues
//! verified by Python's PyJWT from the repository's `.venv` against the
//! server's published JWKS. The OpenID Connect issuer whose ID tokens are
//! exchanged is `hallmark_testkit::k8s_issuer`'s local HTTPS stand-in (the
//! test's own issuer: discovery document and JWKS over TLS), with tokens
//! signed here.

use std::process::Command;

use hallmark_testkit::k8s_issuer::{IssuerStub, Signer};
use serde_json::{Value, json};

use crate::harness::*;
use crate::separate::{Deployment, join_agent, start_server_with};

const TOKEN_AUD: &str = "spiffe://example.org/hallmark/token";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ALICE: &str = "spiffe://example.org/user/alice";
const PLANNER: &str = "spiffe://example.org/agents/planner";
const TOOL: &str = "spiffe://example.org/agents/tool";
const THIRD: &str = "spiffe://example.org/agents/third";
const OIDC_AUD: &str = "hallmark-exchange";

/// Agents may exchange for `db` and for the exchange endpoint itself (so a
/// chain can grow), at most two deep; nobody may reach `s3`.
const POLICY: &str = r#"
@id("issuance") permit(principal, action in [Action::"issue_x509", Action::"renew", Action::"issue_jwt"], resource);
@id("agents-delegate") @max_ttl("2m")
permit(principal, action == Action::"exchange_token", resource)
  when { [Audience::"db", Audience::"spiffe://example.org/hallmark/token"].contains(resource)
         && principal.path like "/agents/*" && context.depth <= 2 };
"#;

fn now() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    i64::try_from(secs).unwrap()
}

/// PyJWT from `.venv`, or `None` (skip) when it is missing and this is not
/// a run of `scripts/test.sh` or CI (`HALLMARK_INTEROP=1`), which install it.
fn pyjwt() -> Option<std::path::PathBuf> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = Command::new(&python).args(["-c", "import jwt, cryptography"]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let required = std::env::var("HALLMARK_INTEROP").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
    assert!(!required, "{} with PyJWT and cryptography is missing (scripts/test.sh installs it)", python.display());
    println!("skipped: {} with PyJWT is missing; scripts/test.sh installs it", python.display());
    None
}

/// `POST /v1/token` with curl; returns (status, JSON body, headers).
fn exchange(dep: &Deployment, params: &[(&str, &str)]) -> (u16, Value, String) {
    let url = format!("{}/v1/token", dep.env["HALLMARK_SERVER"]);
    let headers = dep.dir.path().join(format!("headers-{}", rand_tag()));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-D"]).arg(&headers).arg(&url);
    for (k, v) in params {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("curl is installed by the test script");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let headers = std::fs::read_to_string(headers).unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null), headers)
}

fn params<'a>(
    subject: &'a str,
    subject_type: &'a str,
    actor: &'a str,
    audiences: &[&'a str],
) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("grant_type", GRANT),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
        ("actor_token", actor),
        ("actor_token_type", JWT),
    ];
    p.extend(audiences.iter().map(|a| ("audience", *a)));
    p
}

#[track_caller]
fn refused(got: (u16, Value, String), status: u16, code: &str, says: &str) {
    let (s, body, _) = got;
    assert_eq!((s, body["error"].as_str()), (status, Some(code)), "{body}");
    let why = body["error_description"].as_str().unwrap();
    assert!(why.contains(says), "`{why}` does not say `{says}`");
}

/// Verifies `token` with PyJWT against the server's JWKS (`/v1/bundle?format=jwks`)
/// for `audience`; returns its claims.
fn verify_with_pyjwt(python: &std::path::Path, dep: &Deployment, token: &str, audience: &str) -> Value {
    let (status, jwks) = http_get(&format!("{}/v1/bundle?format=jwks", dep.env["HALLMARK_SERVER"]));
    assert_eq!(status, 200);
    let script = r#"
import json, sys, jwt
jwks, token, audience = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
kid = jwt.get_unverified_header(token)["kid"]
key = next(jwt.PyJWK(k, algorithm="ES256") for k in jwks["keys"] if k.get("kid") == kid)
claims = jwt.decode(token, key=key, algorithms=["ES256"], audience=audience, issuer="spiffe://example.org",
                    options={"require": ["exp", "iat", "sub", "aud", "jti", "iss"]})
print(json.dumps(claims))
"#;
    let out =
        Command::new(python).args(["-c", script, &String::from_utf8(jwks).unwrap(), token, audience]).output().unwrap();
    assert!(out.status.success(), "PyJWT: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The whole path: two hops with the newest actor outermost, verified by
/// PyJWT; the refusals (may_act, a foreign or expired subject, a wrong
/// actor, no permit, max_depth); an ID token of a configured issuer as the
/// subject; the audit records and the inventory row of an exchange.
#[tokio::test(flavor = "multi_thread")]
async fn agents_exchange_tokens_along_a_delegation_chain() {
    let Some(python) = pyjwt() else { return };
    let idp = Signer::rsa("corp-1");
    let issuer = IssuerStub::start(&[&idp]).await;
    let dep = start_server_with(
        None,
        &format!(
            "[token_exchange]\nmax_depth = 2\n[[token_exchange.oidc_issuer]]\nname = \"corp\"\nissuer = \"{}\"\n\
             audience = \"{OIDC_AUD}\"\nca_file = \"{}\"\n",
            issuer.url,
            issuer.ca_path.display()
        ),
    );
    let (agent, agent_id, socket) = join_agent(&dep, "node");
    dep.owner("ops");
    for id in [ALICE, PLANNER, TOOL, THIRD] {
        dep.entry_for_me(id, &agent_id, &[]);
    }
    let policy = dep.dir.path().join("policy.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    let out = dep.cli(&["policy", "set", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // JWT-SVIDs for the exchange endpoint, through the Workload API.
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())).await.unwrap();
    let mut svids = std::collections::HashMap::new();
    for id in [ALICE, PLANNER, TOOL, THIRD] {
        let sid = spiffe::SpiffeId::new(id).unwrap();
        let mut token = None;
        for _ in 0..200 {
            if let Ok(svid) = client.fetch_jwt_svid([TOKEN_AUD], Some(&sid)).await {
                token = Some(svid.token().to_owned());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let token = token.unwrap_or_else(|| panic!("no JWT-SVID for {id}\nagent log:\n{}", agent.log()));
        svids.insert(id, token);
    }

    // Hop 1: the planner acts for alice, for `db` and for the endpoint.
    let mut p = params(&svids[ALICE], JWT, &svids[PLANNER], &["db", TOKEN_AUD]);
    p.push(("scope", "read orders"));
    let (status, first, headers) = exchange(&dep, &p);
    assert_eq!(status, 200, "{first}\n{}", dep.server.log());
    assert!(headers.to_ascii_lowercase().contains("cache-control: no-store"), "{headers}");
    assert_eq!(first["issued_token_type"], JWT);
    assert_eq!(first["token_type"], "N_A");
    assert_eq!(first["scope"], "read orders");
    let expires_in = first["expires_in"].as_i64().unwrap();
    assert!((1..=120).contains(&expires_in), "capped by the permit's @max_ttl: {expires_in}");
    let hop1 = first["access_token"].as_str().unwrap().to_owned();
    let claims = verify_with_pyjwt(&python, &dep, &hop1, "db");
    assert_eq!(claims["sub"], ALICE);
    assert_eq!(claims["act"], json!({"sub": PLANNER}));
    assert_eq!(claims["aud"], json!(["db", TOKEN_AUD]));
    assert_eq!(claims["scope"], "read orders");

    // Hop 2: the tool acts for alice through the planner: newest outermost.
    let (status, second, _) = exchange(&dep, &params(&hop1, JWT, &svids[TOOL], &["db"]));
    assert_eq!(status, 200, "{second}");
    let hop2 = second["access_token"].as_str().unwrap().to_owned();
    let claims = verify_with_pyjwt(&python, &dep, &hop2, "db");
    assert_eq!(claims["sub"], ALICE);
    assert_eq!(claims["act"], json!({"sub": TOOL, "act": {"sub": PLANNER}}));
    assert!(claims.get("scope").is_none(), "{claims}");
    let jti = claims["jti"].as_str().unwrap().to_owned();

    // The exchange is in the inventory, under the actor's entry, revocable.
    let out = dep.cli(&["credential", "show", &jti, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["credential"]["kind"], "jwt", "{shown}");
    assert_eq!(shown["credential"]["spiffe_id"], ALICE, "{shown}");

    // A third hop is deeper than max_depth (2).
    let mut hop2_for_endpoint = params(&hop1, JWT, &svids[TOOL], &[TOKEN_AUD]);
    hop2_for_endpoint.push(("resource", "db"));
    let (status, chained, _) = exchange(&dep, &hop2_for_endpoint);
    assert_eq!(status, 200, "{chained}");
    let deep = chained["access_token"].as_str().unwrap();
    refused(exchange(&dep, &params(deep, JWT, &svids[THIRD], &["db"])), 400, "invalid_grant", "max_depth is 2");

    // Cedar has no permit for `s3`.
    refused(
        exchange(&dep, &params(&svids[ALICE], JWT, &svids[PLANNER], &["s3"])),
        400,
        "invalid_target",
        "audience `s3`",
    );
    // Nor for a subject acting as an actor outside /agents/.
    refused(exchange(&dep, &params(&svids[PLANNER], JWT, &svids[ALICE], &["db"])), 400, "invalid_target", "db");

    // A wrong actor: a token this endpoint issued cannot act, nor a
    // JWT-SVID for another audience, nor garbage.
    refused(exchange(&dep, &params(&svids[ALICE], JWT, &hop1, &["db"])), 401, "invalid_client", "cannot act");
    let for_db = client.fetch_jwt_svid(["db"], Some(&spiffe::SpiffeId::new(PLANNER).unwrap())).await.unwrap();
    refused(exchange(&dep, &params(&svids[ALICE], JWT, for_db.token(), &["db"])), 401, "invalid_client", "audience");
    refused(exchange(&dep, &params(&svids[ALICE], JWT, "a.b.c", &["db"])), 401, "invalid_client", "actor token");

    // A subject signed by someone else, or expired.
    let stranger = Signer::ec("stranger");
    let foreign = stranger.token(&json!({"sub": ALICE, "aud": TOKEN_AUD, "exp": now() + 300, "jti": "x"}));
    refused(exchange(&dep, &params(&foreign, JWT, &svids[PLANNER], &["db"])), 400, "invalid_grant", "stranger");
    let id_claims = |exp: i64, may_act: Value| {
        json!({"iss": issuer.url, "sub": "alice@corp.example", "aud": OIDC_AUD, "iat": now(), "exp": exp,
               "may_act": may_act})
    };
    let expired = idp.token(&id_claims(now() - 10, json!({"sub": PLANNER})));
    refused(exchange(&dep, &params(&expired, ID_TOKEN, &svids[PLANNER], &["db"])), 400, "invalid_grant", "expired");

    // An ID token naming another actor in `may_act` is refused; naming this
    // one, it is exchanged (the person is the subject, the issuer theirs).
    let others = idp.token(&id_claims(now() + 300, json!({"sub": TOOL})));
    refused(
        exchange(&dep, &params(&others, ID_TOKEN, &svids[PLANNER], &["db"])),
        400,
        "invalid_grant",
        "`may_act` does not name actor",
    );
    let mine = idp.token(&id_claims(now() + 300, json!({"sub": PLANNER, "iss": "spiffe://example.org"})));
    let (status, from_id, _) = exchange(&dep, &params(&mine, ID_TOKEN, &svids[PLANNER], &["db"]));
    assert_eq!(status, 200, "{from_id}");
    let claims = verify_with_pyjwt(&python, &dep, from_id["access_token"].as_str().unwrap(), "db");
    assert_eq!((claims["sub"].as_str(), &claims["act"]), (Some("alice@corp.example"), &json!({"sub": PLANNER})));

    // Malformed requests never reach a token.
    refused(exchange(&dep, &[("grant_type", "client_credentials")]), 400, "unsupported_grant_type", "not supported");
    refused(exchange(&dep, &[("grant_type", GRANT)]), 400, "invalid_request", "subject_token");

    // The audit chain holds each exchange: allowed ones with the jti, refused
    // ones with the reason, the whole chain in both; never a token.
    let out = dep.cli(&["audit", "export"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audit = String::from_utf8_lossy(&out.stdout).into_owned();
    let records: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action"] == "exchange_token")
        .collect();
    let allowed = records.iter().find(|r| r["details"]["jti"] == jti.as_str()).expect("the second hop's record");
    assert_eq!(allowed["outcome"], "ok");
    assert_eq!(allowed["actor"], TOOL);
    assert_eq!(allowed["subject"], ALICE);
    assert_eq!(allowed["details"]["chain"], json!([TOOL, PLANNER]));
    assert_eq!(allowed["details"]["audience"], json!(["db"]));
    assert_eq!(allowed["details"]["policy_ids"], json!(["agents-delegate"]));
    let denied = records.iter().find(|r| r["details"]["audience"] == json!(["s3"])).expect("the s3 refusal");
    assert_eq!((denied["outcome"].as_str(), denied["details"]["decision"].as_str()), (Some("denied"), Some("refused")));
    assert!(denied["details"]["reason"].as_str().unwrap().contains("no permit"), "{denied}");
    assert!(records.iter().any(|r| r["details"]["error"] == "invalid_grant"), "may_act and depth refusals");
    for t in [&svids[ALICE], &svids[PLANNER], &hop1, &hop2] {
        assert!(!audit.contains(t.as_str()), "a token was recorded");
        assert!(!dep.server.log().contains(t.as_str()), "a token was logged");
    }
}
