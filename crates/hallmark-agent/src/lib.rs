//! The Hallmark agent: attests its node to the server, syncs the entries it
//! may serve, holds and rotates their SVIDs, and serves the SPIFFE Workload
//! API to local processes attested from kernel facts.
//!
//! - [`attest`]: unix workload attestation (SO_PEERCRED, pidfd, /proc).
//! - [`cache`]: entries, bundle and SVIDs; never serves an expired SVID.
//! - [`workload_api`]: the Workload API.
//! - [`client_stream`], [`authority`], [`hpack`]: a Workload API connection
//!   as the HTTP/2 server reads it: a deadline for the preface, and whatever
//!   clients send as `:authority` dropped.
//! - [`sds`]: Envoy SDS v3 on the same socket.
//! - [`delivery`]: delivery reports from `hallmark helper` on the same socket.
//! - [`server_conn`]: mTLS to the server.
//! - [`health`]: connected or degraded; `/live`, `/ready`, `/metrics`.
//! - [`dir_mode`]: data directories private, yet traversable to the socket.

mod admission;
pub mod attest;
pub mod authority;
pub mod cache;
pub mod client_stream;
pub mod config;
pub mod delivery;
pub mod dir_mode;
pub mod health;
pub mod hpack;
pub mod sds;
pub mod server_conn;
pub mod workload_api;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hallmark_ca::keys::{new_key_and_csr, read_secret_file, write_secret_file};
use hallmark_ca::tls::SharedAnchors;
use hallmark_ca::{Bundle, JwtAuthority, svid};
use hallmark_core::{Class, Entry, SpiffeId, Ttl, now_unix};
use hallmark_proto::agent::delivery_server::DeliveryServer;
use hallmark_proto::envoy_api::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{self as pb, sync_event};
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::attest::UnixAttestor;
use crate::cache::{Cache, Due, HeldSvid, Revocation, SvidKey};
use crate::config::{AgentSettings, Bootstrap};
use crate::server_conn::Trust;

/// Agent failures; one line each, never with key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// File or socket trouble.
    #[error("{0}")]
    Io(String),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Node attestation failed or is impossible.
    #[error("node attestation: {0}")]
    Attestation(String),
    /// The server refused or failed a call.
    #[error("server: {0}")]
    Server(String),
}

/// The agent's own identity.
#[derive(Clone)]
pub struct AgentIdentity {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Its SVID chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// Its key (PKCS#8).
    pub key: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The authority that signed it (empty when not known, e.g. after a restart).
    pub authority_id: String,
}

/// The agent's private key file (PKCS#8 DER, mode 0600) in its data directory.
pub const IDENTITY_KEY: &str = "agent.key.der";
const IDENTITY_CHAIN: &str = "agent.chain.pem";
const IDENTITY_AUTHORITY: &str = "agent.authority";
const BUNDLE_FILE: &str = "bundle.json";

fn io_err(p: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Io(format!("{}: {e}", p.display()))
}

impl AgentIdentity {
    fn from_chain(chain: Vec<Vec<u8>>, key: Vec<u8>, authority_id: String) -> Result<Self, AgentError> {
        let leaf = chain.first().ok_or_else(|| AgentError::Attestation("empty agent SVID chain".into()))?;
        let info = svid::parse_leaf(leaf).map_err(|e| AgentError::Attestation(e.to_string()))?;
        Ok(Self {
            id: info.spiffe_id,
            not_before: info.not_before,
            not_after: info.not_after,
            chain,
            key,
            authority_id,
        })
    }

