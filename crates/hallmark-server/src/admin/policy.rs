//! Admin API: the Cedar policy, `/v1/policy`. Setting it stores a new
//! version with its audit record in one transaction and puts it in force
//! here at once ([`ServerState::set_policy`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hallmark_store::PolicyVersion;
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::state::{ServerState, SetPolicyError};

fn policy_json(p: &PolicyVersion) -> serde_json::Value {
    json!({ "version": p.version, "sha256": p.sha256, "created_at": p.created_at, "created_by": p.created_by, "policy": p.text })
}

/// `GET /v1/policy`: the version in force.
pub(crate) async fn show(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadPolicy)?;
    let p = s.store.current_policy().await?.ok_or_else(|| ApiError::not_found("no policy stored"))?;
    Ok(Json(policy_json(&p)))
}

/// `GET /v1/policy/versions`: every version, newest first, without the text.
pub(crate) async fn history(
    State(s): State<Arc<ServerState>>,
    who: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadPolicy)?;
    let list: Vec<serde_json::Value> = s
        .store
        .policy_history()
        .await?
        .iter()
        .map(|p| json!({ "version": p.version, "sha256": p.sha256, "created_at": p.created_at, "created_by": p.created_by }))
        .collect();
    Ok(Json(json!({ "versions": list })))
}

/// `GET /v1/policy/versions/{version}`
pub(crate) async fn version(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(version): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadPolicy)?;
    let v: i64 = version.parse().map_err(|_| ApiError::bad(format!("invalid policy version `{version}`")))?;
    let p = s.store.policy(v).await?.ok_or_else(|| ApiError::not_found(format!("policy version {v} not found")))?;
    Ok(Json(policy_json(&p)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPolicyRequest {
    policy: String,
}

/// `PUT /v1/policy`: a new version; an invalid policy is refused with
/// Cedar's diagnostics and the current one stays in force.
pub(crate) async fn set(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<SetPolicyRequest>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    who.may(Perm::WritePolicy)?;
    let JsonObject(req) = body?;
    match s.set_policy(&req.policy, &who.token.name).await {
        Ok(engine) => Ok((
            StatusCode::CREATED,
            Json(json!({ "version": engine.version(), "sha256": engine.hash(), "policies": engine.len() })),
        )),
        Err(SetPolicyError::Invalid(e)) => Err(ApiError::bad(e)),
        Err(SetPolicyError::Store(e)) => Err(e.into()),
    }
}
