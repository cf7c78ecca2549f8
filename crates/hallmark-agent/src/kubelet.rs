//! Kubernetes pod evidence (`k8s:*` selectors), from the kubelet's pod list
//! on its secure port, matched by the pod UID and container id that the
//! workload's cgroup names.
//!
//! The agent authenticates to the kubelet with a service-account token (read
//! afresh for every request: projected tokens rotate) and verifies the
//! kubelet's certificate against a configured CA. A container that has just
//! started may not be listed yet: the list is asked again, a few times,
//! before the workload is attested without pod facts.
//!
//! Answers are kept per container for [`ANSWER_TTL`]: pod labels can change
//! while a pod runs, so they are never older than that.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hallmark_core::{Selector, is_image_digest};
use hallmark_http::{HttpError, HttpsClient, HttpsUrl, roots_from_pem_file};
use serde::Deserialize;

use crate::HTTP_LIMITS;

/// How long one container's pod facts are reused.
pub const ANSWER_TTL: Duration = Duration::from_secs(10);

/// How often, and how far apart, the pod list is asked again for a
/// container it does not list yet.
const ATTEMPTS: u32 = 8;
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Most containers whose answers are kept.
const MAX_CACHED: usize = 4096;

/// Where the kubelet is and how the agent is known to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletSettings {
    /// `https://HOST:PORT` of the kubelet's secure port.
    pub url: String,
    /// PEM file of the CA that signed the kubelet's serving certificate.
    pub ca_path: PathBuf,
    /// File holding the service-account token the agent presents.
    pub token_path: PathBuf,
}

/// Why the kubelet gave no pod facts.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The settings cannot be used (URL, CA file).
    #[error("kubelet settings: {0}")]
    Settings(String),
    /// The token file could not be read.
    #[error("kubelet token {path}: {source}")]
    Token {
        /// The token file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request failed.
    #[error("kubelet {url}: {source}")]
    Request {
        /// The kubelet's URL.
        url: String,
        /// What failed.
        source: HttpError,
    },
    /// The container is not in the pod list, after every attempt.
    #[error("the kubelet lists no container {container} in pod {pod}")]
    NotListed {
        /// The pod UID.
        pod: String,
        /// The container id.
        container: String,
    },
}

/// The kubelet's `/pods` answer: a PodList, with the fields we read.
#[derive(Debug, Deserialize)]
pub struct PodList {
    /// The pods.
    #[serde(default)]
    pub items: Vec<Pod>,
}

/// One pod.
#[derive(Debug, Deserialize)]
pub struct Pod {
    metadata: PodMetadata,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Debug, Deserialize)]
struct PodMetadata {
    uid: String,
    name: String,
    namespace: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    service_account_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default)]
    init_container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default)]
    ephemeral_container_statuses: Option<Vec<ContainerStatus>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
    #[serde(default, rename = "imageID")]
    image_id: Option<String>,
}

/// The `k8s:*` selectors of container `container_id` in pod `pod_uid`, if
/// `pods` lists it.
pub fn pod_selectors(pods: &PodList, pod_uid: &str, container_id: &str) -> Option<Vec<Selector>> {
    let pod = pods.items.iter().find(|p| p.metadata.uid == pod_uid)?;
    let statuses =
        [&pod.status.container_statuses, &pod.status.init_container_statuses, &pod.status.ephemeral_container_statuses];
    let status = statuses.into_iter().flatten().flatten().find(|s| {
        // `containerd://ID`, `cri-o://ID`, `docker://ID`.
        s.container_id.as_deref().and_then(|c| c.rsplit_once("://")).is_some_and(|(_, id)| id == container_id)
    })?;
    let mut out = Vec::new();
    let mut add = |key: &str, value: &str| {
        if let Ok(s) = Selector::new("k8s", key, value) {
            out.push(s);
        }
    };
    add("ns", &pod.metadata.namespace);
    add("pod-uid", &pod.metadata.uid);
    add("pod-name", &pod.metadata.name);
    // A pod without one runs as the namespace's `default` service account.
    add("sa", pod.spec.service_account_name.as_deref().unwrap_or("default"));
    for (k, v) in pod.metadata.labels.iter().flatten() {
        add("pod-label", &format!("{k}:{v}"));
    }
    add("container-name", &status.name);
    if let Some(digest) = status.image_id.as_deref().and_then(image_digest) {
        add("container-image", digest);
    }
    Some(out)
}

/// The digest in a kubelet `imageID`: `REPO@sha256:…`,
/// `docker-pullable://REPO@sha256:…` or a bare `sha256:…`.
fn image_digest(image_id: &str) -> Option<&str> {
    let digest = image_id.rsplit_once('@').map_or(image_id, |(_, d)| d);
    let digest = digest.rsplit_once("://").map_or(digest, |(_, d)| d);
    is_image_digest(digest).then_some(digest)
}

/// Asks the kubelet about pods and remembers the answers.
pub struct KubeletAttestor {
    settings: KubeletSettings,
    /// `{url}/pods`.
    pods_url: HttpsUrl,
    client: HttpsClient,
    answers: Mutex<HashMap<String, PodAnswer>>,
}

/// One container's pod facts, as the kubelet gave them.
#[derive(Debug, Clone)]
struct PodAnswer {
    /// When.
    at: Instant,
    /// The `k8s:*` selectors.
    selectors: Arc<Vec<Selector>>,
}