    /// Writes the identity to `dir` (key 0600).
    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        write_secret_file(&dir.join(IDENTITY_KEY), &self.key).map_err(|e| AgentError::Io(e.to_string()))?;
        let p = dir.join(IDENTITY_CHAIN);
        std::fs::write(&p, svid::to_pem(&self.chain)).map_err(|e| io_err(&p, e))?;
        let p = dir.join(IDENTITY_AUTHORITY);
        std::fs::write(&p, &self.authority_id).map_err(|e| io_err(&p, e))
    }

    /// Reads a stored identity, if any.
    pub fn load(dir: &Path) -> Result<Option<Self>, AgentError> {
        let (kp, cp) = (dir.join(IDENTITY_KEY), dir.join(IDENTITY_CHAIN));
        if !kp.exists() || !cp.exists() {
            return Ok(None);
        }
        let key = read_secret_file(&kp).map_err(|e| AgentError::Io(e.to_string()))?;
        let chain = std::fs::read_to_string(&cp).map_err(|e| io_err(&cp, e))?;
        let chain = svid::pem_certs(&chain).map_err(|e| io_err(&cp, e))?;
        // Which authority signed it: known from the server; absent in older data directories.
        let authority = std::fs::read_to_string(dir.join(IDENTITY_AUTHORITY)).unwrap_or_default();
        Self::from_chain(chain, key, authority.trim().to_owned()).map(Some)
    }
}

/// Stores a bundle where a restarted agent will find it.
pub fn save_bundle(dir: &Path, b: &Bundle) -> Result<(), AgentError> {
    let doc = b.to_spiffe_json().map_err(|e| AgentError::Io(e.to_string()))?;
    let p = dir.join(BUNDLE_FILE);
    std::fs::write(&p, doc.to_string()).map_err(|e| io_err(&p, e))
}

