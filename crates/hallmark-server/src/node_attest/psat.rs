//! The Kubernetes projected service-account token (PSAT) node attestor: an
//! agent running as a pod proves which cluster, namespace, service account,
//! pod and node it runs on with the token the kubelet projected into it for
//! the audience Hallmark asks for.
//!
//! What the token proves, and what it does not: the cluster's
//! service-account issuer signed it for *this* audience, for a pod of an
//! allowed service account, bound to a node. Anyone who can read the token
//! (the agent pod, the node's root) can present it until it expires, so the
//! allow-list of service accounts is the real gate: only the agent's
//! DaemonSet should run as them. A token made for another audience (one a
//! workload handed to some other service) is refused, which is why the
//! audience is checked and never left open.
//!
//! Verifying a token, in order:
//! 1. the cluster the evidence names is configured, the token is a compact
//!    JWS whose header holds only `alg` (RS256 or ES256), `kid` and `typ`;
//! 2. `iss` is that cluster's issuer (a token of cluster A presented as
//!    cluster B stops here);
//! 3. the signature verifies with the issuer's key of that `kid`, from its
//!    JWKS; or, when the cluster is configured with `token_review`, the
//!    cluster's API server authenticates the token (a TokenReview) and
//!    vouches for the pod, which also refuses tokens of deleted pods;
//! 4. `exp` is in the future, `nbf`/`iat` not beyond [`CLOCK_SKEW`], `aud`
//!    holds the configured audience, `sub` is the service account's name;
//! 5. the `kubernetes.io` claim names the namespace, service account, pod
//!    and node: the service account is on the allow-list, the node on the
//!    node allow-list when there is one.
//!
//! The agent's ID is `…/agent/k8s_psat/<cluster>/<node name>`: the node,
//! not the pod, so an agent keeps its ID across pod restarts. Tokens
//! without the `node` claim (Kubernetes before 1.30, or a token not bound
//! to a pod) are refused: there is no node to name the agent after.
//!
//! The issuer's keys are cached and fetched again every `jwks_refresh`; a
//! `kid` not in the cache makes one early fetch, at most every
//! [`REFETCH_INTERVAL`], so a flood of made-up `kid`s cannot flood the
//! issuer. If the issuer cannot be reached, keys fetched within
//! [`MAX_KEY_AGE`] are still used; older ones are not (a key the issuer has
//! withdrawn is trusted no longer than that).
//!
//! The token is never logged, nor echoed in an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use hallmark_core::Selector;
use hallmark_http::{HttpsClient, HttpsUrl, roots_from_pem_file};
use hallmark_proto::node::PsatEvidence;
use serde::Deserialize;

use super::{AttestError, NodeProof};
use crate::jwks::{HTTP_LIMITS, IssuerKeys, Jws, JwsError, KeyError, shown};
pub use crate::jwks::{MAX_KEY_AGE, REFETCH_INTERVAL};

/// The attestor's name, first segment of the agent path and selector type.
pub const ATTESTOR: &str = "k8s_psat";

/// Longest token accepted, in bytes (Kubernetes tokens are about 1 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How far in the future `nbf` and `iat` may be: the issuer's clock may run
/// ahead of the server's. `exp` gets no leeway: it is the issuer's hard
/// limit, and the kubelet renews a token long before it expires.
pub const CLOCK_SKEW: i64 = 60;

/// How often an issuer's keys are fetched when `jwks_refresh` is not set.
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

/// The `k8s_psat` node attestor's settings: the `[[node_attestor]]` table
/// with `type = "k8s_psat"` (the caller reads `type`), holding one
/// `[[node_attestor.clusters]]` table per Kubernetes cluster whose agents
/// may attest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsatAttestorConfig {
    /// The clusters (at least one, names unique).
    pub clusters: Vec<PsatClusterConfig>,
}

