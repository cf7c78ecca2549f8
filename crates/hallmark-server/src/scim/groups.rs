//! SCIM Groups (`/scim/v2/Groups`): groups of people. A change of members
//! (or of the name) is a mover for each person whose group names changed:
//! recorded with the old and new names; policy decides on the new ones at
//! the person's next login. Members are people only: a member that names
//! no provisioned person is `invalidValue`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hallmark_core::now_unix;
use hallmark_core::time::rfc3339;
use hallmark_store::{GroupWrite, ScimGroup};
use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::filter::{self, Filter};
use super::schema::{self, GROUP, GROUP_SCHEMA};
use super::wire::{self, Body, Caller, ListParams};
use super::{lifecycle, patch};
use crate::state::ServerState;

/// A group as SCIM shows it.
pub fn render(g: &ScimGroup, base: &str) -> Value {
    let mut o = g.resource.as_object().cloned().unwrap_or_default();
    o.insert("schemas".into(), json!([GROUP]));
    o.insert("id".into(), json!(g.id));
    if !g.members.is_empty() {
        let list: Vec<Value> = g
            .members
            .iter()
            .map(|p| json!({ "value": p, "$ref": format!("{base}/Users/{p}"), "type": "User" }))
            .collect();
        o.insert("members".into(), Value::Array(list));
    }
    o.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": rfc3339(g.created_at),
            "lastModified": rfc3339(g.updated_at),
            "location": format!("{base}/Groups/{}", g.id),
            "version": wire::etag(g.version),
        }),
    );
    Value::Object(o)
}

/// A group's writable attributes as a PATCH works on them: its stored
/// resource and its members (`{"value": ID}`).
fn document(g: &ScimGroup) -> Map<String, Value> {
    let mut doc = g.resource.as_object().cloned().unwrap_or_default();
    if !g.members.is_empty() {
        doc.insert("members".into(), Value::Array(g.members.iter().map(|m| json!({ "value": m })).collect()));
    }
    doc
}

/// What the store keeps of a checked Group: members apart, by id.
fn group_write(mut doc: Map<String, Value>) -> Result<GroupWrite, ScimError> {
    let display_name = schema::text(&doc, "displayName").unwrap_or_default().to_owned();
    if display_name.trim().is_empty() || display_name.chars().any(char::is_control) {
        return Err(ScimError::invalid_value("`displayName` must be non-empty text without control characters"));
    }
    let mut members = Vec::new();
    for m in doc.remove("members").and_then(|m| m.as_array().cloned()).unwrap_or_default() {
        if let Some(t) = m.get("type").and_then(Value::as_str)
            && !t.eq_ignore_ascii_case("User")
        {
            return Err(ScimError::invalid_value(format!("members are people (type User), not `{t}`")));
        }
        let Some(id) = m.get("value").and_then(Value::as_str) else {
            return Err(ScimError::invalid_value("each member needs a `value`: the person's id"));
        };
        if !members.iter().any(|x| x == id) {
            members.push(id.to_owned());
        }
    }
    Ok(GroupWrite {
        display_name,
        external_id: schema::text(&doc, "externalId").map(str::to_owned),
        resource: Value::Object(doc),
        members,
    })
}

/// 400 unless every one of `ids` not in `known` names a provisioned person.
/// The store leaves out a member deleted meanwhile by itself.
async fn check_members(s: &ServerState, ids: &[String], known: &[String]) -> Result<(), ScimError> {
    for id in ids.iter().filter(|id| !known.contains(id)) {
        if s.store.person(id).await?.is_none_or(|p| p.deleted_at.is_some()) {
            return Err(ScimError::invalid_value(format!("member `{id}` is no provisioned user")));
        }
    }
    Ok(())
}

/// Every group `filter` matches, rendered.
pub async fn matching(s: &ServerState, base: &str, filter: Option<&Filter>) -> Result<Vec<Value>, ScimError> {
    let exact = |a: &str, sub: Option<&str>| GROUP_SCHEMA.case_exact(a, sub);
    Ok(s.store
        .scim_groups()
        .await?
        .iter()
        .map(|g| render(g, base))
        .filter(|v| filter.is_none_or(|f| f.matches(v, &exact)))
        .collect())
}

