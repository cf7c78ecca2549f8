//! The state every task and service of a running agent shares: its
//! settings, the cache, the workload attestor, its health, and its own
//! identity with the server connection that presents it.

use std::sync::{Arc, RwLock};

use hallmark_ca::Bundle;
use hallmark_ca::tls::SharedAnchors;
use hallmark_core::{SpiffeId, now_unix};
use hallmark_proto::node::node_client::NodeClient;
use tonic::transport::Channel;

use crate::attest::UnixAttestor;
use crate::cache::Cache;
use crate::config::AgentSettings;
use crate::container::ContainerAttestor;
use crate::error::AgentError;
use crate::hash_slots::HashSlots;
use crate::health::Health;
use crate::identity::{AgentIdentity, save_bundle};
use crate::kubelet::KubeletAttestor;
use crate::process_end::EndedReports;
use crate::server_conn::{self, Trust};

/// An agent identity with the bundle it verifies the server by: what the
/// agent starts from, whether resumed or attested afresh.
pub(crate) struct Attested {
    /// The agent's SVID and key.
    pub(crate) identity: AgentIdentity,
    /// The trust domain's bundle.
    pub(crate) bundle: Bundle,
}

/// Shared agent state.
pub struct AgentInner {
    /// Settings.
    pub settings: AgentSettings,
    /// Entries, bundle and SVIDs.
    pub cache: Cache,
    /// The workload attestor.
    pub attestor: UnixAttestor,
    /// How many executables may be read in full at once, per uid and in all.
    pub hash_slots: HashSlots,
    /// The container attestor, when a runtime socket is configured.
    pub containers: Option<ContainerAttestor>,
    /// The pod attestor, when a kubelet is configured.
    pub kubelet: Option<KubeletAttestor>,
    /// Connected or degraded.
    pub health: Health,
    /// Credentials withdrawn because their process ended, until the server has them.
    pub ended: EndedReports,
    anchors: SharedAnchors,
    identity: RwLock<AgentIdentity>,
    client: RwLock<NodeClient<Channel>>,
    /// Where `/live`, `/ready`, `/metrics` are served, once bound.
    pub health_addr: RwLock<Option<std::net::SocketAddr>>,
}

impl AgentInner {
    /// The state of an agent starting at `now` as `attested`, with an mTLS
    /// connection to the server (connected lazily, on its first call).
    pub(crate) fn new(settings: AgentSettings, attested: Attested, now: i64) -> Result<Self, AgentError> {
        let anchors: SharedAnchors = Arc::new(RwLock::new(attested.bundle.x509_authorities.clone()));
        let client = mtls_client(&settings, &anchors, &attested.identity)?;
        let cache = Cache::default();
        let containers = settings.container_runtime_socket.clone().map(ContainerAttestor::new);
        let kubelet = settings.kubelet.clone().map(KubeletAttestor::new).transpose()?;
        cache.set_bundle(attested.bundle, now);
        Ok(Self {
            settings,
            cache,
            attestor: if containers.is_some() || kubelet.is_some() {
                UnixAttestor::new().reading_cgroups()
            } else {
                UnixAttestor::new()
            },
            hash_slots: HashSlots::default(),
            containers,
            kubelet,
            health: Health::new(now),
            ended: EndedReports::default(),
            anchors,
            identity: RwLock::new(attested.identity),
            client: RwLock::new(client),
            health_addr: RwLock::new(None),
        })
    }

    /// The server connection, presenting the agent's current SVID.
    pub(crate) fn client(&self) -> NodeClient<Channel> {
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

    /// The agent's current identity.
    pub(crate) fn identity(&self) -> AgentIdentity {
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

    /// Trusts `b` from now on: for the server connection, for a restart
    /// (stored in the data directory), and for workloads (the cache).
    pub(crate) fn set_bundle(&self, b: Bundle) {
        if let Ok(mut a) = self.anchors.write() {
            *a = b.x509_authorities.clone();
        }
        if let Err(e) = save_bundle(&self.settings.data_dir, &b) {
            tracing::warn!(error = %e, "cannot persist bundle");
        }
        self.cache.set_bundle(b, now_unix());
    }

    /// Replaces the server connection with one that presents `identity`.
    pub(crate) fn use_identity(&self, identity: AgentIdentity) -> Result<(), AgentError> {
        let client = mtls_client(&self.settings, &self.anchors, &identity)?;
        if let Ok(mut c) = self.client.write() {
            *c = client;
        }
        if let Ok(mut i) = self.identity.write() {
            *i = identity;
        }
        Ok(())
    }
}

/// A connection to the server that verifies it by `anchors` and presents `identity`.
fn mtls_client(
    settings: &AgentSettings,
    anchors: &SharedAnchors,
    identity: &AgentIdentity,
) -> Result<NodeClient<Channel>, AgentError> {
    let trust = Trust::Mtls {
        anchors: anchors.clone(),
        server_id: settings.trust_domain.server_id(),
        chain: identity.chain.clone(),
        key: identity.key.clone(),
    };
    server_conn::channel(&settings.server_address, trust)
}