/// A bundle as received from the server.
pub fn bundle_from_proto(td: &hallmark_core::TrustDomain, b: &pb::Bundle) -> Bundle {
    let jwt_authorities = serde_json::from_str::<serde_json::Value>(&b.jwks)
        .ok()
        .and_then(|v| v.get("keys").and_then(|k| k.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|k| k.as_object().and_then(JwtAuthority::from_jwk))
        .collect();
    Bundle {
        trust_domain: td.clone(),
        x509_authorities: b.x509_authorities.clone(),
        jwt_authorities,
        sequence: b.sequence,
        refresh_hint: hallmark_ca::bundle::DEFAULT_REFRESH_HINT,
        status: hallmark_ca::AuthorityStatus {
            crls: b.crls.clone(),
            tainted: b.tainted.clone(),
            revoked: b.revoked_authorities.clone(),
        },
    }
}

fn revoked_ids(items: &[pb::Revoked]) -> Vec<Revocation> {
    items.iter().map(|r| Revocation { id: r.id.clone(), not_after: r.not_after }).collect()
}

fn entry_from_proto(e: pb::Entry) -> Option<Entry> {
    Some(Entry {
        spiffe_id: SpiffeId::new(&e.spiffe_id).ok()?,
        parent_id: SpiffeId::new(&e.parent_id).ok()?,
        selectors: e.selectors.iter().map(|s| s.parse().ok()).collect::<Option<_>>()?,
        owner: e.owner,
        class: e.class.parse().unwrap_or(Class::Machine),
        x509_ttl: Ttl::from_secs(e.x509_ttl_seconds).ok()?,
        jwt_ttl: Ttl::from_secs(e.jwt_ttl_seconds).ok()?,
        dns_names: e.dns_names,
        hint: Some(e.hint).filter(|h| !h.is_empty()),
        recovery: false,
        revision: e.revision,
        created_at: 0,
        updated_at: 0,
        revoked_at: None,
        id: e.id,
    })
}

/// Shared agent state.
pub struct AgentInner {
    /// Settings.
    pub settings: AgentSettings,
    /// Entries, bundle and SVIDs.
    pub cache: Cache,
    /// The workload attestor.
    pub attestor: UnixAttestor,
    /// Connected or degraded.
    pub health: health::Health,
    anchors: SharedAnchors,
    identity: RwLock<AgentIdentity>,
    client: RwLock<NodeClient<Channel>>,
    /// Where `/live`, `/ready`, `/metrics` are served, once bound.
    pub health_addr: RwLock<Option<std::net::SocketAddr>>,
}

impl AgentInner {
    fn client(&self) -> NodeClient<Channel> {
        match self.client.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The agent's SPIFFE ID.
    pub fn id(&self) -> SpiffeId {
        match self.identity.read() {
            Ok(i) => i.id.clone(),
            Err(p) => p.into_inner().id.clone(),
        }
    }

    fn identity(&self) -> AgentIdentity {
        match self.identity.read() {
            Ok(i) => i.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Expiry of the agent's own SVID.
    pub fn identity_not_after(&self) -> i64 {
        match self.identity.read() {
            Ok(i) => i.not_after,
            Err(p) => p.into_inner().not_after,
        }
    }

    fn set_bundle(&self, b: Bundle) {
        if let Ok(mut a) = self.anchors.write() {
            *a = b.x509_authorities.clone();
        }
        if let Err(e) = save_bundle(&self.settings.data_dir, &b) {
            tracing::warn!(error = %e, "cannot persist bundle");
        }
        self.cache.set_bundle(b, now_unix());
    }

    /// Replaces the server connection with one that presents `identity`.
    fn use_identity(&self, identity: AgentIdentity) -> Result<(), AgentError> {
        let trust = Trust::Mtls {
            anchors: self.anchors.clone(),
            server_id: self.settings.trust_domain.server_id(),
            chain: identity.chain.clone(),
            key: identity.key.clone(),
        };
        let client = server_conn::channel(&self.settings.server_address, trust)?;
        if let Ok(mut c) = self.client.write() {
            *c = client;
        }
        if let Ok(mut i) = self.identity.write() {
            *i = identity;
        }
        Ok(())
    }

    /// Mints a JWT-SVID through the server for a workload that showed `evidence`.
    pub async fn mint_jwt(
        &self,
        entry_id: &str,
        audience: &[String],
        evidence: &hallmark_core::SelectorSet,
    ) -> Result<pb::MintJwtSvidResponse, Status> {
        let req = pb::MintJwtSvidRequest {
            entry_id: entry_id.to_owned(),
            audience: audience.to_vec(),
            evidence: evidence.iter().map(ToString::to_string).collect(),
        };
        match self.client().mint_jwt_svid(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) if s.code() == Code::PermissionDenied || s.code() == Code::NotFound => {
                tracing::info!(entry = entry_id, reason = %s.message(), "JWT-SVID denied");
                Err(Status::permission_denied("no identity issued"))
            }
            Err(s) if s.code() == Code::InvalidArgument => Err(Status::invalid_argument(s.message().to_owned())),
            Err(s) => {
                tracing::warn!(status = %s, "JWT-SVID mint failed");
                Err(Status::unavailable("server unavailable"))
            }
        }
    }

    /// Applies one sync event from the server.
    fn apply(&self, ev: sync_event::Event) {
        match ev {
            sync_event::Event::Snapshot(s) => {
                let dropped = self.cache.replace_revoked(&revoked_ids(&s.revoked), now_unix());
                self.health.add_revoked(dropped);
                if let Some(b) = &s.bundle {
                    self.set_bundle(bundle_from_proto(&self.settings.trust_domain, b));
                }
                self.cache.replace_entries(s.entries.into_iter().filter_map(entry_from_proto).collect());
            }
            sync_event::Event::Revoked(r) => {
                let dropped = self.cache.revoke(&revoked_ids(&r.items), now_unix());
                self.health.add_revoked(dropped);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "revoked credentials withdrawn; replacements requested where still entitled"
                    );
                }
            }
            sync_event::Event::Upsert(e) => {
                if let Some(e) = entry_from_proto(e) {
                    self.cache.upsert_entry(e);
                }
            }
            sync_event::Event::Delete(id) => self.cache.delete_entry(&id),
            sync_event::Event::Bundle(b) => self.set_bundle(bundle_from_proto(&self.settings.trust_domain, &b)),
        }
    }
}

/// The rotation point: half the lifetime, +-10% jitter.
fn rotate_at(not_before: i64, not_after: i64) -> i64 {
    let life = (not_after - not_before).max(2);
    let jitter = life / 10;
    let j = if jitter > 0 { rand::Rng::random_range(&mut rand::rng(), -jitter..=jitter) } else { 0 };
    not_before + life / 2 + j
}

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

async fn attest(settings: &AgentSettings) -> Result<(AgentIdentity, Bundle), AgentError> {
    let token = settings.join_token.clone().ok_or_else(|| {
        AgentError::Attestation("no stored agent SVID is valid and no join token is configured (`join_token`)".into())
    })?;
    let anchors = match &settings.bootstrap {
        Bootstrap::Anchors(a) => Some(Arc::new(RwLock::new(a.clone()))),
        Bootstrap::BundleFile(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| io_err(p, e))?;
            Some(Arc::new(RwLock::new(svid::pem_certs(&text).map_err(|e| io_err(p, e))?)))
        }
        Bootstrap::Insecure => {
            tracing::warn!(
                server = %settings.server_address,
                "insecure_bootstrap: trusting whichever server answers at this address for the first attestation, \
                 unverified, and pinning its bundle from then on; set `trust_bundle_path` to verify it instead"
            );
            None
        }
        Bootstrap::None => {
            return Err(AgentError::Attestation(
                "no bundle to verify the server: set `trust_bundle_path` (or `insecure_bootstrap = true`)".into(),
            ));
        }
    };
    // The CSR carries no SPIFFE ID: the server assigns it from the token.
    let kc = new_key_and_csr(None).map_err(|e| AgentError::Attestation(e.to_string()))?;
    let mut client = server_conn::channel(
        &settings.server_address,
        Trust::Attest { anchors, server_id: settings.trust_domain.server_id() },
    )?;
    let reply = client
        .attest_node(pb::AttestNodeRequest { join_token: token, csr: kc.csr_der })
        .await
        .map_err(|s| AgentError::Attestation(s.message().to_owned()))?
        .into_inner();
    let identity = AgentIdentity::from_chain(reply.cert_chain, kc.key_pkcs8, reply.authority_id)?;
    let bundle = reply
        .bundle
        .map(|b| bundle_from_proto(&settings.trust_domain, &b))
        .ok_or_else(|| AgentError::Attestation("server sent no bundle".into()))?;
    Ok((identity, bundle))
}

