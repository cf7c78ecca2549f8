//! The SPIFFE Workload API (`SpiffeWorkloadAPI`) on a Unix socket.
//!
//! Every call must carry `workload.spiffe.io: true` (else InvalidArgument).
//! The caller is attested from the kernel for each call; what it gets depends
//! only on that attestation. Streams send the full state on every message and
//! send the first one at once.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use hallmark_core::{SelectorSet, SpiffeId, now_unix};
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse, WitsvidRequest, WitsvidResponse,
    X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::AgentInner;
use crate::admission::{self, FIRST_SVID_WAIT, InterestGuard, no_identity};
use crate::attest::Caller;
use crate::cache::HeldJwt;

/// Most audiences accepted in one JWT-SVID request.
pub const MAX_AUDIENCES: usize = 32;
/// Longest audience accepted.
pub const MAX_AUDIENCE_LEN: usize = 512;

/// A Workload API connection, carrying the peer's kernel credentials.
pub struct UdsConn {
    stream: UnixStream,
    caller: Option<Caller>,
}

impl Connected for UdsConn {
    type ConnectInfo = Option<Caller>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.caller.clone()
    }
}

impl AsyncRead for UdsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UdsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts Workload API connections, pinning each peer process with a pidfd
/// taken from the socket at accept time.
pub fn incoming(listener: UnixListener) -> ReceiverStream<io::Result<UdsConn>> {
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
                    let pidfd: Option<OwnedFd> =
                        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerPidfd).ok();
                    let caller = pid.map(|pid| Caller::new(pid, pidfd));
                    if tx.send(Ok(UdsConn { stream, caller })).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "workload API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The Workload API service.
#[derive(Clone)]
pub struct WorkloadApi {
    agent: Arc<AgentInner>,
}

impl WorkloadApi {
    /// A service over the agent.
    pub fn new(agent: Arc<AgentInner>) -> Self {
        Self { agent }
    }

    /// Checks the security header and attests the caller.
    async fn admit<T>(&self, req: &Request<T>) -> Result<SelectorSet, Status> {
        admission::require_security_header(req)?;
        admission::attest(&self.agent, req).await
    }

