//! JWT-SVIDs: minting with the trust domain's ES256 key, and validation by the
//! rules of the JWT-SVID standard (shared SPIFFE.md §4).
//!
//! JWS is small enough to do directly on aws-lc-rs: it keeps the header rules
//! (only `alg`, `kid`, `typ`) in our hands and adds no dependency.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hallmark_core::SpiffeId;
use serde_json::{Map, Value, json};

use crate::CaError;
use crate::bundle::JwtAuthority;

/// Longest JWT accepted for validation, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a JWT-SVID was rejected. Messages never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// A header other than `alg`, `kid`, `typ`, or a bad `typ`.
    #[error("JWT header not allowed for a JWT-SVID: {0}")]
    Header(String),
    /// `alg` outside the allowed set.
    #[error("unsupported JWT algorithm `{0}`")]
    Algorithm(String),
    /// No key in the bundle with this `kid` (or none verifies).
    #[error("no JWT authority with key id `{0}`")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("JWT signature does not verify")]
    Signature,
    /// A required claim is missing or of the wrong type.
    #[error("JWT claim `{0}` is missing or invalid")]
    Claim(&'static str),
    /// `exp` is in the past.
    #[error("JWT has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("JWT is not yet valid")]
    NotYetValid,
    /// The expected audience is not in `aud`.
    #[error("JWT audience does not include `{0}`")]
    Audience(String),
    /// `sub` belongs to a trust domain we hold no bundle for.
    #[error("no bundle for trust domain `{0}`")]
    TrustDomain(String),
}

/// The claims of a validated JWT-SVID.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtClaims {
    /// `sub`.
    pub spiffe_id: SpiffeId,
    /// `jti`, if any.
    pub jti: Option<String>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// Every claim, for the Workload API's `claims` struct.
    pub all: Map<String, Value>,
}

/// The claims of a JWT-SVID to mint.
#[derive(Debug, Clone, Copy)]
pub struct MintClaims<'a> {
    /// `sub`: the SPIFFE ID.
    pub sub: &'a SpiffeId,
    /// `aud`: the audiences (non-empty).
    pub aud: &'a [String],
    /// `iat`, unix seconds.
    pub issued_at: i64,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `jti`: the token's id.
    pub jti: &'a str,
    /// `iss`, when the server is configured with one.
    pub issuer: Option<&'a str>,
    /// Claims beyond the JWT-SVID's own (`task`, `act`), which the standard
    /// permits; a name of the standard's own is never replaced.
    pub extra: Option<&'a Map<String, Value>>,
}

/// The `typ` header of a token this server signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Typ {
    /// `JWT`: JWT-SVIDs and exchanged tokens.
    Jwt,
    /// `wit+jwt`: WIT-SVIDs (workload identity tokens).
    Wit,
}

impl Typ {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "JWT",
            Self::Wit => "wit+jwt",
        }
    }
}

/// The trust domain's JWT signing key (EC P-256, ES256).
pub struct JwtKey {
    kid: String,
    key: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl JwtKey {
    /// Generates a new key; its `kid` is derived from the public key.
    pub fn generate() -> Result<Self, CaError> {
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(CaError::crypto("generate the JWT key"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Loads a key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CaError> {
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|source| CaError::KeyRejected { what: "the JWT key", source })?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        // The key id: the first 18 bytes (of 32) of the public key's SHA-256.
        let kid = B64.encode(digest.as_ref().iter().take(18).copied().collect::<Vec<u8>>());
        Ok(Self { kid, key, pkcs8: der.to_vec() })
    }

    /// Loads a key from a PKCS#8 PEM document.
    pub fn from_pem(pem_text: &str) -> Result<Self, CaError> {
        let p = pem::parse(pem_text).map_err(|source| CaError::Pem { what: "JWT key", source })?;
        Self::from_pkcs8(p.contents())
    }

    /// PKCS#8 PEM for the 0600 key file. Never log it.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// The key id published in the bundle and in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as published in the bundle.
    pub fn authority(&self) -> JwtAuthority {
        let point = self.key.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
        let (x, y) = point.get(1..).map(|xy| xy.split_at(xy.len() / 2)).unwrap_or((&[], &[]));
        JwtAuthority::ec(&self.kid, "P-256", x, y)
    }

    /// Mints a JWT-SVID. `claims.aud` must be non-empty (the caller checks).
    pub fn mint(&self, claims: &MintClaims<'_>) -> Result<String, CaError> {
        let MintClaims { sub, aud, issued_at, expires_at, jti, issuer, extra } = *claims;
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(sub.as_str().to_owned()));
        claims.insert("aud".into(), json!(aud));
        claims.insert("exp".into(), json!(expires_at));
        claims.insert("iat".into(), json!(issued_at));
        claims.insert("jti".into(), Value::String(jti.to_owned()));
        if let Some(iss) = issuer {
            claims.insert("iss".into(), Value::String(iss.to_owned()));
        }
        for (k, v) in extra.into_iter().flatten() {
            if !claims.contains_key(k) && k != "iss" {
                claims.insert(k.clone(), v.clone());
            }
        }
        self.sign_claims(&claims)
    }

    /// Signs `claims` as they are, with the header every token of this key
    /// carries (`alg` ES256, `kid`, `typ` JWT). For tokens whose claims are
    /// not a JWT-SVID's alone (token exchange adds `act` and `scope`); the
    /// caller decides the claims and answers for them.
    pub fn sign_claims(&self, claims: &Map<String, Value>) -> Result<String, CaError> {
        self.sign_typed(Typ::Jwt, claims)
    }

    /// Signs `claims` as they are, with the header `alg` ES256, this key's
    /// `kid`, and `typ` (`wit+jwt` for a WIT-SVID: [`crate::wit::mint`]).
    pub fn sign_typed(&self, typ: Typ, claims: &Map<String, Value>) -> Result<String, CaError> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": typ.as_str()});
        let body = Value::Object(claims.clone()).to_string();
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(body));
        let sig =
            self.key.sign(&SystemRandom::new(), signing_input.as_bytes()).map_err(CaError::crypto("sign a JWT"))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }
}

