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
use crate::admin_guard::JsonObject;
use crate::issuance::join_token_id;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// An API error: a status and a one-line message.
#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    pub(crate) fn bad(msg: impl ToString) -> Self {
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
                let path = parts.uri.path().to_owned();
                state
                    .audit
                    .record_or_log(state.audit_event("unknown", "admin_auth", &path, "refused", json!({})))
                    .await;
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
        .route("/metrics", get(crate::metrics::serve))
        .route("/bundle", get(spiffe_bundle))
        .route("/v1/bundle", get(bundle))
        .route("/v1/entries", post(create_entry).get(list_entries))
        .route("/v1/entries/batch", post(create_entries).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route("/v1/entries/{id}", get(show_entry).put(update_entry).delete(delete_entry))
        .route("/v1/entries/{id}/denials", get(entry_denials))
        .route("/v1/join-tokens", post(create_join_token).get(crate::admin_nodes::list_join_tokens))
        .route("/v1/join-tokens/{id}", axum::routing::delete(crate::admin_nodes::revoke_join_token))
        .route("/v1/admin-tokens", post(create_admin_token))
        .route("/v1/credentials", get(list_credentials))
        .route("/v1/reports/{kind}", get(report))
        .route("/v1/audit", get(export_audit))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/v1/owners", post(create_owner).get(list_owners))
        .route("/v1/owners/{name}", get(show_owner))
        .route("/v1/owners/{name}/deactivate", post(deactivate_owner))
        .route("/v1/owners/{name}/transfer", post(transfer_owner))
        .route("/v1/policy", get(show_policy).put(set_policy))
        .route("/v1/policy/versions", get(policy_history))
        .route("/v1/policy/versions/{version}", get(policy_version))
        .route("/v1/exceptions", post(request_exception).get(list_exceptions))
        .route("/v1/exceptions/{id}/approve", post(approve_exception))
        .route("/v1/exceptions/{id}/revoke", post(revoke_exception))
        .route("/v1/revocations", post(crate::admin_revocation::revoke).get(crate::admin_revocation::list))
        .route("/v1/nodes", get(crate::admin_revocation::nodes))
        .route("/v1/nodes/{id}/unban", post(crate::admin_nodes::unban_node))
        .route("/v1/authorities", get(crate::admin_authority::list))
        .route("/v1/authorities/prepare", post(crate::admin_authority::prepare))
        .route("/v1/authorities/activate", post(crate::admin_authority::activate))
        .route("/v1/authorities/{id}/taint", post(crate::admin_authority::taint))
        .route("/v1/authorities/{id}/revoke", post(crate::admin_authority::revoke))
        .route("/v1/crl/{id}", get(crate::admin_authority::crl))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(crate::admin_guard::refuse_nul_in_uri))
        .layer(axum::middleware::from_fn(crate::admin_guard::json_errors))
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
    who: Admin,
    body: Result<JsonObject<EntrySpec>, ApiError>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    who.may(Perm::WriteEntries)?;
    let JsonObject(spec) = body?;
    who.may_touch(&spec.owner)?;
    let valid = s.validate_spec(&spec)?;
    active_owner(&s, &valid.owner).await?;
    let e = match s.store.create_entry(&valid).await {
        Err(StoreError::Duplicate(msg)) => return Err(crate::admin_entry_state::duplicate(&s, &valid, msg).await),
        other => other?,
    };
    s.entries_written().await;
    tracing::info!(admin = %who.0.name, entry = %e.id, spiffe_id = %e.spiffe_id, "entry created");
    audit(
        &s,
        &who,
        "entry_create",
        &e.id,
        json!({ "spiffe_id": e.spiffe_id.as_str(), "owner": e.owner, "revision": e.revision }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(e)))
}

/// Largest batch-registration body accepted.
pub const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;

/// Most entries registered by one batch request.
pub const MAX_ENTRY_BATCH: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBatch {
    entries: Vec<EntrySpec>,
}

