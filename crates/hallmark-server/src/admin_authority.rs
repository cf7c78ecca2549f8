//! Admin API: the signing authorities' lifecycle, and CRLs.

use std::sync::Arc;

use crate::admin_guard::JsonObject;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hallmark_store::AuthorityRow;
use serde::Deserialize;
use serde_json::json;

use crate::ServerState;
use crate::admin::{Admin, ApiError, Perm, audit};
use crate::authority::{AuthorityError, Kind};

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::NotFound(m) => Self(StatusCode::NOT_FOUND, m),
            AuthorityError::Refused(m) => Self(StatusCode::CONFLICT, m),
            AuthorityError::Server(e) => {
                tracing::error!(error = %e, "authority operation failed");
                Self(StatusCode::INTERNAL_SERVER_ERROR, "authority operation failed".into())
            }
        }
    }
}

fn row_json(r: &AuthorityRow, server_id: &str) -> serde_json::Value {
    json!({
        "id": r.id,
        "kind": r.kind,
        "state": r.state,
        "tainted_at": r.tainted_at,
        "not_before": r.not_before,
        "not_after": r.not_after,
        "server_id": r.server_id,
        "held_here": r.server_id == server_id,
        "crl": r.crl.is_some(),
    })
}

/// `GET /v1/authorities`
pub(crate) async fn list(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadAuthorities)?;
    let rows = s.authorities.list().await.map_err(AuthorityError::Server)?;
    let me = s.authorities.server_id();
    Ok(Json(json!({ "server_id": me, "authorities": rows.iter().map(|r| row_json(r, me)).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KindRequest {
    kind: String,
}

fn kind(body: Result<JsonObject<KindRequest>, ApiError>) -> Result<Kind, ApiError> {
    let JsonObject(req) = body?;
    Kind::parse(&req.kind).ok_or_else(|| ApiError::bad(format!("unknown authority kind `{}` (x509, jwt)", req.kind)))
}

async fn done(
    s: &ServerState,
    who: &Admin,
    action: &str,
    row: AuthorityRow,
) -> Result<Json<serde_json::Value>, ApiError> {
    tracing::info!(admin = %who.token.name, authority = %row.id, kind = %row.kind, action, "authority changed");
    audit(s, who, action, &row.id, json!({ "kind": row.kind, "state": row.state, "not_after": row.not_after })).await;
    Ok(Json(row_json(&row, s.authorities.server_id())))
}

/// `POST /v1/authorities/prepare` `{"kind": "x509" | "jwt"}`
pub(crate) async fn prepare(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<KindRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageAuthorities)?;
    let row = s.authorities.prepare(kind(body)?).await?;
    done(&s, &who, "ca_prepare", row).await
}

/// `POST /v1/authorities/activate` `{"kind": "x509" | "jwt"}`
pub(crate) async fn activate(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<KindRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageAuthorities)?;
    let row = s.authorities.activate(kind(body)?).await?;
    done(&s, &who, "ca_activate", row).await
}

/// `POST /v1/authorities/{id}/taint`
pub(crate) async fn taint(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageAuthorities)?;
    let row = s.authorities.taint(&id).await?;
    done(&s, &who, "ca_taint", row).await
}

/// `POST /v1/authorities/{id}/revoke`
pub(crate) async fn revoke(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageAuthorities)?;
    let row = s.authorities.revoke(&id).await?;
    done(&s, &who, "ca_revoke", row).await
}

/// `GET /v1/crl/{id}`: the authority's current CRL, DER. Public, like the bundle.
pub(crate) async fn crl(State(s): State<Arc<ServerState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match s.authorities.crl(&id).await.map_err(AuthorityError::Server)? {
        Some(der) => Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no CRL for authority `{id}`"))),
    }
}