    /// Like [`Self::admit`], but the caller must match at least one entry.
    async fn admit_identified<T>(&self, req: &Request<T>) -> Result<SelectorSet, Status> {
        admission::require_security_header(req)?;
        admission::attest_identified(&self.agent, req).await
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn trust_domain_key(agent: &AgentInner) -> String {
    agent.settings.trust_domain.id().to_string()
}

/// Runs `next` on every cache change and sends its result when it differs from
/// the last one sent. `next` returning `Err` ends the stream with that status.
/// `guard` lives as long as the stream.
fn watch_stream<T, F, G>(agent: Arc<AgentInner>, guard: G, mut next: F) -> Streamed<T>
where
    T: PartialEq + Clone + Send + 'static,
    F: FnMut(&AgentInner, bool) -> Result<Option<T>, Status> + Send + 'static,
    G: Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _guard = guard;
        let mut version = agent.cache.subscribe();
        let mut last: Option<T> = None;
        let started = tokio::time::Instant::now();
        loop {
            version.borrow_and_update();
            let waiting_first = last.is_none() && started.elapsed() < FIRST_SVID_WAIT;
            match next(&agent, waiting_first) {
                Ok(Some(msg)) => {
                    if last.as_ref() != Some(&msg) {
                        if tx.send(Ok(msg.clone())).await.is_err() {
                            return;
                        }
                        last = Some(msg);
                    }
                }
                Ok(None) => {}
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            }
            tokio::select! {
                r = version.changed() => if r.is_err() { return },
                () = tx.closed() => return,
                () = tokio::time::sleep(Duration::from_secs(1)), if last.is_none() => {}
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn x509_message(
    agent: &AgentInner,
    selectors: &SelectorSet,
    waiting_first: bool,
) -> Result<Option<X509svidResponse>, Status> {
    let now = now_unix();
    let svids = agent.cache.x509_for(selectors, now);
    if svids.is_empty() {
        // SVIDs are being issued for this workload: wait briefly rather than deny.
        if waiting_first && agent.cache.pending(selectors, now) {
            return Ok(None);
        }
        return Err(no_identity());
    }
    let b = agent.cache.bundle();
    let bundle = b.as_ref().map(|b| b.x509_der()).unwrap_or_default();
    let crl = b.map(|b| b.status.crls.clone()).unwrap_or_default();
    Ok(Some(X509svidResponse {
        svids: svids
            .into_iter()
            .map(|s| X509svid {
                spiffe_id: s.spiffe_id,
                x509_svid: s.chain.concat(),
                x509_svid_key: s.key,
                bundle: bundle.clone(),
                hint: s.hint,
            })
            .collect(),
        crl,
        federated_bundles: HashMap::new(),
    }))
}

fn json_to_prost(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_prost).collect() })
        }
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_prost(v))).collect::<BTreeMap<_, _>>(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let selectors = self.admit_identified(&req).await?;
        // Registering interest is what gets SVIDs issued for this workload's evidence.
        let guard = InterestGuard::open(self.agent.clone(), &selectors);
        let stream =
            watch_stream(self.agent.clone(), guard, move |agent, waiting| x509_message(agent, &selectors, waiting));
        Ok(Response::new(stream))
    }

    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.admit_identified(&req).await?;
        let stream = watch_stream(self.agent.clone(), (), |agent, _| {
            let Some(b) = agent.cache.bundle() else {
                return Ok(None);
            };
            let bundles = HashMap::from([(trust_domain_key(agent), b.x509_der())]);
            Ok(Some(X509BundlesResponse { crl: b.status.crls.clone(), bundles }))
        });
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(&self, req: Request<JwtsvidRequest>) -> Result<Response<JwtsvidResponse>, Status> {
        if req.get_ref().audience.is_empty() {
            // Check the header first: a request without it is InvalidArgument either way.
            self.admit(&req).await?;
            return Err(Status::invalid_argument("audience is required"));
        }
        let selectors = self.admit(&req).await?;
        let r = req.into_inner();
        let bad = |a: &String| a.is_empty() || a.len() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control);
        if r.audience.len() > MAX_AUDIENCES || r.audience.iter().any(bad) {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_AUDIENCES} audiences, each 1-{MAX_AUDIENCE_LEN} bytes with no control characters"
            )));
        }
        let mut entries = self.agent.cache.matching(&selectors);
        if !r.spiffe_id.is_empty() {
            let want = SpiffeId::new(&r.spiffe_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
            entries.retain(|e| e.spiffe_id == want);
        }
        if entries.is_empty() {
            return Err(no_identity());
        }
        let mut svids = Vec::with_capacity(entries.len());
        let now = now_unix();
        let digest = hallmark_core::evidence_digest(&selectors);
        for e in entries {
            let token = match self.agent.cache.jwt(&e.id, &digest, &r.audience, now) {
                Some(j) => j.token,
                None => {
                    let m = self.agent.mint_jwt(&e.id, &r.audience, &selectors).await?;
                    let refresh_at = if m.refresh_at > now { m.refresh_at } else { now + (m.expires_at - now) / 2 };
                    let held = HeldJwt {
                        token: m.token.clone(),
                        jti: m.jti,
                        kid: m.kid,
                        expires_at: m.expires_at,
                        refresh_at,
                    };
                    self.agent.cache.put_jwt(&e.id, &digest, &r.audience, held);
                    m.token
                }
            };
            svids.push(Jwtsvid {
                spiffe_id: e.spiffe_id.to_string(),
                svid: token,
                hint: e.hint.clone().unwrap_or_default(),
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.admit_identified(&req).await?;
        let stream = watch_stream(self.agent.clone(), (), |agent, _| {
            let Some(b) = agent.cache.bundle() else {
                return Ok(None);
            };
            let bundles = HashMap::from([(trust_domain_key(agent), b.jwt_jwks().into_bytes())]);
            Ok(Some(JwtBundlesResponse { bundles }))
        });
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.admit_identified(&req).await?;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience is required"));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument("svid is required"));
        }
        let bundle = self.agent.cache.bundle().ok_or_else(|| Status::unavailable("no bundle yet"))?;
        let claims = hallmark_ca::jwt::validate(
            &r.svid,
            &r.audience,
            self.agent.settings.trust_domain.as_str(),
            &bundle.jwt_authorities,
            now_unix(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if claims.jti.as_deref().is_some_and(|j| self.agent.cache.is_revoked(j)) {
            return Err(Status::invalid_argument("JWT-SVID has been revoked"));
        }
        let fields = claims.all.iter().map(|(k, v)| (k.clone(), json_to_prost(v))).collect();
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: claims.spiffe_id.to_string(),
            claims: Some(prost_types::Struct { fields }),
        }))
    }

    type FetchWITSVIDStream = Streamed<WitsvidResponse>;

    async fn fetch_witsvid(&self, _req: Request<WitsvidRequest>) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }

    type FetchWITBundlesStream = Streamed<WitBundlesResponse>;

    async fn fetch_wit_bundles(
        &self,
        _req: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }
}
