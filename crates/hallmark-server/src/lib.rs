//! The Hallmark server: signing authorities, node attestation, the issuance
//! path, entry sync to agents, and the admin API.
//!
//! - [`issuance`]: the issuance path, top to bottom.
//! - [`node_api`]: the mTLS gRPC service agents call.
//! - [`admin`]: the HTTP/JSON admin API.
//! - [`authority`]: CA and JWT key lifecycle and the bundle.
//! - [`config`]: the configuration file.

pub mod admin;
pub mod audit;
pub mod authority;
pub mod change_hub;
pub mod config;
pub mod delivery;
pub mod issuance;
pub mod metrics;
pub mod node_api;
pub mod refusals;
pub mod registry;
pub mod reports;
pub mod revocation;
pub mod tls_listener;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hallmark_ca::CaError;
use hallmark_ca::audit_key::{AuditKey, AuditPublicKey};
use hallmark_ca::keys::{SecretFileError, new_key_and_csr, read_secret_file, write_secret_file};
use hallmark_ca::tls::{AgentClientVerifier, provider};
use hallmark_ca::x509::{SvidProfile, SvidTemplate};
use hallmark_core::{SpiffeId, now_unix};
use hallmark_policy::{DEFAULT_POLICY, PolicyEngine};
use hallmark_proto::node::node_server::NodeServer;
use hallmark_store::{Revocation, Store, StoreError, hash_secret};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use crate::authority::Authorities;
use crate::config::ServerSettings;
use crate::tls_listener::SwappableCert;

