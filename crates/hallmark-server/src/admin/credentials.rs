//! Admin API: the inventory of every credential issued, `/v1/credentials`,
//! and one credential with the evidence it was issued on,
//! `/v1/credentials/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use hallmark_core::now_unix;
use hallmark_store::CheckedEvidence;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Admin;
use super::error::ApiError;
use super::roles::Perm;
use crate::state::ServerState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialQuery {
    /// One serial or jti.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    entry: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    node: Option<String>,
    /// Seconds from now.
    #[serde(default)]
    expiring_within: Option<i64>,
    #[serde(default)]
    live: Option<bool>,
    /// Issued for this task.
    #[serde(default)]
    task: Option<String>,
}

/// `GET /v1/credentials`: the inventory, filtered; an owner sees its own.
pub(crate) async fn list(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    q: Result<Query<CredentialQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let now = now_unix();
    if q.expiring_within.is_some_and(|w| w < 0) {
        return Err(ApiError::bad("expiring_within must not be negative"));
    }
    // Owners see only their own credentials.
    let owner = match (who.owner_scope(), q.owner) {
        (Some(mine), Some(asked)) if asked != mine => {
            return Err(ApiError::forbidden(format!("role `{}` may only see owner `{mine}`", who.token.role)));
        }
        (Some(mine), _) => Some(mine.to_owned()),
        (None, asked) => asked,
    };
    let filter = hallmark_store::CredentialFilter {
        entry_id: q.entry,
        owner,
        node_id: q.node,
        expiring_before: q.expiring_within.map(|w| now.saturating_add(w)),
        live_at: q.live.filter(|l| *l).map(|_| now),
        id: q.id,
        task_id: q.task,
    };
    let list = s.store.credentials(&filter, 100_000).await?;
    Ok(Json(json!({ "credentials": list })))
}

/// `GET /v1/credentials/{id}` (a serial or a jti): the credential and the
/// workload evidence it was issued on (selectors, process); an owner sees
/// its own. `evidence` is null for credentials issued before evidence sets
/// were stored; a stored set that no longer matches its digest is not shown
/// (`evidence_error` says so). `node` is the provenance of the node that
/// served it, as recorded now: its attestor, selectors, last attestation
/// and whether it is banned.
pub(crate) async fn show(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let c =
        s.store.credential(&id).await?.ok_or_else(|| ApiError::not_found(format!("credential `{id}` not found")))?;
    if let Some(mine) = who.owner_scope()
        && c.owner != mine
    {
        return Err(ApiError::forbidden(format!("role `{}` may only see owner `{mine}`", who.token.role)));
    }
    let node = s.store.node(&c.node_id).await?;
    let mut v = json!({ "credential": c, "evidence": Value::Null, "node": node });
    if let Some(checked) = s.store.evidence_set(&c.evidence_digest).await? {
        with_evidence(&mut v, checked);
    }
    Ok(Json(v))
}

/// Adds a stored evidence set to the object `v`: as `evidence` when it
/// matches its digest, else only `evidence_error`, naming it.
pub(crate) fn with_evidence(v: &mut Value, checked: CheckedEvidence) {
    let Some(obj) = v.as_object_mut() else { return };
    match checked {
        Ok(set) => {
            obj.insert("evidence".into(), json!(set));
        }
        Err(e) => {
            obj.insert("evidence_error".into(), json!(format!("the stored evidence set: {e}")));
        }
    }
}
