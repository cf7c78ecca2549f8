//! The admin HTTP/JSON API. Every `/v1` route but the bundle needs a bearer
//! token; tokens are stored only as SHA-256 hashes.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hallmark_core::{Entry, EntrySpec, Ttl, now_unix};
use hallmark_store::{AdminToken, StoreError, hash_secret};
use serde::Deserialize;
use serde_json::json;

use crate::ServerState;
use crate::issuance::join_token_id;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// An API error: a status and a one-line message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    fn bad(msg: impl ToString) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Duplicate(_) | StoreError::Conflict { .. } => Self(StatusCode::CONFLICT, e.to_string()),
            other => {
                tracing::error!(error = %other, "datastore error");
                Self(StatusCode::INTERNAL_SERVER_ERROR, "internal datastore error".into())
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        Self(r.status(), r.body_text().replace('\n', " "))
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin(pub AdminToken);

impl FromRequestParts<Arc<ServerState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ServerState>) -> Result<Self, ApiError> {
        let unauthorized = || ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".into());
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(unauthorized)?;
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(unauthorized)?;
        if token.is_empty() || token.len() > 512 {
            return Err(unauthorized());
        }
        match state.store.admin_token(&hash_secret(token)).await? {
            Some(t) => Ok(Admin(t)),
            None => {
                tracing::warn!("admin API authentication failed");
                Err(unauthorized())
            }
        }
    }
}

/// The admin router.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/bundle", get(spiffe_bundle))
        .route("/v1/bundle", get(bundle))
        .route("/v1/entries", post(create_entry).get(list_entries))
        .route("/v1/entries/{id}", get(show_entry).put(update_entry).delete(delete_entry))
        .route("/v1/join-tokens", post(create_join_token))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn ready(State(s): State<Arc<ServerState>>) -> Result<&'static str, ApiError> {
    s.store
        .last_change()
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "datastore unavailable".into()))?;
    Ok("ok")
}

async fn spiffe_bundle(State(s): State<Arc<ServerState>>) -> Result<Response, ApiError> {
    let b = s.authorities.bundle().borrow().clone();
    let doc = b.to_spiffe_json().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(doc).into_response())
}

#[derive(Deserialize)]
struct BundleQuery {
    #[serde(default)]
    format: Option<String>,
}

async fn bundle(State(s): State<Arc<ServerState>>, Query(q): Query<BundleQuery>) -> Result<Response, ApiError> {
    match q.format.as_deref().unwrap_or("pem") {
        "pem" => {
            let b = s.authorities.bundle().borrow().clone();
            Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], b.x509_pem()).into_response())
        }
        "jwks" => spiffe_bundle(State(s)).await,
        other => Err(ApiError::bad(format!("unknown bundle format `{other}` (pem, jwks)"))),
    }
}

async fn create_entry(
    State(s): State<Arc<ServerState>>,
    Admin(who): Admin,
    body: Result<Json<EntrySpec>, JsonRejection>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let Json(spec) = body?;
    let valid = s.validate_spec(&spec)?;
    let e = s.store.create_entry(&valid).await?;
    s.change_notify.notify_one();
    tracing::info!(admin = %who.name, entry = %e.id, spiffe_id = %e.spiffe_id, "entry created");
    Ok((StatusCode::CREATED, Json(e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    parent: Option<String>,
}

async fn list_entries(
    State(s): State<Arc<ServerState>>,
    _: Admin,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let entries = s.store.entries(q.parent.as_deref()).await?;
    Ok(Json(json!({ "entries": entries })))
}

async fn show_entry(
    State(s): State<Arc<ServerState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    s.store
        .entry(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("entry `{id}` not found")))
}

async fn update_entry(
    State(s): State<Arc<ServerState>>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<EntrySpec>, JsonRejection>,
) -> Result<Json<Entry>, ApiError> {
    let Json(spec) = body?;
    let expected = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|v| v.trim_matches('"'))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad("If-Match must be an entry revision number"))?,
        ),
    };
    let valid = s.validate_spec(&spec)?;
    let e = s.store.update_entry(&id, &valid, expected).await?;
    s.change_notify.notify_one();
    tracing::info!(admin = %who.name, entry = %e.id, revision = e.revision, "entry updated");
    Ok(Json(e))
}

async fn delete_entry(
    State(s): State<Arc<ServerState>>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    let e = s.store.delete_entry(&id).await?;
    s.change_notify.notify_one();
    tracing::info!(admin = %who.name, entry = %e.id, "entry deleted");
    Ok(Json(e))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    ttl: Option<String>,
}

async fn create_join_token(
    State(s): State<Arc<ServerState>>,
    Admin(who): Admin,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(req) = body?;
    let ttl = match req.ttl {
        Some(t) => Ttl::parse(&t).map_err(ApiError::bad)?,
        None => s.settings.join_token_ttl,
    };
    let (token, agent_id, expires_at) = s.new_join_token(ttl).await?;
    tracing::info!(admin = %who.name, agent = %agent_id, "join token created");
    Ok((StatusCode::CREATED, Json(json!({ "token": token, "agent_id": agent_id, "expires_at": expires_at }))))
}

impl ServerState {
    fn validate_spec(&self, spec: &EntrySpec) -> Result<hallmark_core::ValidEntrySpec, ApiError> {
        let parent = self.default_parent.read().ok().and_then(|p| p.clone());
        spec.validate(
            &self.settings.trust_domain,
            parent.as_ref(),
            self.settings.default_x509_ttl,
            self.settings.default_jwt_ttl,
        )
        .map_err(ApiError::bad)
    }

    /// Creates a single-use join token; returns (token, agent ID it will attest as, expiry).
    pub async fn new_join_token(&self, ttl: Ttl) -> Result<(String, String, i64), StoreError> {
        let mut b = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut b);
        let token = hex::encode(b);
        let expires_at = now_unix() + i64::try_from(ttl.secs()).unwrap_or(i64::MAX / 2);
        self.store.create_join_token(&hash_secret(&token), expires_at).await?;
        let agent_id =
            format!("spiffe://{}/hallmark/agent/join_token/{}", self.settings.trust_domain, join_token_id(&token));
        Ok((token, agent_id, expires_at))
    }
}
