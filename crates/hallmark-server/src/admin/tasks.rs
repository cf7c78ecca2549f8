//! Admin API: AI-agent tasks, `/v1/tasks`. A task is started for an entry
//! bound to tasks (`bind: task`) and bound once to its process; its scope
//! items marked for approval wait for the entry's owner or a trust-admin
//! (never the identity that started it); a new objective revokes what was
//! issued under the old one; ending it revokes everything it was issued.
//! Each change is written with its audit record in one transaction.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hallmark_core::{Bind, Ttl, now_unix};
use hallmark_store::{CredentialFilter, NewTask, RevokeOutcome, RevokeTarget, Task};
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::entries::visible_entry;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::audit::Change;
use crate::state::ServerState;

/// Lifetime of a task when none is asked for.
pub const DEFAULT_TASK_TTL_SECS: u64 = 30 * 60;
/// Longest lifetime a task may ask for.
pub const MAX_TASK_TTL_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskRequest {
    entry_id: String,
    objective: String,
    scope: Vec<String>,
    #[serde(default)]
    approve: Vec<String>,
    #[serde(default)]
    on_behalf_of: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    revoke_on_breach: bool,
}

/// A task as the API shows it: its record and its state now.
fn shown(t: &Task) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    super::guard::set_field(&mut v, "state", json!(t.state(now_unix())));
    v
}

/// The task `id` if the caller may see its entry.
async fn visible_task(s: &ServerState, who: &Admin, id: &str) -> Result<Task, ApiError> {
    let t = s.store.task(id).await?.ok_or_else(|| ApiError::not_found(format!("task `{id}` not found")))?;
    visible_entry(s, who, &t.entry_id).await?;
    Ok(t)
}

