//! One HTTP/1.1 GET over a stream the caller opened (a Unix socket to a
//! container runtime, TLS to the kubelet): the agent's only HTTP client.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long one request may take, connection included.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(3);

/// Largest response body read (a kubelet's pod list on a full node is a few MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection could not be made or broke.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// HTTP framing failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bad path or header).
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    /// The answer was not 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body was too large or broke off.
    #[error("response body: {0}")]
    Body(String),
    /// The body was not the JSON expected.
    #[error("response body: {0}")]
    Json(#[from] serde_json::Error),
    /// No answer in time.
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
}

impl HttpError {
    /// True for 404: the thing asked about does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Status(404))
    }
}

/// GETs `path` on `stream` (with `Host: host` and, when given, a bearer
/// token) and decodes the JSON body as `T`.
pub(crate) async fn get_json<S, T>(stream: S, host: &str, path: &str, bearer: Option<&str>) -> Result<T, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: serde::de::DeserializeOwned,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", host).header("accept", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = sender.send_request(req.body(Empty::<Bytes>::new())?).await?;
    let status = resp.status().as_u16();
    if status != 200 {
        conn.abort();
        return Err(HttpError::Status(status));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| HttpError::Body(e.to_string()))?;
    conn.abort();
    Ok(serde_json::from_slice(&body.to_bytes())?)
}
