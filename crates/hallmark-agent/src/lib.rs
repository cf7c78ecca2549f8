//! The Hallmark agent: attests its node to the server, syncs the entries it
//! may serve, holds and rotates their SVIDs, and serves the SPIFFE Workload
//! API to local processes attested from kernel facts.
//!
//! Where a workload's X.509-SVID is requested: see the path drawn in
//! [`workload_api`]'s documentation.
//!
//! - [`workload_api`]: the Workload API, and the request path through the agent.
//! - `admission`: who is calling on the socket (shared by every service there).
//! - [`attest`]: unix workload attestation (SO_PEERCRED, pidfd, /proc),
//!   namespaces included; [`cgroup`]: which container and pod the cgroup
//!   file names; [`container`]: what the container runtime says about that
//!   container; [`kubelet`]: what the kubelet says about that pod.
//! - `process`: the process facts (PID, start time) recorded with a
//!   workload's evidence.
//! - [`hash_slots`]: how many executables are read in full at once, per uid
//!   and in all.
//! - [`evidence`]: a workload's selectors with their digest, made once per
//!   attestation.
//! - [`cache`]: entries, bundle, workloads' interests and SVIDs; what is due;
//!   never serves an expired SVID.
//! - `svid_requests`: the rotation loop that asks the server for the SVIDs
//!   that are due and puts them in the cache; JWT-SVID minting.
//! - [`instance`], [`process_end`]: process instances, and credentials that
//!   end with their process (`bind: process`): withdrawn on exit, reported
//!   to the server for revocation.
//! - `entry_sync`: the entry sync stream from the server, applied to the cache.
//! - `from_proto`: entries, bundles and revocations from the server's messages.
//! - `identity`: the agent's own SVID and key, and the files it resumes from.
//! - `renewal`: node attestation, resuming a stored identity, and renewing it.
//! - `state`: the state every task and service shares ([`AgentInner`]).
//! - [`client_stream`], [`authority`], [`hpack`]: a Workload API connection
//!   as the HTTP/2 server reads it: a deadline for the preface, and whatever
//!   clients send as `:authority` dropped.
//! - [`sds`]: Envoy SDS v3 on the same socket.
//! - [`delivery`]: delivery reports from `hallmark helper` on the same socket.
//! - [`server_conn`]: mTLS to the server.
//! - [`health`]: connected or degraded; `health_endpoint` serves `/live`,
//!   `/ready`, `/metrics`.
//! - [`dir_mode`]: data directories private, yet traversable to the socket.
//! - [`config`]: the agent's configuration file, checked.
//! - `tpm` (the `tpm` feature): TPM 2.0 node attestation, the node's side.

mod admission;
pub mod attest;
pub mod authority;
pub mod cache;
pub mod cgroup;
pub mod client_stream;
pub mod config;
pub mod container;
pub mod delivery;
pub mod dir_mode;
mod entry_sync;
mod error;
pub mod evidence;
mod from_proto;
pub mod hash_slots;
pub mod health;
mod health_endpoint;
pub mod hpack;
mod identity;
pub mod instance;
pub mod kubelet;
mod node_attestor;
mod process;
pub mod process_end;
mod renewal;
pub mod sds;
pub mod server_conn;
mod state;
mod svid_requests;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod workload_api;

/// Bounds on each request to the container runtime and the kubelet: 3 s,
/// connecting included, and a body of at most 32 MiB (a kubelet's pod list
/// on a full node is a few MiB).
pub(crate) const HTTP_LIMITS: hallmark_http::Limits =
    hallmark_http::Limits { timeout: std::time::Duration::from_secs(3), max_body: 32 * 1024 * 1024 };

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hallmark_core::now_unix;
use hallmark_proto::agent::delivery_server::DeliveryServer;
use hallmark_proto::envoy_api::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;
use tokio::task::JoinSet;

pub use crate::error::AgentError;
pub use crate::from_proto::bundle_from_proto;
pub use crate::identity::{AgentIdentity, IDENTITY_KEY, save_bundle};
pub use crate::state::AgentInner;

use crate::config::AgentSettings;
use crate::error::io_err;

/// A running agent.
pub struct RunningAgent {
    /// Shared state.
    pub inner: Arc<AgentInner>,
    /// The Workload API socket.
    pub socket_path: PathBuf,
    tasks: JoinSet<Result<(), AgentError>>,
}

impl RunningAgent {
    /// Runs until a task fails.
    pub async fn wait(mut self) -> Result<(), AgentError> {
        match self.tasks.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(AgentError::Io(format!("agent task failed: {e}"))),
            None => Ok(()),
        }
    }
}

/// Starts the agent: resumes its stored identity or attests, then serves.
pub async fn start(settings: AgentSettings) -> Result<RunningAgent, AgentError> {
    dir_mode::ensure_private_dir(&settings.data_dir, &settings.socket_path)?;
    let now = now_unix();
    let attested = renewal::resume_or_attest(&settings, now).await?;
    let inner = Arc::new(AgentInner::new(settings, attested, now)?);

    let socket_path = inner.settings.socket_path.clone();
    let listener = bind_socket(&socket_path)?;
    let mut tasks = JoinSet::new();
    let api = workload_api::WorkloadApi::new(inner.clone());
    let open_files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let limits = workload_api::ConnectionLimits::for_open_files(open_files, inner.settings.max_connections_per_uid);
    tracing::debug!(per_uid = limits.per_uid, total = limits.total, "workload API connection limits");
    let sds = sds::SdsApi::new(inner.clone());
    let delivery = delivery::DeliveryApi::new(inner.clone());
    let incoming = workload_api::incoming(listener, limits);
    tasks.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(api))
            .add_service(SecretDiscoveryServiceServer::new(sds))
            .add_service(DeliveryServer::new(delivery))
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| AgentError::Io(format!("workload API: {e}")))
    });
    if let Some(addr) = &inner.settings.health_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Io(format!("cannot listen on {addr} (health_listen): {e}")))?;
        let local = l.local_addr().map_err(|e| AgentError::Io(e.to_string()))?;
        tracing::info!(%local, "health endpoint: /live /ready /metrics");
        *inner.health_addr.write().map_err(|_| AgentError::Io("lock poisoned".into()))? = Some(local);
        tasks.spawn(health_endpoint::serve(l, inner.clone()));
    }
    // What the server pushes (entries, bundle, revocations) into the cache.
    tasks.spawn(entry_sync::sync_loop(inner.clone()));
    // What workloads want from the cache, asked of the server, back into the cache.
    tasks.spawn(svid_requests::rotation_loop(inner.clone()));
    // The agent's own SVID.
    tasks.spawn(renewal::renewal_loop(inner.clone()));
    // Credentials withdrawn because their process ended, to the server for revocation.
    tasks.spawn(process_end::report_loop(inner.clone()));
    tracing::info!(agent = %inner.id(), socket = %socket_path.display(), "agent ready");
    Ok(RunningAgent { inner, socket_path, tasks })
}

/// The Workload API socket: reachable by every local user; attestation
/// decides who gets what. A directory the agent creates for it is 0755; an
/// existing one (say /tmp or /run) keeps the mode its owner gave it.
fn bind_socket(socket_path: &Path) -> Result<UnixListener, AgentError> {
    if let Some(parent) = socket_path.parent()
        && !parent.exists()
    {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(|e| io_err(parent, e))?;
    }
    match std::fs::remove_file(socket_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(socket_path, e)),
    }
    let listener = UnixListener::bind(socket_path).map_err(|e| io_err(socket_path, e))?;
    std::fs::set_permissions(socket_path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| io_err(socket_path, e))?;
    Ok(listener)
}
