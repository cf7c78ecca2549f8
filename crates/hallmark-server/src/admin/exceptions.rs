//! Admin API: exceptions, `/v1/exceptions`. An exception is a recorded,
//! approved, expiring permission to break one rule; a second, independent
//! admin approves it. Each change is written with its audit record in one
//! transaction.
//!
//! What an exception can actually grant: no credential outlives the
//! authority that signs it, so an exception asking for more than the signing
//! authority has left is capped at issuance; the requester and the approver
//! are told so (a `warnings` list in the response) instead of finding out
//! later.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hallmark_core::time::relative;
use hallmark_core::{Ttl, now_unix};
use hallmark_store::{ExceptionRecord, NewException};
use serde::Deserialize;
use serde_json::json;

use super::admin_tokens::independent_of;
use super::auth::Admin;
use super::entries::visible_entry;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::audit::Change;
use crate::state::ServerState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExceptionRequest {
    entry_id: String,
    rule: String,
    value: String,
    justification: String,
    expires_at: i64,
}

/// Longest an exception may last.
const MAX_EXCEPTION_SECS: i64 = 366 * 86_400;

/// `POST /v1/exceptions`: asks for an exception on an entry the caller may see.
pub(crate) async fn request(
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
    let new = NewException {
        entry_id: &r.entry_id,
        rule: rule.as_str(),
        value: &r.value,
        justification,
        expires_at: r.expires_at,
        requested_by: &who.token.name,
    };
    let rec = s.record_change(&who.token.name, "exception_request", |x: &ExceptionRecord| {
        Change::new(
            &x.id,
            json!({ "entry_id": x.entry_id, "rule": x.rule, "value": x.value, "expires_at": x.expires_at }),
        )
    });
    let x = s.store.request_exception(&new, rec).await?;
    tracing::info!(admin = %who.token.name, exception = %x.id, entry = %x.entry_id, rule = %x.rule, "exception requested");
    Ok((StatusCode::CREATED, with_warnings(&s, x)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExceptionQuery {
    #[serde(default)]
    state: Option<String>,
}

/// `GET /v1/exceptions?state=...`: an owner sees those on its own entries.
pub(crate) async fn list(
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
    let own = super::entries::own_entry_ids(&s, &who).await?;
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
            super::guard::set_field(&mut v, "state", json!(state));
            v
        })
        .collect();
    Ok(Json(json!({ "exceptions": list })))
}

/// `POST /v1/exceptions/{id}/approve`: by an admin independent of the requester.
pub(crate) async fn approve(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::DecideException)?;
    if let Some(x) = s.store.exception(&id).await? {
        independent_of(&s, &who.token.name, &x.requested_by).await?;
    }
    let rec = s.record_change(&who.token.name, "exception_approve", |x: &ExceptionRecord| {
        Change::new(&x.id, json!({ "entry_id": x.entry_id, "rule": x.rule }))
    });
    let r = s.store.approve_exception(&id, &who.token.name, now_unix(), rec).await?;
    reload(&s).await;
    let x = r?;
    tracing::info!(admin = %who.token.name, exception = %x.id, entry = %x.entry_id, "exception approved");
    Ok(with_warnings(&s, x))
}

/// `POST /v1/exceptions/{id}/revoke`: a pending or active exception ends now.
pub(crate) async fn revoke(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<ExceptionRecord>, ApiError> {
    who.may(Perm::DecideException)?;
    let rec = s.record_change(&who.token.name, "exception_revoke", |x: &ExceptionRecord| {
        Change::new(&x.id, json!({ "entry_id": x.entry_id }))
    });
    let r = s.store.revoke_exception(&id, &who.token.name, now_unix(), rec).await?;
    reload(&s).await;
    let x = r?;
    tracing::info!(admin = %who.token.name, exception = %x.id, "exception revoked");
    Ok(Json(x))
}

/// Puts the approved exceptions in force here at once (every server re-reads
/// them within a second anyway).
async fn reload(s: &ServerState) {
    if let Err(e) = s.reload_exceptions().await {
        tracing::warn!(error = %e, "cannot reload exceptions; they are re-read within a second");
    }
}

/// Warnings about `x`: its value exceeds what the active X.509 authority or
/// JWT key has left to live, or what any authority under `ca.ttl` ever has.
fn warnings(s: &ServerState, x: &ExceptionRecord, now: i64) -> Vec<String> {
    let Ok(value) = Ttl::parse(&x.value) else { return Vec::new() };
    let want = i64::try_from(value.secs()).unwrap_or(i64::MAX);
    // A new authority is prepared at half its predecessor's life and activated
    // at five sixths of it: it starts signing with two thirds of `ca.ttl` left.
    let ca_ttl = i64::try_from(s.settings.ca_ttl.secs()).unwrap_or(i64::MAX);
    let longest = ca_ttl / 3 * 2;
    let mut out = Vec::new();
    let mut left: Vec<(&str, i64)> = Vec::new();
    if let Ok(ca) = s.authorities.x509() {
        left.push(("X.509 authority", ca.not_after()));
    }
    if x.rule == "ttl_above_class_max"
        && let Ok(na) = s.authorities.jwt_not_after()
    {
        left.push(("JWT key", na));
    }
    for (what, not_after) in left {
        if want > not_after - now {
            out.push(format!(
                "credentials cannot outlive the authority that signs them: the active {what} expires {}, so \
                 `{}` is capped at that for now; with `ca.ttl = \"{}\"` no credential ever lives longer than {} \
                 (raise `ca.ttl` in the server configuration to at least {} for `{}` to take effect)",
                relative(not_after, now),
                x.value,
                s.settings.ca_ttl,
                Ttl::from_secs(u64::try_from(longest).unwrap_or(1)).map(|t| t.to_string()).unwrap_or_default(),
                Ttl::from_secs(value.secs().saturating_mul(3) / 2).map(|t| t.to_string()).unwrap_or_default(),
                x.value
            ));
            break;
        }
    }
    out
}

/// `x` as the API answers it: the record, and `warnings` when it cannot take
/// full effect.
fn with_warnings(s: &ServerState, x: ExceptionRecord) -> Json<serde_json::Value> {
    let warnings = warnings(s, &x, hallmark_core::now_unix());
    for w in &warnings {
        tracing::warn!(exception = %x.id, entry = %x.entry_id, "{w}");
    }
    let mut v = serde_json::to_value(x).unwrap_or_default();
    super::guard::set_field(&mut v, "warnings", serde_json::json!(warnings));
    Json(v)
}
