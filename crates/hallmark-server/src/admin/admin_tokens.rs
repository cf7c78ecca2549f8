//! Admin identities: `/v1/admin-tokens`. Each is a name, a role and a bearer
//! token stored only as its hash; it records who created it, may expire, and
//! can be revoked or rotated (a new token for the same identity, the old one
//! refused from then on). Rotating `bootstrap` also rewrites the server's
//! bootstrap token file.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hallmark_ca::keys::{read_secret_file, write_secret_file};
use hallmark_core::{Ttl, now_unix};
use hallmark_store::{AdminToken, NewAdminToken, hash_secret};
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::{Perm, role_names, valid_role};
use crate::audit::Change;
use crate::error::ServerError;
use crate::state::ServerState;

/// Lifetime of an admin token created without `ttl`.
pub const DEFAULT_TTL: &str = "90d";
/// Longest lifetime an admin token may be given.
pub const MAX_TTL: &str = "366d";

/// The name of the token `server` and `up` write to their data directory.
pub const BOOTSTRAP: &str = "bootstrap";

/// A new random admin token.
pub fn new_token() -> String {
    format!("hmk_{}", hallmark_store::new_secret())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    name: String,
    role: String,
    /// How long it is valid, e.g. `30d` (default 90d, at most 366d).
    #[serde(default)]
    ttl: Option<String>,
}

/// `POST /v1/admin-tokens`: a new named identity; its token is in the answer, once.
pub(crate) async fn create(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<CreateRequest>, ApiError>,
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
        return Err(ApiError::bad(format!("unknown role `{}` ({})", req.role, role_names())));
    }
    let ttl = Ttl::parse(req.ttl.as_deref().unwrap_or(DEFAULT_TTL)).map_err(ApiError::bad)?;
    let max = Ttl::parse(MAX_TTL).map_err(ApiError::bad)?;
    if ttl.secs() > max.secs() {
        return Err(ApiError::bad(format!("an admin token may live at most {max}, not {ttl}")));
    }
    if s.store.admin_name_taken(&req.name).await? {
        return Err(ApiError::conflict(format!("an admin identity named `{}` already exists", req.name)));
    }
    let token = new_token();
    let expires_at = now_unix().saturating_add(i64::try_from(ttl.secs()).unwrap_or(i64::MAX));
    let new = NewAdminToken {
        token_hash: &hash_secret(&token),
        name: &req.name,
        role: &req.role,
        created_by: Some(&who.token.name),
        expires_at: Some(expires_at),
    };
    s.store.insert_admin_token(&new, s.record_change(&who.token.name, "admin_token_create", token_change)).await?;
    tracing::info!(admin = %who.token.name, name = %req.name, role = %req.role, expires_at, "admin token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": req.name, "role": req.role, "expires_at": expires_at, "token": token })),
    ))
}

/// `GET /v1/admin-tokens`: every admin identity and its state (never a token).
pub(crate) async fn list(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadAdmins)?;
    let now = now_unix();
    let list: Vec<serde_json::Value> = s
        .store
        .admin_tokens()
        .await?
        .into_iter()
        .map(|t| {
            let state = t.refusal(now).unwrap_or("active");
            let mut v = serde_json::to_value(&t).unwrap_or_default();
            super::guard::set_field(&mut v, "state", json!(state));
            v
        })
        .collect();
    Ok(Json(json!({ "admin_tokens": list })))
}

/// `POST /v1/admin-tokens/{name}/revoke`: refused from now on.
pub(crate) async fn revoke(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageAdmins)?;
    let rec =
        s.record_change(&who.token.name, "admin_token_revoke", |n: &u64| Change::new(&name, json!({ "tokens": n })));
    let n = s.store.revoke_admin_tokens(&name, now_unix(), rec).await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("no live admin identity named `{name}`")));
    }
    tracing::warn!(admin = %who.token.name, name = %name, "admin token revoked");
    Ok(Json(json!({ "name": name, "revoked": n })))
}

/// `POST /v1/admin-tokens/{name}/rotate`: a new token for the identity; the
/// old one is refused from now on. For `bootstrap`, the server's token file
/// is rewritten too.
pub(crate) async fn rotate(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageAdmins)?;
    let token = new_token();
    // The bootstrap token's file is rewritten once the rotation is
    // committed; the record names it.
    let path = if name == BOOTSTRAP { s.bootstrap_token_file() } else { None };
    let file = path.as_ref().map(|p| p.display().to_string());
    let rec = s.record_change(&who.token.name, "admin_token_rotate", |t: &AdminToken| {
        Change::new(&t.name, json!({ "file": file }))
    });
    let t = s.store.rotate_admin_token(&name, &hash_secret(&token), now_unix(), rec).await?;
    if let Some(path) = path {
        hallmark_ca::keys::write_secret_file(&path, token.as_bytes())
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("token rotated, but {e}")))?;
    }
    tracing::warn!(admin = %who.token.name, name = %name, "admin token rotated; the old one is refused");
    Ok(Json(json!({ "name": t.name, "role": t.role, "expires_at": t.expires_at, "file": file, "token": token })))
}

