//! Agent configuration: TOML with every key checked.

use std::collections::HashMap;
use std::path::PathBuf;

use hallmark_core::TrustDomain;
use serde::Deserialize;

use crate::kubelet::KubeletSettings;

pub use hallmark_core::ConfigError;

/// The agent configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Trust domain name.
    pub trust_domain: String,
    /// Server agent-API address, `host:port`.
    pub server_address: String,
    /// Directory for the agent's own SVID, key and bundle.
    pub data_dir: PathBuf,
    /// Workload API socket path; default `DATA_DIR/public/api.sock`, and then
    /// `DATA_DIR` is 0711 so that every local user can reach the socket.
    #[serde(default)]
    pub socket_path: Option<PathBuf>,
    /// Join token for the first attestation.
    #[serde(default)]
    pub join_token: Option<String>,
    /// How the node proves itself instead of a join token: a `[node_attestor]`
    /// table with a `type` (`x509pop`, `tpm`, `k8s_psat`) and that type's keys.
    #[serde(default)]
    pub node_attestor: Option<NodeAttestorConfig>,
    /// PEM bundle to trust the server with on first contact.
    #[serde(default)]
    pub trust_bundle_path: Option<PathBuf>,
    /// Trust any server certificate on first contact (the received bundle is pinned after).
    #[serde(default)]
    pub insecure_bootstrap: bool,
    /// `host:port` for `/live`, `/ready` and `/metrics` (HTTP); off when absent.
    #[serde(default)]
    pub health_listen: Option<String>,
    /// Most Workload API connections one uid may hold open; by default a
    /// quarter of what the descriptor limit allows.
    #[serde(default)]
    pub max_connections_per_uid: Option<usize>,
    /// The container runtime's Docker Engine API socket (Docker's, or
    /// podman's `podman system service`), for `container:*` selectors; off
    /// when absent.
    #[serde(default)]
    pub container_runtime_socket: Option<PathBuf>,
    /// `https://HOST:PORT` of the kubelet's secure port, for `k8s:*`
    /// selectors; off when absent. Needs `kubelet_ca_path` and `kubelet_token_path`.
    #[serde(default)]
    pub kubelet_url: Option<String>,
    /// PEM file of the CA that signed the kubelet's serving certificate.
    #[serde(default)]
    pub kubelet_ca_path: Option<PathBuf>,
    /// File holding the service-account token presented to the kubelet.
    #[serde(default)]
    pub kubelet_token_path: Option<PathBuf>,
    /// Threads that run a standalone agent's work, the Workload API's calls
    /// among them; by default half the node's cores, at least one.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

/// The most threads `worker_threads` may ask for.
const MAX_WORKER_THREADS: usize = 256;

/// Threads for a standalone agent when `worker_threads` is not given: half
/// the node's cores, at least one. The agent shares the node with the
/// workloads it serves, whose calls wake it: on a 2-core node with four
/// busy callers, one thread answered with a p99 of 580–830 µs where two
/// (a thread per core, with the callers' threads on the same cores) took
/// 0.86–3.2 ms, and served more calls (BENCHMARKS.md, issue 16).
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Validated agent settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Server address.
    pub server_address: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Workload API socket.
    pub socket_path: PathBuf,
    /// Join token.
    pub join_token: Option<String>,
    /// The node attestor, when the node proves itself with more than a join token.
    pub node_attestor: Option<NodeAttestorConfig>,
    /// How to trust the server the first time.
    pub bootstrap: Bootstrap,
    /// Where to serve `/live`, `/ready` and `/metrics`.
    pub health_listen: Option<String>,
    /// Most Workload API connections per uid (`None`: from the descriptor limit).
    pub max_connections_per_uid: Option<usize>,
    /// The container runtime's API socket, when container evidence is on.
    pub container_runtime_socket: Option<PathBuf>,
    /// The kubelet, when pod evidence is on.
    pub kubelet: Option<KubeletSettings>,
    /// Threads for a standalone agent process's runtime (`hallmark agent`);
    /// `hallmark up` runs the agent on the runtime it shares with the server.
    pub worker_threads: usize,
}

/// The agent's `[node_attestor]` table: what the node proves itself with.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeAttestorConfig {
    /// A node certificate and its key (proof of possession).
    X509pop {
        /// PEM file: the node certificate, then any intermediates.
        cert_path: PathBuf,
        /// PEM file (PKCS#8, mode 0600): the node certificate's key.
        key_path: PathBuf,
    },
    /// The node's TPM 2.0 (EK and an attestation key, by credential activation).
    Tpm {
        /// The TPM's TCTI, e.g. `device:/dev/tpmrm0` or
        /// `swtpm:host=127.0.0.1,port=2321`.
        tcti: String,
    },
    /// The agent pod's projected service-account token (Kubernetes).
    K8sPsat {
        /// The cluster's name, as the server's configuration names it.
        cluster: String,
        /// The projected token's file (audience `hallmark`), read afresh at
        /// each attestation as the kubelet rotates it.
        token_path: PathBuf,
    },
}

