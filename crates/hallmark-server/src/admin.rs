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
use hallmark_core::{Entry, EntrySpec, OwnerScopes, ScopeLists, Ttl, now_unix};
use hallmark_store::{AdminToken, StoreError, hash_secret};
use serde::Deserialize;
use serde_json::json;

use crate::ServerState;
use crate::admin_guard::JsonObject;
use crate::issuance::join_token_id;
use crate::refusals::{Refusal, RefusalKind};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// An API error: a status and a one-line message.
#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        r.extensions_mut().insert(ErrorMessage(self.1));
        r
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
            StoreError::Duplicate(_) | StoreError::Conflict { .. } | StoreError::HeldByOtherOwner { .. } => {
                Self(StatusCode::CONFLICT, e.to_string())
            }
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

/// The message of an [`ApiError`], kept on its response for [`record_refusals`].
#[derive(Debug, Clone)]
struct ErrorMessage(String);

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
        .route("/v1/admin-tokens", post(crate::admin_tokens::create).get(crate::admin_tokens::list))
        .route("/v1/admin-tokens/{name}/revoke", post(crate::admin_tokens::revoke))
        .route("/v1/admin-tokens/{name}/rotate", post(crate::admin_tokens::rotate))
        .route("/v1/credentials", get(list_credentials))
        .route("/v1/reports/{kind}", get(report))
        .route("/v1/audit", get(export_audit))
        // Up to 10 000 kept checkpoints fit the larger body limit of batches.
        .route(
            "/v1/audit/verify",
            get(verify_audit).post(verify_audit_with).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route("/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/v1/owners", post(create_owner).get(list_owners))
        .route("/v1/owners/{name}", get(show_owner))
        .route("/v1/owners/{name}/deactivate", post(deactivate_owner))
        .route("/v1/owners/{name}/transfer", post(transfer_owner))
        .route("/v1/owners/{name}/scopes", axum::routing::put(set_owner_scopes))
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), record_refusals))
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
    owner_admits(&s, &who, &valid).await?;
    let e = match s.store.create_entry(&valid).await {
        Err(StoreError::Duplicate(msg)) => return Err(crate::admin_entry_state::duplicate(&s, &valid, msg).await),
        other => other?,
    };
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, entry = %e.id, spiffe_id = %e.spiffe_id, "entry created");
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
                .map_err(|e| numbered(forbidden(e)))?;
        }
        valid.push(v);
    }
    let created = s.store.create_entries(&valid).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, entries = created.len(), "entries created (batch)");
    let events = created
        .iter()
        .map(|e| {
            let details = json!({ "spiffe_id": e.spiffe_id.as_str(), "owner": e.owner, "revision": e.revision });
            s.audit_event(&who.token.name, "entry_create", &e.id, "ok", details)
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
    s.audit.record_or_log(s.audit_event(&who.token.name, action, subject, "ok", details)).await;
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
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("role `{}` may only see owner `{mine}`", who.token.role),
            ));
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
    verified(&s, &[]).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    /// Checkpoints an auditor kept (from `GET /v1/audit/checkpoint`).
    checkpoints: Vec<crate::audit::ExportedCheckpoint>,
}

/// Most kept checkpoints checked in one request.
const MAX_KEPT_CHECKPOINTS: usize = 10_000;

/// `POST /v1/audit/verify`: verify, and check the chain against checkpoints
/// an auditor kept.
async fn verify_audit_with(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<VerifyRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadAudit)?;
    let JsonObject(r) = body?;
    if r.checkpoints.len() > MAX_KEPT_CHECKPOINTS {
        return Err(ApiError::bad(format!("at most {MAX_KEPT_CHECKPOINTS} checkpoints per request")));
    }
    for c in &r.checkpoints {
        hallmark_ca::audit_key::AuditPublicKey::from_pem(&c.public_key)
            .map_err(|e| ApiError::bad(format!("checkpoint at record {}: {e}", c.checkpoint.seq)))?;
    }
    verified(&s, &r.checkpoints).await
}

async fn verified(
    s: &ServerState,
    kept: &[crate::audit::ExportedCheckpoint],
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = s.verify_audit(kept).await.map_err(|e| {
        tracing::error!(error = %e, "audit verification failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "audit verification failed".into())
    })?;
    Ok(Json(serde_json::to_value(v).unwrap_or_default()))
}

/// `GET /v1/audit/checkpoint`: the newest signed head, with its public key,
/// for an auditor to keep outside Hallmark.
async fn audit_checkpoint(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadAudit)?;
    let c = s.audit_checkpoint().await.map_err(|e| {
        tracing::error!(error = %e, "cannot read the audit checkpoint");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the audit checkpoint".into())
    })?;
    let c = c.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "the audit chain has no signed checkpoint yet".into()))?;
    Ok(Json(serde_json::to_value(c).unwrap_or_default()))
}

