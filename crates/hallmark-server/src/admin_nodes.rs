//! Admin API: join tokens (list, revoke) and lifting node bans.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hallmark_core::now_unix;
use hallmark_store::JoinTokenRevokeError;
use serde_json::json;

use crate::ServerState;
use crate::admin::{Admin, ApiError, Perm, audit};

/// Expired, unused tokens are listed for a day after they expire.
const EXPIRED_SHOWN_SECS: i64 = 86_400;

/// `GET /v1/join-tokens`: tokens issued, with the agent ID each attests as
/// and its state (`unused`, `used`, `expired`); never the tokens themselves.
pub(crate) async fn list_join_tokens(
    State(s): State<Arc<ServerState>>,
    who: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::JoinTokens)?;
    let now = now_unix();
    let list: Vec<serde_json::Value> = s
        .store
        .join_tokens(now - EXPIRED_SHOWN_SECS)
        .await?
        .into_iter()
        .map(|t| {
            let state = match t.used_at {
                Some(_) => "used",
                None if t.expires_at <= now => "expired",
                None => "unused",
            };
            let agent_id = format!("spiffe://{}/hallmark/agent/join_token/{}", s.settings.trust_domain, t.id);
            json!({ "id": t.id, "agent_id": agent_id, "state": state, "created_at": t.created_at,
                    "expires_at": t.expires_at, "used_at": t.used_at })
        })
        .collect();
    Ok(Json(json!({ "join_tokens": list })))
}

/// `DELETE /v1/join-tokens/{id}`: an unused token can no longer attest a
/// node. `id` is the token's id or the agent ID it would attest as.
pub(crate) async fn revoke_join_token(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::JoinTokens)?;
    let id = id.rsplit('/').next().unwrap_or(&id).to_owned();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad(format!(
            "invalid join token id `{id}`: 16 hex digits, or the agent ID it attests as (see `hallmark token list`)"
        )));
    }
    match s.store.revoke_join_token(&id.to_ascii_lowercase()).await {
        Ok(()) => {}
        Err(e @ JoinTokenRevokeError::NotFound(_)) => return Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ JoinTokenRevokeError::Used(_)) => return Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(JoinTokenRevokeError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(admin = %who.token.name, token = %id, "join token revoked");
    audit(&s, &who, "join_token_revoke", &id, json!({})).await;
    Ok(Json(json!({ "id": id, "revoked": true })))
}

/// `POST /v1/nodes/{agent_id}/unban`: the node's agent may connect and be
/// served again; what the ban revoked stays revoked. The agent ID is
/// percent-encoded in the path.
pub(crate) async fn unban_node(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(agent_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::Revoke)?;
    if who.owner_scope().is_some() {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("role `{}` may not lift node bans", who.token.role)));
    }
    let (node, was_banned) = s.store.unban_node(&agent_id, now_unix()).await?;
    if was_banned {
        tracing::warn!(admin = %who.token.name, node = %agent_id, "node ban lifted");
        audit(&s, &who, "node_unban", &agent_id, json!({})).await;
    }
    Ok(Json(json!({ "node": node, "was_banned": was_banned })))
}