/// One cluster: who issues its tokens and which agents may attest with them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsatClusterConfig {
    /// The cluster's name, as the agent names it in its evidence and as it
    /// appears in agent IDs and `k8s_psat:cluster:` selectors: letters,
    /// digits, `.`, `-`, `_`.
    pub name: String,
    /// The service-account issuer (the API server's
    /// `--service-account-issuer`), an https:// URL; tokens' `iss` must be
    /// exactly this.
    pub issuer: String,
    /// The audience the agent's projected token is made for (default
    /// `hallmark`).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// PEM file of the CA(s) to trust for the issuer's HTTPS (discovery
    /// document and JWKS). Without it, the public web roots compiled into
    /// Hallmark (Mozilla's) are trusted, as for a cloud provider's issuer.
    #[serde(default)]
    pub issuer_ca_path: Option<PathBuf>,
    /// The JWKS URL, https://. Without it, the `jwks_uri` of
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Service accounts whose tokens may attest, `NAMESPACE:NAME` (at least
    /// one): the agent DaemonSet's.
    pub allowed_service_accounts: Vec<String>,
    /// When set, only these nodes may attest.
    #[serde(default)]
    pub allowed_node_names: Option<Vec<String>>,
    /// Have the cluster's API server check each token (a TokenReview)
    /// instead of verifying its signature here. Then `issuer_ca_path` and
    /// `jwks_url` are not used and must not be set.
    #[serde(default)]
    pub token_review: Option<TokenReviewConfig>,
    /// How often the issuer's keys are fetched again, e.g. `5m` (the
    /// default).
    #[serde(default)]
    pub jwks_refresh: Option<String>,
}

/// How to reach a cluster's API server for TokenReviews.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenReviewConfig {
    /// The API server, `https://HOST[:PORT]`.
    pub api_server: String,
    /// PEM file of the CA that signed the API server's certificate.
    pub ca_path: PathBuf,
    /// File holding the bearer token the server presents (read for every
    /// review: it may rotate); its service account needs permission to
    /// create `tokenreviews`.
    pub token_path: PathBuf,
}

fn default_audience() -> String {
    "hallmark".to_owned()
}

/// Verifies PSAT evidence against the configured clusters.
#[derive(Debug)]
pub struct PsatVerifier {
    clusters: BTreeMap<String, Cluster>,
}

#[derive(Debug)]
struct Cluster {
    name: String,
    issuer: String,
    audience: String,
    /// `NAMESPACE:NAME`.
    allowed_service_accounts: BTreeSet<String>,
    allowed_node_names: Option<BTreeSet<String>>,
    check: Check,
}

/// How a cluster's tokens are authenticated.
#[derive(Debug)]
enum Check {
    /// Their signature, with the issuer's published keys.
    Jwks(IssuerKeys),
    /// By the cluster's API server.
    TokenReview(TokenReview),
}

#[derive(Debug)]
struct TokenReview {
    client: HttpsClient,
    url: HttpsUrl,
    token_path: PathBuf,
}

impl PsatVerifier {
    /// A verifier for `cfg`'s clusters. Checks every setting and reads the
    /// CA files now; fetches nothing (the first token does).
    pub fn new(cfg: &PsatAttestorConfig) -> Result<Self, String> {
        if cfg.clusters.is_empty() {
            return Err("k8s_psat: no cluster configured (add a [[node_attestor.clusters]] table)".into());
        }
        let mut clusters = BTreeMap::new();
        for c in &cfg.clusters {
            let cluster = Cluster::new(c).map_err(|e| format!("k8s_psat cluster `{}`: {e}", c.name))?;
            if clusters.insert(c.name.clone(), cluster).is_some() {
                return Err(format!("k8s_psat: cluster `{}` is configured twice", c.name));
            }
        }
        Ok(Self { clusters })
    }

    /// Verifies `ev` at `now` (unix seconds): what the token proves about
    /// the agent's node, or why it proves nothing.
    pub async fn verify(&self, ev: &PsatEvidence, now: i64) -> Result<NodeProof, AttestError> {
        let cluster = self
            .clusters
            .get(&ev.cluster)
            .ok_or_else(|| AttestError::Refused(format!("unknown cluster `{}`", shown(&ev.cluster))))?;
        cluster.verify(&ev.token, now).await
    }
}

