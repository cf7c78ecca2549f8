//! Admin API: accountable owners, `/v1/owners`. Every entry names an
//! existing, active owner, and lies within its scopes: the SPIFFE-ID paths
//! and nodes a trust-admin gave it. Each change is written with its audit
//! record in one transaction.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hallmark_core::{OwnerScopes, ScopeLists, ValidEntrySpec};
use hallmark_store::{Owner, OwnerPerson};
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::error::ApiError;
use super::guard::JsonObject;
use super::roles::Perm;
use crate::audit::Change;
use crate::state::ServerState;

/// Every entry names an existing, active owner: its scopes.
pub(crate) async fn owner_scopes(s: &ServerState, name: &str) -> Result<OwnerScopes, ApiError> {
    match s.store.owner(name).await? {
        Some(o) if o.active => OwnerScopes::parse(&o.paths, &o.nodes, &s.settings.trust_domain).map_err(|e| {
            tracing::error!(owner = name, error = %e, "stored owner scopes do not parse");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("owner `{name}` has unreadable scopes: {e}"))
        }),
        Some(_) => {
            Err(ApiError::bad(format!("owner `{name}` is deactivated; transfer its entries to an active owner")))
        }
        None => Err(ApiError::bad(format!(
            "owner `{name}` does not exist (create it with `hallmark owner create {name} --contact EMAIL`)"
        ))),
    }
}

/// The entry's owner exists, is active, and its scopes admit the entry's
/// SPIFFE ID and parent; an `owner:NAME` caller is confined to them.
pub(crate) async fn owner_admits(s: &ServerState, who: &Admin, v: &ValidEntrySpec) -> Result<(), ApiError> {
    let scopes = owner_scopes(s, &v.owner).await?;
    scopes.check(&v.owner, &v.spiffe_id, &v.parent_id, who.owner_scope().is_some()).map_err(ApiError::forbidden)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnerRequest {
    name: String,
    contact: String,
    #[serde(default)]
    description: String,
    /// SPIFFE-ID path scopes (trust-admin only).
    #[serde(default)]
    paths: Vec<String>,
    /// Nodes its entries may use (trust-admin only).
    #[serde(default)]
    nodes: Vec<String>,
}

/// `POST /v1/owners`
pub(crate) async fn create(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    body: Result<JsonObject<OwnerRequest>, ApiError>,
) -> Result<(StatusCode, Json<Owner>), ApiError> {
    who.may(Perm::ManageOwners)?;
    let JsonObject(r) = body?;
    hallmark_core::validate_owner(&r.name).map_err(ApiError::bad)?;
    let contact_ok = r.contact.len() <= 254
        && r.contact.contains('@')
        && !r.contact.starts_with('@')
        && !r.contact.ends_with('@')
        && !r.contact.chars().any(|c| c.is_whitespace() || c.is_control());
    if !contact_ok {
        return Err(ApiError::bad(format!("invalid contact `{}`: an email address is expected", r.contact)));
    }
    if r.description.len() > 1024 || r.description.chars().any(char::is_control) {
        return Err(ApiError::bad("a description has at most 1024 characters and no control characters"));
    }
    let scopes = ScopeLists { paths: r.paths, nodes: r.nodes };
    if !scopes.paths.is_empty() || !scopes.nodes.is_empty() {
        who.may(Perm::ScopeOwners)?;
    }
    let scopes = checked_scopes(&s, &r.name, &scopes).await?;
    let rec = s.record_change(&who.token.name, "owner_create", |o: &Owner| {
        Change::new(&o.name, json!({ "contact": o.contact, "paths": o.paths, "nodes": o.nodes }))
    });
    let o = s.store.create_owner(&r.name, &r.contact, &r.description, &scopes, rec).await?;
    tracing::info!(admin = %who.token.name, owner = %o.name, "owner created");
    Ok((StatusCode::CREATED, Json(o)))
}

/// Validates scopes for owner `name` and refuses path scopes that overlap
/// another owner's: a path belongs to one owner. Returns them normalised.
async fn checked_scopes(s: &ServerState, name: &str, lists: &ScopeLists) -> Result<ScopeLists, ApiError> {
    let td = &s.settings.trust_domain;
    let mine = OwnerScopes::parse(&lists.paths, &lists.nodes, td).map_err(ApiError::bad)?;
    for other in s.store.owners().await?.into_iter().filter(|o| o.name != name) {
        let theirs = OwnerScopes::parse(&other.paths, &[], td).unwrap_or_default();
        for p in &mine.paths {
            if let Some(q) = theirs.paths.iter().find(|q| q.overlaps(p)) {
                return Err(ApiError::conflict(format!(
                    "path scope `{p}` overlaps `{q}` of owner `{}`: a path belongs to one owner",
                    other.name
                )));
            }
        }
    }
    Ok(ScopeLists::from(&mine))
}

/// `PUT /v1/owners/{name}/scopes`: replaces an owner's path scopes and
/// nodes (trust-admin). Entries already registered are not touched.
pub(crate) async fn set_scopes(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
    body: Result<JsonObject<ScopeLists>, ApiError>,
) -> Result<Json<Owner>, ApiError> {
    who.may(Perm::ScopeOwners)?;
    let JsonObject(lists) = body?;
    let scopes = checked_scopes(&s, &name, &lists).await?;
    let rec = s.record_change(&who.token.name, "owner_scopes", |o: &Owner| {
        Change::new(&o.name, json!({ "paths": o.paths, "nodes": o.nodes }))
    });
    let o = s.store.set_owner_scopes(&name, &scopes, rec).await?;
    tracing::info!(admin = %who.token.name, owner = %name, paths = ?o.paths, nodes = ?o.nodes, "owner scopes set");
    Ok(Json(o))
}

/// An owner as the API shows it: its record, and when it is linked to the
/// person accountable for it, `person` (the id), `person_user_name` and
/// `person_left`.
fn shown(o: &Owner, links: &[OwnerPerson]) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    let link = links.iter().find(|l| l.owner == o.name);
    super::guard::set_field(&mut v, "person", json!(link.map(|l| &l.person_id)));
    super::guard::set_field(&mut v, "person_user_name", json!(link.map(|l| &l.user_name)));
    super::guard::set_field(&mut v, "person_left", json!(link.is_some_and(|l| l.left)));
    v
}

