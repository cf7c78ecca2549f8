//! Container evidence: what the container runtime says about the container
//! a workload's cgroup names (`container:*` selectors).
//!
//! The runtime is asked over its Docker Engine API socket, which Docker
//! serves and podman serves too (`podman system service`). Its word is taken
//! only for a process that really is in that container: the caller's mount
//! namespace must be the one of the container's first process, as the
//! runtime reports its pid. A process that merely moved itself into a cgroup
//! named after a container (root, or a user in a delegated cgroup subtree)
//! is in another mount namespace, and no process can enter a container's
//! mount namespace without being privileged over that container.
//!
//! Answers are cached per container id; an entry is dropped once the
//! container's first process has exited (its start time no longer matches),
//! so a container that died is looked up again, and found gone.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hallmark_core::{Selector, is_image_digest};
use hallmark_http::{HttpError, get_json};
use serde::Deserialize;

use crate::HTTP_LIMITS;
use crate::attest::namespace_inode;
use crate::cgroup::ContainerRef;

/// Most containers whose answers are kept; the cache is cleared beyond.
const MAX_CACHED: usize = 4096;

/// Most labels turned into selectors for one container.
const MAX_LABELS: usize = 128;

/// Why a container gives no evidence.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The runtime's socket could not be asked.
    #[error("container runtime at {socket}: {source}")]
    Runtime {
        /// The socket.
        socket: String,
        /// What failed.
        source: HttpError,
    },
    /// The runtime does not know the container.
    #[error("the container runtime does not know container {0}")]
    Unknown(String),
    /// The container is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The process is not in the container's mount namespace.
    #[error("the process names container {0} in its cgroup but is not in that container's mount namespace")]
    NotInContainer(String),
}

/// What the runtime said about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The container's name, without Docker's leading `/`.
    pub name: String,
    /// The image as the container was created from it (a name, perhaps a tag).
    pub image: String,
    /// The image's digests: its id (the digest of its configuration) and the
    /// digest of each registry manifest it was pulled by.
    pub image_digests: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its first process, by pid and start time.
    pub init_pid: i32,
    /// That process's start time (clock ticks since boot).
    pub init_start: u64,
    /// The selectors made of the name, image, image digests and labels:
    /// made once per answer, not on every call from the container.
    pub selectors: Vec<Selector>,
}

/// Asks a container runtime about containers, and remembers the answers.
#[derive(Debug)]
pub struct ContainerAttestor {
    socket: PathBuf,
    cache: Mutex<HashMap<String, Arc<ContainerInfo>>>,
}

/// The fields of the Docker Engine API's container inspection we read.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerJson {
    name: String,
    image: String,
    config: ContainerConfig,
    state: ContainerState,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    image: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerState {
    running: bool,
    pid: i32,
}

/// The fields of the image inspection we read.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageJson {
    id: String,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

