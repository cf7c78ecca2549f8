//! Hallmark's outbound HTTP/1.1 client: one JSON request per connection,
//! bounded in time and in size.
//!
//! Who uses it: the agent asks its container runtime (over a Unix socket)
//! and the kubelet (over HTTPS) about workloads; the server asks a
//! Kubernetes cluster's service-account issuer for its signing keys and the
//! cluster's API server to review a token; `hallmark login` asks a person's
//! OpenID provider for its configuration and (with a form body, as OAuth 2.0
//! wants) for tokens. Each request opens a connection, sends one request,
//! reads one JSON answer of bounded size and closes: none of them is
//! frequent enough for pooled connections to pay for themselves, and a fresh
//! connection carries nothing from one answer to the next.
//!
//! Every answer read here is a security fact, so HTTPS trusts only the roots
//! its caller hands it (a cluster CA file, or a root set the caller chose)
//! and plain `http://` URLs are refused.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The connection could not be made or broke (TLS included).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// HTTP framing failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bad path or header).
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    /// The answer's status was not 2xx.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body was too large or broke off.
    #[error("response body: {0}")]
    Body(String),
    /// The body was not the JSON expected.
    #[error("response body: {0}")]
    Json(#[from] serde_json::Error),
    /// No answer in time.
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

impl HttpError {
    /// True for 404: the thing asked about does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status(404))
    }
}

/// Why an HTTPS URL or client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The URL is not one this client requests.
    #[error("`{url}` is not a usable https:// URL: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CA file could not be read.
    #[error("CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    CaPem {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// How long a request may take and how much of an answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For the whole request, connection and TLS handshake included.
    pub timeout: Duration,
    /// Largest response body read, in bytes; a larger one is an error.
    pub max_body: usize,
}

/// A parsed `https://HOST[:PORT][/PATH][?QUERY]` URL: where to connect, the
/// name the server's certificate must carry, and what to ask for.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    text: String,
    authority: String,
    connect_to: String,
    server_name: ServerName<'static>,
    path: String,
}

impl fmt::Debug for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpsUrl({})", self.text)
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl HttpsUrl {
    /// Parses `url`. Refused: another scheme (plain `http://` included),
    /// user information, a fragment, spaces, control or non-ASCII
    /// characters, a port that is not 1-65535.
    pub fn parse(url: &str) -> Result<Self, SetupError> {
        let bad = |reason| SetupError::Url { url: url.chars().take(256).collect(), reason };
        if !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("it holds spaces, control or non-ASCII characters"));
        }
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(bad("only https:// is accepted"));
        };
        if rest.contains('#') {
            return Err(bad("it has a fragment"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if authority.is_empty() {
            return Err(bad("it has no host"));
        }
        if authority.contains('@') {
            return Err(bad("it has user information"));
        }
        let (host, port, bracketed) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("an IPv6 address lacks its `]`"))?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| bad("text after the IPv6 address"))?),
                };
                (host, port, true)
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port), false),
                None => (authority, None, false),
            },
        };
        let port = match port {
            None => 443,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("the port is not 1-65535"))?,
        };
        if host.is_empty() {
            return Err(bad("it has no host"));
        }
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| bad("the host is not a DNS name or an IP address"))?;
        let connect_to = if bracketed { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Self { text: url.to_owned(), authority: authority.to_owned(), connect_to, server_name, path })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path and query asked for (`/` when the URL has none).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A JSON answer taken whatever its status: OAuth 2.0 endpoints (RFC 6749
/// section 5.2, RFC 8628 section 3.5) answer 400 with a JSON body such as
/// `{"error": "authorization_pending"}` that the caller must read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// The HTTP status code.
    pub status: u16,
    /// The decoded body.
    pub body: T,
}

impl<T> Answer<T> {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `pairs` as an `application/x-www-form-urlencoded` body. Every byte but
/// the unreserved ones (RFC 3986: letters, digits, `-._~`) is
/// percent-encoded, spaces included, which every form decoder reads back.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn push(out: &mut String, text: &str) {
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push(&mut out, k);
        out.push('=');
        push(&mut out, v);
    }
    out
}

/// The certificates in PEM file `path`, as the only roots to trust.
pub fn roots_from_pem_file(path: &Path) -> Result<rustls::RootCertStore, SetupError> {
    let shown = || path.display().to_string();
    let text = std::fs::read(path).map_err(|source| SetupError::CaFile { path: shown(), source })?;
    let mut roots = rustls::RootCertStore::empty();
    let blocks = pem::parse_many(&text).map_err(|e| SetupError::CaPem { path: shown(), reason: e.to_string() })?;
    for block in blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
        roots
            .add(block.into_contents().into())
            .map_err(|e| SetupError::CaPem { path: shown(), reason: e.to_string() })?;
    }
    if roots.is_empty() {
        return Err(SetupError::CaPem { path: shown(), reason: "no certificate".into() });
    }
    Ok(roots)
}

