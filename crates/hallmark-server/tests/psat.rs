//! The `k8s_psat` node attestor against a service-account issuer stand-in
//! (`hallmark_testkit::k8s_issuer`): a local HTTPS server that serves the
//! issuer's discovery document and JWKS and answers TokenReviews, and tokens
//! signed here with RS256 and ES256 keys made at test time, with the header
//! and claims kube-apiserver puts in a pod's projected token.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hallmark_proto::node::PsatEvidence;
use hallmark_server::node_attest::psat::{PsatAttestorConfig, PsatClusterConfig, PsatVerifier, TokenReviewConfig};
use hallmark_server::node_attest::{AttestError, NodeProof};
use hallmark_testkit::k8s_issuer::{
    DISCOVERY, IssuerStub, JWKS, POD_UID, REVIEWER_TOKEN, Signer, as_service_account, pod_claims, with,
};
use hallmark_testkit::localhost_tls::ca_and_server;
use serde_json::{Value, json};

/// "Now" for every token, unix seconds.
const NOW: i64 = 1_750_000_000;

/// The agent pod's token on node-1, issued at [`NOW`] by `iss`.
fn claims(iss: &str) -> Value {
    pod_claims(iss, NOW, "node-1")
}

/// Cluster `name` whose issuer is `stub`, the agent DaemonSet's service
/// account allowed.
fn cluster(name: &str, stub: &IssuerStub) -> PsatClusterConfig {
    PsatClusterConfig {
        name: name.into(),
        issuer: stub.url.clone(),
        audience: "hallmark".into(),
        issuer_ca_path: Some(stub.ca_path.clone()),
        jwks_url: None,
        allowed_service_accounts: vec!["hallmark:hallmark-agent".into()],
        allowed_node_names: None,
        token_review: None,
        jwks_refresh: None,
    }
}

fn verifier(clusters: Vec<PsatClusterConfig>) -> PsatVerifier {
    PsatVerifier::new(&PsatAttestorConfig { clusters }).unwrap()
}

fn ev(cluster: &str, token: &str) -> PsatEvidence {
    PsatEvidence { cluster: cluster.into(), token: token.into() }
}

#[track_caller]
fn refused(got: Result<NodeProof, AttestError>, says: &str) {
    match got {
        Err(AttestError::Refused(why)) => assert!(why.contains(says), "`{why}` does not say `{says}`"),
        other => panic!("expected a refusal saying `{says}`, got {other:?}"),
    }
}

fn proof(cluster: &str, node: &str) -> NodeProof {
    NodeProof {
        attestor: "k8s_psat",
        agent_path: vec!["k8s_psat".into(), cluster.into(), node.into()],
        selectors: vec![
            format!("k8s_psat:agent_node_name:{node}"),
            "k8s_psat:agent_ns:hallmark".into(),
            format!("k8s_psat:agent_pod_uid:{POD_UID}"),
            "k8s_psat:agent_sa:hallmark-agent".into(),
            format!("k8s_psat:cluster:{cluster}"),
        ],
        evidence_expires_at: Some(NOW + 3600),
    }
}

// ---- the tests --------------------------------------------------------------

#[tokio::test]
async fn a_pod_token_proves_cluster_service_account_pod_and_node() {
    // RS256 through discovery; ES256 from a configured jwks_url.
    let rsa = Signer::rsa("rsa-key-1");
    let ec = Signer::ec("ec-key-1");
    let prod = IssuerStub::start(&[&rsa]).await;
    let edge = IssuerStub::start(&[&ec]).await;
    let mut edge_cfg = cluster("edge.eu-1", &edge);
    edge_cfg.jwks_url = Some(format!("{}{JWKS}", edge.url));
    let v = verifier(vec![cluster("prod", &prod), edge_cfg]);

    let got = v.verify(&ev("prod", &rsa.token(&claims(&prod.url))), NOW).await.unwrap();
    assert_eq!(got, proof("prod", "node-1"));
    assert_eq!((prod.hits(DISCOVERY), prod.hits(JWKS)), (1, 1));
    let got = v.verify(&ev("edge.eu-1", &ec.token(&claims(&edge.url))), NOW).await.unwrap();
    assert_eq!(got, proof("edge.eu-1", "node-1"));
    assert_eq!((edge.hits(DISCOVERY), edge.hits(JWKS)), (0, 1));

    // The keys are cached: more tokens, no more fetches. `aud` may be a
    // string, or list other audiences too.
    let token = rsa.token(&with(claims(&prod.url), &["aud"], json!("hallmark")));
    v.verify(&ev("prod", &token), NOW).await.unwrap();
    let token = rsa.token(&with(claims(&prod.url), &["aud"], json!(["vault", "hallmark"])));
    v.verify(&ev("prod", &token), NOW).await.unwrap();
    assert_eq!((prod.hits(DISCOVERY), prod.hits(JWKS)), (1, 1));

    // The node allow-list, when set.
    let mut cfg = cluster("prod", &prod);
    cfg.allowed_node_names = Some(vec!["node-1".into()]);
    let only_node_1 = verifier(vec![cfg]);
    only_node_1.verify(&ev("prod", &rsa.token(&claims(&prod.url))), NOW).await.unwrap();
    let token = rsa.token(&with(claims(&prod.url), &["kubernetes.io", "node", "name"], json!("node-2")));
    refused(
        only_node_1.verify(&ev("prod", &token), NOW).await,
        "node `node-2` of cluster `prod` is not in allowed_node_names",
    );
}

