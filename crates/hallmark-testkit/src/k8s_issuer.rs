//! A Kubernetes service-account issuer stand-in, for the `k8s_psat` node
//! attestor's tests: no cluster can run where the tests run, so a local
//! HTTPS server ([`crate::localhost_tls`]) serves the
//! issuer's discovery document and JWKS, and answers TokenReview POSTs as an
//! API server does; and [`Signer`] signs tokens with the header and claims
//! kube-apiserver puts in a pod's projected token, with RSA-2048 (RS256,
//! kube-apiserver's default) or P-256 (ES256) keys made at test time.
//!
//! The server crate's verifier tests and the real-process end-to-end test
//! both use it, so that both speak to the same issuer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::localhost_tls::ca_and_server;

/// The path of the issuer's OIDC discovery document.
pub const DISCOVERY: &str = "/.well-known/openid-configuration";
/// The path of the issuer's JWKS (kube-apiserver's).
pub const JWKS: &str = "/openid/v1/jwks";
/// The path TokenReviews are POSTed to.
pub const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// The bearer token the stand-in accepts from a TokenReview's reviewer.
pub const REVIEWER_TOKEN: &str = "reviewer-token";
/// The agent pod's UID in [`pod_claims`].
pub const POD_UID: &str = "5d1c6b1e-7a3f-4c2e-9f11-2b9e0c8d4a70";

// ---- keys and tokens ------------------------------------------------------

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// An issuer's signing key, as kube-apiserver holds it.
pub struct Signer {
    kid: String,
    key: Key,
}

impl Signer {
    /// A fresh RSA-2048 key (RS256) with key ID `kid`.
    pub fn rsa(kid: &str) -> Self {
        Self { kid: kid.into(), key: Key::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap()) }
    }

    /// A fresh P-256 key (ES256) with key ID `kid`.
    pub fn ec(kid: &str) -> Self {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        Self { kid: kid.into(), key: Key::Ec(key) }
    }

    /// The public key as the issuer's JWKS lists it.
    pub fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(k) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
                       "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
            }
            Key::Ec(k) => {
                let point = k.public_key().as_ref();
                json!({"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
                       "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
            }
        }
    }

    /// `RS256` or `ES256`.
    pub fn alg(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
        }
    }

    /// A token with kube-apiserver's header, `{"alg", "kid"}`.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": self.alg(), "kid": self.kid}), claims)
    }

    /// A compact JWS of `claims` under any `header`.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
                sig
            }
            Key::Ec(k) => k.sign(&SystemRandom::new(), input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", B64.encode(sig))
    }
}

/// The claims of the agent pod's projected token on node `node`, as
/// kube-apiserver 1.30+ writes them: issuer `iss`, audience `hallmark`,
/// service account `hallmark:hallmark-agent`, pod UID [`POD_UID`], issued a
/// minute before `now` (unix seconds) for an hour from `now`.
pub fn pod_claims(iss: &str, now: i64, node: &str) -> Value {
    json!({
        "aud": ["hallmark"],
        "exp": now + 3600,
        "iat": now - 60,
        "iss": iss,
        "jti": "0b5b3c0e-8a51-4b1e-a1c4-9e6b2c1d7f3a",
        "kubernetes.io": {
            "namespace": "hallmark",
            "node": {"name": node, "uid": "8e1f0c2a-4b3d-4e5f-9a6b-7c8d9e0f1a2b"},
            "pod": {"name": "hallmark-agent-x7k2p", "uid": POD_UID},
            "serviceaccount": {"name": "hallmark-agent", "uid": "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f"},
            "warnafter": now + 547
        },
        "nbf": now - 60,
        "sub": "system:serviceaccount:hallmark:hallmark-agent"
    })
}

/// `claims` with the claim at `path` (object keys, outermost first) set to
/// `value`, or removed when `value` is null.
pub fn with(mut claims: Value, path: &[&str], value: Value) -> Value {
    let (last, parents) = path.split_last().expect("a claim path names at least one key");
    let mut at = &mut claims;
    for p in parents {
        at = at.get_mut(*p).unwrap();
    }
    if value.is_null() {
        at.as_object_mut().unwrap().remove(*last);
    } else {
        at[*last] = value;
    }
    claims
}

