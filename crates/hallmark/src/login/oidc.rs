//! The OpenID Connect side of `hallmark login`: the provider's discovery
//! document, PKCE (RFC 7636), the authorization request and the token
//! endpoint.
//!
//! Everything here talks to the provider over HTTPS only
//! ([`hallmark_http::HttpsClient`] refuses other schemes), under the roots
//! the person chose (`--issuer-ca`) or the public web roots: discovery is
//! what tells the CLI where to send the authorization code and its
//! verifier, so a forged discovery document would hand both to someone
//! else.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hallmark_http::{Answer, HttpError, HttpsClient, HttpsUrl, Limits, roots_from_pem_file};
use serde::Deserialize;
use serde_json::Value;

use crate::client::encode;

/// Limits of one request to the identity provider: its answers are small
/// documents, and a person is waiting for each.
const IDP_LIMITS: Limits = Limits { timeout: Duration::from_secs(15), max_body: 1024 * 1024 };

/// A value that must never be printed or logged: an ID token, an
/// authorization code, a PKCE verifier, a device code. Its `Debug` says
/// `<redacted>`, so an error or a debug print cannot carry it by accident.
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one request that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

/// Compares without stopping at the first difference, so that the time
/// taken says nothing about how much of a guess (a `state`) was right.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes from the system's generator, base64url without padding.
pub(crate) fn random_token(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Text from the identity provider (an `error`, an `error_description`)
/// made safe to print: control characters (which could rewrite the
/// terminal) dropped, and at most 300 characters kept.
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// The roots trusted for the identity provider's HTTPS: the certificates of
/// `issuer_ca` only, when given (a private provider), else the public web
/// roots compiled in.
pub(crate) fn http_client(issuer_ca: Option<&Path>) -> anyhow::Result<HttpsClient> {
    let roots = match issuer_ca {
        Some(path) => roots_from_pem_file(path).context("--issuer-ca")?,
        None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
    };
    Ok(HttpsClient::new(roots, IDP_LIMITS)?)
}

/// A PKCE pair (RFC 7636): the verifier stays in this process until the
/// token request; only its S256 challenge goes through the browser, so a
/// code intercepted on the way back is useless without it.
#[derive(Debug)]
pub(crate) struct Pkce {
    /// Sent only with the token request.
    pub(crate) verifier: Secret,
    /// `BASE64URL(SHA256(verifier))`, sent with the authorization request.
    pub(crate) challenge: String,
}

impl Pkce {
    /// A fresh pair: 32 random bytes make a 43-character verifier, the
    /// length RFC 7636 section 4.1 recommends.
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self::from_verifier(random_token(32)?))
    }

    /// The pair for a given verifier (the S256 method).
    fn from_verifier(verifier: String) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
        Self { challenge: URL_SAFE_NO_PAD.encode(digest.as_ref()), verifier: Secret::new(verifier) }
    }
}

/// The parts of a discovery document `hallmark login` uses (OpenID Connect
/// Discovery 1.0, RFC 8414, RFC 8628 and RFC 9207 fields).
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// An identity provider, as its discovery document describes it.
#[derive(Debug)]
pub(crate) struct Provider {
    http: HttpsClient,
    /// Exactly as the Hallmark server and the document name it.
    pub(crate) issuer: String,
    authorization_endpoint: HttpsUrl,
    token_endpoint: HttpsUrl,
    /// For the device flow, when the provider offers it.
    pub(crate) device_authorization_endpoint: Option<HttpsUrl>,
    /// The provider names itself (`iss`) in every authorization response
    /// (RFC 9207), so a response without it, or naming another, is refused.
    pub(crate) iss_in_response: bool,
}