/// Starts the agent: resumes its stored identity or attests, then serves.
pub async fn start(settings: AgentSettings) -> Result<RunningAgent, AgentError> {
    let dir = settings.data_dir.clone();
    dir_mode::ensure_private_dir(&dir, &settings.socket_path)?;
    let now = now_unix();
    let stored = AgentIdentity::load(&dir)?.filter(|i| i.not_after > now + 5);
    let stored_bundle = std::fs::read_to_string(dir.join(BUNDLE_FILE))
        .ok()
        .and_then(|t| Bundle::from_spiffe_json(&settings.trust_domain, &t).ok());
    let (identity, bundle) = match (stored, stored_bundle) {
        (Some(i), Some(b)) => {
            tracing::info!(
                agent = %i.id,
                valid_until = %hallmark_core::time::rfc3339(i.not_after),
                dir = %dir.display(),
                "using stored agent SVID"
            );
            (i, b)
        }
        _ => {
            let (i, b) = attest(&settings).await?;
            i.save(&dir)?;
            save_bundle(&dir, &b)?;
            tracing::info!(agent = %i.id, "node attested");
            (i, b)
        }
    };
    let anchors: SharedAnchors = Arc::new(RwLock::new(bundle.x509_authorities.clone()));
    let client = server_conn::channel(
        &settings.server_address,
        Trust::Mtls {
            anchors: anchors.clone(),
            server_id: settings.trust_domain.server_id(),
            chain: identity.chain.clone(),
            key: identity.key.clone(),
        },
    )?;
    let cache = Cache::default();
    cache.set_bundle(bundle, now);
    let inner = Arc::new(AgentInner {
        settings,
        cache,
        attestor: UnixAttestor::new(),
        health: health::Health::new(now),
        anchors,
        identity: RwLock::new(identity),
        client: RwLock::new(client),
        health_addr: RwLock::new(None),
    });

    // The Workload API socket: reachable by every local user; attestation decides who gets what.
    // A directory the agent creates for it is 0755; an existing one (say /tmp
    // or /run) keeps the mode its owner gave it.
    let socket_path = inner.settings.socket_path.clone();
    if let Some(parent) = socket_path.parent()
        && !parent.exists()
    {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(|e| io_err(parent, e))?;
    }
    match std::fs::remove_file(&socket_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&socket_path, e)),
    }
    let listener = UnixListener::bind(&socket_path).map_err(|e| io_err(&socket_path, e))?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| io_err(&socket_path, e))?;

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
        tasks.spawn(health::serve(l, inner.clone()));
    }
    tasks.spawn(sync_loop(inner.clone()));
    tasks.spawn(rotation_loop(inner.clone()));
    tasks.spawn(renewal_loop(inner.clone()));
    tracing::info!(agent = %inner.id(), socket = %socket_path.display(), "agent ready");
    Ok(RunningAgent { inner, socket_path, tasks })
}

