//! An OpenID Connect issuer's signing keys, fetched over HTTPS and cached,
//! and the compact JWS its tokens come as: what the `k8s_psat` node attestor
//! (a cluster's service-account issuer) and token exchange (an ID token's
//! issuer) both verify tokens with.
//!
//! Parsing is full recognition before anything else ([`Jws::parse`]): three
//! base64url parts, a header of `alg`, `kid` and `typ` only, an accepted
//! `alg` (RS256 or ES256), claims that decode as the caller's type. Only
//! then is a key looked for.
//!
//! The keys ([`IssuerKeys`]) come from a configured JWKS URL or from the
//! issuer's discovery document (`{issuer}/.well-known/openid-configuration`,
//! which must name exactly that issuer: OpenID Connect Discovery 1.0 §4.3).
//! They are fetched again every `refresh`; a `kid` not in the cache makes
//! one early fetch, at most every [`REFETCH_INTERVAL`], so a flood of
//! made-up `kid`s cannot flood the issuer. If the issuer cannot be reached,
//! keys fetched within [`MAX_KEY_AGE`] are still used; older ones are not (a
//! key the issuer has withdrawn is trusted no longer than that).
//!
//! A token is never logged, nor echoed in an error.

use std::time::Duration;

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hallmark_http::{HttpsClient, HttpsUrl, Limits};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Least time between two fetches of an issuer's keys when a token names a
/// key not in the cache (or a fetch failed).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Oldest keys used when the issuer cannot be reached for fresh ones.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// Requests to issuers: 5 s each, 1 MiB answers at most.
pub const HTTP_LIMITS: Limits = Limits { timeout: Duration::from_secs(5), max_body: 1024 * 1024 };

/// The signature algorithms accepted: RS256 for an RSA key, ES256 for an EC
/// P-256 key (what kube-apiserver and common OIDC providers sign with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// Why a token was not accepted as a JWS, before any key was used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not a compact JWS of JSON, or claims of the wrong types.
    #[error("{0}")]
    Malformed(String),
    /// Well formed, but with a header or algorithm that is not accepted.
    #[error("{0}")]
    Refused(String),
}

/// Why a signature was not verified with the issuer's keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The keys could not be had (the issuer is unreachable or answered
    /// badly, and no recent enough keys are cached): not the token's fault.
    #[error("the issuer's keys: {0}")]
    Unavailable(String),
    /// No key of the token's `kid` and algorithm, or the signature does not
    /// verify.
    #[error("{0}")]
    Refused(String),
}

/// A compact JWS, parsed but not verified, with claims of type `C`.
pub struct Jws<'a, C> {
    /// The accepted algorithm.
    pub alg: Alg,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
    signature: Vec<u8>,
    /// The claims.
    pub claims: C,
}