/// `GET /v1/owners`
pub(crate) async fn list(State(s): State<Arc<ServerState>>, who: Admin) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let links = s.store.owner_people().await?;
    let owners: Vec<serde_json::Value> = s.store.owners().await?.iter().map(|o| shown(o, &links)).collect();
    Ok(Json(json!({ "owners": owners })))
}

/// `GET /v1/owners/{name}`: the owner, with how many entries it has.
pub(crate) async fn show(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ReadEntries)?;
    let o = s.store.owner(&name).await?.ok_or_else(|| ApiError::not_found(format!("owner `{name}` not found")))?;
    let entries = s.store.entries(None).await?.into_iter().filter(|e| e.owner == name).count();
    let mut v = shown(&o, &s.store.owner_people().await?);
    super::guard::set_field(&mut v, "entries", json!(entries));
    Ok(Json(v))
}

/// `POST /v1/owners/{name}/deactivate`: its entries become orphans until
/// transferred.
pub(crate) async fn deactivate(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
) -> Result<Json<Owner>, ApiError> {
    who.may(Perm::ManageOwners)?;
    let rec = s.record_change(&who.token.name, "owner_deactivate", |o: &Owner| Change::new(&o.name, json!({})));
    let o = s.store.deactivate_owner(&name, rec).await?;
    tracing::info!(admin = %who.token.name, owner = %name, "owner deactivated; its entries are orphans until transferred");
    Ok(Json(o))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferRequest {
    to: String,
}

/// `POST /v1/owners/{name}/transfer`: every entry of the owner moves to
/// another, each within the new owner's scopes.
pub(crate) async fn transfer(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
    body: Result<JsonObject<TransferRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageOwners)?;
    let JsonObject(r) = body?;
    if s.store.owner(&name).await?.is_none() {
        return Err(ApiError::not_found(format!("owner `{name}` not found")));
    }
    let target = owner_scopes(&s, &r.to).await?;
    for e in s.store.entries(None).await?.iter().filter(|e| e.owner == name) {
        target
            .check(&r.to, &e.spiffe_id, &e.parent_id, false)
            .map_err(|err| ApiError::conflict(format!("entry `{}` cannot move to owner `{}`: {err}", e.id, r.to)))?;
    }
    let rec = s.record_change(&who.token.name, "owner_transfer", |moved: &u64| {
        Change::new(&name, json!({ "to": r.to, "entries": moved }))
    });
    let moved = s.store.transfer_entries(&name, &r.to, rec).await?;
    s.entries_written().await;
    tracing::info!(admin = %who.token.name, from = %name, to = %r.to, moved, "entries transferred");
    Ok(Json(json!({ "from": name, "to": r.to, "entries": moved })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkRequest {
    /// A person's SCIM id or userName; null unlinks. Required (a missing
    /// field is no unlinking by accident).
    person: serde_json::Value,
}

/// `POST /v1/owners/{name}/person`: links the owner to the person
/// accountable for it (`{"person": null}` unlinks). When that person
/// leaves, the owner's machines keep their identities and are reported
/// "owner left" (`report orphans`) until transferred.
pub(crate) async fn link_person(
    State(s): State<Arc<ServerState>>,
    who: Admin,
    Path(name): Path<String>,
    body: Result<JsonObject<LinkRequest>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.may(Perm::ManageOwners)?;
    let JsonObject(r) = body?;
    let person = match &r.person {
        serde_json::Value::Null => None,
        serde_json::Value::String(named) => {
            if named.is_empty() || named.len() > 2048 || named.chars().any(char::is_control) {
                return Err(ApiError::bad("`person` must be 1-2048 bytes with no control characters"));
            }
            Some(super::revocations::person_id(&s, named).await?)
        }
        _ => return Err(ApiError::bad("`person` is a person's id or userName, or null to unlink")),
    };
    let rec = s.record_change(&who.token.name, "owner_person_link", |l: &Option<OwnerPerson>| {
        Change::new(
            &name,
            json!({ "person": l.as_ref().map(|l| &l.person_id), "user_name": l.as_ref().map(|l| &l.user_name) }),
        )
    });
    let link = s.store.link_owner_person(&name, person.as_deref(), rec).await?;
    tracing::info!(admin = %who.token.name, owner = %name, person = ?person, "owner linked to a person");
    let o = s.store.owner(&name).await?.ok_or_else(|| ApiError::not_found(format!("owner `{name}` not found")))?;
    Ok(Json(shown(&o, &link.into_iter().collect::<Vec<_>>())))
}