/// Keeps a sync stream open; on any failure reconnects with backoff. While
/// the stream is down the agent is degraded (see [`health`]). A ban ends the
/// stream with PermissionDenied: everything is withdrawn at once and the agent
/// keeps asking, in case the node is attested again.
async fn sync_loop(agent: Arc<AgentInner>) -> Result<(), AgentError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match agent.client().sync_entries(pb::SyncEntriesRequest {}).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            backoff = Duration::from_millis(200);
                            agent.health.set_connected(now_unix());
                            if let Some(e) = ev.event {
                                agent.apply(e);
                            }
                        }
                        Ok(None) => break,
                        Err(s) => {
                            refused(&agent, &s);
                            tracing::warn!(status = %s.message(), "entry sync stream ended");
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                refused(&agent, &s);
                tracing::warn!(code = ?s.code(), status = %s.message(), "cannot open entry sync")
            }
        }
        agent.health.set_disconnected(now_unix());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A PermissionDenied from the server means this node is banned (or unknown):
/// fail closed and withdraw everything.
fn refused(agent: &AgentInner, s: &Status) {
    if s.code() == Code::PermissionDenied {
        agent.health.set_banned();
        agent.cache.clear();
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long to wait before asking again after policy denied an SVID.
const DENIAL_RETRY_SECS: i64 = 30;

/// Requests the SVIDs workloads want (first issue or renewal, each decided by
/// the server on the workload's evidence) and drops expired ones, every second
/// and whenever the cache changes.
async fn rotation_loop(agent: Arc<AgentInner>) -> Result<(), AgentError> {
    let mut version = agent.cache.subscribe();
    let mut retry_after: std::collections::HashMap<SvidKey, i64> = std::collections::HashMap::new();
    loop {
        // Wake at least every second, and at the very moment the next SVID expires.
        let wake = agent
            .cache
            .next_expiry()
            .map(|t| Duration::from_millis(u64::try_from(t * 1000 - now_millis()).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            r = version.changed() => if r.is_err() { return Ok(()) },
            () = tokio::time::sleep(wake) => {}
        }
        let now = now_unix();
        let expired = agent.cache.expire(now);
        if expired > 0 {
            agent.health.add_expired(expired);
            tracing::warn!(expired, "withdrew expired SVIDs that were not renewed");
        }
        let due: Vec<Due> =
            agent.cache.due(now).into_iter().filter(|d| retry_after.get(&d.key).is_none_or(|t| *t <= now)).collect();
        for chunk in due.chunks(500) {
            let mut keys = Vec::with_capacity(chunk.len());
            let mut requests = Vec::with_capacity(chunk.len());
            for d in chunk {
                match new_key_and_csr(Some(&d.entry.spiffe_id)) {
                    Ok(kc) => {
                        requests.push(pb::SvidRequest {
                            entry_id: d.entry.id.clone(),
                            csr: kc.csr_der,
                            evidence: d.selectors.iter().map(ToString::to_string).collect(),
                            renewal: d.renewal,
                        });
                        keys.push((d.key.clone(), kc.key_pkcs8, d.entry.revision));
                    }
                    Err(err) => tracing::error!(error = %err, "cannot generate workload key"),
                }
            }
            let resp = match agent.client().sign_x509_svids(pb::SignX509SvidsRequest { requests }).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    tracing::warn!(code = ?s.code(), status = %s.message(), "SVID signing failed; will retry");
                    for d in chunk {
                        retry_after.insert(d.key.clone(), now + 2);
                    }
                    continue;
                }
            };
            // Results come back in request order.
            for ((key, private_key, revision), r) in keys.into_iter().zip(resp.results) {
                if r.denied {
                    tracing::info!(entry = %key.entry_id, reason = %r.error, "SVID denied; withdrawn");
                    agent.cache.deny(key, now + DENIAL_RETRY_SECS);
                    continue;
                }
                if !r.error.is_empty() {
                    tracing::warn!(entry = %key.entry_id, error = %r.error, "SVID refused");
                    retry_after.insert(key, now + 5);
                    continue;
                }
                let Some(info) = r.cert_chain.first().and_then(|l| svid::parse_leaf(l).ok()) else {
                    tracing::error!(entry = %key.entry_id, "server returned an unusable certificate");
                    retry_after.insert(key, now + 5);
                    continue;
                };
                retry_after.remove(&key);
                let received = now_unix();
                let rotate_at = if r.renew_at > received {
                    r.renew_at.min(info.not_after - 1)
                } else {
                    rotate_at(received, info.not_after)
                };
                agent.cache.put_svid(
                    key,
                    HeldSvid {
                        revision,
                        serial: info.serial,
                        authority_id: r.authority_id,
                        chain: r.cert_chain,
                        key: private_key,
                        not_before: info.not_before,
                        not_after: info.not_after,
                        rotate_at,
                    },
                );
            }
        }
        retry_after.retain(|_, t| *t > now - 60);
    }
}

/// Renews the agent's own SVID past half its life, or at once when the
/// authority that signed it is tainted, and reconnects with it. An agent SVID
/// that expired (the server was unreachable all along) is never presented
/// again: the agent attests afresh if it has a join token, and otherwise stays
/// degraded, saying what it needs.
async fn renewal_loop(agent: Arc<AgentInner>) -> Result<(), AgentError> {
    let mut expired_logged = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let id = agent.identity();
        let now = now_unix();
        if id.not_after <= now {
            if !expired_logged {
                tracing::error!(agent = %id.id, "agent SVID expired without renewal; attesting again");
                expired_logged = true;
            }
            match attest(&agent.settings).await {
                Ok((new_id, bundle)) => {
                    new_id.save(&agent.settings.data_dir)?;
                    agent.set_bundle(bundle);
                    tracing::info!(agent = %new_id.id, "node attested again");
                    agent.use_identity(new_id)?;
                    expired_logged = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot attest again; give the agent a new join token (`hallmark token create`)");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
            continue;
        }
        let tainted = agent.cache.bundle().is_some_and(|b| b.status.tainted.contains(&id.authority_id));
        // Backdating makes not_before earlier than issuance; renewing at the
        // midpoint of the certificate's span is still well before expiry.
        if now < id.not_before + (id.not_after - id.not_before) / 2 && !tainted {
            continue;
        }
        let kc = match new_key_and_csr(Some(&id.id)) {
            Ok(kc) => kc,
            Err(e) => {
                tracing::error!(error = %e, "cannot generate agent key");
                continue;
            }
        };
        match agent.client().renew_agent(pb::RenewAgentRequest { csr: kc.csr_der }).await {
            Ok(r) => {
                let r = r.into_inner();
                let new_id = match AgentIdentity::from_chain(r.cert_chain, kc.key_pkcs8, r.authority_id) {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::error!(error = %e, "server returned an unusable agent SVID");
                        continue;
                    }
                };
                if let Err(e) = new_id.save(&agent.settings.data_dir) {
                    tracing::error!(error = %e, "cannot persist renewed agent SVID");
                }
                agent.use_identity(new_id)?;
                tracing::info!(tainted, "renewed agent SVID");
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), status = %s.message(), "agent SVID renewal failed; will retry");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rotate_at;

    #[test]
    fn rotation_point_is_near_half_remaining_life() {
        for _ in 0..100 {
            let r = rotate_at(1000, 1000 + 3600);
            assert!((1000 + 1800 - 360..=1000 + 1800 + 360).contains(&r), "{r}");
            let short = rotate_at(1000, 1004);
            assert!((1001..=1003).contains(&short), "{short}");
        }
    }
}