/// Server failures. One line each; never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A listening address could not be bound or read back.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address, as configured.
        addr: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The agent API stopped serving.
    #[error("agent API: {0}")]
    AgentApi(#[source] tonic::transport::Error),
    /// A data or key directory another user could have prepared or can
    /// change ([`hallmark_ca::keys::check_trusted_path`]).
    #[error("{0}")]
    UntrustedDir(#[source] CaError),
    /// A file holding a secret (the bootstrap admin token) could not be
    /// read or written, or is exposed; the message names the file.
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A signing authority failed.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    /// An authority's key or chain file does not hold what it should.
    #[error("{}: {source}", path.display())]
    AuthorityFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CaError,
    },
    /// A key file is not UTF-8 PEM.
    #[error("{}: {source}", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// No authority of a kind is active.
    #[error("CA: no active {0}")]
    NoActiveAuthority(&'static str),
    /// A new X.509 authority came without a trust anchor.
    #[error("CA: CA has no anchor")]
    NoAnchor,
    /// A public key in `audit_trusted_keys` could not be read.
    #[error("CA: audit_trusted_keys: {0}")]
    AuditTrustedKey(#[source] CaError),
    /// A public key kept with an audit checkpoint does not parse.
    #[error("internal: {0}")]
    CheckpointKey(#[source] CaError),
    /// The server's own TLS key or configuration was refused by rustls.
    #[error("CA: {0}")]
    Tls(#[source] rustls::Error),
    /// The agent's SPIFFE ID could not be formed from the trust domain.
    #[error("internal: {0}")]
    AgentId(#[source] hallmark_core::SpiffeIdError),
    /// A lock was poisoned by a panicking thread.
    #[error("internal: {0} lock poisoned")]
    LockPoisoned(&'static str),
    /// The audit appender has stopped.
    #[error("internal: audit appender stopped")]
    AuditStopped,
    /// The datastore refused an audit record's group commit.
    #[error("internal: audit record not committed: {0}")]
    AuditNotCommitted(#[source] Arc<StoreError>),
    /// A policy the server relies on does not compile.
    #[error("internal: {what} no longer compiles: {source}")]
    Policy {
        /// Which policy: "the default policy", "stored policy v3".
        what: String,
        /// Why not.
        #[source]
        source: hallmark_policy::PolicyError,
    },
    /// The datastore holds no policy right after the default was stored.
    #[error("internal: no policy after storing the default")]
    NoPolicy,
    /// A bundle without any authority would lock every agent out.
    #[error("internal: bundle would be empty; refusing to publish it")]
    EmptyBundle,
    /// A server task panicked or was cancelled.
    #[error("internal: server task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Everything the server's handlers share.
pub struct ServerState {
    /// Validated settings.
    pub settings: ServerSettings,
    /// The datastore.
    pub store: Store,
    /// Signing authorities and bundle.
    pub authorities: Arc<Authorities>,
    /// Entries and exceptions, in memory.
    pub registry: registry::Registry,
    /// Entry changes, as read from the datastore's change log, routed to
    /// the agent each concerns.
    pub changes: change_hub::ChangeHub,
    /// Wakes the change feed right after a local write.
    pub change_notify: Notify,
    /// One reader of the change log at a time (the feed, or a local writer catching up).
    catch_up_lock: tokio::sync::Mutex<()>,
    /// Revocations, as read from the datastore's revocation log.
    pub revocations: broadcast::Sender<Revocation>,
    /// Wakes the revocation feed right after a local revocation.
    pub revocation_notify: Notify,
    /// The policy version in force.
    policy: RwLock<Arc<PolicyEngine>>,
    /// The audit chain's group-commit appender.
    pub audit: audit::Auditor,
    /// The key that signs the audit chain's head (never in the datastore),
    /// and the other servers' public keys.
    audit_keys: Arc<audit::AuditKeys>,
    /// Refusals, counted and written to the audit chain once a second.
    pub refusals: refusals::Refusals,
    /// Parent used for entries that name none (set by `hallmark up`).
    pub default_parent: RwLock<Option<SpiffeId>>,
    /// Where this server keeps the bootstrap admin token, once written.
    bootstrap_file: RwLock<Option<std::path::PathBuf>>,
    /// Issuance, denial and decision-latency counters for `/metrics`.
    pub metrics: metrics::Metrics,
    server_cert: RwLock<Option<ServerCert>>,
}

/// The server's own TLS certificate: the swappable key, its expiry, and the
/// authority that signed it (a new active authority means a new certificate).
struct ServerCert {
    swap: Arc<SwappableCert>,
    not_after: i64,
    authority_id: String,
}

/// Why a policy was not set.
#[derive(Debug, thiserror::Error)]
pub enum SetPolicyError {
    /// It does not parse or validate.
    #[error(transparent)]
    Invalid(hallmark_policy::PolicyError),
    /// The datastore failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A newly issued server TLS certificate.
struct IssuedServerCert {
    /// The chain and its key, for rustls.
    key: CertifiedKey,
    /// Its expiry, unix seconds.
    not_after: i64,
    /// The authority that signed it.
    authority_id: String,
}

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

/// Creates the data directory with mode 0700.
/// A directory another user owns or may write (or one of its parents) is
/// refused: see [`hallmark_ca::keys::check_trusted_path`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), ServerError> {
    hallmark_ca::keys::check_trusted_path(dir).map_err(ServerError::UntrustedDir)?;
    let io = |source| ServerError::Io { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    // Again, now that it exists: another user may have created it first.
    hallmark_ca::keys::check_trusted_path(dir).map_err(ServerError::UntrustedDir)
}

#[cfg(feature = "bench-baseline")]
fn new_auditor(store: &Store, keys: Arc<audit::AuditKeys>, record: bool) -> audit::Auditor {
    if record { audit::Auditor::start(store.clone(), keys) } else { audit::Auditor::discarding() }
}

#[cfg(not(feature = "bench-baseline"))]
fn new_auditor(store: &Store, keys: Arc<audit::AuditKeys>, _record: bool) -> audit::Auditor {
    audit::Auditor::start(store.clone(), keys)
}

/// Loads the policy in force from the store, storing the default policy as
/// version 1 on first start, with its record signed by `keys`.
async fn load_policy(store: &Store, keys: &audit::AuditKeys) -> Result<PolicyEngine, ServerError> {
    let current = match store.current_policy().await? {
        Some(p) => p,
        None => {
            let default = PolicyEngine::compile(DEFAULT_POLICY, 1)
                .map_err(|source| ServerError::Policy { what: "the default policy".into(), source })?;
            let details = serde_json::json!({ "sha256": default.hash(), "policies": default.len() });
            let rec = hallmark_store::Recorder::signed(keys, |v: &i64| {
                vec![hallmark_store::AuditEvent {
                    at: now_unix(),
                    actor: "hallmark".into(),
                    action: "policy_set".into(),
                    subject: v.to_string(),
                    outcome: "ok".into(),
                    policy_version: *v,
                    details,
                    credential: None,
                    denial: None,
                }]
            });
            // Another server may store it at the same moment; either copy is the default.
            if let Err(e) = store.add_policy(DEFAULT_POLICY, default.hash(), "hallmark (default)", rec).await {
                tracing::debug!(error = %e, "default policy stored concurrently");
            }
            store.current_policy().await?.ok_or(ServerError::NoPolicy)?
        }
    };
    let version = u64::try_from(current.version).unwrap_or(0);
    PolicyEngine::compile(&current.text, version)
        .map_err(|source| ServerError::Policy { what: format!("stored policy v{version}"), source })
}

impl ServerState {
    /// An audit event at the current time under the policy version in force.
    pub fn audit_event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        outcome: &str,
        details: serde_json::Value,
    ) -> hallmark_store::AuditEvent {
        let policy_version = self.policy().map(|p| i64::try_from(p.version()).unwrap_or(0)).unwrap_or(0);
        hallmark_store::AuditEvent {
            at: now_unix(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            outcome: outcome.to_owned(),
            policy_version,
            details,
            credential: None,
            denial: None,
        }
    }

    /// The policy version in force.
    pub fn policy(&self) -> Result<Arc<PolicyEngine>, ServerError> {
        Ok(self.policy.read().map_err(|_| ServerError::LockPoisoned("policy"))?.clone())
    }

    /// Validates and stores a new policy version with its audit record, then
    /// puts it in force here at once (other servers pick it up within a second). An invalid policy is
    /// refused with Cedar's diagnostics and the current one stays in force.
    pub async fn set_policy(&self, text: &str, by: &str) -> Result<Arc<PolicyEngine>, SetPolicyError> {
        let next = self.store.policy_version().await.map_err(SetPolicyError::Store)? + 1;
        let engine = PolicyEngine::compile(text, u64::try_from(next).unwrap_or(0)).map_err(SetPolicyError::Invalid)?;
        let details = serde_json::json!({ "sha256": engine.hash(), "policies": engine.len() });
        // Recorded under the version it puts in force, not the one it replaces.
        let rec = hallmark_store::Recorder::signed(&*self.audit_keys, |v: &i64| {
            let mut e = self.audit_event(by, "policy_set", &v.to_string(), "ok", details);
            e.policy_version = *v;
            vec![e]
        });
        let version = self.store.add_policy(text, engine.hash(), by, rec).await.map_err(SetPolicyError::Store)?;
        let engine = if version == next {
            engine
        } else {
            PolicyEngine::compile(text, u64::try_from(version).unwrap_or(0)).map_err(SetPolicyError::Invalid)?
        };
        let engine = Arc::new(engine);
        if let Ok(mut p) = self.policy.write() {
            *p = engine.clone();
        }
        tracing::info!(version, by, policies = engine.len(), sha256 = engine.hash(), "policy set");
        Ok(engine)
    }

    /// Issues the server's own TLS certificate from the active CA.
    fn issue_server_cert(&self) -> Result<IssuedServerCert, ServerError> {
        let id = self.settings.trust_domain.server_id();
        let kc = new_key_and_csr(Some(&id))?;
        let ca = self.authorities.x509()?;
        let t = SvidTemplate {
            csr_der: &kc.csr_der,
            spiffe_id: &id,
            dns_names: &["hallmark-server".to_owned()],
            ttl_secs: self.settings.agent_svid_ttl.secs(),
            now: now_unix(),
            profile: SvidProfile::Server,
        };
        let signed = ca.sign_svid(&t)?;
        let key = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kc.key_pkcs8)))
            .map_err(ServerError::Tls)?;
        let chain = signed.chain.into_iter().map(CertificateDer::from).collect();
        Ok(IssuedServerCert { key: CertifiedKey::new(chain, key), not_after: signed.not_after, authority_id: ca.id() })
    }

    /// Renews the server certificate past half its life, or at once when
    /// another authority has become active (the old one may be tainted next).
    fn renew_server_cert_if_due(&self) -> Result<(), ServerError> {
        let guard = self.server_cert.read().map_err(|_| ServerError::LockPoisoned("server certificate"))?;
        let Some(cur) = guard.as_ref() else {
            return Ok(());
        };
        let half = i64::try_from(self.settings.agent_svid_ttl.secs() / 2).unwrap_or(i64::MAX);
        let active = self.authorities.x509()?.id();
        if cur.not_after - now_unix() > half && cur.authority_id == active {
            return Ok(());
        }
        let swap = cur.swap.clone();
        drop(guard);
        let issued = self.issue_server_cert()?;
        swap.set(issued.key);
        *self.server_cert.write().map_err(|_| ServerError::LockPoisoned("server certificate"))? =
            Some(ServerCert { swap, not_after: issued.not_after, authority_id: issued.authority_id });
        Ok(())
    }

    /// Makes sure a live bootstrap admin token exists in `path` (0600) and
    /// the store; returns it. An existing file is reused while the store
    /// holds its token unrevoked and unexpired; otherwise a new one replaces it.
    pub async fn ensure_admin_token(&self, path: &Path) -> Result<String, ServerError> {
        if let Ok(mut f) = self.bootstrap_file.write() {
            *f = Some(path.to_owned());
        }
        if path.exists() {
            let bytes = read_secret_file(path)?;
            let token = String::from_utf8_lossy(&bytes).trim().to_owned();
            match self.store.admin_token(&hash_secret(&token)).await? {
                Some(t) if t.refusal(now_unix()).is_none() => return Ok(token),
                Some(t) => {
                    let why = t.refusal(now_unix()).unwrap_or("refused");
                    tracing::warn!(path = %path.display(), why, "the bootstrap admin token is {why}; writing a new one");
                }
                None => {}
            }
        }
        let token = admin::new_token();
        let rec = self.record_change("hallmark", "admin_token_create", admin::token_change);
        self.store.add_admin_token(&hash_secret(&token), admin::BOOTSTRAP, "trust-admin", rec).await?;
        write_secret_file(path, token.as_bytes())?;
        tracing::info!(path = %path.display(), "wrote bootstrap admin token");
        Ok(token)
    }

    /// The bootstrap admin token's file, when this server wrote one.
    pub fn bootstrap_token_file(&self) -> Option<std::path::PathBuf> {
        self.bootstrap_file.read().ok().and_then(|f| f.clone())
    }
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
    let registry = registry::Registry::load(&store, now_unix()).await?;
    tracing::info!(entries = registry.len(), ms = loading.elapsed().as_millis(), "registry loaded");
    let state = Arc::new(ServerState {
        settings,
        store: store.clone(),
        authorities,
        registry,
        changes: change_hub::ChangeHub::default(),
        change_notify: Notify::new(),
        catch_up_lock: tokio::sync::Mutex::new(()),
        revocations,
        revocation_notify: Notify::new(),
        policy: RwLock::new(Arc::new(policy)),
        audit: new_auditor(&store, audit_keys.clone(), record),
        audit_keys,
        refusals: refusals::Refusals::default(),
        default_parent: RwLock::new(None),
        bootstrap_file: RwLock::new(None),
        metrics: metrics::Metrics::default(),
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
    tasks.spawn(refusals::flush_loop(state.clone()));
    tasks.spawn(policy_watch(state.clone()));
    // A signed head from the first moment (a chain written before the audit
    // key existed is covered from here on).
    let key_id = state.audit_keys.own.public().id().to_owned();
    let details = serde_json::json!({ "audit_key": key_id, "admin_listen": admin_addr.to_string() });
    state.audit.record(state.audit_event("hallmark", "server_start", &admin_addr.to_string(), "ok", details)).await?;
    tracing::info!(%agent_addr, %admin_addr, trust_domain = %state.settings.trust_domain, audit_key = %key_id, "server ready");
    Ok(RunningServer { state, agent_addr, admin_addr, tasks })
}

impl ServerState {
    /// Applies every change logged since the registry's position to the
    /// registry, then broadcasts it to the agents' sync streams. Local writers
    /// call it before answering, so what they wrote is in force here at once.
    pub async fn catch_up(&self) -> Result<(), ServerError> {
        let _one = self.catch_up_lock.lock().await;
        loop {
            let list = self.store.changes_since(self.registry.seq(), 1000).await?;
            if list.is_empty() {
                return Ok(());
            }
            // The changed entries' current state, read at once (a bulk
            // registration logs thousands of changes).
            let ids: Vec<String> = list.iter().map(|c| c.entry_id.clone()).collect();
            let current: std::collections::HashMap<String, hallmark_core::Entry> =
                self.store.entries_by_id(&ids).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
            for c in list {
                self.registry.apply(&c.entry_id, current.get(&c.entry_id).cloned(), c.seq);
                self.changes.publish(c);
            }
        }
    }

    /// [`ServerState::catch_up`] after a local write, which has taken effect
    /// whatever happens here: a failure is logged and the feed retries.
    pub async fn entries_written(&self) {
        if let Err(e) = self.catch_up().await {
            tracing::warn!(error = %e, "registry catch-up failed; the change feed will retry");
            self.change_notify.notify_one();
        }
    }

    /// Re-reads the approved exceptions into the registry.
    pub async fn reload_exceptions(&self) -> Result<(), ServerError> {
        self.registry.set_exceptions(self.store.approved_exceptions(now_unix()).await?);
        Ok(())
    }
}

/// Follows the datastore's entry change log. Polling the log (not only local
/// writes) is what lets several servers share one PostgreSQL: every server
/// sees every change.
async fn change_feed(state: Arc<ServerState>) -> Result<(), ServerError> {
    loop {
        tokio::select! {
            () = state.change_notify.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if let Err(e) = state.catch_up().await {
            tracing::warn!(error = %e, "change feed read failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Follows the policy version in the store, so a policy set through any
/// server is in force on every server within a second; records exceptions
/// that expired, so the return to the normal rule leaves a trace.
async fn policy_watch(state: Arc<ServerState>) -> Result<(), ServerError> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stored = match state.store.policy_version().await {
            Ok(v) => u64::try_from(v).unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read policy version");
                continue;
            }
        };
        if stored != state.policy()?.version() {
            match load_policy(&state.store, &state.audit_keys).await {
                Ok(engine) => {
                    tracing::info!(version = engine.version(), "policy reloaded from the datastore");
                    if let Ok(mut p) = state.policy.write() {
                        *p = Arc::new(engine);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot load the stored policy; the previous one stays in force"),
            }
        }
        if let Err(e) = state.reload_exceptions().await {
            tracing::warn!(error = %e, "cannot read exceptions");
        }
        let rec =
            state.record_changes("hallmark", "exception_expire", |expired: &[hallmark_store::ExceptionRecord]| {
                expired
                    .iter()
                    .map(|x| {
                        let details =
                            serde_json::json!({ "entry_id": x.entry_id, "rule": x.rule, "expired_at": x.expires_at });
                        audit::Change::new(&x.id, details)
                    })
                    .collect()
            });
        match state.store.record_expired_exceptions(now_unix(), rec).await {
            Ok(list) => {
                for x in list {
                    tracing::info!(exception = %x.id, entry = %x.entry_id, rule = %x.rule, "exception expired; the normal rule applies again");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot record expired exceptions"),
        }
    }
}

/// Prunes inventory rows of credentials expired longer than the retention,
/// each pruning recorded in the audit chain in the same transaction.
async fn prune_inventory(state: &ServerState) {
    let before = now_unix() - i64::try_from(state.settings.inventory_retention.secs()).unwrap_or(i64::MAX / 2);
    let rec = state.record_change("hallmark", "inventory_prune", |n: &u64| {
        audit::Change::new("credentials", serde_json::json!({ "rows": n, "expired_before": before }))
    });
    match state.store.prune_credentials(before, rec).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "pruned inventory rows of long-expired credentials"),
        Err(e) => tracing::warn!(error = %e, "inventory pruning failed"),
    }
}

/// Rotates authorities on schedule, re-signs CRLs before they lapse, refreshes
/// the shared bundle (so taints, revocations and other servers' authorities
/// are followed), renews the server certificate, and prunes the inventory
/// (hourly).
async fn maintenance(state: Arc<ServerState>) -> Result<(), ServerError> {
    let mut ticks: u64 = 0;
    loop {
        // Rotation is checked every second (a cheap look at in-memory
        // state), so an authority is activated within a second of its
        // moment, however short its life; the rest every five.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ticks.is_multiple_of(3600) {
            prune_inventory(&state).await;
        }
        ticks += 1;
        let rotated = match state.authorities.rotate_if_due().await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::error!(error = %e, "authority rotation failed");
                false
            }
        };
        if !rotated && !ticks.is_multiple_of(5) {
            continue;
        }
        if let Err(e) = state.authorities.refresh_crls_if_due().await {
            tracing::warn!(error = %e, "CRL refresh failed");
        }
        if let Err(e) = state.authorities.refresh_bundle().await {
            tracing::warn!(error = %e, "bundle refresh failed");
        }
        if let Err(e) = state.renew_server_cert_if_due() {
            tracing::error!(error = %e, "server certificate renewal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Issue 15: the bootstrap admin token's file failing is a file error
    /// naming the file, not a CA error.
    #[tokio::test(flavor = "multi_thread")]
    async fn admin_token_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        );
        let settings = config::ServerConfig::parse(&cfg, &HashMap::new()).unwrap().validate().unwrap();
        let s = start(settings).await.unwrap();
        // Written where it cannot be: its directory does not exist.
        let unwritable = dir.path().join("missing").join("admin-token");
        let err = s.state.ensure_admin_token(&unwritable).await.unwrap_err();
        assert!(
            matches!(&err, ServerError::SecretFile(SecretFileError::Io { path, .. }) if *path == unwritable),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(&format!("{}: ", unwritable.display())), "{err}");
        // Read where others may read it too.
        let exposed = dir.path().join("admin-token");
        s.state.ensure_admin_token(&exposed).await.unwrap();
        std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = s.state.ensure_admin_token(&exposed).await.unwrap_err();
        assert!(matches!(&err, ServerError::SecretFile(SecretFileError::Exposed { mode: 0o644, .. })), "{err:?}");
        assert!(err.to_string().contains(&exposed.display().to_string()), "{err}");
    }
}
