//! Envoy's Secret Discovery Service (SDS v3) on the Workload API socket, as
//! the reference agent serves it, so Envoy takes its certificates straight
//! from the agent.
//!
//! Every call is attested like a Workload API call (see `admission`;
//! Envoy sends no SPIFFE security header, so none is required). A caller
//! matching no entry is refused with PermissionDenied. Secrets, with the names
//! SPIRE gives them:
//!
//! - a `tls_certificate` per SPIFFE ID the caller holds an SVID for (name: the
//!   SPIFFE ID), and `default` for its default (first) SVID;
//! - a `validation_context` with the trust domain's bundle, named after the
//!   trust domain's SPIFFE ID (`spiffe://example.org`) or `ROOTCA`, and `ALL`
//!   for every bundle at once. Federated bundles would each get one named
//!   after their trust domain; Hallmark has no federation yet, so there is
//!   only its own.
//!
//! A request naming no resources gets every SPIFFE ID's certificate and the
//! trust domain's validation context (not the `default`, `ROOTCA` and `ALL`
//! aliases). Naming a secret the caller is not entitled to is InvalidArgument.
//! Envoy 1.18 and later (told by the request's node build version) get
//! validation contexts for Envoy's SPIFFE certificate validator, which checks
//! the peer's trust domain too; others get the bundle as `trusted_ca`.
//!
//! `StreamSecrets` follows the xDS state-of-the-world protocol: a response
//! carries a new `version_info` and `nonce`; a request echoing that nonce is an
//! ACK (or a NACK when it carries `error_detail`, which is logged) and sends
//! nothing unless the subscribed names changed; a request with an older nonce
//! is stale and ignored. Each change of what the caller is given (a rotation,
//! a revocation and its replacement, a new bundle) is pushed at once. SDS has
//! no way to take a secret back from Envoy in this protocol variant, so a
//! revoked SVID is answered with its replacement as soon as the agent holds
//! one. `DeltaSecrets` is Unimplemented, as in the reference agent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hallmark_core::now_unix;
use hallmark_proto::ENVOY_SECRET_TYPE_URL;
use hallmark_proto::envoy_api::envoy::config::core::v3::{DataSource, Node, TypedExtensionConfig, data_source, node};
use hallmark_proto::envoy_api::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
    spiffe_cert_validator_config,
};
use hallmark_proto::envoy_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use hallmark_proto::envoy_api::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{self, FIRST_SVID_WAIT, InterestGuard, no_identity};
use crate::cache::ServedSvid;
use crate::evidence::Evidence;
use crate::state::AgentInner;

/// The name of the caller's default certificate.
pub const DEFAULT_SVID_NAME: &str = "default";
/// A name for the trust domain's own validation context.
pub const DEFAULT_BUNDLE_NAME: &str = "ROOTCA";
/// The name of the validation context holding every bundle.
pub const ALL_BUNDLES_NAME: &str = "ALL";
/// Most resource names one request may subscribe to.
pub const MAX_RESOURCE_NAMES: usize = 64;
/// Longest resource name accepted (the longest SPIFFE ID).
pub const MAX_RESOURCE_NAME_LEN: usize = 2048;

const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
const SPIFFE_VALIDATOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

/// A trust domain's X.509 bundle, as SDS names and serves it.
struct TrustBundle {
    /// The trust domain's SPIFFE ID (`spiffe://example.org`): the resource
    /// name its validation context is asked for by.
    id: String,
    /// The trust domain's name (`example.org`), as the SPIFFE validator names it.
    name: String,
    /// Its X.509 authorities, PEM.
    pem: String,
}

impl TrustBundle {
    /// `example.org`'s, with a placeholder for its PEM: for the fuzz target and tests.
    fn example() -> Self {
        Self { id: "spiffe://example.org".into(), name: "example.org".into(), pem: "PEM".into() }
    }
}

/// What a caller may be given at one moment.
struct View {
    /// SVIDs held for it, default first.
    svids: Vec<ServedSvid>,
    /// SPIFFE IDs of the entries it matches (held or not).
    entitled: BTreeSet<String>,
    /// The trust domain's bundle, once known.
    bundle: Option<TrustBundle>,
    /// SPIFFE IDs of the entries it matches still waiting for their first SVID.
    pending: BTreeSet<String>,
}