/// Every entry names an existing, active owner: its scopes.
async fn owner_scopes(s: &ServerState, name: &str) -> Result<OwnerScopes, ApiError> {
    match s.store.owner(name).await? {
        Some(o) if o.active => OwnerScopes::parse(&o.paths, &o.nodes, &s.settings.trust_domain).map_err(|e| {
            tracing::error!(owner = name, error = %e, "stored owner scopes do not parse");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("owner `{name}` has unreadable scopes: {e}"))
        }),
        Some(_) => {
            Err(ApiError::bad(format!("owner `{name}` is deactivated; transfer its entries to an active owner")))
        }
        None => Err(ApiError::bad(format!(
            "owner `{name}` does not exist (create it with `hallmark owner create {name} --contact EMAIL`)"
        ))),
    }
}

/// The entry's owner exists, is active, and its scopes admit the entry's
/// SPIFFE ID and parent; an `owner:NAME` caller is confined to them.
async fn owner_admits(s: &ServerState, who: &Admin, v: &hallmark_core::ValidEntrySpec) -> Result<(), ApiError> {
    let scopes = owner_scopes(s, &v.owner).await?;
    scopes.check(&v.owner, &v.spiffe_id, &v.parent_id, who.owner_scope().is_some()).map_err(forbidden)
}

fn forbidden(e: impl ToString) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerRequest {
    name: String,
    contact: String,
    #[serde(default)]
    description: String,
    /// SPIFFE-ID path scopes (trust-admin only).
    #[serde(default)]
    paths: Vec<String>,
    /// Nodes its entries may use (trust-admin only).
    #[serde(default)]
    nodes: Vec<String>,
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
    let scopes = ScopeLists { paths: r.paths, nodes: r.nodes };
    if !scopes.paths.is_empty() || !scopes.nodes.is_empty() {
        who.may(Perm::ScopeOwners)?;
    }
    let scopes = checked_scopes(&s, &r.name, &scopes).await?;
    let o = s.store.create_owner(&r.name, &r.contact, &r.description, &scopes).await?;
    audit(&s, &who, "owner_create", &o.name, json!({ "contact": o.contact, "paths": o.paths, "nodes": o.nodes })).await;
    tracing::info!(admin = %who.token.name, owner = %o.name, "owner created");
    Ok((StatusCode::CREATED, Json(o)))
}

/// Validates scopes for owner `name` and refuses path scopes that overlap
/// another owner's: a path belongs to one owner. Returns them normalised.
async fn checked_scopes(s: &ServerState, name: &str, lists: &ScopeLists) -> Result<ScopeLists, ApiError> {
    let td = &s.settings.trust_domain;
    let mine = OwnerScopes::parse(&lists.paths, &lists.nodes, td).map_err(ApiError::bad)?;
    for other in s.store.owners().await?.into_iter().filter(|o| o.name != name) {
        let theirs = OwnerScopes::parse(&other.paths, &[], td).unwrap_or_default();
        for p in &mine.paths {
            if let Some(q) = theirs.paths.iter().find(|q| q.overlaps(p)) {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("path scope `{p}` overlaps `{q}` of owner `{}`: a path belongs to one owner", other.name),
                ));
            }
        }
    }
    Ok(ScopeLists::from(&mine))
}

/// `PUT /v1/owners/{name}/scopes`: replaces an owner's path scopes and
/// nodes (trust-admin). Entries already registered are not touched.
async fn set_owner_scopes(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
    body: Result<JsonObject<ScopeLists>, ApiError>,
) -> Result<Json<hallmark_store::Owner>, ApiError> {
    who.may(Perm::ScopeOwners)?;
    let JsonObject(lists) = body?;
    let scopes = checked_scopes(&s, &name, &lists).await?;
    let o = s.store.set_owner_scopes(&name, &scopes).await?;
    audit(&s, &who, "owner_scopes", &name, json!({ "paths": o.paths, "nodes": o.nodes })).await;
    tracing::info!(admin = %who.token.name, owner = %name, paths = ?o.paths, nodes = ?o.nodes, "owner scopes set");
    Ok(Json(o))
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
    tracing::info!(admin = %who.token.name, owner = %name, "owner deactivated; its entries are orphans until transferred");
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
    let target = owner_scopes(&s, &r.to).await?;
    for e in s.store.entries(None).await?.iter().filter(|e| e.owner == name) {
        target.check(&r.to, &e.spiffe_id, &e.parent_id, false).map_err(|err| {
            ApiError(StatusCode::CONFLICT, format!("entry `{}` cannot move to owner `{}`: {err}", e.id, r.to))
        })?;
    }
    let moved = s.store.transfer_entries(&name, &r.to).await?;
    audit(&s, &who, "owner_transfer", &name, json!({ "to": r.to, "entries": moved })).await;
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, from = %name, to = %r.to, moved, "entries transferred");
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
    owner_admits(&s, &who, &valid).await?;
    let e = s.store.update_entry(&id, &valid, expected).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, entry = %e.id, revision = e.revision, "entry updated");
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
    tracing::info!(admin = %who.token.name, entry = %e.id, revoked = revoked.len(), "entry deleted");
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
    // A join token is a bearer secret: the shorter it lives, the less a copy is worth.
    let max = s.settings.max_join_token_ttl;
    if ttl.secs() > max.secs() {
        return Err(ApiError::bad(format!(
            "a join token may live at most {max} (`max_join_token_ttl` in the server configuration), not {ttl}"
        )));
    }
    let (token, agent_id, expires_at) = s.new_join_token(ttl).await?;
    tracing::info!(admin = %who.token.name, agent = %agent_id, "join token created");
    audit(&s, &who, "join_token_create", &agent_id, json!({ "expires_at": expires_at })).await;
    Ok((StatusCode::CREATED, Json(json!({ "token": token, "agent_id": agent_id, "expires_at": expires_at }))))
}

