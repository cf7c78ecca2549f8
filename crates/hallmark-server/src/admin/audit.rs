//! Admin API: the audit chain, `/v1/audit`: export as JSON lines, verify
//! (against checkpoints an auditor kept, too), and the newest signed
//! checkpoint to keep.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hallmark_store::AuditRecord;
use serde::Deserialize;

use super::auth::Admin;
use super::credentials::with_evidence;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::audit_check::ExportedCheckpoint;
use crate::state::ServerState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    since: Option<i64>,
    #[serde(default)]
    until: Option<i64>,
}

/// The audit records between `since` and `until` (unix seconds), as JSON
/// lines. A record whose details name an evidence digest with a stored set
/// carries that set beside its details (`evidence`): the record's hash covers
/// the digest, and the digest the set.
pub(crate) async fn export(
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
        let digest =
            |r: &AuditRecord| r.event.details.get("evidence_digest").and_then(|d| d.as_str()).map(str::to_owned);
        let mut digests: Vec<String> = page.iter().filter_map(digest).collect();
        digests.sort_unstable();
        digests.dedup();
        let sets = s.store.evidence_sets(&digests).await?;
        for r in &page {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            // Every record naming a set carries it, so each line can be read alone.
            if let Some(checked) = digest(r).and_then(|d| sets.get(&d).cloned()) {
                with_evidence(&mut v, checked);
            }
            out.push_str(&v.to_string());
            out.push('\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

/// `GET /v1/audit/verify`
pub(crate) async fn verify(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadAudit)?;
    verified(&s, &[]).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyRequest {
    /// Checkpoints an auditor kept (from `GET /v1/audit/checkpoint`).
    checkpoints: Vec<ExportedCheckpoint>,
}

/// Most kept checkpoints checked in one request.
const MAX_KEPT_CHECKPOINTS: usize = 10_000;

/// `POST /v1/audit/verify`: verify, and check the chain against checkpoints
/// an auditor kept.
pub(crate) async fn verify_with(
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

async fn verified(s: &ServerState, kept: &[ExportedCheckpoint]) -> Result<Json<serde_json::Value>, ApiError> {
    let v = s.verify_audit(kept).await.map_err(|e| {
        tracing::error!(error = %e, "audit verification failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "audit verification failed".into())
    })?;
    Ok(Json(serde_json::to_value(v).unwrap_or_default()))
}

/// `GET /v1/audit/checkpoint`: the newest signed head, with its public key,
/// for an auditor to keep outside Hallmark.
pub(crate) async fn checkpoint(
    State(s): State<Arc<ServerState>>,
    who: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadAudit)?;
    let c = s.audit_checkpoint().await.map_err(|e| {
        tracing::error!(error = %e, "cannot read the audit checkpoint");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the audit checkpoint".into())
    })?;
    let c = c.ok_or_else(|| ApiError::not_found("the audit chain has no signed checkpoint yet"))?;
    Ok(Json(serde_json::to_value(c).unwrap_or_default()))
}
