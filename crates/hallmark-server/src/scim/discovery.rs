//! SCIM discovery (RFC 7644 §4): `ServiceProviderConfig`, `ResourceTypes`
//! and `Schemas`, built from the same tables the server works from
//! ([`super::schema`]). Other methods than GET answer 405 (the router's).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::error::ScimError;
use super::schema::{self, GROUP, RESOURCE_TYPE, SERVICE_PROVIDER_CONFIG, USER};
use super::wire::{self, Caller, ListParams, MAX_RESULTS};
use crate::state::ServerState;

/// `GET /ServiceProviderConfig`
pub async fn service_provider_config(_caller: Caller, headers: HeaderMap) -> Response {
    let base = wire::base_url(&headers);
    let body = json!({
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_RESULTS },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A Hallmark admin token of role `scim` (hallmark admin token create --role scim)",
            "primary": true,
        }],
        "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") },
    });
    wire::scim_json(StatusCode::OK, &body)
}

fn resource_types(base: &str) -> Vec<Value> {
    [
        ("User", "/Users", USER, "People, provisioned by the identity provider"),
        ("Group", "/Groups", GROUP, "Groups of people"),
    ]
    .into_iter()
    .map(|(id, endpoint, schema, description)| {
        json!({
            "schemas": [RESOURCE_TYPE],
            "id": id,
            "name": id,
            "endpoint": endpoint,
            "description": description,
            "schema": schema,
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{id}") },
        })
    })
    .collect()
}

/// The whole of a discovery collection as one page: filters do not apply
/// to it (RFC 7644 §4).
fn all(list: Vec<Value>) -> Response {
    ListParams { start: 1, count: MAX_RESULTS, ..Default::default() }.page(list)
}

/// `GET /ResourceTypes`
pub async fn list_resource_types(_caller: Caller, headers: HeaderMap) -> Response {
    all(resource_types(&wire::base_url(&headers)))
}

/// `GET /ResourceTypes/{id}`
pub async fn resource_type(_caller: Caller, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ScimError> {
    resource_types(&wire::base_url(&headers))
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .map(|r| wire::scim_json(StatusCode::OK, &r))
        .ok_or_else(|| ScimError::not_found(format!("no resource type `{id}`")))
}

fn schemas(base: &str) -> Vec<Value> {
    schema::ALL
        .iter()
        .map(|s| {
            let mut v = schema::schema_json(s);
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "meta".into(),
                    json!({ "resourceType": "Schema", "location": format!("{base}/Schemas/{}", s.id) }),
                );
            }
            v
        })
        .collect()
}

/// `GET /Schemas`
pub async fn list_schemas(_caller: Caller, headers: HeaderMap) -> Response {
    all(schemas(&wire::base_url(&headers)))
}

/// `GET /Schemas/{id}`
pub async fn schema(_caller: Caller, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ScimError> {
    schemas(&wire::base_url(&headers))
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .map(|s| wire::scim_json(StatusCode::OK, &s))
        .ok_or_else(|| ScimError::not_found(format!("no schema `{id}`")))
}

/// `POST /.search` at the root: users and groups at once (RFC 7644 §3.4.3).
pub async fn search_all(
    State(s): State<Arc<ServerState>>,
    _caller: Caller,
    headers: HeaderMap,
    wire::Body(body): wire::Body,
) -> Result<Response, ScimError> {
    let p = ListParams::from_search(&body)?;
    let f = p.filter.as_deref().map(super::filter::parse).transpose()?;
    let base = wire::base_url(&headers);
    let mut users = super::users::matching(&s, &base, f.as_ref()).await?;
    users.iter_mut().for_each(|v| schema::project(&schema::USER_SCHEMA, v, &p.attributes, &p.excluded));
    let mut groups = super::groups::matching(&s, &base, f.as_ref()).await?;
    groups.iter_mut().for_each(|v| schema::project(&schema::GROUP_SCHEMA, v, &p.attributes, &p.excluded));
    users.extend(groups);
    Ok(p.page(users))
}