/// Roles an admin token may hold.
pub const ROLES: &[&str] = &["trust-admin", "operator", "auditor"];

pub(crate) fn valid_role(role: &str) -> bool {
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
    /// Create, revoke and rotate admin identities.
    ManageAdmins,
    /// List admin identities.
    ReadAdmins,
    /// Ask for an exception.
    RequestException,
    /// Approve or revoke an exception.
    DecideException,
    /// List exceptions.
    ReadExceptions,
    /// Create, deactivate owners and transfer their entries.
    ManageOwners,
    /// Set owners' SPIFFE-ID path scopes and nodes.
    ScopeOwners,
    /// List attested nodes.
    ReadNodes,
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
            Self::ManageAdmins => "create, revoke or rotate admin tokens",
            Self::ReadAdmins => "list admin tokens",
            Self::RequestException => "request exceptions",
            Self::DecideException => "approve or revoke exceptions",
            Self::ReadExceptions => "list exceptions",
            Self::ManageOwners => "manage owners",
            Self::ScopeOwners => "set owners' path scopes and nodes",
            Self::ReadNodes => "list nodes",
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
                    | ReadNodes
            )
        }
        "auditor" => matches!(
            p,
            ReadEntries | ReadPolicy | ReadExceptions | ReadAudit | ReadAuthorities | ReadNodes | ReadAdmins
        ),
        r if r.starts_with("owner:") => {
            matches!(p, ReadEntries | WriteEntries | ReadPolicy | RequestException | ReadExceptions | Revoke)
        }
        _ => false,
    }
}

impl Admin {
    /// 403 unless the caller's role allows `p`.
    pub(crate) fn may(&self, p: Perm) -> Result<(), ApiError> {
        if role_allows(&self.token.role, p) {
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
                    self.token.name,
                    self.token.role,
                    p.describe(),
                    allowed.join(", ")
                ),
            ))
        }
    }

    /// For `owner:NAME` callers, the owner they are confined to.
    pub(crate) fn owner_scope(&self) -> Option<&str> {
        self.token.role.strip_prefix("owner:")
    }

    /// 403 when an `owner:NAME` caller touches another owner's entry.
    pub(crate) fn may_touch(&self, owner: &str) -> Result<(), ApiError> {
        match self.owner_scope() {
            Some(mine) if mine != owner => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("role `{}` may only manage entries owned by `{mine}`", self.token.role),
            )),
            _ => Ok(()),
        }
    }
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
    match s.set_policy(&req.policy, &who.token.name).await {
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
        .request_exception(&r.entry_id, rule.as_str(), &r.value, justification, r.expires_at, &who.token.name)
        .await?;
    tracing::info!(admin = %who.token.name, exception = %x.id, entry = %x.entry_id, rule = %x.rule, "exception requested");
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
    if let Some(x) = s.store.exception(&id).await? {
        crate::admin_tokens::independent_of(&s, &who.token.name, &x.requested_by).await?;
    }
    let r = s.store.approve_exception(&id, &who.token.name, now_unix()).await?;
    if let Err(e) = s.reload_exceptions().await {
        tracing::warn!(error = %e, "cannot reload exceptions; they are re-read within a second");
    }
    if let Ok(x) = &r {
        tracing::info!(admin = %who.token.name, exception = %x.id, entry = %x.entry_id, "exception approved");
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
    let r = s.store.revoke_exception(&id, &who.token.name, now_unix()).await?;
    if let Err(e) = s.reload_exceptions().await {
        tracing::warn!(error = %e, "cannot reload exceptions; they are re-read within a second");
    }
    if let Ok(x) = &r {
        tracing::info!(admin = %who.token.name, exception = %x.id, "exception revoked");
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
        let agent_id = self
            .settings
            .trust_domain
            .agent_id(&["join_token", &join_token_id(&token)])
            .map_err(|e| StoreError::Schema(e.to_string()))?
            .to_string();
        Ok((token, agent_id, expires_at))
    }
}
