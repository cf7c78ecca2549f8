//! The trust bundle: X.509 authorities and JWT keys of one trust domain, as PEM,
//! as concatenated DER (Workload API), and as a SPIFFE bundle (JWKS, shared
//! SPIFFE.md §5).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use hallmark_core::TrustDomain;
use serde_json::{Map, Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::{CaError, svid};

/// Seconds relying parties should wait between bundle refreshes.
pub const DEFAULT_REFRESH_HINT: u64 = 300;

/// A JWT signing key as published: a JWK with `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    kid: String,
    jwk: Map<String, Value>,
}

impl JwtAuthority {
    /// An EC public key from its coordinates.
    pub fn ec(kid: &str, crv: &str, x: &[u8], y: &[u8]) -> Self {
        let mut jwk = Map::new();
        jwk.insert("kty".into(), "EC".into());
        jwk.insert("use".into(), "jwt-svid".into());
        jwk.insert("kid".into(), kid.into());
        jwk.insert("crv".into(), crv.into());
        jwk.insert("x".into(), B64.encode(x).into());
        jwk.insert("y".into(), B64.encode(y).into());
        Self { kid: kid.to_owned(), jwk }
    }

    /// Reads a `jwt-svid` JWK; `None` if it is not one we can use.
    pub fn from_jwk(jwk: &Map<String, Value>) -> Option<Self> {
        if jwk.get("use")?.as_str()? != "jwt-svid" {
            return None;
        }
        let kid = jwk.get("kid")?.as_str()?;
        if kid.is_empty() || !matches!(jwk.get("kty")?.as_str()?, "EC" | "RSA") {
            return None;
        }
        Some(Self { kid: kid.to_owned(), jwk: jwk.clone() })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK as JSON.
    pub fn jwk(&self) -> &Map<String, Value> {
        &self.jwk
    }

    /// The uncompressed EC point, if this is an EC key on `crv`.
    pub(crate) fn ec_point(&self, crv: &str) -> Option<Vec<u8>> {
        if self.jwk.get("kty")?.as_str()? != "EC" || self.jwk.get("crv")?.as_str()? != crv {
            return None;
        }
        let x = B64.decode(self.jwk.get("x")?.as_str()?).ok()?;
        let y = B64.decode(self.jwk.get("y")?.as_str()?).ok()?;
        let mut p = Vec::with_capacity(1 + x.len() + y.len());
        p.push(4);
        p.extend(x);
        p.extend(y);
        Some(p)
    }

    /// RSA modulus and exponent, if this is an RSA key.
    pub(crate) fn rsa_components(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.jwk.get("kty")?.as_str()? != "RSA" {
            return None;
        }
        Some((B64.decode(self.jwk.get("n")?.as_str()?).ok()?, B64.decode(self.jwk.get("e")?.as_str()?).ok()?))
    }
}

/// What agents learn about the authorities alongside the bundle. Not part of
/// the SPIFFE bundle document: the CRLs reach workloads through the Workload
/// API's `crl` fields, the rest tells agents what to re-issue or drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorityStatus {
    /// CRLs (DER), one per X.509 authority whose holder has signed one.
    pub crls: Vec<Vec<u8>>,
    /// Ids of tainted authorities (X.509 authority ids and JWT key ids):
    /// everything they signed is to be re-issued under the active one.
    pub tainted: Vec<String>,
    /// Ids of revoked authorities: nothing they signed is valid any more.
    pub revoked: Vec<String>,
}

/// Everything a relying party needs to validate SVIDs of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// X.509 trust anchors (DER).
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT public keys.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// Increases whenever the content changes.
    pub sequence: u64,
    /// Seconds between refreshes.
    pub refresh_hint: u64,
    /// CRLs, tainted and revoked authorities.
    pub status: AuthorityStatus,
}

impl Bundle {
    /// X.509 authorities concatenated as DER (the Workload API encoding).
    pub fn x509_der(&self) -> Vec<u8> {
        self.x509_authorities.concat()
    }

    /// X.509 authorities as PEM.
    pub fn x509_pem(&self) -> String {
        svid::to_pem(&self.x509_authorities)
    }

    /// The JWT keys alone as a JWKS (the Workload API's FetchJWTBundles value).
    pub fn jwt_jwks(&self) -> String {
        let keys: Vec<Value> = self.jwt_authorities.iter().map(|a| Value::Object(a.jwk.clone())).collect();
        json!({ "keys": keys }).to_string()
    }

