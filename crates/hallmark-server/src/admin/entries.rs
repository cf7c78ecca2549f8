//! Admin API: registration entries, `/v1/entries`. Each change is written
//! with its audit record in one transaction and is in force here before the
//! answer (agents hear of it through the change log).
//!
//! An entry's lifecycle state: a revoked entry stays as a record that says
//! so, cannot be changed, and blocks a new entry with the same identity until
//! it is deleted; deleting an entry revokes what it issued.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use hallmark_core::time::rfc3339;
use hallmark_core::{Entry, EntrySpec, ValidEntrySpec};
use hallmark_store::{RevokeTarget, StoreError};
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::{ApiError, revocation};
use super::guard::JsonObject;
use super::owners::{owner_admits, owner_scopes};
use super::roles::Perm;
use crate::audit::Change;
use crate::state::ServerState;

/// Largest batch-registration body accepted.
pub const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;

/// Most entries registered by one batch request.
pub const MAX_ENTRY_BATCH: usize = 10_000;

/// Reason recorded when credentials are revoked because their entry was deleted.
pub(crate) const DELETE_REASON: &str = "entry deleted";

/// What an entry's change record says of it.
fn entry_change(e: &Entry) -> Change {
    Change::new(&e.id, json!({ "spiffe_id": e.spiffe_id.as_str(), "owner": e.owner, "revision": e.revision }))
}

