//! Admin API: the signing authorities' lifecycle, `/v1/authorities`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use hallmark_store::AuthorityRow;
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::authority::{AuthorityError, Kind};
use crate::state::ServerState;

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
    Kind::parse(&req.kind)
        .ok_or_else(|| ApiError::bad(format!("unknown authority kind `{}` (x509, jwt, human)", req.kind)))
}

async fn done(
    s: &ServerState,
    who: &Admin,
    action: &str,
    row: AuthorityRow,
) -> Result<Json<serde_json::Value>, ApiError> {
    tracing::info!(admin = %who.token.name, authority = %row.id, kind = %row.kind, action, "authority changed");
    // An authority change also writes key files, outside any transaction,
    // so it is not written together with its record as the registry's
    // changes are: the record follows, through the appender.
    let details = json!({ "kind": row.kind, "state": row.state, "not_after": row.not_after });
    s.audit.record_or_log(s.audit_event(&who.token.name, action, &row.id, "ok", details)).await;
    Ok(Json(row_json(&row, s.authorities.server_id())))
}

/// `POST /v1/authorities/prepare` `{"kind": "x509" | "jwt" | "human"}`
pub(crate) async fn prepare(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<KindRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageAuthorities)?;
    let row = s.authorities.prepare(kind(body)?).await?;
    done(&s, &who, "ca_prepare", row).await
}

/// `POST /v1/authorities/activate` `{"kind": "x509" | "jwt" | "human"}`
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