impl Cluster {
    fn new(c: &PsatClusterConfig) -> Result<Self, String> {
        if !is_path_segment(&c.name) {
            return Err("the name must be letters, digits, `.`, `-`, `_` (it is part of agent IDs)".into());
        }
        HttpsUrl::parse(&c.issuer).map_err(|e| format!("issuer: {e}"))?;
        if c.audience.is_empty() {
            return Err("audience must not be empty".into());
        }
        if c.allowed_service_accounts.is_empty() {
            return Err("allowed_service_accounts must name at least one NAMESPACE:NAME".into());
        }
        for sa in &c.allowed_service_accounts {
            let ok =
                sa.split_once(':').is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'));
            if !ok {
                return Err(format!("allowed_service_accounts: `{sa}` is not NAMESPACE:NAME"));
            }
        }
        if let Some(nodes) = &c.allowed_node_names
            && nodes.is_empty()
        {
            return Err("allowed_node_names is empty: no node could attest (leave it out to allow any)".into());
        }
        let refresh = match &c.jwks_refresh {
            None => DEFAULT_JWKS_REFRESH,
            Some(s) => hallmark_core::parse_duration(s)
                .ok()
                .filter(|d| *d >= REFETCH_INTERVAL && *d <= MAX_KEY_AGE)
                .ok_or_else(|| format!("jwks_refresh `{s}` must be a duration from 10s to 1h, e.g. `5m`"))?,
        };
        let check = match &c.token_review {
            Some(tr) => {
                if c.jwks_url.is_some() || c.issuer_ca_path.is_some() || c.jwks_refresh.is_some() {
                    return Err(
                        "with token_review, jwks_url, issuer_ca_path and jwks_refresh are not used: remove them".into(),
                    );
                }
                let base = tr.api_server.trim_end_matches('/');
                let url = HttpsUrl::parse(&format!("{base}/apis/authentication.k8s.io/v1/tokenreviews"))
                    .map_err(|e| format!("token_review.api_server: {e}"))?;
                let roots = roots_from_pem_file(&tr.ca_path).map_err(|e| format!("token_review.ca_path: {e}"))?;
                let client = HttpsClient::new(roots, HTTP_LIMITS).map_err(|e| e.to_string())?;
                Check::TokenReview(TokenReview { client, url, token_path: tr.token_path.clone() })
            }
            None => {
                let roots = match &c.issuer_ca_path {
                    Some(path) => roots_from_pem_file(path).map_err(|e| format!("issuer_ca_path: {e}"))?,
                    None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
                };
                Check::Jwks(IssuerKeys::new(&c.issuer, roots, c.jwks_url.as_deref(), refresh)?)
            }
        };
        let allowed_node_names = c.allowed_node_names.as_ref().map(|n| n.iter().cloned().collect());
        Ok(Self {
            name: c.name.clone(),
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            allowed_service_accounts: c.allowed_service_accounts.iter().cloned().collect(),
            allowed_node_names,
            check,
        })
    }