impl Provider {
    /// Reads `{issuer}/.well-known/openid-configuration` and checks that it
    /// describes `issuer` itself (OpenID Connect Discovery 1.0, section
    /// 4.3) with HTTPS endpoints and PKCE S256. `hint` is added to a
    /// connection failure (how to trust a private provider's CA).
    pub(crate) async fn discover(http: HttpsClient, issuer: &str, hint: &str) -> anyhow::Result<Self> {
        let url = HttpsUrl::parse(&format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/')))
            .with_context(|| format!("the identity provider `{issuer}` the Hallmark server names"))?;
        let doc: Discovery = http.get_json(&url, None).await.map_err(|e| match e {
            // In one line: an I/O error's source repeats its own text.
            HttpError::Io(_) | HttpError::Timeout(_) => anyhow::anyhow!("cannot reach {url}: {e}{hint}"),
            other => anyhow::Error::new(other).context(format!("cannot read the discovery document {url}")),
        })?;
        if doc.issuer != issuer {
            bail!(
                "the discovery document {url} names issuer `{}`, not `{issuer}`: refusing a provider that does not \
                 describe itself",
                printable(&doc.issuer)
            );
        }
        let endpoint =
            |name: &str, value: &str| HttpsUrl::parse(value).with_context(|| format!("{name} of `{issuer}`"));
        if let Some(methods) = &doc.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            bail!("the identity provider `{issuer}` does not offer PKCE with S256 (code_challenge_methods_supported)");
        }
        Ok(Self {
            authorization_endpoint: endpoint("authorization_endpoint", &doc.authorization_endpoint)?,
            token_endpoint: endpoint("token_endpoint", &doc.token_endpoint)?,
            device_authorization_endpoint: doc
                .device_authorization_endpoint
                .as_deref()
                .map(|u| endpoint("device_authorization_endpoint", u))
                .transpose()?,
            iss_in_response: doc.authorization_response_iss_parameter_supported,
            issuer: issuer.to_owned(),
            http,
        })
    }

    /// The URL the person's browser opens: an authorization code request
    /// with PKCE S256 and the Hallmark server's nonce.
    pub(crate) fn authorization_url(&self, req: &AuthRequest<'_>) -> String {
        let base = self.authorization_endpoint.as_str();
        let join = if base.contains('?') { '&' } else { '?' };
        let params = [
            ("response_type", "code"),
            ("client_id", req.client_id),
            ("redirect_uri", req.redirect_uri),
            ("scope", req.scope),
            ("state", req.state),
            ("nonce", req.nonce),
            ("code_challenge", req.code_challenge),
            ("code_challenge_method", "S256"),
        ];
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        format!("{base}{join}{}", query.join("&"))
    }

    /// Trades the authorization code (with its PKCE verifier) for an ID token.
    pub(crate) async fn redeem_code(
        &self,
        client_id: &str,
        code: &Secret,
        redirect_uri: &str,
        verifier: &Secret,
    ) -> anyhow::Result<Secret> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.expose()),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
            ("code_verifier", verifier.expose()),
        ];
        let answer = self.post(&self.token_endpoint, &form).await?;
        match token_answer(answer)? {
            TokenAnswer::IdToken(t) => Ok(t),
            TokenAnswer::Error { error, description } => {
                bail!("the identity provider refused the authorization code: {}", oauth_error(&error, &description))
            }
        }
    }

    /// POSTs `form` to `url` and reads the JSON answer whatever its status.
    pub(crate) async fn post(&self, url: &HttpsUrl, form: &[(&str, &str)]) -> Result<Answer<Value>, HttpError> {
        self.http.post_form(url, form).await
    }

    /// The token endpoint (for the device flow's polls).
    pub(crate) fn token_endpoint(&self) -> &HttpsUrl {
        &self.token_endpoint
    }
}

/// What goes into an authorization request.
pub(crate) struct AuthRequest<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) state: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) code_challenge: &'a str,
}

/// A token endpoint's answer, as far as `hallmark login` cares.
#[derive(Debug, PartialEq)]
pub(crate) enum TokenAnswer {
    /// Success, with the ID token.
    IdToken(Secret),
    /// An OAuth 2.0 error (RFC 6749 section 5.2): `error` and, when given,
    /// `error_description`.
    Error { error: String, description: Option<String> },
}

