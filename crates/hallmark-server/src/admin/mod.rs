//! The admin HTTP/JSON API: the router, and a module per concern.
//!
//! Every `/v1` route but the bundle, the CRLs, token exchange (`/v1/token`,
//! where the caller's actor token authenticates it) and people's logins
//! (`/v1/login/start`, `/v1/login`, where the ID token does) needs a bearer
//! token; tokens
//! are stored only as SHA-256 hashes. The modules form a tree, and only this
//! router sits above the handlers:
//!
//! ```text
//! mod (router) ─> entries, owners, policy, exceptions, admin_tokens, nodes,
//!                 credentials, reports, audit, revocations, authorities, bundle,
//!                 tasks, token (-> crate::token_exchange), people (-> crate::human),
//!                 /scim/v2 (-> crate::scim, its own router)
//!                   (one file per resource; a handler may use another's helper,
//!                    e.g. entries -> owners for the owner's scopes, audit ->
//!                    credentials for the evidence sets)
//!              ─> listener (serving it), guard (request hygiene)
//! every handler ─> roles (what a role may do) ─> auth (who is calling) ─> error
//!               ─> guard (JSON object bodies) ─> error
//! ```
//!
//! A change a handler makes is written with its audit record in one
//! transaction ([`crate::ServerState::record_change`]).

mod admin_tokens;
mod audit;
mod auth;
mod authorities;
mod bundle;
mod credentials;
mod entries;
mod error;
mod exceptions;
mod guard;
pub mod listener;
mod metrics;
mod nodes;
mod owners;
mod people;
mod policy;
mod reports;
mod revocations;
pub mod roles;
mod tasks;
mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};

pub use auth::{Admin, PeerAddr};
pub use entries::{MAX_BATCH_BODY, MAX_ENTRY_BATCH};
pub use error::ApiError;
pub(crate) use error::ErrorMessage;
pub use nodes::NewJoinToken;

use crate::state::ServerState;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// The admin router.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::serve))
        .route("/bundle", get(bundle::spiffe_bundle))
        .route("/v1/bundle", get(bundle::bundle))
        // No admin token: the caller authenticates with its actor token.
        .route("/v1/token", post(token::exchange))
        // No admin token: the person's ID token authenticates the login.
        .route("/v1/login/start", post(people::start))
        .route("/v1/login", post(people::login))
        .route("/v1/people/recoveries", post(people::request_recovery).get(people::list_recoveries))
        .route("/v1/people/recoveries/{id}", get(people::show_recovery))
        .route("/v1/people/recoveries/{id}/verify", post(people::verify_recovery))
        .route("/v1/people/recoveries/{id}/approve", post(people::approve_recovery))
        .route("/v1/people/recoveries/{id}/cancel", post(people::cancel_recovery))
        .route("/v1/people/break-glass", post(people::grant_break_glass).get(people::list_break_glass))
        .route("/v1/people/break-glass/{id}/revoke", post(people::revoke_break_glass))
        .route("/v1/people/break-glass/uses/{id}/review", post(people::review_break_glass))
        .route("/v1/entries", post(entries::create).get(entries::list))
        .route("/v1/entries/batch", post(entries::create_batch).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route("/v1/entries/{id}", get(entries::show).put(entries::update).delete(entries::delete))
        .route("/v1/entries/{id}/denials", get(entries::denials))
        .route("/v1/join-tokens", post(nodes::create_join_token).get(nodes::list_join_tokens))
        .route("/v1/join-tokens/{id}", delete(nodes::revoke_join_token))
        .route("/v1/admin-tokens", post(admin_tokens::create).get(admin_tokens::list))
        .route("/v1/admin-tokens/{name}/revoke", post(admin_tokens::revoke))
        .route("/v1/admin-tokens/{name}/rotate", post(admin_tokens::rotate))
        .route("/v1/credentials", get(credentials::list))
        .route("/v1/credentials/{id}", get(credentials::show))
        .route("/v1/reports/{kind}", get(reports::report))
        .route("/v1/audit", get(audit::export))
        // Up to 10 000 kept checkpoints fit the larger body limit of batches.
        .route(
            "/v1/audit/verify",
            get(audit::verify).post(audit::verify_with).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/owners", post(owners::create).get(owners::list))
        .route("/v1/owners/{name}", get(owners::show))
        .route("/v1/owners/{name}/deactivate", post(owners::deactivate))
        .route("/v1/owners/{name}/transfer", post(owners::transfer))
        .route("/v1/owners/{name}/scopes", put(owners::set_scopes))
        .route("/v1/policy", get(policy::show).put(policy::set))
        .route("/v1/policy/versions", get(policy::history))
        .route("/v1/policy/versions/{version}", get(policy::version))
        .route("/v1/exceptions", post(exceptions::request).get(exceptions::list))
        .route("/v1/exceptions/{id}/approve", post(exceptions::approve))
        .route("/v1/exceptions/{id}/revoke", post(exceptions::revoke))
        .route("/v1/revocations", post(revocations::revoke).get(revocations::list))
        .route("/v1/tasks", post(tasks::create).get(tasks::list))
        .route("/v1/tasks/{id}", get(tasks::show))
        .route("/v1/tasks/{id}/process", post(tasks::bind_process))
        .route("/v1/tasks/{id}/objective", post(tasks::change_objective))
        .route("/v1/tasks/{id}/approve", post(tasks::approve))
        .route("/v1/tasks/{id}/end", post(tasks::end))
        .route("/v1/nodes", get(nodes::list_nodes))
        .route("/v1/nodes/{id}/unban", post(nodes::unban_node))
        .route("/v1/authorities", get(authorities::list))
        .route("/v1/authorities/prepare", post(authorities::prepare))
        .route("/v1/authorities/activate", post(authorities::activate))
        .route("/v1/authorities/{id}/taint", post(authorities::taint))
        .route("/v1/authorities/{id}/revoke", post(authorities::revoke))
        .route("/v1/crl/{id}", get(bundle::crl))
        .route("/v1/owners/{name}/person", post(owners::link_person))
        // The SCIM service provider (its own errors and media type).
        .nest("/scim/v2", crate::scim::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(guard::refuse_nul_in_uri))
        .layer(axum::middleware::from_fn(guard::json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::record_refusals))
        .with_state(state)
}

/// `GET /ready`: the datastore answers.
async fn ready(State(s): State<Arc<ServerState>>) -> Result<&'static str, ApiError> {
    s.store
        .last_change()
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "datastore unavailable".into()))?;
    Ok("ok")
}