impl View {
    fn now(agent: &AgentInner, evidence: &Evidence) -> Self {
        let now = now_unix();
        let td = &agent.settings.trust_domain;
        Self {
            // Entries bound to their process are served on the Workload API
            // only: Envoy's SDS streams are not tied to one process instance here.
            svids: agent.cache.x509_for(evidence, None, now),
            entitled: agent.cache.matching(evidence.selectors()).iter().map(|e| e.spiffe_id.to_string()).collect(),
            bundle: agent.cache.bundle().map(|b| TrustBundle {
                id: td.id().to_string(),
                name: td.to_string(),
                pem: b.x509_pem(),
            }),
            pending: agent.cache.pending_ids(evidence, None, now).into_iter().collect(),
        }
    }

    /// Whether a certificate `names` asks for is being issued right now, so
    /// an answer is better held back a moment than sent without it.
    fn awaits(&self, names: &BTreeSet<String>) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        names.is_empty()
            || names.iter().any(|n| self.pending.contains(n))
            || (names.contains(DEFAULT_SVID_NAME) && self.svids.is_empty())
    }
}

/// Whether the requesting Envoy has the SPIFFE certificate validator (1.18 and later).
fn has_spiffe_validator(node: Option<&Node>) -> bool {
    let Some(node::UserAgentVersionType::UserAgentBuildVersion(b)) =
        node.and_then(|n| n.user_agent_version_type.as_ref())
    else {
        return false;
    };
    b.version.as_ref().is_some_and(|v| v.major_number > 1 || (v.major_number == 1 && v.minor_number >= 18))
}

fn inline(bytes: impl Into<Vec<u8>>) -> Option<DataSource> {
    Some(DataSource { specifier: Some(data_source::Specifier::InlineBytes(bytes.into())), ..Default::default() })
}

fn tls_certificate(name: &str, svid: &ServedSvid) -> Secret {
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.key.clone()));
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(hallmark_ca::svid::to_pem(&svid.chain)),
            private_key: inline(key),
            ..Default::default()
        })),
    }
}

/// A validation context named `name` for `bundles`.
fn validation_context(name: &str, bundles: &[&TrustBundle], spiffe_validator: bool) -> Secret {
    let context = if spiffe_validator {
        let config = SpiffeCertValidatorConfig {
            trust_domains: bundles
                .iter()
                .map(|b| spiffe_cert_validator_config::TrustDomain {
                    name: b.name.clone(),
                    trust_bundle: inline(b.pem.as_bytes()),
                })
                .collect(),
            ..Default::default()
        };
        CertificateValidationContext {
            custom_validator_config: Some(TypedExtensionConfig {
                name: SPIFFE_VALIDATOR.to_owned(),
                typed_config: Some(prost_types::Any {
                    type_url: SPIFFE_VALIDATOR_TYPE_URL.to_owned(),
                    value: config.encode_to_vec(),
                }),
            }),
            ..Default::default()
        }
    } else {
        let pem: String = bundles.iter().map(|b| b.pem.as_str()).collect();
        CertificateValidationContext { trusted_ca: inline(pem), ..Default::default() }
    };
    Secret { name: name.to_owned(), r#type: Some(secret::Type::ValidationContext(context)) }
}

/// The secrets available now for `names` (empty: everything under its own
/// name). A name the caller is not entitled to is InvalidArgument; one it is
/// entitled to but holds nothing for yet is left out.
fn secrets(view: &View, names: &BTreeSet<String>, spiffe_validator: bool) -> Result<Vec<Secret>, Status> {
    let td_id = view.bundle.as_ref().map(|b| b.id.as_str());
    let unknown: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| {
            ![DEFAULT_SVID_NAME, DEFAULT_BUNDLE_NAME, ALL_BUNDLES_NAME].contains(n)
                && Some(*n) != td_id
                && !view.entitled.contains(*n)
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Status::invalid_argument(format!(
            "this workload is not entitled to the secrets {}",
            unknown.iter().map(|n| format!("`{}`", n.escape_debug())).collect::<Vec<_>>().join(", ")
        )));
    }
    let wants = |n: &str| names.is_empty() || names.contains(n);
    let mut out = Vec::new();
    // Only the trust domain's own bundle: Hallmark has no federation yet.
    if let Some(b) = &view.bundle {
        let own = [b];
        if wants(&b.id) {
            out.push(validation_context(&b.id, &own, spiffe_validator));
        }
        if names.contains(DEFAULT_BUNDLE_NAME) {
            out.push(validation_context(DEFAULT_BUNDLE_NAME, &own, spiffe_validator));
        }
        if names.contains(ALL_BUNDLES_NAME) {
            if !spiffe_validator {
                return Err(Status::invalid_argument(
                    "`ALL` needs Envoy's SPIFFE certificate validator (Envoy 1.18 or later)",
                ));
            }
            out.push(validation_context(ALL_BUNDLES_NAME, &own, true));
        }
    }
    let mut seen = BTreeSet::new();
    for s in &view.svids {
        // Two entries with one SPIFFE ID: the first (the default order) names it.
        if seen.insert(s.spiffe_id.as_str()) && wants(&s.spiffe_id) {
            out.push(tls_certificate(&s.spiffe_id, s));
        }
    }
    if let Some(first) = view.svids.first().filter(|_| names.contains(DEFAULT_SVID_NAME)) {
        out.push(tls_certificate(DEFAULT_SVID_NAME, first));
    }
    Ok(out)
}