/// `POST /v1/entries`
pub(crate) async fn create(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<EntrySpec>, ApiError>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    who.may(Perm::WriteEntries)?;
    let JsonObject(spec) = body?;
    who.may_touch(&spec.owner)?;
    let valid = s.validate_spec(&spec)?;
    owner_admits(&s, &who, &valid).await?;
    let rec = s.record_change(&who.token.name, "entry_create", entry_change);
    let e = match s.store.create_entry(&valid, rec).await {
        Err(StoreError::Duplicate(msg)) => return Err(duplicate(&s, &valid, msg).await),
        other => other?,
    };
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, entry = %e.id, spiffe_id = %e.spiffe_id, "entry created");
    Ok((StatusCode::CREATED, Json(e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryBatch {
    entries: Vec<EntrySpec>,
}

/// `POST /v1/entries/batch`: many entries, all or none, in one transaction.
pub(crate) async fn create_batch(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<EntryBatch>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    who.may(Perm::WriteEntries)?;
    let JsonObject(batch) = body?;
    if batch.entries.is_empty() || batch.entries.len() > MAX_ENTRY_BATCH {
        return Err(ApiError::bad(format!("a batch holds 1 to {MAX_ENTRY_BATCH} entries")));
    }
    let mut valid = Vec::with_capacity(batch.entries.len());
    let mut owners = std::collections::HashMap::new();
    for (i, spec) in batch.entries.iter().enumerate() {
        let numbered = |ApiError(code, msg)| ApiError(code, format!("entry {i}: {msg}"));
        who.may_touch(&spec.owner)?;
        let v = s.validate_spec(spec).map_err(numbered)?;
        if !owners.contains_key(&v.owner) {
            owners.insert(v.owner.clone(), owner_scopes(&s, &v.owner).await.map_err(numbered)?);
        }
        if let Some(scopes) = owners.get(&v.owner) {
            scopes
                .check(&v.owner, &v.spiffe_id, &v.parent_id, who.owner_scope().is_some())
                .map_err(|e| numbered(ApiError::forbidden(e)))?;
        }
        valid.push(v);
    }
    let rec = s.record_changes(&who.token.name, "entry_create", |created: &[Entry]| {
        created.iter().map(entry_change).collect()
    });
    let created = s.store.create_entries(&valid, rec).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, entries = created.len(), "entries created (batch)");
    Ok((StatusCode::CREATED, Json(json!({ "entries": created }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    parent: Option<String>,
}

/// `GET /v1/entries`: an owner sees its own.
pub(crate) async fn list(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let mut entries = s.store.entries(q.parent.as_deref()).await?;
    if let Some(mine) = who.owner_scope() {
        entries.retain(|e| e.owner == mine);
    }
    Ok(Json(json!({ "entries": entries })))
}

/// Loads an entry the caller may see.
/// For an `owner:NAME` caller, the ids of NAME's entries (what it may see
/// things of); `None` for every other role, which sees all.
pub(crate) async fn own_entry_ids(
    s: &ServerState,
    who: &Admin,
) -> Result<Option<std::collections::HashSet<String>>, ApiError> {
    Ok(match who.owner_scope() {
        Some(mine) => {
            Some(s.store.entries(None).await?.into_iter().filter(|e| e.owner == mine).map(|e| e.id).collect())
        }
        None => None,
    })
}

pub(crate) async fn visible_entry(s: &ServerState, who: &Admin, id: &str) -> Result<Entry, ApiError> {
    who.may(Perm::ReadEntries)?;
    let e = s.store.entry(id).await?.ok_or_else(|| ApiError::not_found(format!("entry `{id}` not found")))?;
    who.may_touch(&e.owner)?;
    Ok(e)
}

/// `GET /v1/entries/{id}`
pub(crate) async fn show(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    visible_entry(&s, &who, &id).await.map(Json)
}

/// `GET /v1/entries/{id}/denials`: the entry's recorded denials, newest first.
pub(crate) async fn denials(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    visible_entry(&s, &who, &id).await?;
    let list: Vec<serde_json::Value> = s
        .store
        .denials(&id)
        .await?
        .into_iter()
        .map(|d| {
            let ids: Vec<&str> = d.policy_ids.split(',').filter(|x| !x.is_empty()).collect();
            json!({ "at": d.at, "action": d.action, "policy_ids": ids, "reason": d.reason })
        })
        .collect();
    Ok(Json(json!({ "denials": list })))
}

/// `PUT /v1/entries/{id}`, with `If-Match: REVISION` to refuse a stale write.
pub(crate) async fn update(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<JsonObject<EntrySpec>, ApiError>,
) -> Result<Json<Entry>, ApiError> {
    who.may(Perm::WriteEntries)?;
    let JsonObject(spec) = body?;
    // Both the entry as it is and as it would become must be the caller's.
    who.may_touch(&spec.owner)?;
    refuse_revoked(&visible_entry(&s, &who, &id).await?)?;
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
    owner_admits(&s, &who, &valid).await?;
    let rec = s.record_change(&who.token.name, "entry_update", entry_change);
    let e = s.store.update_entry(&id, &valid, expected, rec).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, entry = %e.id, revision = e.revision, "entry updated");
    Ok(Json(e))
}

/// `DELETE /v1/entries/{id}`: decommissions the entry, revoking its live
/// credentials first.
pub(crate) async fn delete(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::WriteEntries)?;
    visible_entry(&s, &who, &id).await?;
    // Decommissioning revokes: the entry's live credentials are revoked through
    // the same path as `revoke --entry` before the record goes.
    let revoked = revoke_for_delete(&s, &who, &id).await?;
    let count = revoked.len();
    let rec = s.record_change(&who.token.name, "entry_delete", move |e: &Entry| {
        Change::new(&e.id, json!({ "spiffe_id": e.spiffe_id.as_str(), "owner": e.owner, "revoked_credentials": count }))
    });
    let e = s.store.delete_entry(&id, rec).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, entry = %e.id, revoked = count, "entry deleted");
    let mut v = serde_json::to_value(&e).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    super::guard::set_field(&mut v, "revoked_credentials", json!(revoked));
    Ok(Json(v))
}

/// 409 for a change to a revoked entry, saying how to register the identity again.
pub(crate) fn refuse_revoked(e: &Entry) -> Result<(), ApiError> {
    match e.revoked_at {
        None => Ok(()),
        Some(at) => Err(ApiError::conflict(format!(
            "entry `{}` was revoked at {} and is kept only as a record, so it cannot be changed; \
             to register {} again, delete it (`hallmark entry delete {}`) and create a new entry",
            e.id,
            rfc3339(at),
            e.spiffe_id,
            e.id
        ))),
    }
}

/// The error for a create refused as a duplicate: when the existing entry is
/// a revoked record, says which and how to register the identity again.
async fn duplicate(s: &ServerState, spec: &ValidEntrySpec, msg: String) -> ApiError {
    let revoked = match s.store.entries(Some(spec.parent_id.as_str())).await {
        Ok(list) => list
            .into_iter()
            .find(|e| e.spiffe_id == spec.spiffe_id && e.selectors == spec.selectors && e.revoked_at.is_some()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the revoked duplicate");
            None
        }
    };
    match revoked {
        Some(e) => ApiError::conflict(format!(
            "entry `{}` with the same SPIFFE ID, parent and selectors was revoked at {} and is kept as a record; \
             to register {} again, delete it (`hallmark entry delete {}`), then create this entry",
            e.id,
            rfc3339(e.revoked_at.unwrap_or_default()),
            e.spiffe_id,
            e.id
        )),
        None => ApiError::conflict(StoreError::Duplicate(msg)),
    }
}

/// Revokes the live credentials of entry `id`, which is about to be deleted,
/// exactly as `revoke --entry` does (one transaction, pushed to agents, swept
/// again two seconds later); returns the serials and jtis revoked.
async fn revoke_for_delete(s: &Arc<ServerState>, who: &Admin, id: &str) -> Result<Vec<String>, ApiError> {
    let out =
        s.revoke(&RevokeTarget::Entry(id.to_owned()), DELETE_REASON, &who.token.name).await.map_err(revocation)?;
    Ok(out.credentials)
}

impl ServerState {
    /// Validates an entry as given to the API: the trust domain, the default
    /// parent (`hallmark up`'s agent) and the default lifetimes filled in.
    fn validate_spec(&self, spec: &EntrySpec) -> Result<ValidEntrySpec, ApiError> {
        let parent = self.default_parent.read().ok().and_then(|p| p.clone());
        spec.validate(
            &self.settings.trust_domain,
            parent.as_ref(),
            self.settings.default_x509_ttl,
            self.settings.default_jwt_ttl,
        )
        .map_err(ApiError::bad)
    }
}
