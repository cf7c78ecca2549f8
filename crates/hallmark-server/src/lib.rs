//! The Hallmark server: signing authorities, node attestation, the issuance
//! path, entry sync to agents, and the admin API.
//!
//! - [`mod@start`]: starting the server ([`start()`], [`RunningServer`]).
//! - [`state`]: what every handler shares ([`ServerState`]).
//! - [`issuance`]: the issuance path, top to bottom.
//! - [`node_api`]: the mTLS gRPC service agents call.
//! - [`admin`]: the HTTP/JSON admin API.
//! - [`authority`]: CA and JWT key lifecycle and the bundle.
//! - [`background`]: the loops that follow the datastore and keep authorities fresh.
//! - [`config`]: the configuration file.
//! - [`token_exchange`]: delegation by OAuth 2.0 Token Exchange (RFC 8693), top to bottom.
//! - [`scim`]: the SCIM 2.0 service provider: joiners, movers and leavers.
//!
//! The modules form a tree: each imports an item from the module that
//! defines it (never through this root's re-exports), and none imports from
//! a module that imports it. `A -> B`: A imports from B.
//!
//! ```text
//! start ─> background, node_api, admin, revocation, state, private_dir, ...
//! background, node_api, admin::*, issuance, delivery, process_end, reports,
//! revocation, audit_check ─> state  (handlers and `impl ServerState` blocks)
//! node_api, delivery, process_end, admin::nodes ─> issuance ─> state
//! admin::token ─> token_exchange ─> state, jwks;  node_attest::psat ─> jwks
//! admin (the router) ─> scim ─> admin::{auth, roles, error}, state
//!   (the SCIM service provider: handlers under the admin router)
//! state ─> authority, audit, registry, change_hub, refusals, metrics,
//!          tls_listener, config, error       (the state's parts: leaves)
//! authority::{keys, rotation, publish} ─> authority ─> config, private_dir
//! config ─> jwks (the OIDC issuers' keys)
//! audit ─> metrics (append latency);  admin::listener ─> config (limits)
//! everything ─> error
//! ```

pub mod admin;
pub mod audit;
pub mod audit_check;
pub mod authority;
pub mod background;
pub mod change_hub;
pub mod config;
pub mod delivery;
pub mod error;
pub mod human;
pub mod issuance;
pub mod jwks;
pub mod metrics;
pub mod node_api;
pub mod node_attest;
pub mod private_dir;
pub mod process_end;
pub mod refusals;
pub mod registry;
pub mod reports;
pub mod revocation;
pub mod scim;
pub mod start;
pub mod state;
pub mod tls_listener;
pub mod token_exchange;

pub use error::ServerError;
pub use private_dir::ensure_private_dir;
#[cfg(feature = "bench-baseline")]
pub use start::start_without_recording;
pub use start::{RunningServer, start};
pub use state::{ServerState, SetPolicyError};