/// Secrets as a response carries them.
fn packed(secrets: &[Secret]) -> Vec<prost_types::Any> {
    secrets
        .iter()
        .map(|s| prost_types::Any { type_url: ENVOY_SECRET_TYPE_URL.to_owned(), value: s.encode_to_vec() })
        .collect()
}

fn check_request(r: &DiscoveryRequest) -> Result<BTreeSet<String>, Status> {
    if !r.type_url.is_empty() && r.type_url != ENVOY_SECRET_TYPE_URL {
        return Err(Status::invalid_argument(format!(
            "type_url `{}` is not served here (only `{ENVOY_SECRET_TYPE_URL}`)",
            r.type_url.escape_debug()
        )));
    }
    if r.resource_names.len() > MAX_RESOURCE_NAMES || r.resource_names.iter().any(|n| n.len() > MAX_RESOURCE_NAME_LEN) {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_RESOURCE_NAMES} resource names of at most {MAX_RESOURCE_NAME_LEN} bytes each"
        )));
    }
    Ok(r.resource_names.iter().filter(|n| !n.is_empty()).cloned().collect())
}

/// What a stream should do after computing the caller's secrets.
enum Outcome {
    /// Send these.
    Send(Vec<Secret>),
    /// Nothing to send yet; look again in a second.
    Wait,
    /// Nothing changed.
    Quiet,
}

/// One `StreamSecrets` stream's protocol state.
struct StreamState {
    /// The subscribed names, once the first request arrived.
    names: Option<BTreeSet<String>>,
    spiffe_validator: bool,
    /// The last version and nonce sent.
    version: u64,
    nonce: String,
    /// What was last sent.
    sent: Option<Vec<Secret>>,
    /// Since when a requested certificate has been awaited.
    awaited_since: Option<Instant>,
    /// A request asked for an answer that has not been sent yet.
    owed: bool,
}

impl StreamState {
    /// A stream that has received no request yet.
    fn new() -> Self {
        Self {
            names: None,
            spiffe_validator: false,
            version: 0,
            nonce: String::new(),
            sent: None,
            awaited_since: None,
            owed: false,
        }
    }

    /// Applies a request; returns whether it asks for a response now.
    fn on_request(&mut self, r: &DiscoveryRequest) -> Result<bool, Status> {
        let names = check_request(r)?;
        if self.names.is_some() && r.response_nonce != self.nonce {
            tracing::debug!(nonce = %r.response_nonce, expected = %self.nonce, "SDS: stale request ignored");
            return Ok(false);
        }
        if let Some(e) = &r.error_detail {
            tracing::warn!(
                version = %self.version,
                rejected = %e.message.escape_debug(),
                "SDS: the client rejected the secrets sent (NACK)"
            );
        }
        if self.names.is_none() {
            self.spiffe_validator = has_spiffe_validator(r.node.as_ref());
        }
        let changed = self.names.as_ref() != Some(&names);
        self.names = Some(names);
        Ok(changed)
    }

