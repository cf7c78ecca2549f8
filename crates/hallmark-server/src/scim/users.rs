//! SCIM Users (`/scim/v2/Users`): people as the identity provider
//! provisions them. Creating one is a joiner; `active: false` (by PUT or
//! PATCH) or a DELETE makes a leaver, whose certificates are revoked at
//! once; `active: true` again is a rejoiner ([`super::lifecycle`]). A
//! deleted person's row stays (logins are refused, owner links report
//! "owner left"), but SCIM no longer finds it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hallmark_core::now_unix;
use hallmark_core::time::rfc3339;
use hallmark_store::{Person, PersonWrite};
use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::filter::{self, Filter};
use super::schema::{self, USER, USER_SCHEMA};
use super::wire::{self, Body, Caller, ListParams};
use super::{lifecycle, patch};
use crate::state::ServerState;

/// A person as SCIM shows it: its stored resource, `id`, its groups and `meta`.
pub fn render(p: &Person, groups: &[(String, String)], base: &str) -> Value {
    let mut o = p.resource.as_object().cloned().unwrap_or_default();
    o.insert("schemas".into(), json!([USER]));
    o.insert("id".into(), json!(p.id));
    if !groups.is_empty() {
        let list: Vec<Value> = groups
            .iter()
            .map(|(id, name)| json!({ "value": id, "$ref": format!("{base}/Groups/{id}"), "display": name }))
            .collect();
        o.insert("groups".into(), Value::Array(list));
    }
    o.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": rfc3339(p.created_at),
            "lastModified": rfc3339(p.updated_at),
            "location": format!("{base}/Users/{}", p.id),
            "version": wire::etag(p.version),
        }),
    );
    Value::Object(o)
}

/// What the store keeps of a checked User: the primary email (or else the
/// first), and `active` unless it is false.
fn person_write(doc: Map<String, Value>) -> Result<PersonWrite, ScimError> {
    let user_name = schema::text(&doc, "userName").unwrap_or_default().to_owned();
    if user_name.trim().is_empty() || user_name.chars().any(char::is_control) {
        return Err(ScimError::invalid_value("`userName` must be non-empty text without control characters"));
    }
    let emails: Vec<&Value> =
        doc.get("emails").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let email = emails
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(PersonWrite {
        user_name,
        external_id: schema::text(&doc, "externalId").map(str::to_owned),
        email,
        display_name: schema::text(&doc, "displayName").map(str::to_owned),
        active: doc.get("active").and_then(Value::as_bool) != Some(false),
        resource: Value::Object(doc),
    })
}

/// Every person not deleted that `filter` matches, rendered.
pub async fn matching(s: &ServerState, base: &str, filter: Option<&Filter>) -> Result<Vec<Value>, ScimError> {
    // `userName eq "x"`, what identity providers ask before creating
    // someone, is one indexed lookup; anything else is a scan.
    let people = match filter.and_then(Filter::equality) {
        Some((attr, v)) if attr.eq_ignore_ascii_case("userName") => {
            s.store.person_by_user_name(v).await?.filter(|p| p.deleted_at.is_none()).into_iter().collect()
        }
        _ => s.store.people().await?,
    };
    let mut groups: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (person, id, name) in s.store.memberships().await? {
        groups.entry(person).or_default().push((id, name));
    }
    let exact = |a: &str, sub: Option<&str>| USER_SCHEMA.case_exact(a, sub);
    Ok(people
        .iter()
        .map(|p| render(p, groups.get(&p.id).map(Vec::as_slice).unwrap_or_default(), base))
        .filter(|v| filter.is_none_or(|f| f.matches(v, &exact)))
        .collect())
}

/// `GET /Users`
pub async fn list(
    State(s): State<Arc<ServerState>>,
    _caller: Caller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ScimError> {
    let p = ListParams::from_query(q.as_deref())?;
    search_with(&s, &headers, &p).await
}

/// `POST /Users/.search`
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
        schema::project(&USER_SCHEMA, v, &p.attributes, &p.excluded);
    }
    Ok(p.page(all))
}

async fn shown(s: &ServerState, p: &Person, headers: &HeaderMap) -> Result<Value, ScimError> {
    Ok(render(p, &s.store.groups_of(&p.id).await?, &wire::base_url(headers)))
}

fn not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("no user `{id}`"))
}

/// `GET /Users/{id}`
pub async fn show(
    State(s): State<Arc<ServerState>>,
    _caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ScimError> {
    let p = ListParams::from_query(q.as_deref())?;
    let person = s.store.person(&id).await?.filter(|p| p.deleted_at.is_none()).ok_or_else(|| not_found(&id))?;
    let mut v = shown(&s, &person, &headers).await?;
    schema::project(&USER_SCHEMA, &mut v, &p.attributes, &p.excluded);
    Ok(wire::resource(StatusCode::OK, &v))
}

/// `POST /Users`: a joiner. A userName already taken (deleted people's
/// included) is 409 `uniqueness`.
pub async fn create(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ScimError> {
    let w = person_write(schema::normalize(&USER_SCHEMA, &body)?)?;
    let change = s.store.create_person(&w, now_unix(), lifecycle::person_recorder(&s, caller.name())).await?;
    tracing::info!(person = %change.after.id, user_name = %change.after.user_name, by = caller.name(), "person joined (SCIM)");
    lifecycle::after_person_change(&s, &change, caller.name()).await?;
    Ok(wire::resource(StatusCode::CREATED, &shown(&s, &change.after, &headers).await?))
}

/// `PUT /Users/{id}`: the resource replaced by the body (read-only
/// attributes ignored).
pub async fn replace(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ScimError> {
    let w = person_write(schema::normalize(&USER_SCHEMA, &body)?)?;
    let rec = lifecycle::person_recorder(&s, caller.name());
    let change = s
        .store
        .update_person(
            &id,
            now_unix(),
            |before| {
                wire::check_if_match(&headers, before.version)?;
                Ok::<_, ScimError>(w)
            },
            rec,
        )
        .await
        .map_err(|e| missing(e, &id))?;
    lifecycle::after_person_change(&s, &change, caller.name()).await?;
    Ok(wire::resource(StatusCode::OK, &shown(&s, &change.after, &headers).await?))
}

/// `PATCH /Users/{id}`
pub async fn modify(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ScimError> {
    let rec = lifecycle::person_recorder(&s, caller.name());
    let change = s
        .store
        .update_person(
            &id,
            now_unix(),
            |before| {
                wire::check_if_match(&headers, before.version)?;
                let mut doc = before.resource.as_object().cloned().unwrap_or_default();
                patch::apply(&USER_SCHEMA, &mut doc, &body)?;
                person_write(schema::normalize(&USER_SCHEMA, &doc)?)
            },
            rec,
        )
        .await
        .map_err(|e| missing(e, &id))?;
    lifecycle::after_person_change(&s, &change, caller.name()).await?;
    Ok(wire::resource(StatusCode::OK, &shown(&s, &change.after, &headers).await?))
}

/// `DELETE /Users/{id}`: a leaver; the row stays.
pub async fn delete(
    State(s): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let rec = lifecycle::person_recorder(&s, caller.name());
    let change = s
        .store
        .delete_person(&id, now_unix(), |p| wire::check_if_match(&headers, p.version), rec)
        .await
        .map_err(|e| missing(e, &id))?;
    lifecycle::after_person_change(&s, &change, caller.name()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A datastore "not found" names the user as SCIM knows it.
fn missing(e: ScimError, id: &str) -> ScimError {
    if e.status == StatusCode::NOT_FOUND { not_found(id) } else { e }
}