    /// The SPIFFE bundle document: both kinds of key, sequence and refresh hint.
    pub fn to_spiffe_json(&self) -> Result<Value, CaError> {
        let mut keys = Vec::new();
        for der in &self.x509_authorities {
            let mut jwk = public_jwk(der)?;
            jwk.insert("use".into(), "x509-svid".into());
            jwk.insert("x5c".into(), json!([STANDARD.encode(der)]));
            keys.push(Value::Object(jwk));
        }
        keys.extend(self.jwt_authorities.iter().map(|a| Value::Object(a.jwk.clone())));
        Ok(json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint,
        }))
    }

    /// Reads a SPIFFE bundle document. Keys with unknown `use` or `kty`, or
    /// `x509-svid` keys without `x5c`, are ignored as the standard requires.
    pub fn from_spiffe_json(td: &TrustDomain, text: &str) -> Result<Self, CaError> {
        let doc: Value = serde_json::from_str(text).map_err(CaError::BundleNotJson)?;
        let keys = doc.get("keys").and_then(Value::as_array).ok_or(CaError::BundleNoKeys)?;
        let mut b = Bundle {
            trust_domain: td.clone(),
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: doc.get("spiffe_sequence").and_then(Value::as_u64).unwrap_or(0),
            refresh_hint: doc.get("spiffe_refresh_hint").and_then(Value::as_u64).unwrap_or(DEFAULT_REFRESH_HINT),
            status: AuthorityStatus::default(),
        };
        for k in keys {
            let Some(jwk) = k.as_object() else { continue };
            match jwk.get("use").and_then(Value::as_str) {
                Some("x509-svid") => {
                    let first =
                        jwk.get("x5c").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str);
                    if let Some(c) = first {
                        let der = STANDARD.decode(c).map_err(CaError::X5cNotBase64)?;
                        X509Certificate::from_der(&der).map_err(CaError::certificate("x5c certificate"))?;
                        b.x509_authorities.push(der);
                    }
                }
                Some("jwt-svid") => b.jwt_authorities.extend(JwtAuthority::from_jwk(jwk)),
                _ => {}
            }
        }
        Ok(b)
    }
}

/// The JWK public members (`kty`, `crv`/`x`/`y` or `n`/`e`) of a certificate's key.
fn public_jwk(der: &[u8]) -> Result<Map<String, Value>, CaError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(CaError::certificate("authority certificate"))?;
    let spki = cert.public_key();
    let mut jwk = Map::new();
    match spki.parsed() {
        Ok(PublicKey::EC(point)) => {
            let raw = point.data();
            let half = raw.len().saturating_sub(1) / 2;
            let crv = match half {
                32 => "P-256",
                48 => "P-384",
                66 => "P-521",
                _ => return Err(CaError::UnsupportedAuthorityKey { what: "EC curve" }),
            };
            let (x, y) = raw.get(1..).map(|xy| xy.split_at(half)).unwrap_or((&[], &[]));
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), crv.into());
            jwk.insert("x".into(), B64.encode(x).into());
            jwk.insert("y".into(), B64.encode(y).into());
        }
        Ok(PublicKey::RSA(rsa)) => {
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), B64.encode(rsa.modulus.strip_prefix(&[0]).unwrap_or(rsa.modulus)).into());
            jwk.insert("e".into(), B64.encode(rsa.exponent).into());
        }
        _ => return Err(CaError::UnsupportedAuthorityKey { what: "key type" }),
    }
    Ok(jwk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JwtKey, X509Authority};

    #[test]
    fn spiffe_json_round_trip() {
        let td = TrustDomain::new("example.org").unwrap();
        let ca = X509Authority::generate_self_signed(&td, 3600, hallmark_core::now_unix()).unwrap();
        let jwt = JwtKey::generate().unwrap();
        let b = Bundle {
            trust_domain: td.clone(),
            x509_authorities: ca.anchors().to_vec(),
            jwt_authorities: vec![jwt.authority()],
            sequence: 7,
            refresh_hint: 300,
            status: AuthorityStatus::default(),
        };
        let doc = b.to_spiffe_json().unwrap();
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["use"], "x509-svid");
        assert!(keys[0].get("kid").is_none(), "x509-svid keys carry no kid");
        assert_eq!(keys[0]["x5c"].as_array().unwrap().len(), 1);
        assert_eq!(keys[1]["use"], "jwt-svid");
        assert_eq!(keys[1]["kid"], jwt.kid());
        let back = Bundle::from_spiffe_json(&td, &doc.to_string()).unwrap();
        assert_eq!(back, b);
        // Unknown `use` and missing x5c are ignored, not errors.
        let odd =
            r#"{"keys":[{"kty":"EC","use":"other"},{"kty":"EC","use":"x509-svid"},{"kty":"EC","use":"jwt-svid"}]}"#;
        let parsed = Bundle::from_spiffe_json(&td, odd).unwrap();
        assert!(parsed.x509_authorities.is_empty() && parsed.jwt_authorities.is_empty());
        assert!(Bundle::from_spiffe_json(&td, "{}").is_err());
        assert!(Bundle::from_spiffe_json(&td, "not json").is_err());
    }
}