/// `claims` as the service account `ns:sa` has them (namespace, name, `sub`).
pub fn as_service_account(claims: Value, ns: &str, sa: &str) -> Value {
    let c = with(claims, &["kubernetes.io", "namespace"], json!(ns));
    let c = with(c, &["kubernetes.io", "serviceaccount", "name"], json!(sa));
    with(c, &["sub"], json!(format!("system:serviceaccount:{ns}:{sa}")))
}

// ---- the issuer / API server stand-in --------------------------------------

/// What the stand-in serves and what it was asked.
#[derive(Default)]
pub struct IssuerState {
    /// The JWKS served.
    pub jwks: Mutex<Value>,
    /// The paths asked for, in order.
    pub hits: Mutex<Vec<String>>,
    /// What TokenReviews answer.
    pub review: Mutex<Value>,
    /// The TokenReview requests' bodies.
    pub reviews: Mutex<Vec<Value>>,
}

/// A running issuer (and API server) stand-in; it serves until the test's
/// runtime ends.
pub struct IssuerStub {
    /// `https://localhost:PORT`: the issuer, and the API server.
    pub url: String,
    /// What it serves and what it was asked.
    pub state: Arc<IssuerState>,
    /// The PEM file of the CA its serving certificate chains to.
    pub ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl IssuerStub {
    /// Starts one on a free port of 127.0.0.1 (on the current Tokio
    /// runtime), publishing `signers`' keys. It serves, as kube-apiserver
    /// does: the discovery document, the JWKS, and TokenReviews (only with
    /// the bearer token [`REVIEWER_TOKEN`]).
    pub async fn start(signers: &[&Signer]) -> Self {
        let (ca, server) = ca_and_server();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let state = Arc::new(IssuerState::default());
        let (st, issuer) = (state.clone(), url.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, st, issuer) = (acceptor.clone(), st.clone(), issuer.clone());
                // One task per connection: a client that stalls its
                // handshake holds up nobody else.
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, &st, &issuer).await;
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca).unwrap();
        let stub = Self { url, state, ca_path, _dir: dir };
        stub.publish(signers);
        stub
    }

    /// How many times `path` was asked for.
    pub fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().iter().filter(|p| *p == path).count()
    }

    /// Publishes exactly `signers`' keys in the JWKS.
    pub fn publish(&self, signers: &[&Signer]) {
        *self.state.jwks.lock().unwrap() = json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
    }
}

/// Answers one HTTP/1.1 request on `tls`, then closes it.
async fn serve(mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>, st: &IssuerState, issuer: &str) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break request.len(),
            Ok(k) => request.extend_from_slice(&buf[..k]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse::<usize>().unwrap());
    while request.len() < head_end + length {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => request.extend_from_slice(&buf[..k]),
        }
    }
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
    st.hits.lock().unwrap().push(path.clone());
    let (status, body) = match (method.as_str(), path.as_str()) {
        ("get", DISCOVERY) => (
            "200 OK",
            json!({"issuer": issuer, "jwks_uri": format!("{issuer}{JWKS}"),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"]}),
        ),
        ("get", JWKS) => ("200 OK", st.jwks.lock().unwrap().clone()),
        ("post", REVIEWS) if head.contains(&format!("authorization: bearer {REVIEWER_TOKEN}")) => {
            st.reviews.lock().unwrap().push(serde_json::from_slice(&request[head_end..]).unwrap());
            ("201 Created", st.review.lock().unwrap().clone())
        }
        ("post", REVIEWS) => ("401 Unauthorized", json!({"kind": "Status", "code": 401})),
        _ => ("404 Not Found", json!({})),
    };
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(head.as_bytes()).await;
    let _ = tls.write_all(body.as_bytes()).await;
    let _ = tls.shutdown().await;
}