    /// Decides what to send given the caller's view now. `requested`: a
    /// request just changed the subscription, so it gets an answer even if
    /// the secrets are the ones it already has.
    fn next(&mut self, view: &View, requested: bool) -> Result<Outcome, Status> {
        let Some(names) = &self.names else { return Ok(Outcome::Quiet) };
        // A subscription answered late is still answered.
        self.owed |= requested;
        if view.entitled.is_empty() {
            return Err(no_identity());
        }
        let secrets = secrets(view, names, self.spiffe_validator)?;
        // A requested certificate being issued (a first SVID, or the
        // replacement of a revoked one): wait briefly for it rather than
        // answer without it.
        if view.awaits(names) {
            if self.awaited_since.get_or_insert_with(Instant::now).elapsed() < FIRST_SVID_WAIT {
                return Ok(Outcome::Wait);
            }
        } else {
            self.awaited_since = None;
        }
        if secrets.is_empty() {
            return Err(no_identity());
        }
        if !self.owed && self.sent.as_ref() == Some(&secrets) {
            return Ok(Outcome::Quiet);
        }
        Ok(Outcome::Send(secrets))
    }

    fn response(&mut self, secrets: Vec<Secret>) -> DiscoveryResponse {
        self.version += 1;
        self.owed = false;
        self.nonce = format!("{:016x}", rand::random::<u64>());
        let resources = packed(&secrets);
        self.sent = Some(secrets);
        DiscoveryResponse {
            version_info: self.version.to_string(),
            resources,
            type_url: ENVOY_SECRET_TYPE_URL.to_owned(),
            nonce: self.nonce.clone(),
            ..Default::default()
        }
    }
}

/// Serves one `StreamSecrets` stream until either side ends it.
async fn serve_stream(
    agent: Arc<AgentInner>,
    evidence: Arc<Evidence>,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    _interest: InterestGuard,
) {
    let mut state = StreamState::new();
    let mut changes = agent.cache.subscribe();
    let mut waiting = false;
    loop {
        let requested = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(r)) => match state.on_request(&r) {
                    Ok(true) => true,
                    Ok(false) => continue,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                },
                Ok(None) => return,
                Err(s) => {
                    tracing::debug!(status = %s, "SDS stream ended by the client");
                    return;
                }
            },
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
            () = tx.closed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)), if waiting => false,
        };
        changes.borrow_and_update();
        let view = View::now(&agent, &evidence);
        waiting = false;
        match state.next(&view, requested) {
            Ok(Outcome::Send(secrets)) => {
                let resp = state.response(secrets);
                tracing::debug!(version = %resp.version_info, resources = resp.resources.len(), "SDS: pushing secrets");
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            Ok(Outcome::Wait) => waiting = true,
            Ok(Outcome::Quiet) => {}
            Err(s) => {
                let _ = tx.send(Err(s)).await;
                return;
            }
        }
    }
}

/// Drives one stream's protocol with requests as they come off the wire,
/// for a fixed caller (two SVIDs held, one entry pending, a bundle), the way
/// a `StreamSecrets` stream would: the fuzz target `sds_stream` calls it.
/// Each frame of `data` is a length byte and that many bytes of a
/// `DiscoveryRequest`. Returns how many responses the stream would send.
#[doc(hidden)]
pub fn drive_stream(mut data: &[u8]) -> usize {
    let held =
        |id: &str| ServedSvid { spiffe_id: id.into(), chain: vec![vec![0x30]], key: vec![1], hint: String::new() };
    let view = View {
        svids: vec![held("spiffe://example.org/a"), held("spiffe://example.org/b")],
        entitled: ["spiffe://example.org/a", "spiffe://example.org/b", "spiffe://example.org/c"]
            .into_iter()
            .map(String::from)
            .collect(),
        bundle: Some(TrustBundle::example()),
        pending: ["spiffe://example.org/c".to_owned()].into_iter().collect(),
    };
    let mut state = StreamState::new();
    let mut sent = 0;
    while let Some((&len, rest)) = data.split_first() {
        let (frame, rest) = rest.split_at(usize::from(len).min(rest.len()));
        data = rest;
        let Ok(r) = DiscoveryRequest::decode(frame) else { continue };
        match state.on_request(&r).and_then(|asked| state.next(&view, asked)) {
            Ok(Outcome::Send(secrets)) => {
                state.response(secrets);
                sent += 1;
            }
            Ok(Outcome::Wait | Outcome::Quiet) => {}
            Err(_) => return sent,
        }
    }
    sent
}

/// The SDS service.
#[derive(Clone)]
pub struct SdsApi {
    agent: Arc<AgentInner>,
}

