//! Who is calling: every `/v1` route but the bundle and the CRLs takes an
//! [`Admin`], which exists only for a request bearing a live admin token
//! (tokens are stored only as SHA-256 hashes). Every refused call (401 and
//! 403) is recorded ([`record_refusals`]). What an admin may do is
//! [`super::roles`].

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use hallmark_core::now_unix;
use hallmark_store::{AdminToken, hash_secret};

use super::error::{ApiError, ErrorMessage};
use crate::refusals::{Refusal, RefusalKind};
use crate::state::ServerState;

/// The address an admin API request came from (set per connection).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The caller's admin identity.
    pub token: AdminToken,
}

/// Who made an admin call and why it was refused, as far as the
/// authentication got: filled by the [`Admin`] extractor, read by
/// [`record_refusals`] once the answer is known.
#[derive(Debug, Clone, Default)]
struct CallRecord(Arc<std::sync::Mutex<(Option<String>, Option<String>)>>);

impl CallRecord {
    fn set(&self, actor: Option<&str>, reason: Option<&str>) {
        if let Ok(mut r) = self.0.lock() {
            *r = (actor.map(str::to_owned), reason.map(str::to_owned));
        }
    }
}

/// Records every refused admin call (401 and 403) in the audit chain,
/// counted per source and caller ([`crate::refusals`]): who, from where,
/// which path, and why.
pub async fn record_refusals(
    State(s): State<Arc<ServerState>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let record = CallRecord::default();
    req.extensions_mut().insert(record.clone());
    // The address, not the port: refusals are counted per source, and a
    // flood comes from one address over many ports.
    let source = req.extensions().get::<PeerAddr>().map(|a| a.0.ip().to_string()).unwrap_or_else(|| "unknown".into());
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let kind = match response.status() {
        StatusCode::UNAUTHORIZED => RefusalKind::AdminAuth,
        StatusCode::FORBIDDEN => RefusalKind::AdminForbidden,
        _ => return response,
    };
    let (actor, reason) = record.0.lock().map(|r| r.clone()).unwrap_or_default();
    let reason = reason
        .or_else(|| response.extensions().get::<ErrorMessage>().map(|m| m.0.clone()))
        .unwrap_or_else(|| response.status().to_string());
    let actor = actor.unwrap_or_else(|| "unknown".into());
    tracing::warn!(%source, %actor, %path, %reason, "admin API call refused");
    s.refusals.note(Refusal { kind, source, actor, subject: path, reason });
    response
}

/// The token in an `Authorization` value: the scheme `Bearer` in any letter
/// case (RFC 7235), one space, then the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<Arc<ServerState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ServerState>) -> Result<Self, ApiError> {
        let record = parts.extensions.get::<CallRecord>().cloned().unwrap_or_default();
        let refuse = |actor: Option<&str>, reason: &str| {
            record.set(actor, Some(reason));
            ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".into())
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(refuse(None, "no Authorization header"));
        };
        let Some(token) = value.to_str().ok().and_then(bearer_token) else {
            return Err(refuse(None, "not a Bearer credential"));
        };
        if token.is_empty() || token.len() > 512 {
            return Err(refuse(None, "malformed token"));
        }
        match state.store.admin_token(&hash_secret(token)).await? {
            Some(t) => match t.refusal(now_unix()) {
                None => {
                    record.set(Some(&t.name), None);
                    Ok(Admin { token: t })
                }
                Some(why) => Err(refuse(Some(&t.name), &format!("token {why}"))),
            },
            None => Err(refuse(None, "unknown token")),
        }
    }
}