/// `POST /v1/tasks`: starts a task for an entry bound to tasks. It waits
/// for its process (`POST /v1/tasks/{id}/process`).
pub(crate) async fn create(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<TaskRequest>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    who.may(Perm::RunTasks)?;
    let JsonObject(r) = body?;
    let entry = visible_entry(&s, &who, &r.entry_id).await?;
    if entry.bind != Bind::Task {
        return Err(ApiError::bad(format!(
            "entry `{}` is bound to `{}`, not `task`: only an entry created with `--bind task` issues for tasks \
             (`hallmark entry update {} --bind task`)",
            entry.id, entry.bind, entry.id
        )));
    }
    if entry.revoked_at.is_some() {
        return Err(ApiError::bad(format!("entry `{}` is revoked", entry.id)));
    }
    hallmark_core::check_objective(&r.objective).map_err(ApiError::bad)?;
    let scope = hallmark_core::parse_scope(&r.scope, &r.approve).map_err(ApiError::bad)?;
    if let Some(subject) = &r.on_behalf_of {
        hallmark_core::check_subject(subject).map_err(ApiError::bad)?;
    }
    let ttl = match &r.ttl {
        Some(t) => Ttl::parse(t).map_err(ApiError::bad)?.secs(),
        None => DEFAULT_TASK_TTL_SECS,
    };
    if ttl > MAX_TASK_TTL_SECS {
        return Err(ApiError::bad("a task may last at most 24h"));
    }
    let new = NewTask {
        entry_id: &entry.id,
        objective: &r.objective,
        scope: &scope,
        on_behalf_of: r.on_behalf_of.as_deref(),
        revoke_on_breach: r.revoke_on_breach,
        created_by: &who.token.name,
        ttl_secs: i64::try_from(ttl).unwrap_or(i64::MAX),
    };
    let rec = s.record_change(&who.token.name, "task_start", |t: &Task| {
        Change::new(
            &t.id,
            json!({
                "entry_id": t.entry_id,
                "objective": t.objective,
                "objective_sha256": t.objective_sha256,
                "scope": t.scope,
                "on_behalf_of": t.on_behalf_of,
                "expires_at": t.expires_at,
                "revoke_on_breach": t.revoke_on_breach,
            }),
        )
    });
    let t = s.store.create_task(&new, now_unix(), rec).await?;
    tracing::info!(admin = %who.token.name, task = %t.id, entry = %t.entry_id, "task started");
    Ok((StatusCode::CREATED, Json(shown(&t))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProcessRequest {
    pid: i64,
    start_ticks: i64,
}

/// `POST /v1/tasks/{id}/process`: binds a waiting task to its process (the
/// PID and start time on the entry's node), once.
pub(crate) async fn bind_process(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
    body: Result<JsonObject<ProcessRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::RunTasks)?;
    let JsonObject(r) = body?;
    if r.pid <= 1 || r.pid > i64::from(i32::MAX) || r.start_ticks < 0 {
        return Err(ApiError::bad("pid must be 2-2147483647 and start_ticks not negative"));
    }
    let t = visible_task(&s, &who, &id).await?;
    // Only its starter binds a task (or a trust-admin): another runner must
    // not point someone else's task at a process of its own.
    if t.created_by != who.token.name && who.token.role != "trust-admin" {
        return Err(ApiError::forbidden(format!(
            "task `{id}` was started by `{}`; only it binds the task",
            t.created_by
        )));
    }
    let entry = visible_entry(&s, &who, &t.entry_id).await?;
    let rec =
        s.record_change(&who.token.name, "task_bind", |t: &Task| Change::new(&t.id, json!({ "process": t.process })));
    let t = s.store.bind_task_process(&id, entry.parent_id.as_str(), r.pid, r.start_ticks, now_unix(), rec).await?;
    tracing::info!(task = %t.id, pid = r.pid, "task bound to its process");
    Ok(Json(shown(&t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskQuery {
    #[serde(default)]
    entry: Option<String>,
    #[serde(default)]
    all: Option<bool>,
}

/// `GET /v1/tasks?entry=E&all=true`: running tasks (with `all`, ended ones
/// too); an owner sees those of its own entries.
pub(crate) async fn list(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    q: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    if let Some(e) = &q.entry {
        visible_entry(&s, &who, e).await?;
    }
    let own = super::entries::own_entry_ids(&s, &who).await?;
    let list: Vec<serde_json::Value> = s
        .store
        .tasks(q.entry.as_deref(), !q.all.unwrap_or(false))
        .await?
        .iter()
        .filter(|t| own.as_ref().is_none_or(|ids| ids.contains(&t.entry_id)))
        .map(shown)
        .collect();
    Ok(Json(json!({ "tasks": list })))
}

/// `GET /v1/tasks/{id}`: the task and the credentials issued for it.
pub(crate) async fn show(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t = visible_task(&s, &who, &id).await?;
    let filter = CredentialFilter { task_id: Some(t.id.clone()), ..Default::default() };
    let credentials = s.store.credentials(&filter, 1000).await?;
    Ok(Json(json!({ "task": shown(&t), "credentials": credentials })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectiveRequest {
    objective: String,
}

/// `POST /v1/tasks/{id}/objective`: a new objective. Every credential of
/// the task is revoked at once and approvals are withdrawn; what is issued
/// next is decided under the new objective.
pub(crate) async fn change_objective(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
    body: Result<JsonObject<ObjectiveRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::RunTasks)?;
    let JsonObject(r) = body?;
    hallmark_core::check_objective(&r.objective).map_err(ApiError::bad)?;
    visible_task(&s, &who, &id).await?;
    let rec = s.record_change(&who.token.name, "task_objective", |(t, out): &(Task, RevokeOutcome)| {
        Change::new(
            &t.id,
            json!({
                "objective": t.objective,
                "objective_sha256": t.objective_sha256,
                "revoked": out.credentials,
            }),
        )
    });
    let (t, out) = s.store.change_task_objective(&id, &r.objective, now_unix(), rec).await?;
    s.revocation_notify.notify_one();
    tracing::warn!(admin = %who.token.name, task = %t.id, revoked = out.credentials.len(), "task objective changed: its credentials are revoked");
    Ok(Json(json!({ "task": shown(&t), "revoked": out.credentials })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveRequest {
    scope: String,
}

/// `POST /v1/tasks/{id}/approve`: approves one scope item, by the entry's
/// owner or a trust-admin, never by the identity that started the task.
pub(crate) async fn approve(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
    body: Result<JsonObject<ApproveRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ApproveTasks)?;
    let JsonObject(r) = body?;
    let t = visible_task(&s, &who, &id).await?;
    if t.created_by == who.token.name {
        return Err(ApiError::forbidden(format!(
            "`{}` started task `{id}` and cannot approve its scope: a second person approves",
            who.token.name
        )));
    }
    super::admin_tokens::independent_of(&s, &who.token.name, &t.created_by).await?;
    let audience = r.scope;
    let rec = s.record_change(&who.token.name, "task_approve", |t: &Task| {
        Change::new(&t.id, json!({ "scope": audience, "objective_sha256": t.objective_sha256 }))
    });
    let t = s.store.approve_task_scope(&id, &audience, &who.token.name, now_unix(), rec).await?;
    tracing::info!(admin = %who.token.name, task = %t.id, scope = %audience, "task scope approved");
    Ok(Json(shown(&t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/tasks/{id}/end`: ends the task; everything issued for it is
/// revoked.
pub(crate) async fn end(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(id): Path<String>,
    body: Result<JsonObject<EndRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::RunTasks)?;
    let JsonObject(r) = body?;
    let reason = r.reason.unwrap_or_else(|| "task ended".to_owned());
    if reason.trim().is_empty()
        || reason.len() > crate::revocation::MAX_REASON_LEN
        || reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad(format!(
            "reason must be 1-{} bytes with no control characters",
            crate::revocation::MAX_REASON_LEN
        )));
    }
    visible_task(&s, &who, &id).await?;
    let out =
        s.revoke(&RevokeTarget::Task(id.clone()), &reason, &who.token.name).await.map_err(super::error::revocation)?;
    let t = s.store.task(&id).await?.ok_or_else(|| ApiError::not_found(format!("task `{id}` not found")))?;
    Ok(Json(json!({ "task": shown(&t), "revoked": out.credentials })))
}