    async fn verify(&self, token: &str, now: i64) -> Result<NodeProof, AttestError> {
        // 1. A compact JWS with an accepted algorithm.
        let jws: Jws<'_, Claims> = Jws::parse(token, MAX_TOKEN_LEN).map_err(|e| match e {
            JwsError::Malformed(m) => AttestError::Malformed(format!("PSAT: {m}")),
            JwsError::Refused(m) => refused(m),
        })?;
        // 2. This cluster's issuer.
        let claims = &jws.claims;
        let iss = claims.iss.as_deref().ok_or_else(|| refused("the token has no `iss`"))?;
        if iss != self.issuer {
            return Err(refused(format!(
                "the token's issuer `{}` is not cluster `{}`'s (`{}`)",
                shown(iss),
                self.name,
                self.issuer
            )));
        }
        // 3. Authenticated: by signature, or by the API server.
        let facts = match &self.check {
            Check::Jwks(jwks) => {
                jwks.verify_signature(&jws).await.map_err(|e| match e {
                    KeyError::Unavailable(_) => AttestError::Unavailable(e.to_string()),
                    KeyError::Refused(m) => refused(m),
                })?;
                // 4. Time, audience, subject.
                check_claims(claims, &self.audience, now)?;
                PodFacts::from_claims(claims)?
            }
            Check::TokenReview(review) => {
                // The claims are checked as in the JWKS case, first: a token
                // refused for them is not worth a question to the API server.
                check_claims(claims, &self.audience, now)?;
                let claimed = PodFacts::from_claims(claims)?;
                let facts = review.review(token, &self.audience).await?;
                // Once the API server has authenticated the token, its claims
                // are the issuer's, and must agree with what the server says.
                if claimed != facts {
                    return Err(refused("the token's claims do not match the API server's review"));
                }
                facts
            }
        };
        let exp = claims.exp.ok_or_else(|| refused("the token has no `exp`"))?;
        // 5. The allow-lists, then what was proved.
        let sa = format!("{}:{}", facts.namespace, facts.service_account);
        if !self.allowed_service_accounts.contains(&sa) {
            return Err(refused(format!(
                "service account `{}` of cluster `{}` is not in allowed_service_accounts",
                shown(&sa),
                self.name
            )));
        }
        if let Some(nodes) = &self.allowed_node_names
            && !nodes.contains(&facts.node_name)
        {
            return Err(refused(format!(
                "node `{}` of cluster `{}` is not in allowed_node_names",
                shown(&facts.node_name),
                self.name
            )));
        }
        self.proof(&facts, exp)
    }

    fn proof(&self, facts: &PodFacts, exp: i64) -> Result<NodeProof, AttestError> {
        if !is_path_segment(&facts.node_name) {
            return Err(refused(format!(
                "node name `{}` cannot be part of an agent ID (letters, digits, `.`, `-`, `_`)",
                shown(&facts.node_name)
            )));
        }
        let mut selectors = Vec::with_capacity(5);
        for (key, value) in [
            ("cluster", self.name.as_str()),
            ("agent_ns", facts.namespace.as_str()),
            ("agent_sa", facts.service_account.as_str()),
            ("agent_node_name", facts.node_name.as_str()),
            ("agent_pod_uid", facts.pod_uid.as_str()),
        ] {
            let s = Selector::new(ATTESTOR, key, value)
                .map_err(|e| refused(format!("the token's {key} gives no selector: {e}")))?;
            selectors.push(s.to_string());
        }
        selectors.sort();
        selectors.dedup();
        Ok(NodeProof {
            attestor: ATTESTOR,
            agent_path: vec![ATTESTOR.to_owned(), self.name.clone(), facts.node_name.clone()],
            selectors,
            evidence_expires_at: Some(exp),
        })
    }
}

/// What a token says about the pod it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodFacts {
    namespace: String,
    service_account: String,
    pod_uid: String,
    node_name: String,
}

impl PodFacts {
    fn from_claims(claims: &Claims) -> Result<Self, AttestError> {
        let k = claims.kubernetes.as_ref().ok_or_else(|| refused("the token has no `kubernetes.io` claim"))?;
        let (namespace, sa) = match (&k.namespace, &k.serviceaccount) {
            (Some(ns), Some(sa)) => (ns, sa),
            _ => return Err(refused("the token names no namespace and service account")),
        };
        let expected_sub = format!("system:serviceaccount:{namespace}:{}", sa.name);
        if claims.sub.as_deref() != Some(expected_sub.as_str()) {
            return Err(refused("the token's `sub` is not its service account"));
        }
        let pod = k.pod.as_ref().ok_or_else(|| refused("the token is not bound to a pod"))?;
        let node = k.node.as_ref().ok_or_else(|| {
            refused(
                "the token names no node (`kubernetes.io.node`, in pod tokens of Kubernetes 1.30 and later): \
                 the agent ID is derived from it",
            )
        })?;
        Ok(Self {
            namespace: namespace.clone(),
            service_account: sa.name.clone(),
            pod_uid: pod.uid.clone(),
            node_name: node.name.clone(),
        })
    }
}