fn b64_json(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Malformed("part is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed("part is not a JSON object")),
    }
}

/// Validates a JWT-SVID for `audience` against the JWT authorities of `trust_domain`.
pub fn validate(
    token: &str,
    audience: &str,
    trust_domain: &str,
    authorities: &[JwtAuthority],
    now: i64,
) -> Result<JwtClaims, JwtError> {
    let claims = verify(token, authorities, now)?;
    let sub = claims.get("sub").and_then(Value::as_str).ok_or(JwtError::Claim("sub"))?;
    let spiffe_id = SpiffeId::new(sub).map_err(|_| JwtError::Claim("sub"))?;
    if spiffe_id.trust_domain_name() != trust_domain {
        return Err(JwtError::TrustDomain(spiffe_id.trust_domain_name().to_owned()));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) if !list.is_empty() => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => return Err(JwtError::Claim("aud")),
    };
    if !aud_ok {
        return Err(JwtError::Audience(audience.to_owned()));
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(JwtError::Claim("exp"))?;
    let jti = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
    Ok(JwtClaims { spiffe_id, jti, expires_at: exp, all: claims })
}

/// Verifies a compact JWS signed by one of `authorities` and its times, and
/// returns its claims; nothing about `sub` or `aud` is checked (the caller's
/// rules: [`validate`] for a JWT-SVID). Checked, in order: the length, three
/// base64url parts of JSON objects, a header of `alg`, `kid`, `typ` only
/// (`typ` JWT or JOSE), the signature with the key of that `kid` (any key
/// when it names none), `exp` in the future and `nbf` not.
pub fn verify(token: &str, authorities: &[JwtAuthority], now: i64) -> Result<Map<String, Value>, JwtError> {
    verify_typed(token, authorities, now, &["JWT", "JOSE"], false)
}