impl<'a, C: DeserializeOwned> Jws<'a, C> {
    /// Full recognition of `token` (at most `max_len` bytes) before anything
    /// else: three base64url parts, a header of `alg`, `kid`, `typ` only, an
    /// accepted `alg`, a JSON object of claims of the right types.
    pub fn parse(token: &'a str, max_len: usize) -> Result<Self, JwsError> {
        let malformed = |m: &str| JwsError::Malformed(m.to_owned());
        if token.len() > max_len {
            return Err(JwsError::Malformed(format!("the token is longer than {max_len} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("the token is not three dot-separated parts"));
        };
        let header: Map<String, Value> = decode_json(h).ok_or_else(|| malformed("the header is not base64url JSON"))?;
        if let Some(k) = header.keys().find(|k| !matches!(k.as_str(), "alg" | "kid" | "typ")) {
            return Err(JwsError::Refused(format!("JWT header `{}` is not accepted", shown(k))));
        }
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => Alg::Rs256,
            Some("ES256") => Alg::Es256,
            Some(other) => {
                return Err(JwsError::Refused(format!(
                    "JWT algorithm `{}` is not accepted (RS256, ES256)",
                    shown(other)
                )));
            }
            None => return Err(malformed("the header has no `alg`")),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(malformed("the header's `kid` is not a string")),
        };
        let claims: C =
            decode_json(c).ok_or_else(|| malformed("the claims are not base64url JSON of the right types"))?;
        let signature = B64.decode(s).map_err(|_| malformed("the signature is not base64url"))?;
        let signing_input = token.get(..h.len() + 1 + c.len()).ok_or_else(|| malformed("the token is cut short"))?;
        Ok(Self { alg, kid, signing_input, signature, claims })
    }
}

fn decode_json<T: DeserializeOwned>(part: &str) -> Option<T> {
    serde_json::from_slice(&B64.decode(part).ok()?).ok()
}

/// Text from a token, fit for a one-line message: at most 64 characters,
/// control characters replaced.
pub fn shown(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// One issuer's signing keys: where they are, and the cache.
#[derive(Debug)]
pub struct IssuerKeys {
    /// The configured issuer, which the discovery document must name.
    issuer: String,
    client: HttpsClient,
    /// Where the keys are: given, or found in the discovery document.
    source: KeySource,
    refresh: Duration,
    cache: Mutex<KeyCache>,
}

#[derive(Debug)]
enum KeySource {
    Jwks(HttpsUrl),
    Discovery(HttpsUrl),
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: Vec<Jwk>,
    /// When `keys` were fetched.
    fetched_at: Option<Instant>,
    /// When a fetch was last tried, and why it failed if it did.
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// A signing key from a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    alg: Option<String>,
    key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    /// RSA modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// P-256, the uncompressed point `04 || x || y`.
    P256(Vec<u8>),
}

impl IssuerKeys {
    /// The keys of `issuer` (an https:// URL), trusting `roots` for its
    /// HTTPS, from `jwks_url` or else the issuer's discovery document,
    /// fetched again every `refresh`. Checks the URLs now; fetches nothing
    /// (the first token does).
    pub fn new(
        issuer: &str,
        roots: rustls::RootCertStore,
        jwks_url: Option<&str>,
        refresh: Duration,
    ) -> Result<Self, String> {
        HttpsUrl::parse(issuer).map_err(|e| format!("issuer: {e}"))?;
        let client = HttpsClient::new(roots, HTTP_LIMITS).map_err(|e| e.to_string())?;
        let source = match jwks_url {
            Some(u) => KeySource::Jwks(HttpsUrl::parse(u).map_err(|e| format!("jwks_url: {e}"))?),
            None => {
                let base = issuer.trim_end_matches('/');
                let url = HttpsUrl::parse(&format!("{base}/.well-known/openid-configuration"))
                    .map_err(|e| format!("issuer: {e}"))?;
                KeySource::Discovery(url)
            }
        };
        Ok(Self { issuer: issuer.to_owned(), client, source, refresh, cache: Mutex::default() })
    }

    /// Verifies `jws`'s signature with one of the issuer's keys of its `kid`
    /// and algorithm.
    pub async fn verify_signature<C>(&self, jws: &Jws<'_, C>) -> Result<(), KeyError> {
        let keys = self.keys_for(jws.kid.as_deref(), jws.alg).await?;
        let verified = keys.iter().any(|k| verify(jws.alg, k, jws.signing_input.as_bytes(), &jws.signature));
        if verified { Ok(()) } else { Err(KeyError::Refused("the token's signature does not verify".into())) }
    }

    /// The cached keys that may have signed a token of `kid` and `alg`,
    /// fetching the keys when they are due, or once early when none is found.
    async fn keys_for(&self, kid: Option<&str>, alg: Alg) -> Result<Vec<Jwk>, KeyError> {
        let mut cache = self.cache.lock().await;
        let due = cache.fetched_at.is_none_or(|t| t.elapsed() >= self.refresh);
        if due && cache.may_fetch() {
            self.fetch(&mut cache).await;
        }
        let usable = cache.fetched_at.is_some_and(|t| t.elapsed() < MAX_KEY_AGE);
        if !usable {
            let why = cache.last_error.clone().unwrap_or_else(|| "not fetched yet".into());
            return Err(KeyError::Unavailable(why));
        }
        let mut found = cache.matching(kid, alg);
        if found.is_empty() && cache.may_fetch() {
            self.fetch(&mut cache).await;
            found = cache.matching(kid, alg);
        }
        if found.is_empty() {
            let kid = kid.map_or_else(|| "(none)".to_owned(), shown);
            return Err(KeyError::Refused(format!("no {} key with kid `{kid}` in the issuer's JWKS", alg.name())));
        }
        Ok(found)
    }

    /// Fetches the keys into `cache`, or records why not (the old keys stay).
    async fn fetch(&self, cache: &mut KeyCache) {
        cache.last_attempt = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(keys) => {
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
                cache.last_error = None;
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch the issuer's keys");
                cache.last_error = Some(e);
            }
        }
    }

    async fn fetch_keys(&self) -> Result<Vec<Jwk>, String> {
        let url = match &self.source {
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery(url) => {
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: String,
                }
                let doc: Discovery = self.client.get_json(url, None).await.map_err(|e| format!("{url}: {e}"))?;
                // OpenID Connect Discovery 1.0 §4.3: the document is the
                // issuer's only if it names exactly that issuer.
                if doc.issuer != self.issuer {
                    return Err(format!("{url}: names issuer `{}`, not `{}`", shown(&doc.issuer), self.issuer));
                }
                HttpsUrl::parse(&doc.jwks_uri).map_err(|e| format!("{url}: jwks_uri: {e}"))?
            }
        };
        #[derive(Deserialize)]
        struct JwkSet {
            keys: Vec<Map<String, Value>>,
        }
        let set: JwkSet = self.client.get_json(&url, None).await.map_err(|e| format!("{url}: {e}"))?;
        let keys: Vec<Jwk> = set.keys.iter().filter_map(Jwk::from_json).collect();
        if keys.is_empty() {
            return Err(format!("{url}: no RSA or P-256 signing key"));
        }
        Ok(keys)
    }
}

impl KeyCache {
    fn may_fetch(&self) -> bool {
        self.last_attempt.is_none_or(|t| t.elapsed() >= REFETCH_INTERVAL)
    }

