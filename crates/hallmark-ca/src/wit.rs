//! WIT-SVIDs: workload identity tokens (SPIFFE's incubating WIT-SVID
//! standard, after the IETF WIMSE workload identity token).
//!
//! A WIT is a JWT the trust domain's JWT key signs, with header `typ`
//! `wit+jwt` and `kid`, whose claims name the workload (`sub`) and bind a key
//! the workload holds (`cnf.jwk`, its public half). Unlike a JWT-SVID it has
//! no `aud`: it is not a bearer token for one audience but a credential
//! presented with proof of the bound key (a Workload Proof Token, signed by
//! that key, names the audience and hashes the WIT).
//!
//! The key pair is made on the agent's node ([`WitKey`]): the private half
//! goes only to the workload (as a JWK in `wit_svid_key`), the server sees
//! the public half alone ([`EcPublicJwk`]) and never signs a key it cannot
//! parse as a point on P-256.

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hallmark_core::SpiffeId;
use serde_json::{Map, Value, json};

use crate::jwt::{JwtError, Typ};
use crate::{CaError, JwtAuthority, JwtKey};

/// The `typ` header of a WIT-SVID.
pub const WIT_TYP: &str = "wit+jwt";
/// The `use` of a WIT authority's key in a WIT bundle (FetchWITBundles).
pub const WIT_USE: &str = "wit-svid";
/// Longest JWK accepted as a workload's public key, in bytes.
const MAX_JWK_LEN: usize = 1024;

/// Why a workload's public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// Not a JSON object, or too long.
    #[error("the public key is not a JWK (a JSON object of at most {MAX_JWK_LEN} bytes)")]
    NotJson,
    /// A member other than `kty`, `crv`, `x`, `y` (a private `d` among them).
    #[error("JWK member `{0}` is not allowed in a workload's public key (only kty, crv, x, y)")]
    Member(String),
    /// `kty` is not `EC` or `crv` not `P-256`.
    #[error("the public key must be an EC P-256 JWK (`kty` EC, `crv` P-256)")]
    Curve,
    /// `x` or `y` is not 32 bytes of base64url.
    #[error("JWK coordinate `{0}` is not 32 bytes of base64url")]
    Coordinate(&'static str),
    /// `x`, `y` is not a point on P-256.
    #[error("the JWK's coordinates are not a point on P-256")]
    NotOnCurve,
}

/// An EC P-256 public key, as a JWK names it (`kty` EC, `crv` P-256, `x`,
/// `y`): the key a WIT binds. Only a point on the curve can be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcPublicJwk {
    x: [u8; 32],
    y: [u8; 32],
}

impl EcPublicJwk {
    /// The key of an uncompressed SEC1 point (`0x04 || x || y`).
    pub fn from_point(point: &[u8]) -> Result<Self, JwkError> {
        ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).map_err(|_| JwkError::NotOnCurve)?;
        match point {
            [4, rest @ ..] if rest.len() == 64 => {
                let (x, y) = rest.split_at(32);
                let coordinate = |c: &[u8]| <[u8; 32]>::try_from(c).map_err(|_| JwkError::NotOnCurve);
                Ok(Self { x: coordinate(x)?, y: coordinate(y)? })
            }
            _ => Err(JwkError::NotOnCurve),
        }
    }

    /// Parses a public JWK strictly: members `kty` (EC), `crv` (P-256), `x`
    /// and `y` only, coordinates of 32 bytes, a point on the curve.
    pub fn parse(text: &str) -> Result<Self, JwkError> {
        if text.len() > MAX_JWK_LEN {
            return Err(JwkError::NotJson);
        }
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
            return Err(JwkError::NotJson);
        };
        if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "kty" | "crv" | "x" | "y")) {
            return Err(JwkError::Member(k.chars().take(32).collect()));
        }
        if m.get("kty").and_then(Value::as_str) != Some("EC") || m.get("crv").and_then(Value::as_str) != Some("P-256") {
            return Err(JwkError::Curve);
        }
        let coordinate = |name: &'static str| -> Result<Vec<u8>, JwkError> {
            let raw = m.get(name).and_then(Value::as_str).ok_or(JwkError::Coordinate(name))?;
            let bytes = B64.decode(raw).map_err(|_| JwkError::Coordinate(name))?;
            if bytes.len() == 32 { Ok(bytes) } else { Err(JwkError::Coordinate(name)) }
        };
        let mut point = vec![4u8];
        point.extend(coordinate("x")?);
        point.extend(coordinate("y")?);
        Self::from_point(&point)
    }

    /// The JWK: `kty`, `crv`, `x`, `y`, nothing else.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kty".into(), "EC".into());
        m.insert("crv".into(), "P-256".into());
        m.insert("x".into(), B64.encode(self.x).into());
        m.insert("y".into(), B64.encode(self.y).into());
        m
    }
}

/// A workload's WIT key: a fresh EC P-256 key pair made on the node, one per
/// WIT. Its private half is a secret: never logged (Debug shows none of it).
pub struct WitKey {
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for WitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitKey").field("public", &self.public_jwk()).finish_non_exhaustive()
    }
}

