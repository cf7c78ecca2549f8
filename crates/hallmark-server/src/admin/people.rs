//! Admin API: people's logins (`/v1/login/start`, `/v1/login`, which need
//! no admin token: the ID token authenticates the person), help-desk
//! recovery (`/v1/people/recoveries`) and break-glass grants
//! (`/v1/people/break-glass`). The rules live in [`crate::human`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hallmark_core::{SpiffeId, Ttl, now_unix};
use hallmark_store::{
    BreakGlassGrant, BreakGlassUse, Recorder, RecoveryRequest, RecoveryState, RecoveryStep, RevokeTarget, StoreError,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin_tokens::independent_of;
use super::auth::Admin;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::audit::Change;
use crate::human::{LoginCertificate, LoginError, LoginRequest, LoginStart};
use crate::state::ServerState;

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::BadRequest(m) => Self::bad(m),
            LoginError::Unauthenticated(m) => Self(StatusCode::UNAUTHORIZED, m),
            LoginError::Forbidden(m) => Self::forbidden(m),
            LoginError::NotFound(m) => Self::not_found(m),
            LoginError::Busy(m) => Self(StatusCode::SERVICE_UNAVAILABLE, m),
            LoginError::Server(e) => Self::internal("login failed", &e),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    #[serde(default)]
    issuer: Option<String>,
}

/// `POST /v1/login/start` `{"issuer": NAME}`: a nonce for a login.
pub(crate) async fn start(
    State(s): State<Arc<ServerState>>,
    peer: Option<axum::Extension<super::auth::PeerAddr>>,
    body: Result<JsonObject<StartRequest>, ApiError>,
) -> Result<Json<LoginStart>, ApiError> {
    let JsonObject(r) = body?;
    // The address, not the port: a flood comes from one address over many ports.
    let source = peer.map(|p| p.0.0.ip().to_string()).unwrap_or_default();
    Ok(Json(s.start_login(r.issuer.as_deref(), &source).await?))
}

/// `POST /v1/login`: an ID token and a CSR for a person's certificate.
pub(crate) async fn login(
    State(s): State<Arc<ServerState>>,
    body: Result<JsonObject<LoginRequest>, ApiError>,
) -> Result<Json<LoginCertificate>, ApiError> {
    let JsonObject(r) = body?;
    Ok(Json(s.login(&r).await?))
}

// ---- help-desk recovery ------------------------------------------------

/// Longest reason or note.
const MAX_TEXT: usize = 2048;

/// `text` as a required, bounded, single-paragraph field named `what`.
fn required_text(what: &str, text: &str) -> Result<String, ApiError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ApiError::bad(format!("`{what}` is required")));
    }
    if t.len() > MAX_TEXT || t.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::bad(format!("`{what}` must be at most {MAX_TEXT} bytes with no control characters")));
    }
    Ok(t.to_owned())
}