    /// The keys of `kid` (every key when it is `None`) that fit `alg`.
    fn matching(&self, kid: Option<&str>, alg: Alg) -> Vec<Jwk> {
        self.keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg.name()))
            .filter(|k| matches!((&k.key, alg), (PublicKey::Rsa { .. }, Alg::Rs256) | (PublicKey::P256(_), Alg::Es256)))
            .cloned()
            .collect()
    }
}

impl Jwk {
    /// A signing key from a JWK; `None` for keys of other kinds or uses.
    fn from_json(jwk: &Map<String, Value>) -> Option<Self> {
        let field = |k: &str| jwk.get(k).and_then(Value::as_str);
        let bytes = |k: &str| field(k).and_then(|v| B64.decode(v).ok());
        if field("use").is_some_and(|u| u != "sig") {
            return None;
        }
        let key = match field("kty")? {
            "RSA" => PublicKey::Rsa { n: bytes("n")?, e: bytes("e")? },
            "EC" if field("crv")? == "P-256" => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                PublicKey::P256(point)
            }
            _ => return None,
        };
        Some(Self { kid: field("kid").map(str::to_owned), alg: field("alg").map(str::to_owned), key })
    }
}

fn verify(alg: Alg, jwk: &Jwk, msg: &[u8], sig: &[u8]) -> bool {
    match (alg, &jwk.key) {
        (Alg::Rs256, PublicKey::Rsa { n, e }) => {
            RsaPublicKeyComponents { n, e }.verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig).is_ok()
        }
        (Alg::Es256, PublicKey::P256(point)) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig).is_ok()
        }
        _ => false,
    }
}