#[tokio::test]
async fn wrong_audience_expired_and_early_tokens_are_refused() {
    let rsa = Signer::rsa("k1");
    let s = IssuerStub::start(&[&rsa]).await;
    let v = verifier(vec![cluster("prod", &s)]);
    let verify = |c: Value, now: i64| {
        let token = rsa.token(&c);
        let v = &v;
        async move { v.verify(&ev("prod", &token), now).await }
    };
    let c = || claims(&s.url);
    refused(verify(with(c(), &["aud"], json!(["vault"])), NOW).await, "audience does not include `hallmark`");
    refused(verify(with(c(), &["aud"], json!("kubernetes")), NOW).await, "audience does not include `hallmark`");
    refused(verify(with(c(), &["aud"], Value::Null), NOW).await, "audience");
    refused(verify(c(), NOW + 3600).await, "expired");
    refused(verify(with(c(), &["exp"], Value::Null), NOW).await, "no `exp`");
    // 60 s of clock skew for nbf and iat, no more.
    verify(with(c(), &["nbf"], json!(NOW + 60)), NOW).await.unwrap();
    refused(verify(with(c(), &["nbf"], json!(NOW + 61)), NOW).await, "`nbf`");
    refused(verify(with(c(), &["iat"], json!(NOW + 600)), NOW).await, "`iat`");
    // A sub that is not the service account the claim names.
    refused(verify(with(c(), &["sub"], json!("system:serviceaccount:hallmark:other")), NOW).await, "`sub`");
    // A token of an older cluster (no node), or not bound to a pod.
    refused(verify(with(c(), &["kubernetes.io", "node"], Value::Null), NOW).await, "1.30");
    refused(verify(with(c(), &["kubernetes.io", "pod"], Value::Null), NOW).await, "not bound to a pod");
    // A node name that cannot be part of an agent ID.
    refused(verify(with(c(), &["kubernetes.io", "node", "name"], json!("node/1")), NOW).await, "agent ID");
}

#[tokio::test]
async fn unknown_keys_are_refused_and_fetched_again_at_most_every_10s() {
    let published = Signer::rsa("k1");
    let rotated = Signer::rsa("k2");
    let s = IssuerStub::start(&[&published]).await;
    let v = verifier(vec![cluster("prod", &s)]);
    v.verify(&ev("prod", &published.token(&claims(&s.url))), NOW).await.unwrap();
    assert_eq!(s.hits(JWKS), 1);

    // A kid the JWKS does not list: the keys were just fetched, so they are
    // not asked for again, however many such tokens come.
    for _ in 0..20 {
        refused(v.verify(&ev("prod", &rotated.token(&claims(&s.url))), NOW).await, "no RS256 key with kid `k2`");
    }
    assert_eq!(s.hits(JWKS), 1);
    // A key not published, presenting a published key's kid.
    let forged = Signer::rsa("k1");
    refused(v.verify(&ev("prod", &forged.token(&claims(&s.url))), NOW).await, "signature does not verify");
    // A tampered payload.
    let token = published.token(&claims(&s.url));
    let parts: Vec<&str> = token.split('.').collect();
    let other = B64.encode(with(claims(&s.url), &["kubernetes.io", "node", "name"], json!("node-9")).to_string());
    let tampered = format!("{}.{other}.{}", parts[0], parts[2]);
    refused(v.verify(&ev("prod", &tampered), NOW).await, "signature does not verify");
    // An ES256 token for an RSA-only issuer.
    let ec = Signer::ec("k1");
    refused(v.verify(&ev("prod", &ec.token(&claims(&s.url))), NOW).await, "no ES256 key");

    // The issuer rotates to k2; 10 s later, a k2 token makes one fetch.
    s.publish(&[&published, &rotated]);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(11)).await;
    tokio::time::resume();
    v.verify(&ev("prod", &rotated.token(&claims(&s.url))), NOW).await.unwrap();
    assert_eq!(s.hits(JWKS), 2);
    refused(v.verify(&ev("prod", &Signer::rsa("k3").token(&claims(&s.url))), NOW).await, "kid `k3`");
    assert_eq!(s.hits(JWKS), 2);
}