impl SdsApi {
    /// A service over the agent.
    pub fn new(agent: Arc<AgentInner>) -> Self {
        Self { agent }
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsApi {
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("incremental SDS (DeltaSecrets) is not supported; use StreamSecrets"))
    }

    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let caller = admission::attest_identified(&self.agent, &req).await?;
        // Like a FetchX509SVID stream, an SDS stream keeps the caller's SVIDs issued and renewed.
        let interest = InterestGuard::open(self.agent.clone(), &caller);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(serve_stream(self.agent.clone(), caller.evidence, req.into_inner(), tx, interest));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(&self, req: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
        let caller = admission::attest_identified(&self.agent, &req).await?;
        let _interest = InterestGuard::open(self.agent.clone(), &caller);
        let evidence = caller.evidence;
        let r = req.into_inner();
        let names = check_request(&r)?;
        let spiffe_validator = has_spiffe_validator(r.node.as_ref());
        let mut changes = self.agent.cache.subscribe();
        let deadline = Instant::now() + FIRST_SVID_WAIT;
        loop {
            changes.borrow_and_update();
            let view = View::now(&self.agent, &evidence);
            if view.entitled.is_empty() {
                return Err(no_identity());
            }
            let secrets = secrets(&view, &names, spiffe_validator)?;
            if !view.awaits(&names) || Instant::now() >= deadline {
                if secrets.is_empty() {
                    return Err(no_identity());
                }
                // A unary answer: nothing to acknowledge, so no version or nonce (as the reference agent).
                return Ok(Response::new(DiscoveryResponse {
                    resources: packed(&secrets),
                    type_url: ENVOY_SECRET_TYPE_URL.to_owned(),
                    ..Default::default()
                }));
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid(id: &str) -> ServedSvid {
        ServedSvid { spiffe_id: id.into(), chain: vec![vec![1, 2, 3]], key: vec![4, 5], hint: String::new() }
    }

    fn view() -> View {
        View {
            svids: vec![svid("spiffe://example.org/a"), svid("spiffe://example.org/b")],
            entitled: ["spiffe://example.org/a", "spiffe://example.org/b", "spiffe://example.org/c"]
                .into_iter()
                .map(String::from)
                .collect(),
            bundle: Some(TrustBundle::example()),
            pending: BTreeSet::new(),
        }
    }

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    fn request(names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
            type_url: ENVOY_SECRET_TYPE_URL.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn wildcard_gives_every_id_and_the_trust_domain() {
        let got: Vec<String> = secrets(&view(), &names(&[]), false).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(got, ["spiffe://example.org", "spiffe://example.org/a", "spiffe://example.org/b"]);
    }

    #[test]
    fn aliases_and_unentitled_names() {
        let got: Vec<String> = secrets(&view(), &names(&["default", "ROOTCA", "spiffe://example.org/b"]), false)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(got, ["ROOTCA", "spiffe://example.org/b", "default"]);
        // Entitled but not held yet: left out, not an error.
        assert!(secrets(&view(), &names(&["spiffe://example.org/c"]), false).unwrap().is_empty());
        let e = secrets(&view(), &names(&["spiffe://example.org/z"]), false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("spiffe://example.org/z"), "{}", e.message());
        assert_eq!(secrets(&view(), &names(&["ALL"]), false).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(secrets(&view(), &names(&["ALL"]), true).unwrap().len(), 1);
    }

    #[test]
    fn validation_context_form_follows_the_envoy_version() {
        let old = validation_context("x", &[&TrustBundle::example()], false);
        let Some(secret::Type::ValidationContext(c)) = old.r#type else { panic!() };
        assert!(c.trusted_ca.is_some() && c.custom_validator_config.is_none());
        let new = validation_context("x", &[&TrustBundle::example()], true);
        let Some(secret::Type::ValidationContext(c)) = new.r#type else { panic!() };
        let cfg = c.custom_validator_config.unwrap();
        assert_eq!(cfg.name, SPIFFE_VALIDATOR);
        let any = cfg.typed_config.unwrap();
        let decoded = SpiffeCertValidatorConfig::decode(any.value.as_slice()).unwrap();
        assert_eq!(decoded.trust_domains[0].name, "example.org");
        let build = |major, minor| Node {
            user_agent_version_type: Some(node::UserAgentVersionType::UserAgentBuildVersion(
                hallmark_proto::envoy_api::envoy::config::core::v3::BuildVersion {
                    version: Some(hallmark_proto::envoy_api::envoy::r#type::v3::SemanticVersion {
                        major_number: major,
                        minor_number: minor,
                        patch: 0,
                    }),
                    metadata: None,
                },
            )),
            ..Default::default()
        };
        assert!(!has_spiffe_validator(None));
        assert!(!has_spiffe_validator(Some(&build(1, 17))));
        assert!(has_spiffe_validator(Some(&build(1, 18))));
        assert!(has_spiffe_validator(Some(&build(2, 0))));
    }

    #[test]
    fn acks_send_nothing_and_stale_nonces_are_ignored() {
        let mut st = StreamState::new();
        let v = view();
        assert!(st.on_request(&request(&["default"], "")).unwrap());
        let Outcome::Send(s) = st.next(&v, true).unwrap() else { panic!("first request answered") };
        let resp = st.response(s);
        assert_eq!(resp.version_info, "1");
        // ACK: same names, the nonce just sent: nothing to send.
        let mut ack = request(&["default"], &resp.nonce);
        ack.version_info = resp.version_info.clone();
        assert!(!st.on_request(&ack).unwrap());
        assert!(matches!(st.next(&v, false).unwrap(), Outcome::Quiet));
        // A stale nonce changes nothing, even with other names.
        assert!(!st.on_request(&request(&["ROOTCA"], "old")).unwrap());
        assert_eq!(st.names, Some(names(&["default"])));
        // A NACK with the same names asks for nothing new.
        let mut nack = request(&["default"], &resp.nonce);
        nack.error_detail =
            Some(hallmark_proto::envoy_api::google::rpc::Status { code: 3, message: "bad".into(), details: vec![] });
        assert!(!st.on_request(&nack).unwrap());
        // A new subscription is answered.
        assert!(st.on_request(&request(&["default", "ROOTCA"], &resp.nonce)).unwrap());
        let Outcome::Send(s) = st.next(&v, true).unwrap() else { panic!() };
        assert_eq!(st.response(s).version_info, "2");
        // A wrong type URL is refused.
        let mut bad = request(&[], "");
        bad.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
        assert_eq!(st.on_request(&bad).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn the_fuzz_seeds_drive_the_stream() {
        let seed =
            |name: &str| std::fs::read(format!("{}/../../fuzz/seeds/sds_stream/{name}", env!("CARGO_MANIFEST_DIR")));
        // Subscribe (answered), then an ACK and a NACK naming a nonce never sent (stale: ignored).
        assert_eq!(drive_stream(&seed("subscribe_ack_nack").unwrap()), 1);
        // Everything is asked for, and `c` is still being issued: held back a moment.
        assert_eq!(drive_stream(&seed("wildcard").unwrap()), 0);
        assert_eq!(drive_stream(&seed("unentitled").unwrap()), 0);
        assert_eq!(drive_stream(&[200, 1, 2, 3]), 0, "a truncated frame is not a request");
    }

    #[test]
    fn a_subscription_held_back_is_still_answered() {
        let mut st = StreamState::new();
        let mut v = view();
        assert!(st.on_request(&request(&["spiffe://example.org/a"], "")).unwrap());
        let Outcome::Send(s) = st.next(&v, true).unwrap() else { panic!() };
        let resp = st.response(s);
        // Widened to `c`, which is being issued: held back...
        v.pending = names(&["spiffe://example.org/c"]);
        assert!(st.on_request(&request(&["spiffe://example.org/a", "spiffe://example.org/c"], &resp.nonce)).unwrap());
        assert!(matches!(st.next(&v, true).unwrap(), Outcome::Wait));
        // ...and answered once `c` is no longer awaited, though nothing new is there to send.
        v.pending.clear();
        assert!(matches!(st.next(&v, false).unwrap(), Outcome::Send(_)));
    }

    #[test]
    fn nothing_held_waits_while_pending_then_denies() {
        let mut st = StreamState::new();
        st.names = Some(names(&["spiffe://example.org/a"]));
        let mut v = view();
        v.svids.clear();
        v.pending = names(&["spiffe://example.org/a"]);
        assert!(matches!(st.next(&v, false).unwrap(), Outcome::Wait));
        v.pending.clear();
        assert_eq!(st.next(&v, false).err().map(|s| s.code()), Some(tonic::Code::PermissionDenied));
        v.entitled.clear();
        assert_eq!(st.next(&v, false).err().map(|s| s.code()), Some(tonic::Code::PermissionDenied));
    }
}