/// What an admin token's creation record says of it.
pub(crate) fn token_change(t: &AdminToken) -> Change {
    Change::new(&t.name, json!({ "role": t.role, "expires_at": t.expires_at }))
}

/// Longest chain of creators followed (the chain of real deployments is a
/// handful long; a longer one is cut, not looped on).
const MAX_CREATOR_DEPTH: usize = 64;

/// 403 unless `approver` is independent of `requester`: not the same
/// identity, and not created by it, directly or through identities it
/// created. A second approval from a token the requester made itself (a
/// sock puppet) is no second person.
pub(crate) async fn independent_of(s: &ServerState, approver: &str, requester: &str) -> Result<(), ApiError> {
    if approver == requester {
        // The store refuses self-approval with its own message.
        return Ok(());
    }
    let mut chain = vec![approver.to_owned()];
    let mut next = approver.to_owned();
    while chain.len() < MAX_CREATOR_DEPTH {
        let Some(creator) = s.store.admin_by_name(&next).await?.and_then(|t| t.created_by) else { break };
        if chain.contains(&creator) {
            break;
        }
        chain.push(creator.clone());
        next = creator;
    }
    if chain.iter().any(|n| n == requester) {
        let path = chain.join(" <- created by ");
        return Err(ApiError::forbidden(format!(
            "`{approver}` cannot approve a request of `{requester}`: it was created by the requester ({path}); a second approver must be independent"
        )));
    }
    Ok(())
}

impl ServerState {
    /// Makes sure a live bootstrap admin token exists in `path` (0600) and
    /// the store; returns it. An existing file is reused while the store
    /// holds its token unrevoked and unexpired; otherwise a new one replaces it.
    pub async fn ensure_admin_token(&self, path: &std::path::Path) -> Result<String, ServerError> {
        if let Ok(mut f) = self.bootstrap_file.write() {
            *f = Some(path.to_owned());
        }
        if path.exists() {
            let bytes = read_secret_file(path)?;
            let token = String::from_utf8_lossy(&bytes).trim().to_owned();
            match self.store.admin_token(&hash_secret(&token)).await? {
                Some(t) if t.refusal(now_unix()).is_none() => return Ok(token),
                Some(t) => {
                    let why = t.refusal(now_unix()).unwrap_or("refused");
                    tracing::warn!(path = %path.display(), why, "the bootstrap admin token is {why}; writing a new one");
                }
                None => {}
            }
        }
        let token = new_token();
        let rec = self.record_change("hallmark", "admin_token_create", token_change);
        self.store.add_admin_token(&hash_secret(&token), BOOTSTRAP, "trust-admin", rec).await?;
        write_secret_file(path, token.as_bytes())?;
        tracing::info!(path = %path.display(), "wrote bootstrap admin token");
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    use hallmark_ca::keys::SecretFileError;

    use super::*;
    use crate::config;
    use crate::start::start;

    /// Issue 15: the bootstrap admin token's file failing is a file error
    /// naming the file, not a CA error.
    #[tokio::test(flavor = "multi_thread")]
    async fn admin_token_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        );
        let settings = config::ServerConfig::parse(&cfg, &HashMap::new()).unwrap().validate().unwrap();
        let s = start(settings).await.unwrap();
        // Written where it cannot be: its directory does not exist.
        let unwritable = dir.path().join("missing").join("admin-token");
        let err = s.state.ensure_admin_token(&unwritable).await.unwrap_err();
        assert!(
            matches!(&err, ServerError::SecretFile(SecretFileError::Io { path, .. }) if *path == unwritable),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(&format!("{}: ", unwritable.display())), "{err}");
        // Read where others may read it too.
        let exposed = dir.path().join("admin-token");
        s.state.ensure_admin_token(&exposed).await.unwrap();
        std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = s.state.ensure_admin_token(&exposed).await.unwrap_err();
        assert!(matches!(&err, ServerError::SecretFile(SecretFileError::Exposed { mode: 0o644, .. })), "{err:?}");
        assert!(err.to_string().contains(&exposed.display().to_string()), "{err}");
    }
}