/// A person's SPIFFE ID in this trust domain.
fn person_id(s: &ServerState, subject: &str) -> Result<SpiffeId, ApiError> {
    let id = SpiffeId::new(subject).map_err(|e| ApiError::bad(format!("subject: {e}")))?;
    // A person's ID has a path below `/human/`, as the templates render it.
    if id.trust_domain() != s.settings.trust_domain || !id.path().starts_with("/human/") {
        return Err(ApiError::bad(format!(
            "subject `{subject}` is not a person's SPIFFE ID (spiffe://{}/human/...): machines have no recovery path or break-glass; they fail closed and are re-issued from attestation",
            s.settings.trust_domain
        )));
    }
    Ok(id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecoveryFiled {
    subject: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Note {
    note: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecoveryQuery {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    open: bool,
}

fn recorded<'a>(s: &'a ServerState, who: &'a Admin, action: &'a str) -> Recorder<'a, RecoveryRequest> {
    s.record_change(&who.token.name, action, |r: &RecoveryRequest| {
        Change::new(&r.id, json!({ "subject": r.subject, "state": r.state, "note": r.verify_note }))
    })
}

/// `POST /v1/people/recoveries` `{subject, reason}`: a person lost a device
/// or key. Their logins are refused from now until the request is approved
/// (or cancelled).
pub(crate) async fn request_recovery(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<RecoveryFiled>, ApiError>,
) -> Result<(StatusCode, Json<RecoveryRequest>), ApiError> {
    who.may(Perm::HelpDesk)?;
    let JsonObject(r) = body?;
    let subject = person_id(&s, &r.subject)?;
    let reason = required_text("reason", &r.reason)?;
    let rec = recorded(&s, &who, "recovery_request");
    let filed = s.store.create_recovery(subject.as_str(), &reason, &who.token.name, now_unix(), rec).await?;
    // The lost device's certificates stop now, not when a second admin gets
    // to the request: whoever holds the device must not keep using them.
    let why = format!("recovery `{}` filed: device or key lost", filed.id);
    let revoked = revoke_person(&s, subject.as_str(), &why, &who.token.name).await?;
    tracing::warn!(subject = %subject, request = %filed.id, by = %who.token.name, revoked = revoked.len(), "recovery requested; certificates revoked, logins refused until approved");
    Ok((StatusCode::CREATED, Json(filed)))
}

/// Revokes every live certificate of person `subject`; none is no error.
async fn revoke_person(s: &Arc<ServerState>, subject: &str, why: &str, by: &str) -> Result<Vec<String>, ApiError> {
    match s.revoke(&RevokeTarget::Human(subject.to_owned()), why, by).await {
        Ok(out) => Ok(out.credentials),
        // Never issued a certificate: nothing to revoke.
        Err(crate::error::ServerError::Store(StoreError::NotFound(_))) => Ok(Vec::new()),
        Err(e) => Err(super::error::revocation(e)),
    }
}

/// `GET /v1/people/recoveries[?subject=&open=true]`.
pub(crate) async fn list_recoveries(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Query(q): Query<RecoveryQuery>,
) -> Result<Json<Vec<RecoveryRequest>>, ApiError> {
    who.may(Perm::ReadPeople)?;
    Ok(Json(s.store.recoveries(q.subject.as_deref(), q.open).await?))
}

/// `GET /v1/people/recoveries/{id}`.
pub(crate) async fn show_recovery(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<RecoveryRequest>, ApiError> {
    who.may(Perm::ReadPeople)?;
    Ok(Json(s.store.recovery(&id).await?.ok_or_else(|| ApiError::not_found(format!("recovery request `{id}`")))?))
}

/// `POST /v1/people/recoveries/{id}/verify` `{note}`: the help desk
/// verified the person; the note (how) is required.
pub(crate) async fn verify_recovery(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
    body: Result<JsonObject<Note>, ApiError>,
) -> Result<Json<RecoveryRequest>, ApiError> {
    who.may(Perm::HelpDesk)?;
    let JsonObject(n) = body?;
    let note = required_text("note", &n.note)
        .map_err(|_| ApiError::bad("a help-desk note is required: say how the person was verified"))?;
    let by = who.token.name.clone();
    let step = move |r: &RecoveryRequest| match r.state {
        RecoveryState::Requested => Ok(RecoveryStep::Verify { by, note }),
        other => Err(StoreError::Duplicate(format!("recovery request `{}` is {other:?}, not requested", r.id))),
    };
    Ok(Json(s.store.advance_recovery(&id, step, now_unix(), recorded(&s, &who, "recovery_verify")).await?))
}

/// `POST /v1/people/recoveries/{id}/approve`: a second admin, neither the
/// one who filed nor the one who verified (nor created by them), approves.
/// Every earlier certificate of the person is revoked, then a new login is
/// allowed.
pub(crate) async fn approve_recovery(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.may(Perm::ApproveRecovery)?;
    let me = who.token.name.clone();
    let r = s.store.recovery(&id).await?.ok_or_else(|| ApiError::not_found(format!("recovery request `{id}`")))?;
    check_approver(&r, &me)?;
    // Independent both ways: the approver did not make the token that
    // filed or verified, nor was made by it.
    for other in [Some(&r.requested_by), r.verified_by.as_ref()].into_iter().flatten() {
        independent_of(&s, &me, other).await?;
        independent_of(&s, other, &me).await?;
    }
    // Revoke first: if anything fails after, the person stays locked out
    // (the request is still open), never signed in beside a lost key.
    let why = format!("recovery `{id}` approved by `{me}`");
    let revoked = revoke_person(&s, &r.subject, &why, &me).await?;
    let approver = me.clone();
    let step = move |r: &RecoveryRequest| {
        check_approver(r, &approver).map_err(|e| StoreError::Duplicate(e.1))?;
        Ok(RecoveryStep::Approve { by: approver })
    };
    let done = s.store.advance_recovery(&id, step, now_unix(), recorded(&s, &who, "recovery_approve")).await?;
    tracing::warn!(subject = %done.subject, request = %id, by = %me, revoked = revoked.len(), "recovery approved");
    Ok(Json(json!({ "request": done, "revoked": revoked })))
}

/// The rules of approval on the request as it stands.
fn check_approver(r: &RecoveryRequest, me: &str) -> Result<(), ApiError> {
    if r.state != RecoveryState::Verified {
        return Err(ApiError::conflict(format!(
            "recovery request `{}` is {:?}: the help desk verifies it first (`hallmark human recover verify {} --note ...`)",
            r.id, r.state, r.id
        )));
    }
    if me == r.requested_by || r.verified_by.as_deref() == Some(me) {
        return Err(ApiError::forbidden(format!(
            "`{me}` filed or verified recovery request `{}`: a second, different admin approves",
            r.id
        )));
    }
    Ok(())
}

/// `POST /v1/people/recoveries/{id}/cancel`: withdrawn; logins allowed as before.
pub(crate) async fn cancel_recovery(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<RecoveryRequest>, ApiError> {
    who.may(Perm::HelpDesk)?;
    let step = |r: &RecoveryRequest| {
        if r.state.open() {
            Ok(RecoveryStep::Cancel)
        } else {
            Err(StoreError::Duplicate(format!("recovery request `{}` is already closed", r.id)))
        }
    };
    Ok(Json(s.store.advance_recovery(&id, step, now_unix(), recorded(&s, &who, "recovery_cancel")).await?))
}

// ---- break-glass ----------------------------------------------------------

/// Longest a break-glass grant stays usable.
const MAX_GRANT_SECS: u64 = 90 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantRequest {
    subject: String,
    reason: String,
    /// How long the grant stays usable (default 30d, at most 90d).
    #[serde(default)]
    expires_in: Option<String>,
}

/// `POST /v1/people/break-glass` `{subject, reason, expires_in}`: pre-approves
/// emergency logins of a person (trust-admin).
pub(crate) async fn grant_break_glass(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<GrantRequest>, ApiError>,
) -> Result<(StatusCode, Json<BreakGlassGrant>), ApiError> {
    who.may(Perm::ManageBreakGlass)?;
    let JsonObject(g) = body?;
    let subject = person_id(&s, &g.subject)?;
    let reason = required_text("reason", &g.reason)?;
    let life =
        Ttl::parse(g.expires_in.as_deref().unwrap_or("30d")).map_err(|e| ApiError::bad(format!("expires_in: {e}")))?;
    if life.secs() > MAX_GRANT_SECS {
        return Err(ApiError::bad("expires_in: at most 90d; grant again when it ends"));
    }
    let now = now_unix();
    let rec = s.record_change(&who.token.name, "break_glass_grant", |g: &BreakGlassGrant| {
        Change::new(&g.id, json!({ "subject": g.subject, "reason": g.reason, "expires_at": g.expires_at }))
    });
    let until = now.saturating_add(i64::try_from(life.secs()).unwrap_or(i64::MAX));
    let grant = s.store.grant_break_glass(subject.as_str(), &reason, &who.token.name, now, until, rec).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// `GET /v1/people/break-glass`: grants and uses.
pub(crate) async fn list_break_glass(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<Value>, ApiError> {
    who.may(Perm::ReadPeople)?;
    Ok(Json(json!({ "grants": s.store.break_glass_grants().await?, "uses": s.store.break_glass_uses(false).await? })))
}

/// `POST /v1/people/break-glass/{id}/revoke`: withdraws a grant.
pub(crate) async fn revoke_break_glass(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<BreakGlassGrant>, ApiError> {
    who.may(Perm::ManageBreakGlass)?;
    let rec = s.record_change(&who.token.name, "break_glass_revoke", |g: &BreakGlassGrant| {
        Change::new(&g.id, json!({ "subject": g.subject }))
    });
    let grant = s.store.revoke_break_glass(&id, now_unix(), rec).await?;
    // And what it issued: a withdrawn grant leaves no emergency certificate live.
    let why = format!("break-glass grant `{id}` withdrawn");
    for u in s.store.break_glass_uses(false).await?.into_iter().filter(|u| u.grant_id == id) {
        match s.revoke(&RevokeTarget::Credential(u.credential.clone()), &why, &who.token.name).await {
            // Expired long ago and pruned from the inventory: nothing to revoke.
            Ok(_) | Err(crate::error::ServerError::Store(StoreError::NotFound(_))) => {}
            Err(e) => return Err(super::error::revocation(e)),
        }
    }
    Ok(Json(grant))
}

/// `POST /v1/people/break-glass/uses/{id}/review` `{note}`: a use was
/// looked at; it stops being a report finding.
pub(crate) async fn review_break_glass(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
    body: Result<JsonObject<Note>, ApiError>,
) -> Result<Json<BreakGlassUse>, ApiError> {
    who.may(Perm::ReviewBreakGlass)?;
    let JsonObject(n) = body?;
    let note = required_text("note", &n.note)?;
    let rec = s.record_change(&who.token.name, "break_glass_review", |u: &BreakGlassUse| {
        Change::new(&u.id, json!({ "subject": u.subject, "credential": u.credential, "note": u.review_note }))
    });
    Ok(Json(s.store.review_break_glass_use(&id, &who.token.name, &note, now_unix(), rec).await?))
}
