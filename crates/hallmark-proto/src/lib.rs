//! Generated gRPC code for the protocols Hallmark speaks.
//!
//! - [`workload`]: the SPIFFE Workload API exactly as the standard defines it
//!   (service `SpiffeWorkloadAPI`, no package).
//! - [`node`]: Hallmark's own agent <-> server protocol (`hallmark.node.v1`).
//! - [`agent`]: Hallmark's own service on the Workload API socket
//!   (`hallmark.agent.v1`: delivery reports from `hallmark helper`).
//! - [`envoy_api`]: Envoy's Secret Discovery Service (SDS v3) and the types it
//!   carries, from Envoy's published API files (`proto/vendor/README.md`).

/// The SPIFFE Workload API.
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod workload {
    tonic::include_proto!("_");
}

/// The agent <-> server protocol.
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod node {
    tonic::include_proto!("hallmark.node.v1");
}

/// Hallmark's service on the Workload API socket.
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod agent {
    tonic::include_proto!("hallmark.agent.v1");
}

/// Envoy's v3 API, as far as SDS needs it: `envoy::service::secret::v3`
/// (the service), `envoy::service::discovery::v3` (requests and responses),
/// `envoy::extensions::transport_sockets::tls::v3` (the secrets).
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic, rustdoc::all)]
pub mod envoy_api {
    include!(concat!(env!("OUT_DIR"), "/envoy_api.rs"));
}

/// The type URL of an Envoy `Secret` inside a `google.protobuf.Any`.
pub const ENVOY_SECRET_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
