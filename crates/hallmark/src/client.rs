//! A small HTTP/1.1 client for the admin API (`HALLMARK_SERVER`, `HALLMARK_TOKEN`).

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Admin API connection details.
pub struct Client {
    authority: String,
    token: Option<String>,
}

/// A response: status and body.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, or an error carrying the API's message.
    pub fn json(self) -> anyhow::Result<Value> {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        if !self.status.is_success() {
            let msg =
                v.get("error").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| self.status.to_string());
            bail!("{msg}");
        }
        Ok(v)
    }
}

impl Client {
    /// From the `--server` URL (`http://host:port`) and token.
    pub fn new(server: Option<String>, token: Option<String>) -> anyhow::Result<Self> {
        let server = server.context("no server given: set HALLMARK_SERVER (e.g. `source DIR/env`) or pass --server")?;
        let authority = server
            .strip_prefix("http://")
            .with_context(|| format!("server URL `{server}` must start with http://"))?
            .trim_end_matches('/')
            .to_owned();
        if authority.is_empty() || authority.contains('/') {
            bail!("server URL `{server}` must be http://HOST:PORT");
        }
        Ok(Self { authority, token })
    }

    /// The server's `HOST:PORT`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends a request; `if_match` sets the If-Match header.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> anyhow::Result<Reply> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot connect to the Hallmark server at {}", self.authority))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", &self.authority);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(r) = if_match {
            req = req.header("if-match", format!("\"{r}\""));
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let resp = sender.send_request(req.body(Full::new(bytes))?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }

    /// Sends and decodes JSON, failing with the API's error message.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.send(method, path, body, None).await?.json()
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