/// [`verify`], accepting only the `typ` values in `typ` (and none at all
/// unless `typ_required` is false).
pub(crate) fn verify_typed(
    token: &str,
    authorities: &[JwtAuthority],
    now: i64,
    typ: &[&str],
    typ_required: bool,
) -> Result<Map<String, Value>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let header = b64_json(h)?;
    for k in header.keys() {
        if !matches!(k.as_str(), "alg" | "kid" | "typ") {
            return Err(JwtError::Header(format!("`{}`", k.chars().take(32).collect::<String>())));
        }
    }
    match header.get("typ") {
        Some(t) if t.as_str().is_some_and(|t| typ.contains(&t)) => {}
        None if !typ_required => {}
        _ => return Err(JwtError::Header(format!("`typ` must be {}", typ.join(" or ")))),
    }
    let alg = header.get("alg").and_then(Value::as_str).ok_or(JwtError::Malformed("no `alg` header"))?;
    let claims = b64_json(c)?;
    let sig = B64.decode(s).map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let signing_input = token.get(..h.len() + 1 + c.len()).ok_or(JwtError::Malformed("token cut short"))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<&JwtAuthority> = match kid {
        Some(k) => authorities.iter().filter(|a| a.kid() == k).collect(),
        None => authorities.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(JwtError::UnknownKey(kid.unwrap_or("").chars().take(64).collect()));
    }
    let mut verified = false;
    for a in candidates {
        match verify_sig(alg, a, signing_input.as_bytes(), &sig) {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(JwtError::Algorithm(a)) => return Err(JwtError::Algorithm(a)),
            Err(_) => {}
        }
    }
    if !verified {
        return Err(JwtError::Signature);
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(JwtError::Claim("exp"))?;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf")
        && nbf.as_i64().ok_or(JwtError::Claim("nbf"))? > now
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

fn verify_sig(alg: &str, a: &JwtAuthority, msg: &[u8], sig: &[u8]) -> Result<(), JwtError> {
    let ec = |alg: &'static signature::EcdsaVerificationAlgorithm, crv: &str| -> Result<(), JwtError> {
        let point = a.ec_point(crv).ok_or(JwtError::Signature)?;
        UnparsedPublicKey::new(alg, point).verify(msg, sig).map_err(|_| JwtError::Signature)
    };
    let rsa = |alg: &'static signature::RsaParameters| -> Result<(), JwtError> {
        let (n, e) = a.rsa_components().ok_or(JwtError::Signature)?;
        RsaPublicKeyComponents { n, e }.verify(alg, msg, sig).map_err(|_| JwtError::Signature)
    };
    match alg {
        "ES256" => ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
        "ES384" => ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
        "ES512" => ec(&signature::ECDSA_P521_SHA512_FIXED, "P-521"),
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        other => Err(JwtError::Algorithm(other.chars().take(16).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mint(key: &JwtKey, aud: &[&str], exp_in: i64) -> (String, i64) {
        let now = hallmark_core::now_unix();
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let aud: Vec<String> = aud.iter().map(|s| s.to_string()).collect();
        let claims = MintClaims {
            sub: &id,
            aud: &aud,
            issued_at: now,
            expires_at: now + exp_in,
            jti: "j1",
            issuer: None,
            extra: None,
        };
        (key.mint(&claims).unwrap(), now)
    }

    #[test]
    fn round_trip() {
        let key = JwtKey::generate().unwrap();
        let (tok, now) = mint(&key, &["db"], 300);
        let c = validate(&tok, "db", "example.org", &[key.authority()], now).unwrap();
        assert_eq!(c.spiffe_id.as_str(), "spiffe://example.org/web");
        assert_eq!(c.jti.as_deref(), Some("j1"));
        let again = JwtKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.kid(), key.kid());
    }

    #[test]
    fn rejections() {
        let key = JwtKey::generate().unwrap();
        let other = JwtKey::generate().unwrap();
        let (tok, now) = mint(&key, &["db"], 300);
        let auth = [key.authority()];
        assert_eq!(validate(&tok, "web", "example.org", &auth, now), Err(JwtError::Audience("web".into())));
        assert!(matches!(validate(&tok, "db", "example.org", &[other.authority()], now), Err(JwtError::UnknownKey(_))));
        assert_eq!(validate(&tok, "db", "example.org", &auth, now + 301), Err(JwtError::Expired));
        assert!(matches!(validate(&tok, "db", "other.org", &auth, now), Err(JwtError::TrustDomain(_))));
        // A tampered payload no longer verifies.
        let mut parts: Vec<String> = tok.split('.').map(str::to_owned).collect();
        let mut claims = b64_json(&parts[1]).unwrap();
        claims.insert("sub".into(), "spiffe://example.org/admin".into());
        parts[1] = B64.encode(Value::Object(claims).to_string());
        assert_eq!(validate(&parts.join("."), "db", "example.org", &auth, now), Err(JwtError::Signature));
        // Extra header, alg none.
        let hdr = B64.encode(r#"{"alg":"ES256","kid":"x","jku":"http://evil"}"#);
        let t = format!("{hdr}.{}.{}", parts[1], parts[2]);
        assert!(matches!(validate(&t, "db", "example.org", &auth, now), Err(JwtError::Header(_))));
        let hdr = B64.encode(r#"{"alg":"none"}"#);
        let t = format!("{hdr}.{}.", tok.split('.').nth(1).unwrap());
        assert!(matches!(validate(&t, "db", "example.org", &auth, now), Err(JwtError::Algorithm(_))));
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(validate(junk, "db", "example.org", &auth, now).is_err());
        }
    }
}