impl WitKey {
    /// A new key.
    pub fn generate() -> Result<Self, CaError> {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(CaError::crypto("generate a WIT key"))?;
        Ok(Self { pair })
    }

    /// The public half, as the WIT's `cnf.jwk` carries it.
    pub fn public_jwk(&self) -> Result<EcPublicJwk, CaError> {
        EcPublicJwk::from_point(self.pair.public_key().as_ref())
            .map_err(|_| CaError::Crypto { action: "read the WIT key", source: aws_lc_rs::error::Unspecified })
    }

    /// The private key as a JWK (`kty` EC, `crv` P-256, `x`, `y`, `d`): the
    /// Workload API's `wit_svid_key`. A secret: only for the workload.
    pub fn private_jwk(&self) -> Result<String, CaError> {
        let mut m = self.public_jwk()?.to_json();
        let d = self.pair.private_key().as_be_bytes().map_err(CaError::crypto("read the WIT key"))?;
        m.insert("d".into(), B64.encode(d.as_ref()).into());
        Ok(Value::Object(m).to_string())
    }
}

/// The claims of a WIT-SVID to mint.
#[derive(Debug, Clone, Copy)]
pub struct WitClaims<'a> {
    /// `sub`: the SPIFFE ID.
    pub sub: &'a SpiffeId,
    /// `iat`, unix seconds.
    pub issued_at: i64,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `jti`: the token's id, as the inventory and revocations name it.
    pub jti: &'a str,
    /// `iss`, when the server is configured with one.
    pub issuer: Option<&'a str>,
    /// The workload's public key, bound as `cnf.jwk`.
    pub key: &'a EcPublicJwk,
    /// Claims beyond the WIT's own (`task`, `act`); a name of the WIT's own
    /// (and `aud`, which a WIT never has) is never set by them.
    pub extra: Option<&'a Map<String, Value>>,
}

/// Mints a WIT-SVID with `key`: header `alg` ES256, `kid`, `typ` `wit+jwt`;
/// claims `sub`, `iat`, `exp`, `jti`, `cnf.jwk`, `iss` when given, and no `aud`.
pub fn mint(key: &JwtKey, claims: &WitClaims<'_>) -> Result<String, CaError> {
    let WitClaims { sub, issued_at, expires_at, jti, issuer, key: bound, extra } = *claims;
    let mut c = Map::new();
    c.insert("sub".into(), Value::String(sub.as_str().to_owned()));
    c.insert("iat".into(), json!(issued_at));
    c.insert("exp".into(), json!(expires_at));
    c.insert("jti".into(), Value::String(jti.to_owned()));
    c.insert("cnf".into(), json!({ "jwk": bound.to_json() }));
    if let Some(iss) = issuer {
        c.insert("iss".into(), Value::String(iss.to_owned()));
    }
    for (k, v) in extra.into_iter().flatten() {
        if !c.contains_key(k) && !matches!(k.as_str(), "iss" | "aud" | "nbf") {
            c.insert(k.clone(), v.clone());
        }
    }
    key.sign_typed(Typ::Wit, &c)
}

