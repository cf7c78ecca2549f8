//! Compiles the protocol definitions with protox, so no `protoc` is needed.

use std::path::Path;

/// Envoy's published API files that the SDS service needs (vendored, see
/// `proto/vendor/README.md`); their imports are found under `proto/vendor`.
const ENVOY_ROOTS: &[&str] = &[
    "envoy/service/secret/v3/sds.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", dir.display());

    let files = [dir.join("workload.proto"), dir.join("node.proto"), dir.join("agent.proto")];
    let fds = protox::compile(files, [&dir])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;

    // Envoy's packages nest (envoy.config.core.v3 refers to xds.core.v3 and
    // google.rpc): one include file builds the whole module tree.
    let vendor = dir.join("vendor");
    let fds = protox::compile(ENVOY_ROOTS, [&vendor])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("envoy_api.rs")
        .compile_fds(fds)?;
    Ok(())
}
