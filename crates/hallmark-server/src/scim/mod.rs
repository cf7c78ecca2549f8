//! A SCIM 2.0 service provider (RFC 7643, RFC 7644) at `/scim/v2`: the
//! identity provider provisions people and groups, and Hallmark acts on
//! joiners, movers and leavers (issue 19).
//!
//! Callers authenticate with an admin token whose role may provision
//! (`scim`; see `admin::roles`); every answer, errors included, is
//! `application/scim+json`. The modules form a tree under this router:
//!
//! ```text
//! mod (router) ─> users, groups ─> lifecycle (joiner, mover, leaver: records, revocation)
//!                               ─> patch ─> filter (paths)
//!              ─> discovery     ─> schema (the one attribute table) ─> error
//! every handler ─> wire (caller, body, list parameters, answers) ─> error
//! ```

mod discovery;
mod error;
pub mod filter;
mod groups;
mod lifecycle;
mod patch;
mod schema;
mod users;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use error::ScimError;

use crate::state::ServerState;

/// The SCIM routes, to be nested at `/scim/v2` in the admin router (whose
/// body limit and request hygiene apply).
pub fn router() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/Users", get(users::list).post(users::create))
        .route("/Users/.search", post(users::search))
        .route("/Users/{id}", get(users::show).put(users::replace).patch(users::modify).delete(users::delete))
        .route("/Groups", get(groups::list).post(groups::create))
        .route("/Groups/.search", post(groups::search))
        .route("/Groups/{id}", get(groups::show).put(groups::replace).patch(groups::modify).delete(groups::delete))
        .route("/.search", post(discovery::search_all))
        .route("/ServiceProviderConfig", get(discovery::service_provider_config))
        .route("/ResourceTypes", get(discovery::list_resource_types))
        .route("/ResourceTypes/{id}", get(discovery::resource_type))
        .route("/Schemas", get(discovery::list_schemas))
        .route("/Schemas/{id}", get(discovery::schema))
        .fallback(|| async { ScimError::not_found("no such SCIM endpoint") })
}