#[tokio::test]
async fn wrong_cluster_and_service_account_are_refused() {
    let a_key = Signer::rsa("a1");
    let b_key = Signer::rsa("b1");
    let a = IssuerStub::start(&[&a_key]).await;
    let b = IssuerStub::start(&[&b_key]).await;
    let v = verifier(vec![cluster("a", &a), cluster("b", &b)]);
    let token = a_key.token(&claims(&a.url));
    refused(v.verify(&ev("c", &token), NOW).await, "unknown cluster `c`");
    // Cluster A's token presented as cluster B's: not B's issuer, and B's
    // keys are not even asked for.
    refused(v.verify(&ev("b", &token), NOW).await, &format!("issuer `{}` is not cluster `b`'s", a.url));
    assert_eq!(b.hits(JWKS), 0);
    // A token claiming B's issuer, signed by A's key.
    refused(v.verify(&ev("b", &a_key.token(&claims(&b.url))), NOW).await, "no RS256 key with kid `a1`");

    // Another service account, in the agent's namespace or in another one.
    for (ns, sa) in [("hallmark", "default"), ("kube-system", "hallmark-agent")] {
        let c = as_service_account(claims(&a.url), ns, sa);
        refused(
            v.verify(&ev("a", &a_key.token(&c)), NOW).await,
            &format!("service account `{ns}:{sa}` of cluster `a` is not in allowed_service_accounts"),
        );
    }
}