/// Time, audience and the claims every check needs.
fn check_claims(claims: &Claims, audience: &str, now: i64) -> Result<(), AttestError> {
    let exp = claims.exp.ok_or_else(|| refused("the token has no `exp` (not a projected token)"))?;
    if exp <= now {
        return Err(refused(format!("the token expired at {exp} (now {now})")));
    }
    for (name, t) in [("nbf", claims.nbf), ("iat", claims.iat)] {
        if let Some(t) = t
            && t > now.saturating_add(CLOCK_SKEW)
        {
            return Err(refused(format!("the token's `{name}` {t} is in the future (now {now})")));
        }
    }
    let aud_ok = match &claims.aud {
        Some(Audience::One(a)) => a == audience,
        Some(Audience::Many(list)) => list.iter().any(|a| a == audience),
        None => false,
    };
    if !aud_ok {
        return Err(refused(format!("the token's audience does not include `{audience}`")));
    }
    Ok(())
}

/// The claims read from a token (others, such as `jti` and
/// `kubernetes.io.warnafter`, are ignored).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default, rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct KubernetesClaim {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    serviceaccount: Option<ObjectRef>,
    #[serde(default)]
    pod: Option<ObjectRef>,
    #[serde(default)]
    node: Option<ObjectRef>,
}

#[derive(Debug, Deserialize)]
struct ObjectRef {
    name: String,
    uid: String,
}

impl TokenReview {
    /// Asks the API server whether `token` is valid for `audience`, and for
    /// which pod.
    async fn review(&self, token: &str, audience: &str) -> Result<PodFacts, AttestError> {
        let bearer = std::fs::read_to_string(&self.token_path).map_err(|e| {
            AttestError::Unavailable(format!("token_review.token_path {}: {e}", self.token_path.display()))
        })?;
        let request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        });
        let body = serde_json::to_vec(&request).map_err(|e| AttestError::Unavailable(e.to_string()))?;
        let answer: ReviewAnswer = self
            .client
            .post_json(&self.url, Some(bearer.trim()), body)
            .await
            .map_err(|e| AttestError::Unavailable(format!("TokenReview at {}: {e}", self.url)))?;
        let status = answer.status;
        if !status.authenticated {
            let why = status.error.as_deref().map_or_else(String::new, |e| format!(": {}", shown(e)));
            return Err(refused(format!("the API server did not authenticate the token{why}")));
        }
        if !status.audiences.is_empty() && !status.audiences.iter().any(|a| a == audience) {
            return Err(refused(format!("the API server's review does not include audience `{audience}`")));
        }
        let user = status.user.ok_or_else(|| refused("the API server's review names no user"))?;
        let (namespace, service_account) = user
            .username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| refused(format!("`{}` is not a service account", shown(&user.username))))?;
        let extra = |key: &str| -> Option<String> {
            let values = user.extra.get(&format!("authentication.kubernetes.io/{key}"))?;
            match values.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            }
        };
        let pod_uid = extra("pod-uid").ok_or_else(|| refused("the token is not bound to a pod"))?;
        let node_name = extra("node-name").ok_or_else(|| {
            refused("the API server names no node for the token (Kubernetes 1.30 and later do): the agent ID is derived from it")
        })?;
        Ok(PodFacts {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod_uid,
            node_name,
        })
    }
}

/// A TokenReview's answer, the fields read.
#[derive(Debug, Deserialize)]
struct ReviewAnswer {
    status: ReviewStatus,
}

#[derive(Debug, Deserialize)]
struct ReviewStatus {
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    user: Option<ReviewUser>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReviewUser {
    username: String,
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

fn refused(reason: impl Into<String>) -> AttestError {
    AttestError::Refused(reason.into())
}

/// Whether `s` is a SPIFFE path segment made of letters, digits, `.`, `-`
/// and `_` (and not `.` or `..`).
fn is_path_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Parses and checks the token's form only, with no key and no clock: what
/// the fuzz target drives. `Ok` when the token would go on to signature
/// verification.
#[doc(hidden)]
pub fn parse_for_fuzzing(token: &str) -> Result<(), AttestError> {
    let jws: Jws<'_, Claims> = Jws::parse(token, MAX_TOKEN_LEN).map_err(|e| AttestError::Malformed(e.to_string()))?;
    let _ = PodFacts::from_claims(&jws.claims);
    let _ = check_claims(&jws.claims, "hallmark", 0);
    Ok(())
}