/// A client for HTTPS URLs under one set of trusted roots.
#[derive(Clone)]
pub struct HttpsClient {
    tls: TlsConnector,
    limits: Limits,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client that trusts `roots` only, within `limits`.
    pub fn new(roots: rustls::RootCertStore, limits: Limits) -> Result<Self, SetupError> {
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Self { tls: TlsConnector::from(Arc::new(config)), limits })
    }

    /// GETs `url` (with a bearer token, when given) and decodes the JSON
    /// answer as `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &HttpsUrl,
        bearer: Option<&str>,
    ) -> Result<T, HttpError> {
        let call = Call { method: hyper::Method::GET, path: url.path(), bearer, body: None, any_status: false };
        decode(self.call(url, call).await?)
    }

    /// POSTs the JSON `body` to `url` (with a bearer token, when given) and
    /// decodes the JSON answer as `T`.
    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &HttpsUrl,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> Result<T, HttpError> {
        let call = Call {
            method: hyper::Method::POST,
            path: url.path(),
            bearer,
            body: Some(Body::Json(body)),
            any_status: false,
        };
        decode(self.call(url, call).await?)
    }

    /// POSTs `form` (`application/x-www-form-urlencoded`) to `url` and
    /// decodes the JSON answer as `T` whatever its status, so that an OAuth
    /// 2.0 error body can be read. A body that is not JSON is
    /// [`HttpError::Status`] for a status other than 2xx.
    pub async fn post_form<T: serde::de::DeserializeOwned>(
        &self,
        url: &HttpsUrl,
        form: &[(&str, &str)],
    ) -> Result<Answer<T>, HttpError> {
        let body = Some(Body::Form(form_encode(form)));
        let call = Call { method: hyper::Method::POST, path: url.path(), bearer: None, body, any_status: true };
        let raw = self.call(url, call).await?;
        match serde_json::from_slice(&raw.body) {
            Ok(body) => Ok(Answer { status: raw.status, body }),
            Err(_) if !raw.is_success() => Err(HttpError::Status(raw.status)),
            Err(e) => Err(HttpError::Json(e)),
        }
    }

    async fn call(&self, url: &HttpsUrl, call: Call<'_>) -> Result<Answer<Bytes>, HttpError> {
        let ask = async {
            let tcp = tokio::net::TcpStream::connect(&url.connect_to).await?;
            let tls = self.tls.connect(url.server_name.clone(), tcp).await?;
            exchange(tls, &url.authority, call, self.limits.max_body).await
        };
        tokio::time::timeout(self.limits.timeout, ask).await.map_err(|_| HttpError::Timeout(self.limits.timeout))?
    }
}

/// GETs `path` on `stream`, a connection the caller opened (with `Host:
/// host` and, when given, a bearer token), and decodes the JSON body as `T`.
/// The caller bounds the time, connecting included.
pub async fn get_json<S, T>(
    stream: S,
    host: &str,
    path: &str,
    bearer: Option<&str>,
    max_body: usize,
) -> Result<T, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: serde::de::DeserializeOwned,
{
    let call = Call { method: hyper::Method::GET, path, bearer, body: None, any_status: false };
    decode(exchange(stream, host, call, max_body).await?)
}

/// One request.
struct Call<'a> {
    method: hyper::Method,
    path: &'a str,
    bearer: Option<&'a str>,
    /// The body, for POST.
    body: Option<Body>,
    /// Read the body of an answer other than 2xx too (else it is
    /// [`HttpError::Status`], unread).
    any_status: bool,
}

/// A request body and the content type it is sent as.
enum Body {
    Json(Vec<u8>),
    Form(String),
}

/// The JSON body of a 2xx answer.
fn decode<T: serde::de::DeserializeOwned>(raw: Answer<Bytes>) -> Result<T, HttpError> {
    if !raw.is_success() {
        return Err(HttpError::Status(raw.status));
    }
    Ok(serde_json::from_slice(&raw.body)?)
}

async fn exchange<S>(stream: S, host: &str, call: Call<'_>, max_body: usize) -> Result<Answer<Bytes>, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(call.method)
        .uri(call.path)
        .header("host", host)
        .header("accept", "application/json");
    if let Some(token) = call.bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = match call.body {
        Some(Body::Json(json)) => {
            req = req.header("content-type", "application/json");
            Bytes::from(json)
        }
        Some(Body::Form(form)) => {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            Bytes::from(form)
        }
        None => Bytes::new(),
    };
    let answer = async {
        let resp = sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status();
        if !status.is_success() && !call.any_status {
            return Err(HttpError::Status(status.as_u16()));
        }
        let body =
            Limited::new(resp.into_body(), max_body).collect().await.map_err(|e| HttpError::Body(e.to_string()))?;
        Ok(Answer { status: status.as_u16(), body: body.to_bytes() })
    };
    let result = answer.await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_encode_every_reserved_byte() {
        assert_eq!(
            form_encode(&[("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("scope", "openid email")]),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&scope=openid%20email"
        );
        assert_eq!(form_encode(&[("a&b", "c=d+e/\u{e9}")]), "a%26b=c%3Dd%2Be%2F%C3%A9");
        assert_eq!(form_encode(&[]), "");
    }

    #[test]
    fn urls() {
        let u = HttpsUrl::parse("https://kubernetes.default.svc").unwrap();
        assert_eq!(
            (u.connect_to.as_str(), u.authority.as_str(), u.path()),
            ("kubernetes.default.svc:443", "kubernetes.default.svc", "/")
        );
        let u = HttpsUrl::parse("https://oidc.example.com:8443/id/ABC/keys?x=1").unwrap();
        assert_eq!((u.connect_to.as_str(), u.path()), ("oidc.example.com:8443", "/id/ABC/keys?x=1"));
        let u = HttpsUrl::parse("https://[::1]:6443?q").unwrap();
        assert_eq!((u.connect_to.as_str(), u.authority.as_str(), u.path()), ("[::1]:6443", "[::1]:6443", "/?q"));
        let u = HttpsUrl::parse("https://127.0.0.1").unwrap();
        assert_eq!(u.connect_to, "127.0.0.1:443");
        for bad in [
            "http://example.com",
            "HTTPS://example.com",
            "https://",
            "https:///path",
            "https://user@example.com",
            "https://example.com/#frag",
            "https://example.com:0",
            "https://example.com:99999",
            "https://example.com:x",
            "https://[::1",
            "https://[::1]x",
            "https://exa mple.com",
            "https://ex\u{e4}mple.com",
            "https://a:1:2",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