impl ContainerAttestor {
    /// An attestor asking the runtime at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket, cache: Mutex::new(HashMap::new()) }
    }

    /// The `container:*` selectors of a process in `container`, whose mount
    /// namespace is `mount_ns`.
    pub async fn selectors(
        &self,
        container: &ContainerRef,
        mount_ns: Option<u64>,
    ) -> Result<Vec<Selector>, ContainerError> {
        // A cached answer whose first process has ended (the container
        // stopped, or was restarted under the same id) is asked again, once.
        let mut info = self.info(&container.id).await?;
        let mut init_ns = namespace_inode(&info.init_pid.to_string(), "mnt");
        if !still_running(&info) {
            self.forget(&container.id);
            info = self.info(&container.id).await?;
            init_ns = namespace_inode(&info.init_pid.to_string(), "mnt");
            if !still_running(&info) {
                return Err(ContainerError::NotRunning(container.id.clone()));
            }
        }
        // Read before the first process was seen still running: the
        // namespace is that process's, not a later one's with its pid.
        if mount_ns.is_none() || init_ns != mount_ns {
            return Err(ContainerError::NotInContainer(container.id.clone()));
        }
        // The id and runtime as this process's cgroup names them; the rest
        // as the runtime said.
        let mut out = Vec::with_capacity(info.selectors.len() + 2);
        if let Ok(s) = Selector::new("container", "id", &container.id) {
            out.push(s);
        }
        if let Some(r) = container.runtime
            && let Ok(s) = Selector::new("container", "runtime", r.as_str())
        {
            out.push(s);
        }
        out.extend(info.selectors.iter().cloned());
        Ok(out)
    }

    /// What the runtime says about container `id`, from the cache when
    /// asked before ([`ContainerAttestor::selectors`] checks it still holds).
    async fn info(&self, id: &str) -> Result<Arc<ContainerInfo>, ContainerError> {
        if let Some(info) = self.cache.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(info);
        }
        let info = Arc::new(self.inspect(id).await?);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= MAX_CACHED {
                c.retain(|_, i| still_running(i));
            }
            if c.len() < MAX_CACHED {
                c.insert(id.to_owned(), info.clone());
            }
        }
        Ok(info)
    }

    /// Drops what is cached for container `id`.
    fn forget(&self, id: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(id);
        }
    }

    /// Asks the runtime about container `id` and its image.
    async fn inspect(&self, id: &str) -> Result<ContainerInfo, ContainerError> {
        let c: ContainerJson = match self.get(&format!("/v1.41/containers/{id}/json")).await {
            Err(ContainerError::Runtime { source, .. }) if source.is_not_found() => {
                return Err(ContainerError::Unknown(id.to_owned()));
            }
            other => other?,
        };
        if !c.state.running || c.state.pid <= 0 {
            return Err(ContainerError::NotRunning(id.to_owned()));
        }
        let image: ImageJson = self.get(&format!("/v1.41/images/{}/json", c.image)).await?;
        let mut image_digests = vec![image.id];
        for repo_digest in image.repo_digests.unwrap_or_default() {
            if let Some((_, digest)) = repo_digest.rsplit_once('@') {
                image_digests.push(digest.to_owned());
            }
        }
        image_digests.retain(|d| is_image_digest(d));
        image_digests.sort();
        image_digests.dedup();
        let init_start =
            crate::attest::start_time(c.state.pid).map_err(|_| ContainerError::NotRunning(id.to_owned()))?;
        let name = c.name.trim_start_matches('/').to_owned();
        let labels = c.config.labels.unwrap_or_default();
        let selectors = described_by(&name, &c.config.image, &image_digests, &labels);
        Ok(ContainerInfo {
            name,
            image: c.config.image,
            image_digests,
            labels,
            init_pid: c.state.pid,
            init_start,
            selectors,
        })
    }

    /// GETs `path` from the runtime's socket.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ContainerError> {
        let runtime = |source| ContainerError::Runtime { socket: self.socket.display().to_string(), source };
        let ask = async {
            let stream = tokio::net::UnixStream::connect(&self.socket).await?;
            get_json(stream, "localhost", path, None, HTTP_LIMITS.max_body).await
        };
        let timeout = HTTP_LIMITS.timeout;
        tokio::time::timeout(timeout, ask).await.map_err(|_| runtime(HttpError::Timeout(timeout)))?.map_err(runtime)
    }
}

/// The `container:*` selectors of what the runtime says of a container:
/// its name, image, image digests and labels (the first [`MAX_LABELS`]).
/// A value that makes no valid selector gives none.
fn described_by(name: &str, image: &str, digests: &[String], labels: &BTreeMap<String, String>) -> Vec<Selector> {
    let mut out = Vec::new();
    let mut add = |key: &str, value: &str| {
        if let Ok(s) = Selector::new("container", key, value) {
            out.push(s);
        }
    };
    add("name", name);
    add("image", image);
    for d in digests {
        add("image_digest", d);
    }
    for (k, v) in labels.iter().take(MAX_LABELS) {
        add("label", &format!("{k}:{v}"));
    }
    out
}

/// Whether the container's first process is still the one the runtime named.
fn still_running(info: &ContainerInfo) -> bool {
    crate::attest::start_time(info.init_pid).is_ok_and(|t| t == info.init_start)
}
