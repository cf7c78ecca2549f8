//! Starting the server: the store, the authorities, the state, the two
//! listeners and the background tasks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hallmark_ca::audit_key::{AuditKey, AuditPublicKey};
use hallmark_ca::tls::{AgentClientVerifier, provider};
use hallmark_core::now_unix;
use hallmark_proto::node::node_server::NodeServer;
use hallmark_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use crate::audit;
use crate::authority::Authorities;
use crate::background::{change_feed, maintenance, policy_watch, refusals_flush};
use crate::change_hub::ChangeHub;
use crate::config::ServerSettings;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::private_dir::ensure_private_dir;
use crate::refusals::Refusals;
use crate::registry::Registry;
use crate::state::{ServerCert, ServerState, load_policy};
use crate::tls_listener::{self, SwappableCert};
use crate::{admin, node_api, revocation};

/// A started server.
pub struct RunningServer {
    /// Shared state, for in-process use by `hallmark up` and tests.
    pub state: Arc<ServerState>,
    /// Where the agent API listens.
    pub agent_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    tasks: JoinSet<Result<(), ServerError>>,
}

impl RunningServer {
    /// Runs until a listener or background task fails.
    pub async fn wait(mut self) -> Result<(), ServerError> {
        match self.tasks.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(ServerError::Task(e)),
            None => Ok(()),
        }
    }
}

#[cfg(feature = "bench-baseline")]
fn new_auditor(store: &Store, keys: Arc<audit::AuditKeys>, record: bool) -> audit::Auditor {
    if record { audit::Auditor::start(store.clone(), keys) } else { audit::Auditor::discarding() }
}

#[cfg(not(feature = "bench-baseline"))]
fn new_auditor(store: &Store, keys: Arc<audit::AuditKeys>, _record: bool) -> audit::Auditor {
    audit::Auditor::start(store.clone(), keys)
}

/// Starts the server: opens the store, loads the authorities, and serves the
/// agent API (mTLS gRPC) and the admin API (HTTP).
pub async fn start(settings: ServerSettings) -> Result<RunningServer, ServerError> {
    start_inner(settings, true).await
}

/// Starts a server that does not record audit or inventory: the issuance
/// benchmark's baseline. Compiled only with the `bench-baseline` feature.
#[cfg(feature = "bench-baseline")]
pub async fn start_without_recording(settings: ServerSettings) -> Result<RunningServer, ServerError> {
    start_inner(settings, false).await
}

async fn start_inner(settings: ServerSettings, record: bool) -> Result<RunningServer, ServerError> {
    ensure_private_dir(&settings.data_dir)?;
    let store = Store::open(&settings.datastore).await?;
    let authorities = Authorities::load_or_create(&settings, store.clone()).await?;
    for dir in
        [Some(settings.data_dir.join("keys")), settings.audit_key.parent().map(Path::to_path_buf)].into_iter().flatten()
    {
        hallmark_ca::keys::check_trusted_path(&dir).map_err(ServerError::UntrustedDir)?;
    }
    let adopting = !settings.audit_key.exists();
    let own = AuditKey::load_or_create(&settings.audit_key)?;
    let trusted = settings
        .audit_trusted_keys
        .iter()
        .map(|p| AuditPublicKey::read(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServerError::AuditTrustedKey)?;
    let audit_keys = Arc::new(audit::AuditKeys { own, trusted, adopting: adopting.into() });
    // The audit key first: storing the default policy on first start is a
    // change, recorded with it.
    let policy = load_policy(&store, &audit_keys).await?;
    tracing::info!(version = policy.version(), policies = policy.len(), "policy loaded");
    let (revocations, _) = broadcast::channel(4096);
    let loading = std::time::Instant::now();
    let registry = Registry::load(&store, now_unix()).await?;
    tracing::info!(entries = registry.len(), ms = loading.elapsed().as_millis(), "registry loaded");
    let state = Arc::new(ServerState {
        settings,
        store: store.clone(),
        authorities,
        registry,
        changes: ChangeHub::default(),
        change_notify: Notify::new(),
        catch_up_lock: tokio::sync::Mutex::new(()),
        revocations,
        revocation_notify: Notify::new(),
        policy: RwLock::new(Arc::new(policy)),
        audit: new_auditor(&store, audit_keys.clone(), record),
        audit_keys,
        refusals: Refusals::default(),
        default_parent: RwLock::new(None),
        bootstrap_file: RwLock::new(None),
        metrics: Metrics::default(),
        server_cert: RwLock::new(None),
    });

    // Agent API: TLS 1.3, client certificates verified against the live bundle.
    let issued = state.issue_server_cert()?;
    let swap = Arc::new(SwappableCert::new(issued.key));
    *state.server_cert.write().map_err(|_| ServerError::LockPoisoned("server certificate"))? =
        Some(ServerCert { swap: swap.clone(), not_after: issued.not_after, authority_id: issued.authority_id });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ServerError::Tls)?
        .with_client_cert_verifier(Arc::new(AgentClientVerifier::new(state.authorities.anchors())))
        .with_cert_resolver(swap);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let listener = TcpListener::bind(&state.settings.listen)
        .await
        .map_err(|source| ServerError::Listen { addr: state.settings.listen.clone(), source })?;
    let agent_addr =
        listener.local_addr().map_err(|source| ServerError::Listen { addr: state.settings.listen.clone(), source })?;
    let incoming = tls_listener::incoming(listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls)));

    let admin_listener = TcpListener::bind(&state.settings.admin_listen)
        .await
        .map_err(|source| ServerError::Listen { addr: state.settings.admin_listen.clone(), source })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| ServerError::Listen { addr: state.settings.admin_listen.clone(), source })?;

    let mut tasks = JoinSet::new();
    let node = node_api::NodeApi::new(state.clone());
    tasks.spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(NodeServer::new(node).max_decoding_message_size(16 * 1024 * 1024))
            .serve_with_incoming(ReceiverStream::new(incoming))
            .await
            .map_err(ServerError::AgentApi)
    });
    let router = admin::router(state.clone());
    tasks.spawn(admin::listener::serve(admin_listener, router, state.settings.admin_limits));
    tasks.spawn(change_feed(state.clone()));
    tasks.spawn(revocation::revocation_feed(state.clone()));
    tasks.spawn(maintenance(state.clone()));
    tasks.spawn(refusals_flush(state.clone()));
    tasks.spawn(policy_watch(state.clone()));
    // A signed head from the first moment (a chain written before the audit
    // key existed is covered from here on).
    let key_id = state.audit_keys.own.public().id().to_owned();
    let details = serde_json::json!({ "audit_key": key_id, "admin_listen": admin_addr.to_string() });
    state.audit.record(state.audit_event("hallmark", "server_start", &admin_addr.to_string(), "ok", details)).await?;
    tracing::info!(%agent_addr, %admin_addr, trust_domain = %state.settings.trust_domain, audit_key = %key_id, "server ready");
    Ok(RunningServer { state, agent_addr, admin_addr, tasks })
}