/// The JWT authorities as a WIT bundle (the Workload API's FetchWITBundles
/// value): a JWKS whose every key has `use` `wit-svid` and its `kid`.
pub fn jwks(authorities: &[JwtAuthority]) -> String {
    let keys: Vec<Value> = authorities
        .iter()
        .map(|a| {
            let mut jwk = a.jwk().clone();
            jwk.insert("use".into(), WIT_USE.into());
            jwk.insert("kid".into(), a.kid().into());
            Value::Object(jwk)
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// Verifies a WIT-SVID signed by one of `authorities`: header `typ`
/// `wit+jwt`, the signature, the times, a SPIFFE ID `sub`, no `aud`, and a
/// `cnf.jwk` that is an EC P-256 public key. Returns the claims and the
/// bound key.
pub fn verify(
    token: &str,
    authorities: &[JwtAuthority],
    now: i64,
) -> Result<(Map<String, Value>, EcPublicJwk), JwtError> {
    let claims = crate::jwt::verify_typed(token, authorities, now, &[WIT_TYP], true)?;
    claims.get("sub").and_then(Value::as_str).and_then(|s| SpiffeId::new(s).ok()).ok_or(JwtError::Claim("sub"))?;
    if claims.contains_key("aud") {
        return Err(JwtError::Claim("aud"));
    }
    let jwk = claims.get("cnf").and_then(|c| c.get("jwk")).ok_or(JwtError::Claim("cnf"))?;
    let bound = EcPublicJwk::parse(&jwk.to_string()).map_err(|_| JwtError::Claim("cnf"))?;
    Ok((claims, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(token: &str, i: usize) -> Value {
        serde_json::from_slice(&B64.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn a_wit_binds_the_workloads_key_with_no_audience() {
        let server = JwtKey::generate().unwrap();
        let workload = WitKey::generate().unwrap();
        let public = workload.public_jwk().unwrap();
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let mut extra = Map::new();
        extra.insert("task".into(), json!({"id": "t1"}));
        extra.insert("aud".into(), json!("sneaky"));
        extra.insert("sub".into(), json!("spiffe://example.org/admin"));
        let claims = WitClaims {
            sub: &id,
            issued_at: 1000,
            expires_at: 2000,
            jti: "j1",
            issuer: Some("https://issuer.example"),
            key: &public,
            extra: Some(&extra),
        };
        let token = mint(&server, &claims).unwrap();
        assert_eq!(part(&token, 0), json!({"alg": "ES256", "kid": server.kid(), "typ": "wit+jwt"}));
        let (c, bound) = verify(&token, &[server.authority()], 1500).unwrap();
        assert_eq!(bound, public);
        assert_eq!(c["sub"], "spiffe://example.org/web", "extra claims never replace the WIT's own");
        assert_eq!(c["iss"], "https://issuer.example");
        assert_eq!((c["iat"].as_i64(), c["exp"].as_i64(), c["jti"].as_str()), (Some(1000), Some(2000), Some("j1")));
        assert_eq!(c["task"]["id"], "t1");
        assert!(!c.contains_key("aud"), "a WIT has no audience");
        assert_eq!(Value::Object(c["cnf"]["jwk"].as_object().unwrap().clone()), Value::Object(public.to_json()));
        assert_eq!(verify(&token, &[server.authority()], 2000), Err(JwtError::Expired));
        // It is not a JWT-SVID: JWT-SVID validation refuses it.
        assert!(matches!(
            crate::jwt::validate(&token, "sneaky", "example.org", &[server.authority()], 1500),
            Err(JwtError::Header(_))
        ));
        // A JWT-SVID is not a WIT.
        let jwt = server.sign_claims(&c).unwrap();
        assert!(matches!(verify(&jwt, &[server.authority()], 1500), Err(JwtError::Header(_))));
    }

    #[test]
    fn the_private_jwk_holds_the_public_point_and_signs_for_it() {
        let k = WitKey::generate().unwrap();
        let private: Map<String, Value> = serde_json::from_str(&k.private_jwk().unwrap()).unwrap();
        let mut keys: Vec<&str> = private.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["crv", "d", "kty", "x", "y"]);
        assert_eq!(B64.decode(private["d"].as_str().unwrap()).unwrap().len(), 32);
        let mut public = private.clone();
        public.remove("d");
        assert_eq!(public, k.public_jwk().unwrap().to_json());
        // The private JWK is the key: rebuilt from d, it has the same point.
        let d = B64.decode(private["d"].as_str().unwrap()).unwrap();
        let mut point = vec![4u8];
        point.extend(B64.decode(private["x"].as_str().unwrap()).unwrap());
        point.extend(B64.decode(private["y"].as_str().unwrap()).unwrap());
        let again =
            EcdsaKeyPair::from_private_key_and_public_key(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &d, &point);
        assert!(again.is_ok());
        assert!(!format!("{k:?}").contains(private["d"].as_str().unwrap()), "Debug never shows the private key");
    }

    #[test]
    fn only_an_ec_p256_public_point_is_accepted() {
        let k = WitKey::generate().unwrap().public_jwk().unwrap();
        let text = Value::Object(k.to_json()).to_string();
        assert_eq!(EcPublicJwk::parse(&text), Ok(k.clone()));
        let with = |key: &str, v: Value| {
            let mut m = k.to_json();
            m.insert(key.into(), v);
            Value::Object(m).to_string()
        };
        assert_eq!(EcPublicJwk::parse(&with("d", "AAAA".into())), Err(JwkError::Member("d".into())));
        assert_eq!(EcPublicJwk::parse(&with("crv", "P-384".into())), Err(JwkError::Curve));
        assert_eq!(EcPublicJwk::parse(&with("kty", "RSA".into())), Err(JwkError::Curve));
        assert_eq!(EcPublicJwk::parse(&with("x", "AAAA".into())), Err(JwkError::Coordinate("x")));
        assert_eq!(EcPublicJwk::parse(&with("y", B64.encode([7u8; 32]).into())), Err(JwkError::NotOnCurve));
        for junk in ["", "[]", "null", "{", &"x".repeat(MAX_JWK_LEN + 1)] {
            assert_eq!(EcPublicJwk::parse(junk), Err(JwkError::NotJson), "{junk}");
        }
    }

    #[test]
    fn the_wit_bundle_marks_every_key_for_wits() {
        let a = JwtKey::generate().unwrap();
        let b = JwtKey::generate().unwrap();
        let jwks: Value = serde_json::from_str(&jwks(&[a.authority(), b.authority()])).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for (k, key) in keys.iter().zip([&a, &b]) {
            assert_eq!((k["use"].as_str(), k["kid"].as_str()), (Some("wit-svid"), Some(key.kid())));
            assert_eq!(k["kty"], "EC");
        }
    }
}