impl std::fmt::Debug for KubeletAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletAttestor").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl KubeletAttestor {
    /// An attestor for the kubelet `settings` name; reads the CA file now.
    pub fn new(settings: KubeletSettings) -> Result<Self, KubeletError> {
        let bad = |m: String| KubeletError::Settings(m);
        let base = settings.url.trim_end_matches('/');
        let pods_url = HttpsUrl::parse(&format!("{base}/pods"))
            .ok()
            .filter(|u| u.path() == "/pods")
            .ok_or_else(|| bad(format!("kubelet_url `{}` must be https://HOST:PORT", settings.url)))?;
        let roots = roots_from_pem_file(&settings.ca_path).map_err(|e| bad(e.to_string()))?;
        let client = HttpsClient::new(roots, HTTP_LIMITS).map_err(|e| bad(e.to_string()))?;
        Ok(Self { settings, pods_url, client, answers: Mutex::default() })
    }

    /// The `k8s:*` selectors of container `container_id` in pod `pod_uid`.
    pub async fn selectors(&self, pod_uid: &str, container_id: &str) -> Result<Arc<Vec<Selector>>, KubeletError> {
        let now = Instant::now();
        let cached = self.answers.lock().ok().and_then(|a| a.get(container_id).cloned());
        if let Some(answer) = cached
            && now.duration_since(answer.at) < ANSWER_TTL
        {
            return Ok(answer.selectors);
        }
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_EVERY).await;
            }
            let pods = self.pods().await?;
            if let Some(found) = pod_selectors(&pods, pod_uid, container_id) {
                let found = Arc::new(found);
                if let Ok(mut a) = self.answers.lock() {
                    if a.len() >= MAX_CACHED {
                        a.clear();
                    }
                    a.insert(container_id.to_owned(), PodAnswer { at: Instant::now(), selectors: found.clone() });
                }
                return Ok(found);
            }
        }
        Err(KubeletError::NotListed { pod: pod_uid.to_owned(), container: container_id.to_owned() })
    }

    /// The kubelet's pod list.
    async fn pods(&self) -> Result<PodList, KubeletError> {
        let token_path = &self.settings.token_path;
        let token = std::fs::read_to_string(token_path)
            .map_err(|source| KubeletError::Token { path: token_path.display().to_string(), source })?;
        let request = |source| KubeletError::Request { url: self.settings.url.clone(), source };
        self.client.get_json(&self.pods_url, Some(token.trim())).await.map_err(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "5d1c6b1e-7a3f-4c2e-9f11-2b9e0c8d4a70";
    const APP: &str = "4a3d2b1c0f9e8d7c6b5a49382716051a2b3c4d5e6f708192a3b4c5d6e7f80912";

    fn recorded(name: &str) -> PodList {
        let path = format!("{}/tests/data/kubelet/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn strings(v: &[Selector]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn recorded_pod_list_gives_pod_and_container_facts() {
        let pods = recorded("pods.json");
        let got = strings(&pod_selectors(&pods, POD, APP).unwrap());
        for want in [
            "k8s:ns:payments",
            "k8s:sa:api",
            &format!("k8s:pod-uid:{POD}"),
            "k8s:pod-name:api-7c9d8f6b5-x2x9q",
            "k8s:pod-label:app:api",
            "k8s:container-name:api",
            "k8s:container-image:sha256:0d4c5bbf8b5e1f0e3b6a6f1b9d0e9a2c4b7e6d5f4a3b2c1d0e9f8a7b6c5d4e3f",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
        }
        // The sidecar in the same pod has its own name and image.
        let sidecar = "b1a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
        let got = strings(&pod_selectors(&pods, POD, sidecar).unwrap());
        assert!(got.contains(&"k8s:container-name:proxy".to_owned()), "{got:?}");
        // An init container is matched too.
        let init = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
        let got = strings(&pod_selectors(&pods, POD, init).unwrap());
        assert!(got.contains(&"k8s:container-name:migrate".to_owned()), "{got:?}");
        // Another pod's UID with this container id, or an unknown container: nothing.
        assert!(pod_selectors(&pods, "00000000-0000-0000-0000-000000000000", APP).is_none());
        assert!(pod_selectors(&pods, POD, &"e".repeat(64)).is_none());
    }

    #[test]
    fn a_pod_without_its_container_yet() {
        // Recorded while the container was being created: no containerID yet.
        let pods = recorded("pods-starting.json");
        assert!(pod_selectors(&pods, POD, APP).is_none());
        // A pod without a service account name is `default`'s.
        let other = "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918";
        let got = strings(&pod_selectors(&pods, other, &"d".repeat(64)).unwrap());
        assert!(got.contains(&"k8s:sa:default".to_owned()), "{got:?}");
    }

    #[test]
    fn image_ids() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(image_digest(&format!("docker.io/library/nginx@{d}")), Some(d.as_str()));
        assert_eq!(image_digest(&format!("docker-pullable://nginx@{d}")), Some(d.as_str()));
        assert_eq!(image_digest(&d), Some(d.as_str()));
        assert_eq!(image_digest(&format!("docker://{d}")), Some(d.as_str()));
        assert_eq!(image_digest("nginx:1.25"), None);
        assert_eq!(image_digest(""), None);
    }
}