/// `POST /v1/entries/batch`: many entries, all or none, in one transaction.
async fn create_entries(
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
    let mut owners = std::collections::HashSet::new();
    for (i, spec) in batch.entries.iter().enumerate() {
        who.may_touch(&spec.owner)?;
        let v = s.validate_spec(spec).map_err(|ApiError(code, msg)| ApiError(code, format!("entry {i}: {msg}")))?;
        owners.insert(v.owner.clone());
        valid.push(v);
    }
    for o in &owners {
        active_owner(&s, o).await?;
    }
    let created = s.store.create_entries(&valid).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.0.name, entries = created.len(), "entries created (batch)");
    let events = created
        .iter()
        .map(|e| {
            let details = json!({ "spiffe_id": e.spiffe_id.as_str(), "owner": e.owner, "revision": e.revision });
            s.audit_event(&who.0.name, "entry_create", &e.id, "ok", details)
        })
        .collect();
    s.audit.record_all_or_log(events).await;
    Ok((StatusCode::CREATED, Json(json!({ "entries": created }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    parent: Option<String>,
}

async fn list_entries(
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

/// Records an admin action in the audit chain (the action has taken effect).
pub(crate) async fn audit(s: &ServerState, who: &Admin, action: &str, subject: &str, details: serde_json::Value) {
    s.audit.record_or_log(s.audit_event(&who.0.name, action, subject, "ok", details)).await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    /// Seconds; default one day.
    #[serde(default)]
    within: Option<i64>,
    /// Seconds; default 30 days.
    #[serde(default)]
    unused_for: Option<i64>,
}

async fn report(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(kind): Path<String>,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    if who.owner_scope().is_some() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "reports cover every owner; they need trust-admin, operator or auditor".into(),
        ));
    }
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    if !crate::reports::KINDS.contains(&kind.as_str()) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown report `{kind}` ({})", crate::reports::KINDS.join(", ")),
        ));
    }
    let within = q.within.unwrap_or(86_400);
    let unused_for = q.unused_for.unwrap_or(30 * 86_400);
    if within < 0 || unused_for < 0 {
        return Err(ApiError::bad("within and unused_for must not be negative"));
    }
    let params = crate::reports::ReportParams { within, unused_for };
    let crate::reports::Report { findings, notes } =
        s.report(&kind, params).await.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut body = json!({ "kind": kind, "generated_at": now_unix(), "findings": findings, "notes": notes });
    if kind == "compliance" {
        let items: Vec<serde_json::Value> = crate::reports::NHI
            .iter()
            .map(|(id, title)| {
                let n = findings.iter().filter(|f| f.nhi == *id).count();
                json!({ "id": id, "title": title, "findings": n })
            })
            .collect();
        body["nhi"] = json!(items);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialQuery {
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
}

async fn list_credentials(
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
            return Err(ApiError(StatusCode::FORBIDDEN, format!("role `{}` may only see owner `{mine}`", who.0.role)));
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
        id: None,
    };
    let list = s.store.credentials(&filter, 100_000).await?;
    Ok(Json(json!({ "credentials": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    since: Option<i64>,
    #[serde(default)]
    until: Option<i64>,
}

/// The audit records between `since` and `until` (unix seconds), as JSON lines.
async fn export_audit(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    who.may(Perm::ReadAudit)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let (since, until) = (q.since.unwrap_or(0), q.until.unwrap_or(i64::MAX));
    let mut out = String::new();
    let mut after = 0;
    loop {
        let page = s.store.audit_records(after, since, until, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            out.push_str(&serde_json::to_string(r).unwrap_or_default());
            out.push('\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

async fn verify_audit(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadAudit)?;
    let v = s.store.verify_audit().await?;
    Ok(Json(serde_json::to_value(v).unwrap_or_default()))
}

/// Every entry names an existing, active owner.
async fn active_owner(s: &ServerState, name: &str) -> Result<(), ApiError> {
    match s.store.owner(name).await? {
        Some(o) if o.active => Ok(()),
        Some(_) => {
            Err(ApiError::bad(format!("owner `{name}` is deactivated; transfer its entries to an active owner")))
        }
        None => Err(ApiError::bad(format!(
            "owner `{name}` does not exist (create it with `hallmark owner create {name} --contact EMAIL`)"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerRequest {
    name: String,
    contact: String,
    #[serde(default)]
    description: String,
}

async fn create_owner(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<OwnerRequest>, ApiError>,
) -> Result<(StatusCode, Json<hallmark_store::Owner>), ApiError> {
    who.may(Perm::ManageOwners)?;
    let JsonObject(r) = body?;
    hallmark_core::validate_owner(&r.name).map_err(ApiError::bad)?;
    let contact_ok = r.contact.len() <= 254
        && r.contact.contains('@')
        && !r.contact.starts_with('@')
        && !r.contact.ends_with('@')
        && !r.contact.chars().any(|c| c.is_whitespace() || c.is_control());
    if !contact_ok {
        return Err(ApiError::bad(format!("invalid contact `{}`: an email address is expected", r.contact)));
    }
    if r.description.len() > 1024 || r.description.chars().any(char::is_control) {
        return Err(ApiError::bad("a description has at most 1024 characters and no control characters"));
    }
    let o = s.store.create_owner(&r.name, &r.contact, &r.description).await?;
    audit(&s, &who, "owner_create", &o.name, json!({ "contact": o.contact })).await;
    tracing::info!(admin = %who.0.name, owner = %o.name, "owner created");
    Ok((StatusCode::CREATED, Json(o)))
}

async fn list_owners(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    Ok(Json(json!({ "owners": s.store.owners().await? })))
}

async fn show_owner(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let o = s
        .store
        .owner(&name)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("owner `{name}` not found")))?;
    let entries = s.store.entries(None).await?.into_iter().filter(|e| e.owner == name).count();
    let mut v = serde_json::to_value(o).unwrap_or_default();
    v["entries"] = json!(entries);
    Ok(Json(v))
}

async fn deactivate_owner(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
) -> Result<Json<hallmark_store::Owner>, ApiError> {
    who.may(Perm::ManageOwners)?;
    let o = s.store.deactivate_owner(&name).await?;
    audit(&s, &who, "owner_deactivate", &name, json!({})).await;
    tracing::info!(admin = %who.0.name, owner = %name, "owner deactivated; its entries are orphans until transferred");
    Ok(Json(o))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    to: String,
}

async fn transfer_owner(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
    body: Result<JsonObject<TransferRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageOwners)?;
    let JsonObject(r) = body?;
    if s.store.owner(&name).await?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("owner `{name}` not found")));
    }
    active_owner(&s, &r.to).await?;
    let moved = s.store.transfer_entries(&name, &r.to).await?;
    audit(&s, &who, "owner_transfer", &name, json!({ "to": r.to, "entries": moved })).await;
    s.entries_written().await;
    tracing::info!(admin = %who.0.name, from = %name, to = %r.to, moved, "entries transferred");
    Ok(Json(json!({ "from": name, "to": r.to, "entries": moved })))
}

/// Loads an entry the caller may see.
async fn visible_entry(s: &ServerState, who: &Admin, id: &str) -> Result<Entry, ApiError> {
    who.may(Perm::ReadEntries)?;
    let e =
        s.store.entry(id).await?.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("entry `{id}` not found")))?;
    who.may_touch(&e.owner)?;
    Ok(e)
}

async fn show_entry(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    visible_entry(&s, &who, &id).await.map(Json)
}

async fn entry_denials(
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
        .map(|(at, action, ids, reason)| json!({ "at": at, "action": action, "policy_ids": ids.split(',').filter(|x| !x.is_empty()).collect::<Vec<_>>(), "reason": reason }))
        .collect();
    Ok(Json(json!({ "denials": list })))
}

async fn update_entry(
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
    crate::admin_entry_state::refuse_revoked(&visible_entry(&s, &who, &id).await?)?;
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
    active_owner(&s, &valid.owner).await?;
    let e = s.store.update_entry(&id, &valid, expected).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.0.name, entry = %e.id, revision = e.revision, "entry updated");
    audit(
        &s,
        &who,
        "entry_update",
        &e.id,
        json!({ "spiffe_id": e.spiffe_id.as_str(), "owner": e.owner, "revision": e.revision }),
    )
    .await;
    Ok(Json(e))
}

async fn delete_entry(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::WriteEntries)?;
    visible_entry(&s, &who, &id).await?;
    // Decommissioning revokes: the entry's live credentials are revoked through
    // the same path as `revoke --entry` before the record goes.
    let revoked = crate::admin_entry_state::revoke_for_delete(&s, &who, &id).await?;
    let e = s.store.delete_entry(&id).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.0.name, entry = %e.id, revoked = revoked.len(), "entry deleted");
    audit(
        &s,
        &who,
        "entry_delete",
        &e.id,
        json!({ "spiffe_id": e.spiffe_id.as_str(), "owner": e.owner, "revoked_credentials": revoked.len() }),
    )
    .await;
    let mut v = serde_json::to_value(&e).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    v["revoked_credentials"] = json!(revoked);
    Ok(Json(v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    ttl: Option<String>,
}

async fn create_join_token(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<TokenRequest>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    who.may(Perm::JoinTokens)?;
    let JsonObject(req) = body?;
    let ttl = match req.ttl {
        Some(t) => Ttl::parse(&t).map_err(ApiError::bad)?,
        None => s.settings.join_token_ttl,
    };
    let (token, agent_id, expires_at) = s.new_join_token(ttl).await?;
    tracing::info!(admin = %who.0.name, agent = %agent_id, "join token created");
    audit(&s, &who, "join_token_create", &agent_id, json!({ "expires_at": expires_at })).await;
    Ok((StatusCode::CREATED, Json(json!({ "token": token, "agent_id": agent_id, "expires_at": expires_at }))))
}

/// Roles an admin token may hold.
pub const ROLES: &[&str] = &["trust-admin", "operator", "auditor"];

fn valid_role(role: &str) -> bool {
    ROLES.contains(&role) || role.strip_prefix("owner:").is_some_and(|o| hallmark_core::validate_owner(o).is_ok())
}

/// What an admin API call does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// List and show entries, and their denials.
    ReadEntries,
    /// Create, update, delete entries.
    WriteEntries,
    /// Create join tokens (node onboarding).
    JoinTokens,
    /// Read the policy and its history.
    ReadPolicy,
    /// Set the policy.
    WritePolicy,
    /// Create admin identities.
    ManageAdmins,
    /// Ask for an exception.
    RequestException,
    /// Approve or revoke an exception.
    DecideException,
    /// List exceptions.
    ReadExceptions,
    /// Create, deactivate owners and transfer their entries.
    ManageOwners,
    /// Export and verify the audit chain.
    ReadAudit,
    /// Revoke credentials, entries, owners' entries and nodes.
    Revoke,
    /// List the signing authorities and their states.
    ReadAuthorities,
    /// Prepare, activate, taint and revoke signing authorities.
    ManageAuthorities,
}

impl Perm {
    /// What the permission covers, for error messages.
    fn describe(self) -> &'static str {
        match self {
            Self::ReadEntries => "read entries",
            Self::WriteEntries => "change entries",
            Self::JoinTokens => "create join tokens",
            Self::ReadPolicy => "read the policy",
            Self::WritePolicy => "set the policy",
            Self::ManageAdmins => "create admin tokens",
            Self::RequestException => "request exceptions",
            Self::DecideException => "approve or revoke exceptions",
            Self::ReadExceptions => "list exceptions",
            Self::ManageOwners => "manage owners",
            Self::ReadAudit => "read the audit chain",
            Self::Revoke => "revoke",
            Self::ReadAuthorities => "read the signing authorities",
            Self::ManageAuthorities => "manage the signing authorities",
        }
    }
}

/// Which roles may do what. `owner:NAME` is further confined to NAME's entries.
pub fn role_allows(role: &str, p: Perm) -> bool {
    use Perm::*;
    match role {
        "trust-admin" => true,
        "operator" => {
            matches!(
                p,
                ReadEntries
                    | WriteEntries
                    | JoinTokens
                    | ReadPolicy
                    | RequestException
                    | ReadExceptions
                    | ManageOwners
                    | Revoke
                    | ReadAuthorities
            )
        }
        "auditor" => matches!(p, ReadEntries | ReadPolicy | ReadExceptions | ReadAudit | ReadAuthorities),
        r if r.starts_with("owner:") => {
            matches!(p, ReadEntries | WriteEntries | ReadPolicy | RequestException | ReadExceptions | Revoke)
        }
        _ => false,
    }
}

impl Admin {
    /// 403 unless the caller's role allows `p`.
    pub(crate) fn may(&self, p: Perm) -> Result<(), ApiError> {
        if role_allows(&self.0.role, p) {
            Ok(())
        } else {
            let allowed: Vec<&str> = ["trust-admin", "operator", "auditor", "owner:NAME"]
                .into_iter()
                .filter(|r| role_allows(r, p))
                .collect();
            Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "`{}` has role `{}`, which may not {} (allowed: {})",
                    self.0.name,
                    self.0.role,
                    p.describe(),
                    allowed.join(", ")
                ),
            ))
        }
    }

    /// For `owner:NAME` callers, the owner they are confined to.
    pub(crate) fn owner_scope(&self) -> Option<&str> {
        self.0.role.strip_prefix("owner:")
    }

    /// 403 when an `owner:NAME` caller touches another owner's entry.
    pub(crate) fn may_touch(&self, owner: &str) -> Result<(), ApiError> {
        match self.owner_scope() {
            Some(mine) if mine != owner => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("role `{}` may only manage entries owned by `{mine}`", self.0.role),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminTokenRequest {
    name: String,
    role: String,
}

async fn create_admin_token(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<AdminTokenRequest>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    who.may(Perm::ManageAdmins)?;
    let JsonObject(req) = body?;
    if hallmark_core::validate_owner(&req.name).is_err() {
        return Err(ApiError::bad(format!(
            "invalid name `{}`: 1-128 of letters, digits, `.`, `-`, `_`, `@`",
            req.name
        )));
    }
    if !valid_role(&req.role) {
        return Err(ApiError::bad(format!("unknown role `{}` (trust-admin, operator, auditor, owner:NAME)", req.role)));
    }
    if s.store.admin_name_taken(&req.name).await? {
        return Err(ApiError(StatusCode::CONFLICT, format!("an admin identity named `{}` already exists", req.name)));
    }
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    let token = format!("hmk_{}", hex::encode(b));
    s.store.add_admin_token(&hash_secret(&token), &req.name, &req.role).await?;
    tracing::info!(admin = %who.0.name, name = %req.name, role = %req.role, "admin token created");
    audit(&s, &who, "admin_token_create", &req.name, json!({ "role": req.role })).await;
    Ok((StatusCode::CREATED, Json(json!({ "name": req.name, "role": req.role, "token": token }))))
}

fn policy_json(p: &hallmark_store::PolicyVersion) -> serde_json::Value {
    json!({ "version": p.version, "sha256": p.sha256, "created_at": p.created_at, "created_by": p.created_by, "policy": p.text })
}

async fn show_policy(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadPolicy)?;
    let p =
        s.store.current_policy().await?.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no policy stored".into()))?;
    Ok(Json(policy_json(&p)))
}

async fn policy_history(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
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

async fn policy_version(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(version): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadPolicy)?;
    let v: i64 = version.parse().map_err(|_| ApiError::bad(format!("invalid policy version `{version}`")))?;
    let p = s
        .store
        .policy(v)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("policy version {v} not found")))?;
    Ok(Json(policy_json(&p)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPolicyRequest {
    policy: String,
}

async fn set_policy(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<SetPolicyRequest>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    who.may(Perm::WritePolicy)?;
    let JsonObject(req) = body?;
    match s.set_policy(&req.policy, &who.0.name).await {
        Ok(engine) => {
            let v = engine.version().to_string();
            audit(&s, &who, "policy_set", &v, json!({ "sha256": engine.hash(), "policies": engine.len() })).await;
            Ok((
                StatusCode::CREATED,
                Json(json!({ "version": engine.version(), "sha256": engine.hash(), "policies": engine.len() })),
            ))
        }
        Err(crate::SetPolicyError::Invalid(e)) => Err(ApiError::bad(e)),
        Err(crate::SetPolicyError::Store(e)) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionRequest {
    entry_id: String,
    rule: String,
    value: String,
    justification: String,
    expires_at: i64,
}

/// Longest an exception may last.
const MAX_EXCEPTION_SECS: i64 = 366 * 86_400;

async fn request_exception(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<ExceptionRequest>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    who.may(Perm::RequestException)?;
    let JsonObject(r) = body?;
    let rule: hallmark_policy::ExceptionRule = r.rule.parse().map_err(ApiError::bad)?;
    rule.check_value(&r.value).map_err(ApiError::bad)?;
    let justification = r.justification.trim();
    if justification.is_empty()
        || justification.len() > 2048
        || justification.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(ApiError::bad("a justification of 1-2048 characters is required"));
    }
    let now = now_unix();
    if r.expires_at <= now {
        return Err(ApiError::bad(format!("expiry {} is not in the future", r.expires_at)));
    }
    if r.expires_at > now + MAX_EXCEPTION_SECS {
        return Err(ApiError::bad("an exception may last at most 366 days"));
    }
    visible_entry(&s, &who, &r.entry_id).await?;
    let x = s
        .store
        .request_exception(&r.entry_id, rule.as_str(), &r.value, justification, r.expires_at, &who.0.name)
        .await?;
    tracing::info!(admin = %who.0.name, exception = %x.id, entry = %x.entry_id, rule = %x.rule, "exception requested");
    audit(
        &s,
        &who,
        "exception_request",
        &x.id,
        json!({ "entry_id": x.entry_id, "rule": x.rule, "value": x.value, "expires_at": x.expires_at }),
    )
    .await;
    Ok((StatusCode::CREATED, crate::exception_limits::with_warnings(&s, x)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionQuery {
    #[serde(default)]
    state: Option<String>,
}

async fn list_exceptions(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    q: Result<Query<ExceptionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadExceptions)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let want = q.state.unwrap_or_else(|| "all".into());
    if !["all", "active", "expired", "pending", "revoked"].contains(&want.as_str()) {
        return Err(ApiError::bad(format!("unknown state `{want}` (all, active, expired, pending, revoked)")));
    }
    let now = now_unix();
    // Owners see the exceptions on their own entries only.
    let own: Option<std::collections::HashSet<String>> = match who.owner_scope() {
        Some(mine) => {
            Some(s.store.entries(None).await?.into_iter().filter(|e| e.owner == mine).map(|e| e.id).collect())
        }
        None => None,
    };
    let list: Vec<serde_json::Value> = s
        .store
        .exceptions()
        .await?
        .into_iter()
        .filter(|x| own.as_ref().is_none_or(|ids| ids.contains(&x.entry_id)))
        .filter(|x| want == "all" || x.state(now) == want)
        .map(|x| {
            let state = x.state(now);
            let mut v = serde_json::to_value(x).unwrap_or_default();
            v["state"] = json!(state);
            v
        })
        .collect();
    Ok(Json(json!({ "exceptions": list })))
}

fn exception_outcome(
    r: Result<hallmark_store::ExceptionRecord, hallmark_store::ExceptionError>,
) -> Result<Json<hallmark_store::ExceptionRecord>, ApiError> {
    match r {
        Ok(x) => Ok(Json(x)),
        Err(e @ hallmark_store::ExceptionError::SelfApproval(_)) => Err(ApiError(StatusCode::FORBIDDEN, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
    }
}

async fn approve_exception(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::DecideException)?;
    let r = s.store.approve_exception(&id, &who.0.name, now_unix()).await?;
    if let Err(e) = s.reload_exceptions().await {
        tracing::warn!(error = %e, "cannot reload exceptions; they are re-read within a second");
    }
    if let Ok(x) = &r {
        tracing::info!(admin = %who.0.name, exception = %x.id, entry = %x.entry_id, "exception approved");
        audit(&s, &who, "exception_approve", &x.id, json!({ "entry_id": x.entry_id, "rule": x.rule })).await;
    }
    exception_outcome(r).map(|Json(x)| crate::exception_limits::with_warnings(&s, x))
}

async fn revoke_exception(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<hallmark_store::ExceptionRecord>, ApiError> {
    who.may(Perm::DecideException)?;
    let r = s.store.revoke_exception(&id, &who.0.name, now_unix()).await?;
    if let Err(e) = s.reload_exceptions().await {
        tracing::warn!(error = %e, "cannot reload exceptions; they are re-read within a second");
    }
    if let Ok(x) = &r {
        tracing::info!(admin = %who.0.name, exception = %x.id, "exception revoked");
        audit(&s, &who, "exception_revoke", &x.id, json!({ "entry_id": x.entry_id })).await;
    }
    exception_outcome(r)
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
