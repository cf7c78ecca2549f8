//! Generated gRPC code for the two protocols Hallmark speaks.
//!
//! - [`workload`]: the SPIFFE Workload API exactly as the standard defines it
//!   (service `SpiffeWorkloadAPI`, no package).
//! - [`node`]: Hallmark's own agent <-> server protocol (`hallmark.node.v1`).

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