impl NodeAttestorConfig {
    /// The attestor's name, as the server's `node:attestation:` selector says it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::X509pop { .. } => "x509pop",
            Self::Tpm { .. } => "tpm",
            Self::K8sPsat { .. } => "k8s_psat",
        }
    }
}

/// How an agent with no stored bundle trusts the server on first contact.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// Trust these anchors (DER).
    Anchors(Vec<Vec<u8>>),
    /// Read anchors from a PEM file.
    BundleFile(PathBuf),
    /// Trust any server once.
    Insecure,
    /// No way given: only a stored bundle works.
    None,
}

impl AgentConfig {
    /// Parses TOML, then applies `HALLMARK_JOIN_TOKEN` and `HALLMARK_SERVER_ADDRESS` from `env`.
    pub fn parse(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut c: Self = toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().to_owned()))?;
        if let Some(v) = env.get("HALLMARK_JOIN_TOKEN") {
            c.join_token = Some(v.clone());
        }
        if let Some(v) = env.get("HALLMARK_SERVER_ADDRESS") {
            c.server_address = v.clone();
        }
        if let Some(v) = env.get("HALLMARK_HEALTH_LISTEN") {
            c.health_listen = Some(v.clone());
        }
        Ok(c)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<AgentSettings, ConfigError> {
        let trust_domain = TrustDomain::new(&self.trust_domain)
            .map_err(|e| ConfigError::Value { key: "trust_domain", msg: e.to_string() })?;
        if let Some(h) = &self.health_listen
            && h.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::Value { key: "health_listen", msg: format!("`{h}` is not ip:port") });
        }
        if !self.server_address.contains(':') {
            return Err(ConfigError::Value {
                key: "server_address",
                msg: format!("`{}` is not host:port", self.server_address),
            });
        }
        let bootstrap = match (&self.trust_bundle_path, self.insecure_bootstrap) {
            (Some(_), true) => {
                return Err(ConfigError::Value {
                    key: "insecure_bootstrap",
                    msg: "give either `trust_bundle_path` or `insecure_bootstrap`, not both".into(),
                });
            }
            (Some(p), false) => Bootstrap::BundleFile(p.clone()),
            (None, true) => Bootstrap::Insecure,
            (None, false) => Bootstrap::None,
        };
        let kubelet = match (&self.kubelet_url, &self.kubelet_ca_path, &self.kubelet_token_path) {
            (None, None, None) => None,
            (Some(url), Some(ca_path), Some(token_path)) => {
                if !url.starts_with("https://") {
                    return Err(ConfigError::Value {
                        key: "kubelet_url",
                        msg: format!("`{url}` is not https://HOST:PORT"),
                    });
                }
                Some(KubeletSettings { url: url.clone(), ca_path: ca_path.clone(), token_path: token_path.clone() })
            }
            _ => {
                return Err(ConfigError::Value {
                    key: "kubelet_url",
                    msg: "give `kubelet_url`, `kubelet_ca_path` and `kubelet_token_path` together".into(),
                });
            }
        };
        Ok(AgentSettings {
            trust_domain,
            container_runtime_socket: self.container_runtime_socket.clone(),
            kubelet,
            server_address: self.server_address.clone(),
            socket_path: self.socket_path.clone().unwrap_or_else(|| self.data_dir.join("public").join("api.sock")),
            data_dir: self.data_dir.clone(),
            join_token: self.join_token.clone(),
            node_attestor: match (&self.node_attestor, &self.join_token) {
                (Some(a), Some(_)) => {
                    return Err(ConfigError::Value {
                        key: "node_attestor",
                        msg: format!("give either a join token or `[node_attestor]` ({}), not both", a.name()),
                    });
                }
                (a, _) => a.clone(),
            },
            bootstrap,
            worker_threads: match self.worker_threads {
                None => default_worker_threads(),
                Some(n) if (1..=MAX_WORKER_THREADS).contains(&n) => n,
                Some(n) => {
                    return Err(ConfigError::Value {
                        key: "worker_threads",
                        msg: format!("{n} is not between 1 and {MAX_WORKER_THREADS}"),
                    });
                }
            },
            health_listen: self.health_listen.clone(),
            max_connections_per_uid: match self.max_connections_per_uid {
                Some(0) => {
                    return Err(ConfigError::Value {
                        key: "max_connections_per_uid",
                        msg: "must be at least 1".into(),
                    });
                }
                n => n,
            },
        })
    }
}
