//! Admin API: nodes and their onboarding: join tokens (create, list,
//! revoke), the list of attested nodes, and lifting a node ban. Each change
//! is written with its audit record in one transaction.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hallmark_core::{Ttl, now_unix};
use hallmark_store::{Node, StoreError, hash_secret};
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::audit::Change;
use crate::issuance::join_token_id;
use crate::state::ServerState;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    #[serde(default)]
    ttl: Option<String>,
}

/// `POST /v1/join-tokens`: a single-use token an agent attests with; the
/// token is in the answer, once.
pub(crate) async fn create_join_token(
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
    let NewJoinToken { token, agent_id, expires_at } = s.new_join_token(ttl, &who.token.name).await?;
    tracing::info!(admin = %who.token.name, agent = %agent_id, "join token created");
    Ok((StatusCode::CREATED, Json(json!({ "token": token, "agent_id": agent_id, "expires_at": expires_at }))))
}

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
    let rec = s.record_change(&who.token.name, "join_token_revoke", |_: &str| Change::new(&id, json!({})));
    s.store.revoke_join_token(&id.to_ascii_lowercase(), rec).await?;
    tracing::info!(admin = %who.token.name, token = %id, "join token revoked");
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
        return Err(ApiError::forbidden(format!("role `{}` may not lift node bans", who.token.role)));
    }
    let rec = s.record_change(&who.token.name, "node_unban", |n: &Node| Change::new(&n.agent_id, json!({})));
    let (node, was_banned) = s.store.unban_node(&agent_id, now_unix(), rec).await?;
    if was_banned {
        tracing::warn!(admin = %who.token.name, node = %agent_id, "node ban lifted");
    }
    Ok(Json(json!({ "node": node, "was_banned": was_banned })))
}

/// `GET /v1/nodes`: attested nodes, banned or not, each with its
/// attestor, its selectors, its last attestation and, for attestors that
/// re-attest (x509pop, TPM, PSAT), `reattest_at`: when its agent re-attests
/// (the middle of its SVID's span, which starts backdated; it must before
/// `not_after`).
pub(crate) async fn list_nodes(
    State(s): State<Arc<ServerState>>,
    who: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadNodes)?;
    let nodes: Vec<serde_json::Value> = s
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|n| {
            let due = match n.attested_at {
                Some(at) if crate::node_attest::REATTESTING.contains(&n.attestation_type.as_str()) => {
                    let not_before = at - hallmark_ca::x509::BACKDATE_SECS;
                    Some(not_before + (n.not_after - not_before) / 2)
                }
                _ => None,
            };
            let mut v = json!(n);
            if let Some(fields) = v.as_object_mut() {
                fields.insert("reattest_at".into(), json!(due));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })))
}

/// A join token just created: the secret, shown once.
#[derive(Debug, Clone)]
pub struct NewJoinToken {
    /// The token itself; only its hash is stored.
    pub token: String,
    /// The SPIFFE ID the agent attested with it will have.
    pub agent_id: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl ServerState {
    /// Creates a single-use join token on behalf of `by`, recorded in the
    /// same transaction.
    pub async fn new_join_token(&self, ttl: Ttl, by: &str) -> Result<NewJoinToken, StoreError> {
        let token = hallmark_store::new_secret();
        let expires_at = now_unix() + i64::try_from(ttl.secs()).unwrap_or(i64::MAX / 2);
        let agent_id = self
            .settings
            .trust_domain
            .join_token_agent_id(&join_token_id(&token))
            .map_err(|e| StoreError::Schema(e.to_string()))?
            .to_string();
        let rec = self.record_change(by, "join_token_create", |_: &str| {
            Change::new(&agent_id, json!({ "expires_at": expires_at }))
        });
        self.store.create_join_token(&hash_secret(&token), expires_at, rec).await?;
        Ok(NewJoinToken { token, agent_id, expires_at })
    }
}
