//! The Hallmark server: signing authorities, node attestation, the issuance
//! path, entry sync to agents, and the admin API.
//!
//! - [`start`]: starting the server ([`start()`], [`RunningServer`]).
//! - [`state`]: what every handler shares ([`ServerState`]).
//! - [`issuance`]: the issuance path, top to bottom.
//! - [`node_api`]: the mTLS gRPC service agents call.
//! - [`admin`]: the HTTP/JSON admin API.
//! - [`authority`]: CA and JWT key lifecycle and the bundle.
//! - [`background`]: the loops that follow the datastore and keep authorities fresh.
//! - [`config`]: the configuration file.
//!
//! MODULE_GRAPH

pub mod admin;
pub mod audit;
pub mod audit_check;
pub mod authority;
pub mod background;
pub mod change_hub;
pub mod config;
pub mod delivery;
pub mod error;
pub mod issuance;
pub mod metrics;
pub mod node_api;
pub mod private_dir;
pub mod refusals;
pub mod registry;
pub mod reports;
pub mod revocation;
pub mod start;
pub mod state;
pub mod tls_listener;

pub use error::ServerError;
pub use private_dir::ensure_private_dir;
#[cfg(feature = "bench-baseline")]
pub use start::start_without_recording;
pub use start::{RunningServer, start};
pub use state::{ServerState, SetPolicyError};