/// `GET /Groups`
pub async fn list(
    State(s): State<Arc<ServerState>>,
    _caller: Caller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ScimError> {
    search_with(&s, &headers, &ListParams::from_query(q.as_deref())?).await
}

/// `POST /Groups/.search`
pub async fn search(
    State(s): State<Arc<ServerState>>,
    _caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ScimError> {
    search_with(&s, &headers, &ListParams::from_search(&body)?).await
}

async fn search_with(s: &ServerState, headers: &HeaderMap, p: &ListParams) -> Result<Response, ScimError> {
    let f = p.filter.as_deref().map(filter::parse).transpose()?;
    let mut all = matching(s, &wire::base_url(headers), f.as_ref()).await?;
    for v in &mut all {
        schema::project(&GROUP_SCHEMA, v, &p.attributes, &p.excluded);
    }
    Ok(p.page(all))
}

fn not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("no group `{id}`"))
}

fn missing(e: ScimError, id: &str) -> ScimError {
    if e.status == StatusCode::NOT_FOUND { not_found(id) } else { e }
}

async fn current(s: &ServerState, id: &str) -> Result<ScimGroup, ScimError> {
    s.store.scim_group(id).await?.ok_or_else(|| not_found(id))
}

/// `GET /Groups/{id}`
pub async fn show(
    State(s): State<Arc<ServerState>>,
    _caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ScimError> {
    let p = ListParams::from_query(q.as_deref())?;
    let mut v = render(&current(&s, &id).await?, &wire::base_url(&headers));
    schema::project(&GROUP_SCHEMA, &mut v, &p.attributes, &p.excluded);
    Ok(wire::resource(StatusCode::OK, &v))
}

/// `POST /Groups`: its members are movers (they gain a group).
pub async fn create(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ScimError> {
    let w = group_write(schema::normalize(&GROUP_SCHEMA, &body)?)?;
    check_members(&s, &w.members, &[]).await?;
    let change = s.store.create_group(&w, now_unix(), lifecycle::group_recorder(&s, caller.name())).await?;
    lifecycle::after_group_change(&change, caller.name());
    let g = change.after.ok_or_else(|| ScimError::internal("the created group is missing", &"no group"))?;
    Ok(wire::resource(StatusCode::CREATED, &render(&g, &wire::base_url(&headers))))
}

/// `PUT /Groups/{id}`
pub async fn replace(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ScimError> {
    let w = group_write(schema::normalize(&GROUP_SCHEMA, &body)?)?;
    check_members(&s, &w.members, &current(&s, &id).await?.members).await?;
    let rec = lifecycle::group_recorder(&s, caller.name());
    let change = s
        .store
        .update_group(
            &id,
            now_unix(),
            |g| {
                wire::check_if_match(&headers, g.version)?;
                Ok::<_, ScimError>(w)
            },
            rec,
        )
        .await
        .map_err(|e| missing(e, &id))?;
    answer(change, caller.name(), &headers)
}

fn patched(g: &ScimGroup, body: &Map<String, Value>) -> Result<GroupWrite, ScimError> {
    let mut doc = document(g);
    patch::apply(&GROUP_SCHEMA, &mut doc, body)?;
    group_write(schema::normalize(&GROUP_SCHEMA, &doc)?)
}

/// `PATCH /Groups/{id}`: members added and removed are movers.
pub async fn modify(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ScimError> {
    // The members the patch would add are checked against the group as it
    // is now (a check needs the datastore, which the write's own step below
    // cannot wait on); the write applies the patch again to the locked row.
    let now = current(&s, &id).await?;
    check_members(&s, &patched(&now, &body)?.members, &now.members).await?;
    let rec = lifecycle::group_recorder(&s, caller.name());
    let change = s
        .store
        .update_group(
            &id,
            now_unix(),
            |g| {
                wire::check_if_match(&headers, g.version)?;
                patched(g, &body)
            },
            rec,
        )
        .await
        .map_err(|e| missing(e, &id))?;
    answer(change, caller.name(), &headers)
}

fn answer(change: hallmark_store::GroupChange, actor: &str, headers: &HeaderMap) -> Result<Response, ScimError> {
    lifecycle::after_group_change(&change, actor);
    let g = change.after.ok_or_else(|| ScimError::internal("the updated group is missing", &"no group"))?;
    Ok(wire::resource(StatusCode::OK, &render(&g, &wire::base_url(headers))))
}

/// `DELETE /Groups/{id}`: its members move out of it.
pub async fn delete(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let rec = lifecycle::group_recorder(&s, caller.name());
    let change = s
        .store
        .delete_group(&id, |g| wire::check_if_match(&headers, g.version), rec)
        .await
        .map_err(|e| missing(e, &id))?;
    lifecycle::after_group_change(&change, caller.name());
    Ok(StatusCode::NO_CONTENT.into_response())
}