#[tokio::test]
async fn other_algorithms_headers_and_malformed_tokens() {
    let rsa = Signer::rsa("k1");
    let s = IssuerStub::start(&[&rsa]).await;
    let v = verifier(vec![cluster("prod", &s)]);
    let body = B64.encode(claims(&s.url).to_string());
    for (header, says) in [
        (json!({"alg": "none"}), "algorithm `none`"),
        (json!({"alg": "HS256", "kid": "k1"}), "algorithm `HS256`"),
        (json!({"alg": "RS384", "kid": "k1"}), "algorithm `RS384`"),
        (json!({"alg": "RS256", "kid": "k1", "jku": "https://evil.example/jwks"}), "header `jku`"),
        (json!({"alg": "RS256", "kid": "k1", "crit": ["exp"]}), "header `crit`"),
    ] {
        // An HMAC over the token with the RSA public key as secret, the
        // classic confusion: refused for its alg before any key is used.
        let token = format!("{}.{body}.{}", B64.encode(header.to_string()), B64.encode([7u8; 32]));
        refused(v.verify(&ev("prod", &token), NOW).await, says);
    }
    let unsigned = format!("{}.{body}.", B64.encode(json!({"alg": "none"}).to_string()));
    refused(v.verify(&ev("prod", &unsigned), NOW).await, "algorithm `none`");

    let good = rsa.token(&claims(&s.url));
    let long = "a".repeat(20_000);
    for junk in [
        "",
        "not a token",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &format!("{good}.extra"),
        &format!("{}.{body}.sig", B64.encode("{not json")),
        &format!("{}.{}.sig", B64.encode(r#"{"alg":"RS256"}"#), B64.encode(r#"["claims","in","a","list"]"#)),
        &format!("{}.{}.sig", B64.encode(r#"{"alg":"RS256"}"#), B64.encode(r#"{"exp":"tomorrow"}"#)),
        &format!("{}.{body}.sig", B64.encode(r#"{"kid":"k1"}"#)),
        &format!("{}.{body}.***", B64.encode(r#"{"alg":"RS256","kid":"k1"}"#)),
        &long,
    ] {
        match v.verify(&ev("prod", junk), NOW).await {
            Err(AttestError::Malformed(why)) => assert!(!why.contains(junk) || junk.is_empty(), "{why}"),
            other => panic!("{junk:.40}: expected Malformed, got {other:?}"),
        }
    }
    // None of that reached the issuer.
    assert_eq!(s.hits(JWKS), 0);
}

#[tokio::test]
async fn an_unreachable_or_untrusted_issuer_is_unavailable() {
    let rsa = Signer::rsa("k1");
    let s = IssuerStub::start(&[&rsa]).await;
    // Nothing listens on the port of a listener just closed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut cfg = cluster("down", &s);
    cfg.issuer = format!("https://localhost:{closed}");
    // A CA that did not sign the issuer's certificate.
    let (other_ca, _) = ca_and_server();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("other.pem"), other_ca).unwrap();
    let mut untrusted = cluster("untrusted", &s);
    untrusted.issuer_ca_path = Some(dir.path().join("other.pem"));
    // An issuer whose JWKS is not there.
    let mut missing = cluster("missing", &s);
    missing.jwks_url = Some(format!("{}/no/such/jwks", s.url));
    // A discovery document that names another issuer (OIDC Discovery §4.3).
    let mut other = cluster("other", &s);
    other.issuer = format!("{}/", s.url);
    let other_says = format!("names issuer `{}`, not `{}/`", s.url, s.url);
    let v = verifier(vec![cfg, untrusted, missing, other]);
    for (name, iss, says) in [
        ("down", format!("https://localhost:{closed}"), "openid-configuration"),
        ("untrusted", s.url.clone(), "openid-configuration"),
        ("missing", s.url.clone(), "HTTP status 404"),
        ("other", format!("{}/", s.url), other_says.as_str()),
    ] {
        match v.verify(&ev(name, &rsa.token(&claims(&iss))), NOW).await {
            Err(AttestError::Unavailable(why)) => assert!(why.contains(says), "{name}: {why}"),
            other => panic!("{name}: expected Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn token_review_asks_the_api_server() {
    let rsa = Signer::rsa("k1");
    let s = IssuerStub::start(&[&rsa]).await;
    let dir = tempfile::tempdir().unwrap();
    let reviewer_path = dir.path().join("token");
    std::fs::write(&reviewer_path, format!("{REVIEWER_TOKEN}\n")).unwrap();
    let mut cfg = cluster("prod", &s);
    cfg.issuer_ca_path = None;
    cfg.token_review = Some(TokenReviewConfig {
        api_server: s.url.clone(),
        ca_path: s.ca_path.clone(),
        token_path: reviewer_path.clone(),
    });
    let v = verifier(vec![cfg]);
    let token = rsa.token(&claims(&s.url));
    let authenticated = |node: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": {
            "authenticated": true,
            "audiences": ["hallmark"],
            "user": {
                "username": "system:serviceaccount:hallmark:hallmark-agent",
                "uid": "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:hallmark", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/credential-id": ["JTI=0b5b3c0e-8a51-4b1e-a1c4-9e6b2c1d7f3a"],
                    "authentication.kubernetes.io/node-name": [node],
                    "authentication.kubernetes.io/node-uid": ["8e1f0c2a-4b3d-4e5f-9a6b-7c8d9e0f1a2b"],
                    "authentication.kubernetes.io/pod-name": ["hallmark-agent-x7k2p"],
                    "authentication.kubernetes.io/pod-uid": [POD_UID]
                }
            }
        }})
    };

    *s.state.review.lock().unwrap() = authenticated("node-1");
    assert_eq!(v.verify(&ev("prod", &token), NOW).await.unwrap(), proof("prod", "node-1"));
    // The review asked about this token for our audience; no key was fetched.
    let asked = s.state.reviews.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked["kind"], "TokenReview");
    assert_eq!(asked["spec"], json!({"token": token, "audiences": ["hallmark"]}));
    assert_eq!((s.hits(DISCOVERY), s.hits(JWKS)), (0, 0));

    // The API server says no (a deleted pod, a revoked token).
    *s.state.review.lock().unwrap() =
        json!({"status": {"authenticated": false, "error": "pod \"hallmark-agent-x7k2p\" not found"}});
    refused(v.verify(&ev("prod", &token), NOW).await, "did not authenticate the token: pod");
    // The API server and the token disagree about the node.
    *s.state.review.lock().unwrap() = authenticated("node-2");
    refused(v.verify(&ev("prod", &token), NOW).await, "do not match");
    // Garbage never goes to the API server.
    let before = s.state.reviews.lock().unwrap().len();
    assert!(matches!(v.verify(&ev("prod", "x.y.z"), NOW).await, Err(AttestError::Malformed(_))));
    assert_eq!(s.state.reviews.lock().unwrap().len(), before);
    // The API server refuses the reviewer: unavailable, not the agent's fault.
    std::fs::write(&reviewer_path, "stale").unwrap();
    match v.verify(&ev("prod", &token), NOW).await {
        Err(AttestError::Unavailable(why)) => assert!(why.contains("401"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn config_from_toml_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = ca_and_server();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let text = format!(
        r#"
        [[clusters]]
        name = "prod"
        issuer = "https://kubernetes.default.svc.cluster.local"
        issuer_ca_path = "{ca}"
        allowed_service_accounts = ["hallmark:hallmark-agent"]
        allowed_node_names = ["node-1", "node-2"]
        jwks_refresh = "2m"

        [[clusters]]
        name = "eks-eu"
        issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
        audience = "hallmark-eu"
        allowed_service_accounts = ["hallmark:hallmark-agent"]

        [[clusters]]
        name = "onprem"
        issuer = "https://kubernetes.default.svc"
        allowed_service_accounts = ["hallmark:hallmark-agent"]
        [clusters.token_review]
        api_server = "https://10.0.0.1:6443"
        ca_path = "{ca}"
        token_path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        "#,
        ca = ca_path.display()
    );
    let cfg: PsatAttestorConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.clusters[1].audience, "hallmark-eu");
    assert_eq!(cfg.clusters[0].audience, "hallmark");
    PsatVerifier::new(&cfg).unwrap();

    let unknown_key = text.replace("jwks_refresh", "jwks_refresh_every");
    assert!(toml::from_str::<PsatAttestorConfig>(&unknown_key).unwrap_err().to_string().contains("jwks_refresh_every"));

    let base = || cfg.clusters[0].clone();
    let err = |c: PsatClusterConfig| PsatVerifier::new(&PsatAttestorConfig { clusters: vec![c] }).unwrap_err();
    assert!(PsatVerifier::new(&PsatAttestorConfig { clusters: vec![] }).unwrap_err().contains("no cluster"));
    let two = PsatAttestorConfig { clusters: vec![base(), base()] };
    assert!(PsatVerifier::new(&two).unwrap_err().contains("`prod` is configured twice"));
    for (change, says) in [
        (
            Box::new(|c: &mut PsatClusterConfig| c.name = "prod/1".into()) as Box<dyn Fn(&mut PsatClusterConfig)>,
            "letters, digits",
        ),
        (Box::new(|c| c.issuer = "http://kubernetes.default.svc".into()), "only https://"),
        (Box::new(|c| c.audience = String::new()), "audience"),
        (Box::new(|c| c.allowed_service_accounts = vec![]), "at least one"),
        (
            Box::new(|c| c.allowed_service_accounts = vec!["hallmark-agent".into()]),
            "`hallmark-agent` is not NAMESPACE:NAME",
        ),
        (Box::new(|c| c.allowed_service_accounts = vec![":x".into()]), "NAMESPACE:NAME"),
        (Box::new(|c| c.allowed_node_names = Some(vec![])), "allowed_node_names is empty"),
        (Box::new(|c| c.jwks_refresh = Some("1s".into())), "jwks_refresh `1s`"),
        (Box::new(|c| c.jwks_url = Some("http://10.0.0.1/jwks".into())), "jwks_url"),
        (Box::new(|c| c.issuer_ca_path = Some("/nonexistent/ca.pem".into())), "/nonexistent/ca.pem"),
        (
            Box::new(|c| {
                c.token_review = Some(TokenReviewConfig {
                    api_server: "https://10.0.0.1:6443".into(),
                    ca_path: "/nonexistent/ca.pem".into(),
                    token_path: "/t".into(),
                })
            }),
            "with token_review, jwks_url, issuer_ca_path and jwks_refresh are not used",
        ),
    ] {
        let mut c = base();
        change(&mut c);
        let e = err(c);
        assert!(e.contains(says), "`{e}` does not say `{says}`");
        assert!(e.starts_with("k8s_psat"), "{e}");
    }
}
