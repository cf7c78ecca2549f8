//! Admin API: revocation in one step, `/v1/revocations`: a credential, an
//! entry, an owner's entries, a node, a task, every task of an agent's
//! entry, everything issued to a person or to a human SPIFFE ID, written
//! with its audit record in one transaction ([`ServerState::revoke`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use hallmark_store::RevokeTarget;
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::{ApiError, revocation};
use super::guard::JsonObject;
use super::roles::Perm;
use crate::revocation::MAX_REASON_LEN;
use crate::state::ServerState;

/// `POST /v1/revocations`: exactly one target and a reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeRequest {
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    entry: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    agent_entry: Option<String>,
    /// A person, by id or userName.
    #[serde(default)]
    person: Option<String>,
    /// A human SPIFFE ID.
    #[serde(default)]
    human: Option<String>,
    reason: String,
}

impl RevokeRequest {
    fn target(self) -> Result<(RevokeTarget, String), ApiError> {
        let reason = self.reason.trim().to_owned();
        if reason.is_empty() || reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
            return Err(ApiError::bad(format!("reason must be 1-{MAX_REASON_LEN} bytes with no control characters")));
        }
        let mut given: Vec<RevokeTarget> = Vec::new();
        given.extend(self.serial.map(|s| RevokeTarget::Credential(s.to_ascii_lowercase())));
        given.extend(self.jti.map(RevokeTarget::Credential));
        given.extend(self.entry.map(RevokeTarget::Entry));
        given.extend(self.owner.map(RevokeTarget::Owner));
        given.extend(self.node.map(RevokeTarget::Node));
        given.extend(self.task.map(RevokeTarget::Task));
        given.extend(self.agent_entry.map(RevokeTarget::AgentEntry));
        given.extend(self.person.map(RevokeTarget::Person));
        given.extend(self.human.map(RevokeTarget::Human));
        let target = match given.len() {
            1 => given.remove(0),
            _ => {
                return Err(ApiError::bad(
                    "give exactly one of serial, jti, entry, owner, node, task, agent_entry, person, human",
                ));
            }
        };
        let (_, value) = crate::revocation::describe(&target);
        if value.is_empty() || value.len() > 2048 || value.chars().any(char::is_control) {
            return Err(ApiError::bad("the revocation target must be 1-2048 bytes with no control characters"));
        }
        Ok((target, reason))
    }
}

/// Confines an `owner:NAME` caller to its own credentials and entries.
async fn owner_may_revoke(s: &ServerState, who: &Admin, target: &RevokeTarget) -> Result<(), ApiError> {
    let Some(mine) = who.owner_scope() else { return Ok(()) };
    let owner = match target {
        RevokeTarget::Credential(id) => s.store.credential(id).await?.map(|c| c.owner),
        RevokeTarget::Entry(id) | RevokeTarget::AgentEntry(id) => s.store.entry(id).await?.map(|e| e.owner),
        RevokeTarget::Task(id) => match s.store.task(id).await? {
            Some(t) => s.store.entry(&t.entry_id).await?.map(|e| e.owner),
            None => None,
        },
        RevokeTarget::Owner(name) => Some(name.clone()),
        RevokeTarget::Node(_) => {
            return Err(ApiError::forbidden(format!("role `{}` may not ban nodes", who.token.role)));
        }
        // People are no owner's: their credentials are not machines'.
        RevokeTarget::Person(_) | RevokeTarget::Human(_) => {
            return Err(ApiError::forbidden(format!("role `{}` may not revoke people's credentials", who.token.role)));
        }
    };
    match owner {
        Some(o) if o == mine => Ok(()),
        // Unknown targets answer 404 below, whoever asks.
        None => Ok(()),
        Some(_) => {
            Err(ApiError::forbidden(format!("role `{}` may only revoke what owner `{mine}` holds", who.token.role)))
        }
    }
}

/// The id of the person `named` (an id, or else a userName in any letter
/// case); 404 when it is neither.
pub(crate) async fn person_id(s: &ServerState, named: &str) -> Result<String, ApiError> {
    if let Some(p) = s.store.person(named).await? {
        return Ok(p.id);
    }
    match s.store.person_by_user_name(named).await? {
        Some(p) => Ok(p.id),
        None => Err(ApiError::not_found(format!("person `{named}` not found (give a SCIM id or userName)"))),
    }
}

/// `POST /v1/revocations`
pub(crate) async fn revoke(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<RevokeRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::Revoke)?;
    let JsonObject(req) = body?;
    let (target, reason) = req.target()?;
    owner_may_revoke(&s, &who, &target).await?;
    let target = match target {
        RevokeTarget::Person(named) => RevokeTarget::Person(person_id(&s, &named).await?),
        other => other,
    };
    let out = s.revoke(&target, &reason, &who.token.name).await.map_err(revocation)?;
    let (kind, value) = crate::revocation::describe(&target);
    Ok(Json(json!({
        "target": kind,
        "subject": value,
        "reason": reason,
        "credentials": out.credentials,
        "entries": out.entries,
        "node": out.node,
    })))
}

/// `GET /v1/revocations`: revoked credentials that have not yet expired.
pub(crate) async fn list(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let (mut list, _) = s.store.live_revocations(hallmark_core::now_unix()).await?;
    // An owner sees only the revocations of its own credentials.
    if let Some(mine) = who.owner_scope() {
        let mut own = Vec::with_capacity(list.len());
        for r in list {
            if let Some(c) = s.store.credential(&r.id).await?
                && c.owner == mine
            {
                own.push(r);
            }
        }
        list = own;
    }
    Ok(Json(json!({ "revocations": list })))
}