/// Reads a token endpoint's answer: an ID token from a success, the OAuth
/// error from a failure; anything else is an error.
pub(crate) fn token_answer(answer: Answer<Value>) -> anyhow::Result<TokenAnswer> {
    let field = |k: &str| answer.body.get(k).and_then(Value::as_str).map(str::to_owned);
    if answer.is_success() {
        return match field("id_token") {
            Some(t) if !t.is_empty() => Ok(TokenAnswer::IdToken(Secret::new(t))),
            _ => bail!("the identity provider's token answer has no id_token (is `openid` among the scopes?)"),
        };
    }
    match field("error") {
        Some(error) => Ok(TokenAnswer::Error { error, description: field("error_description") }),
        None => bail!("the identity provider's token endpoint answered HTTP {} without an OAuth error", answer.status),
    }
}

/// `error` and its description, made printable.
pub(crate) fn oauth_error(error: &str, description: &Option<String>) -> String {
    match description {
        Some(d) => format!("{} ({})", printable(error), printable(d)),
        None => printable(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 appendix B.
    #[test]
    fn pkce_s256_matches_the_rfc_vector() {
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_owned());
        assert_eq!(pkce.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let fresh = Pkce::new().unwrap();
        assert_eq!(fresh.verifier.expose().len(), 43);
        assert_ne!(fresh.verifier, Pkce::new().unwrap().verifier);
        assert_eq!(format!("{fresh:?}").matches("<redacted>").count(), 1, "{fresh:?}");
        assert!(!format!("{fresh:?}").contains(fresh.verifier.expose()));
    }

    #[test]
    fn token_answers() {
        let ok = Answer { status: 200, body: serde_json::json!({"id_token": "a.b.c", "access_token": "x"}) };
        assert_eq!(token_answer(ok).unwrap(), TokenAnswer::IdToken(Secret::new("a.b.c".into())));
        let no_id = Answer { status: 200, body: serde_json::json!({"access_token": "x"}) };
        assert!(token_answer(no_id).unwrap_err().to_string().contains("openid"));
        let refused = Answer {
            status: 400,
            body: serde_json::json!({"error": "invalid_grant", "error_description": "grant request is invalid\u{1b}[2J"}),
        };
        let TokenAnswer::Error { error, description } = token_answer(refused).unwrap() else { panic!() };
        assert_eq!(oauth_error(&error, &description), "invalid_grant (grant request is invalid[2J)");
        assert!(token_answer(Answer { status: 500, body: serde_json::json!({}) }).is_err());
    }

    #[test]
    fn authorization_urls_carry_pkce_state_and_nonce() {
        let p = Provider {
            http: http_client(None).unwrap(),
            issuer: "https://idp.example".into(),
            authorization_endpoint: HttpsUrl::parse("https://idp.example/auth?tenant=1").unwrap(),
            token_endpoint: HttpsUrl::parse("https://idp.example/token").unwrap(),
            device_authorization_endpoint: None,
            iss_in_response: true,
        };
        let url = p.authorization_url(&AuthRequest {
            client_id: "hallmark-cli",
            redirect_uri: "http://127.0.0.1:5000/callback",
            scope: "openid email",
            state: "st",
            nonce: "no",
            code_challenge: "ch",
        });
        assert_eq!(
            url,
            "https://idp.example/auth?tenant=1&response_type=code&client_id=hallmark-cli&redirect_uri=\
             http%3A%2F%2F127.0.0.1%3A5000%2Fcallback&scope=openid%20email&state=st&nonce=no&code_challenge=ch&\
             code_challenge_method=S256"
        );
    }

    #[test]
    fn printable_drops_control_characters() {
        assert_eq!(printable("a\nb\u{7}c"), "abc");
        assert_eq!(printable(&"x".repeat(1000)).len(), 300);
        assert!(constant_time_eq("abc", "abc") && !constant_time_eq("abc", "abd") && !constant_time_eq("ab", "abc"));
    }
}
