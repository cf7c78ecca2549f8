//! The SPIFFE Workload API (`SpiffeWorkloadAPI`) on a Unix socket.
//!
//! Every call must carry `workload.spiffe.io: true` (else InvalidArgument).
//! The caller is attested from the kernel for each call; what it gets depends
//! only on that attestation. Streams send the full state on every message and
//! send the first one at once.
//!
//! # Where an X.509-SVID is requested
//!
//! A workload's call never waits on the server directly: it registers what
//! it wants in the cache, a loop asks the server, and the answer reaches the
//! workload's stream through the cache.
//!
//! ```text
//!  workload   workload_api.rs      admission.rs     cache.rs          svid_requests.rs        server
//!     | FetchX509SVID |                  |              |                    |                   |
//!     |-------------->| 1 admit -------->| attest       |                    |                   |
//!     |               | 2 InterestGuard->|------------->| open_interest      |                   |
//!     |               |                  |              |-- wakes / 1 s ---->| 3 rotation_loop:  |
//!     |               |                  |              |<------ due --------|   expire, due     |
//!     |               |                  |              |                    | 4 key + CSR       |
//!     |               |                  |              |                    |-- SignX509Svids ->| 5 decide, sign
//!     |               |                  |              |<- put_svid / deny -| 6                 |
//!     |               | 7 watch_stream <-|--------------| wakes              |                   |
//!     |<-- X509SVID --|   x509_message --|------------->| x509_for           |                   |
//! ```
//!
//! 1. `workload_api.rs`: [`WorkloadApi`]'s `fetch_x509svid` admits the caller
//!    (`admission.rs`, `attest_identified`): the security header is checked
//!    and the caller attested from the kernel ([`crate::attest`]); its
//!    selectors are its evidence; a caller no entry matches is refused.
//! 2. `admission.rs`: `InterestGuard` opens the workload's interest
//!    (`cache.rs`, [`Cache::open_interest`](crate::cache::Cache::open_interest)):
//!    while the stream is open, and for a grace period after, SVIDs are issued
//!    and renewed for this evidence set.
//! 3. `svid_requests.rs`: `rotation_loop`, woken by the cache (a new evidence
//!    set, an entry change, a revocation) and every second, withdraws what
//!    expired and takes what is due
//!    ([`Cache::due`](crate::cache::Cache::due)): for each entry the evidence
//!    matches, an SVID missing, stale or past its rotation point.
//! 4. `svid_requests.rs`: a new key and a CSR for each, on the node.
//! 5. One `SignX509Svids` call per batch: the server decides each on the
//!    workload's evidence and signs (`hallmark-server`, `issuance.rs`).
//! 6. `svid_requests.rs` puts each SVID into the cache
//!    ([`Cache::put_svid`](crate::cache::Cache::put_svid)), or the denial
//!    ([`Cache::deny`](crate::cache::Cache::deny)); either wakes the streams.
//! 7. `workload_api.rs`: the stream (`watch_stream`) builds its answer
//!    (`x509_message`, from
//!    [`Cache::x509_for`](crate::cache::Cache::x509_for), which never returns
//!    an expired SVID) and sends it when it differs from the last one sent.
//!    At the rotation point steps 3 to 7 repeat; the stream's end closes the
//!    interest.
//!
//! What the cache serves from also arrives by itself: `entry_sync.rs` applies
//! the server's pushed entries, bundle and revocations to the cache
//! (`from_proto.rs` converts them), and `renewal.rs` keeps the agent's own
//! SVID, which every call to the server presents (`state.rs`).
//!
//! A JWT-SVID is requested on the caller's own call instead:
//! `fetch_jwtsvid` admits the caller, then `svid_requests.rs`'s `jwt_svid`
//! serves the one held for that entry, evidence and audience, or has the
//! server mint one (`MintJwtSvid`) and keeps it until its refresh point.
//!
//! A WIT-SVID stream (`fetch_witsvid`) is served the same way, per stream:
//! `svid_requests.rs`'s `wit_svid` serves the WIT held for each entry the
//! caller matches, or makes a key and has the server mint one
//! (`MintWitSvid`); the stream sends again when one is renewed at its
//! refresh point or dropped from the cache (revoked, expired, its entry or
//! signing key gone), and ends with an error rather than serve one that can
//! no longer be used (fail closed).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use hallmark_core::{SpiffeId, now_unix};
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse, Witsvid, WitsvidRequest, WitsvidResponse,
    X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::admission::{self, Attested, FIRST_SVID_WAIT, InterestGuard, no_identity};
use crate::attest::Caller;
use crate::client_stream::{ClientStream, PREFACE_TIMEOUT};
use crate::evidence::Evidence;
use crate::instance::ProcessInstance;
use crate::process_end;
use crate::state::AgentInner;
use crate::svid_requests;

/// A Workload API connection, carrying the peer's kernel credentials. What
/// the client sends reaches the HTTP/2 server through [`ClientStream`]:
/// without `:authority`, and only if the preface comes within [`PREFACE_TIMEOUT`].
pub struct UdsConn {
    stream: ClientStream<UnixStream>,
    caller: Option<Caller>,
    /// Its place under the per-uid limit, given back when it closes.
    _slot: ConnectionSlot,
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

/// How many Workload API connections may be open: per uid, and in all. Each
/// connection holds [`FDS_PER_CONNECTION`] file descriptors, so
/// without a cap one local user could take every descriptor the agent may
/// open, and with them the Workload API of every other user (and, under
/// `hallmark up`, the admin API too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most open connections from one uid.
    pub per_uid: usize,
    /// Most open connections in all.
    pub total: usize,
}

/// File descriptors a Workload API connection holds in the agent: its
/// socket, the caller's pidfd, and its `/proc/<pid>` directory and `status`
/// file ([`crate::attest::ProcDir`]).
pub const FDS_PER_CONNECTION: u64 = 4;

/// File descriptors kept out of the Workload API's reach, for everything
/// else the process does (the datastore, TLS, the admin and health APIs).
pub const RESERVED_FDS: u64 = 1024;

impl ConnectionLimits {
    /// Limits that fit `open_files` (the process's descriptor limit):
    /// everything but [`RESERVED_FDS`], [`FDS_PER_CONNECTION`] per
    /// connection, in all; a quarter of that per uid unless `per_uid` is given.
    pub fn for_open_files(open_files: u64, per_uid: Option<usize>) -> Self {
        let total =
            usize::try_from(open_files.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION).unwrap_or(usize::MAX).max(16);
        Self { per_uid: per_uid.unwrap_or((total / 4).max(16)).min(total), total }
    }
}

/// Open connections, per uid and in all.
#[derive(Debug, Default)]
struct OpenCount {
    by_uid: HashMap<u32, usize>,
    total: usize,
    /// When each uid was last told about in the log, so a flood is logged
    /// once a minute, not once per connection.
    warned: HashMap<u32, std::time::Instant>,
}

/// A connection's place under [`ConnectionLimits`]; freed when dropped.
pub struct ConnectionSlot {
    count: Arc<std::sync::Mutex<OpenCount>>,
    uid: u32,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.count.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.by_uid.get_mut(&self.uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.by_uid.remove(&self.uid);
                }
            }
        }
    }
}

/// Takes a slot for a connection from `uid`, or says which limit is full.
fn take_slot(
    count: &Arc<std::sync::Mutex<OpenCount>>,
    limits: ConnectionLimits,
    uid: u32,
) -> Result<ConnectionSlot, &'static str> {
    let mut c = count.lock().map_err(|_| "lock poisoned")?;
    let mine = c.by_uid.get(&uid).copied().unwrap_or(0);
    let full = if mine >= limits.per_uid {
        Some("per-uid")
    } else if c.total >= limits.total {
        Some("total")
    } else {
        None
    };
    if let Some(which) = full {
        let now = std::time::Instant::now();
        if c.warned.get(&uid).is_none_or(|t| now.duration_since(*t) > Duration::from_secs(60)) {
            if c.warned.len() > 4096 {
                c.warned.clear();
            }
            c.warned.insert(uid, now);
            tracing::warn!(
                uid,
                open = mine,
                limit = limits.per_uid,
                total = c.total,
                which,
                "workload API connection limit reached; refusing new connections from this uid"
            );
        }
        return Err(which);
    }
    *c.by_uid.entry(uid).or_insert(0) += 1;
    c.total += 1;
    Ok(ConnectionSlot { count: count.clone(), uid })
}

/// Accepts Workload API connections, pinning each peer process with a pidfd
/// taken from the socket at accept time. A connection over its uid's limit
/// (or the total) is closed at once, before anything is allocated for it.
pub fn incoming(listener: UnixListener, limits: ConnectionLimits) -> ReceiverStream<io::Result<UdsConn>> {
    let (tx, rx) = mpsc::channel(128);
    let count = Arc::new(std::sync::Mutex::new(OpenCount::default()));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Ok(cred) = stream.peer_cred() else { continue };
                    let Ok(slot) = take_slot(&count, limits, cred.uid()) else { continue };
                    let pidfd: Option<OwnedFd> =
                        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerPidfd).ok();
                    let caller = cred.pid().map(|pid| Caller::new(pid, pidfd).connected_as(cred.uid()));
                    let stream = ClientStream::new(stream, PREFACE_TIMEOUT);
                    if tx.send(Ok(UdsConn { stream, caller, _slot: slot })).await.is_err() {
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
    async fn admit<T>(&self, req: &Request<T>) -> Result<Attested, Status> {
        admission::require_security_header(req)?;
        admission::attest(&self.agent, req).await
    }

    /// Like [`Self::admit`], but the caller must match at least one entry.
    async fn admit_identified<T>(&self, req: &Request<T>) -> Result<Attested, Status> {
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
///
/// The first message is made here, in the call, and is waiting in the stream
/// when the call returns: the answer does not wait for the stream's task to be
/// scheduled, which under load can be a time slice of another thread away.
fn watch_stream<T, F, G>(agent: Arc<AgentInner>, guard: G, mut next: F) -> Streamed<T>
where
    T: PartialEq + Clone + Send + 'static,
    F: FnMut(&AgentInner, bool) -> Result<Option<T>, Status> + Send + 'static,
    G: Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let mut version = agent.cache.subscribe();
    let started = tokio::time::Instant::now();
    version.borrow_and_update();
    let mut last: Option<T> = None;
    match next(&agent, true) {
        // The channel is new and holds up to 4: this first send cannot fail.
        Ok(Some(msg)) => {
            if tx.try_send(Ok(msg.clone())).is_ok() {
                last = Some(msg);
            }
        }
        Ok(None) => {}
        Err(s) => {
            let _ = tx.try_send(Err(s));
            return Box::pin(ReceiverStream::new(rx));
        }
    }
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            tokio::select! {
                r = version.changed() => if r.is_err() { return },
                () = tx.closed() => return,
                () = tokio::time::sleep(Duration::from_secs(1)), if last.is_none() => {}
            }
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
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn x509_message(
    agent: &AgentInner,
    evidence: &Evidence,
    instance: Option<ProcessInstance>,
    waiting_first: bool,
) -> Result<Option<X509svidResponse>, Status> {
    let now = now_unix();
    let svids = agent.cache.x509_for(evidence, instance, now);
    if svids.is_empty() {
        // SVIDs are being issued for this workload: wait briefly rather than deny.
        if waiting_first && agent.cache.pending(evidence, instance, now) {
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

/// How soon a WIT stream tries again after the server could not mint.
const WIT_RETRY: Duration = Duration::from_secs(2);

/// One FetchWITSVID stream: the attested caller, its process, and the one
/// SPIFFE ID it asked for, if any.
struct WitStream {
    agent: Arc<AgentInner>,
    caller: Attested,
    process: Option<crate::instance::Process>,
    want: Option<SpiffeId>,
}

/// A WIT-SVID answer, and what the stream must know of it.
struct WitMessage {
    msg: WitsvidResponse,
    /// The `jti`s served, to stop serving them once they are revoked or expire.
    jtis: Vec<String>,
    /// When to look again: the earliest refresh point (or a retry, when an
    /// entry could not be served now).
    wake_at: i64,
}

impl WitStream {
    /// The WITs to send now, one per entry the caller matches (or the one it
    /// asked for), each held or minted: an error when none can be served
    /// (PermissionDenied when no entry matches or every one was denied).
    async fn message(&self) -> Result<WitMessage, Status> {
        let agent = &self.agent;
        let mut entries = agent.cache.matching(self.caller.evidence.selectors());
        if let Some(p) = &self.process {
            process_end::watch(agent, p, &self.caller, &entries);
        }
        if let Some(want) = &self.want {
            entries.retain(|e| &e.spiffe_id == want);
        }
        let instance = self.process.as_ref().map(|p| p.instance);
        let now = now_unix();
        let mut out = WitMessage { msg: WitsvidResponse { svids: Vec::new() }, jtis: Vec::new(), wake_at: i64::MAX };
        let mut refusal = None;
        let mut hints = std::collections::HashSet::new();
        for e in entries {
            match svid_requests::wit_svid(agent, &e, &self.caller, instance, now).await {
                Ok(w) => {
                    let hint = e.hint.clone().unwrap_or_default();
                    if !hint.is_empty() && !hints.insert(hint.clone()) {
                        continue;
                    }
                    out.wake_at = out.wake_at.min(w.refresh_at).min(w.expires_at);
                    out.jtis.push(w.jti);
                    out.msg.svids.push(Witsvid {
                        spiffe_id: e.spiffe_id.to_string(),
                        wit_svid: w.token,
                        wit_svid_key: w.key,
                        hint,
                    });
                }
                Err(s) => {
                    if s.code() != tonic::Code::PermissionDenied {
                        out.wake_at = out.wake_at.min(now + WIT_RETRY.as_secs() as i64);
                    }
                    refusal.get_or_insert(s);
                }
            }
        }
        if out.msg.svids.is_empty() {
            return Err(refusal.unwrap_or_else(no_identity));
        }
        Ok(out)
    }

    /// Whether every WIT of the last message may still be served.
    fn still_servable(&self, jtis: &[String]) -> bool {
        let now = now_unix();
        jtis.iter().all(|j| self.agent.cache.wit_servable(j, now))
    }

    /// Sends `first`, then a new message whenever the WITs to serve change:
    /// at a refresh point, and on every cache change (a revocation, an
    /// expiry, an entry or key change). When nothing can be minted and
    /// what was sent can no longer be used, the stream ends with the error.
    fn stream(self, first: WitMessage) -> Streamed<WitsvidResponse> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut version = self.agent.cache.subscribe();
            version.borrow_and_update();
            let WitMessage { msg, mut jtis, mut wake_at } = first;
            if tx.send(Ok(msg.clone())).await.is_err() {
                return;
            }
            let mut last = msg;
            loop {
                let wait = u64::try_from(wake_at.saturating_sub(now_unix())).unwrap_or(0).max(1);
                tokio::select! {
                    r = version.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                    () = tokio::time::sleep(Duration::from_secs(wait)) => {}
                }
                version.borrow_and_update();
                match self.message().await {
                    Ok(m) => {
                        wake_at = m.wake_at;
                        jtis = m.jtis;
                        if m.msg != last {
                            if tx.send(Ok(m.msg.clone())).await.is_err() {
                                return;
                            }
                            last = m.msg;
                        }
                    }
                    // The server is away but what was sent still holds: keep it, and retry.
                    Err(s) if s.code() == tonic::Code::Unavailable && self.still_servable(&jtis) => {
                        tracing::debug!(status = %s, "WIT-SVID not renewed yet; retrying");
                        wake_at = now_unix() + WIT_RETRY.as_secs() as i64;
                    }
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
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
        let caller = self.admit_identified(&req).await?;
        let process = admission::process(&req);
        // Registering interest is what gets SVIDs issued for this workload's evidence.
        let guard = InterestGuard::open(self.agent.clone(), &caller);
        let shared = self.agent.clone();
        let stream = watch_stream(self.agent.clone(), guard, move |agent, waiting| {
            // On every change, not only at the start: an entry this process
            // matches may become bound while the stream is open.
            if let Some(p) = &process {
                process_end::watch(&shared, p, &caller, &agent.cache.matching(caller.evidence.selectors()));
            }
            x509_message(agent, &caller.evidence, process.as_ref().map(|p| p.instance), waiting)
        });
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
        let caller = self.admit(&req).await?;
        let process = admission::process(&req);
        let mut entries = self.agent.cache.matching(caller.evidence.selectors());
        if let Some(p) = &process {
            process_end::watch(&self.agent, p, &caller, &entries);
        }
        let r = req.into_inner();
        hallmark_core::check_audiences(&r.audience).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !r.spiffe_id.is_empty() {
            let want = SpiffeId::new(&r.spiffe_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
            entries.retain(|e| e.spiffe_id == want);
        }
        if entries.is_empty() {
            return Err(no_identity());
        }
        let mut svids = Vec::with_capacity(entries.len());
        let now = now_unix();
        for e in entries {
            let instance = process.as_ref().map(|p| p.instance);
            let token = svid_requests::jwt_svid(&self.agent, &e, &r.audience, &caller, instance, now).await?;
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

    async fn fetch_witsvid(&self, req: Request<WitsvidRequest>) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        let caller = self.admit(&req).await?;
        let process = admission::process(&req);
        let want = match req.get_ref().spiffe_id.as_str() {
            "" => None,
            id => Some(SpiffeId::new(id).map_err(|e| Status::invalid_argument(e.to_string()))?),
        };
        let wits = WitStream { agent: self.agent.clone(), caller, process, want };
        // The first message at once, or the refusal as the call's status.
        let first = wits.message().await?;
        Ok(Response::new(wits.stream(first)))
    }

    type FetchWITBundlesStream = Streamed<WitBundlesResponse>;

    async fn fetch_wit_bundles(
        &self,
        req: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        self.admit_identified(&req).await?;
        let stream = watch_stream(self.agent.clone(), (), |agent, _| {
            let Some(b) = agent.cache.bundle() else {
                return Ok(None);
            };
            let bundles = HashMap::from([(trust_domain_key(agent), hallmark_ca::wit::jwks(&b.jwt_authorities))]);
            Ok(Some(WitBundlesResponse { bundles }))
        });
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_descriptor_limit() {
        let l = ConnectionLimits::for_open_files(20_000, None);
        assert_eq!(l.total, (20_000 - 1024) / 4);
        assert_eq!(l.per_uid, l.total / 4);
        assert_eq!(ConnectionLimits::for_open_files(20_000, Some(10)).per_uid, 10);
        assert_eq!(ConnectionLimits::for_open_files(20_000, Some(1_000_000)).per_uid, l.total);
        // A tiny limit still admits some connections.
        assert_eq!(ConnectionLimits::for_open_files(100, None), ConnectionLimits { per_uid: 16, total: 16 });
    }

    #[test]
    fn slots_are_counted_per_uid_and_given_back() {
        let count = Arc::new(std::sync::Mutex::new(OpenCount::default()));
        let limits = ConnectionLimits { per_uid: 2, total: 3 };
        let a1 = take_slot(&count, limits, 1000).unwrap();
        let _a2 = take_slot(&count, limits, 1000).unwrap();
        assert_eq!(take_slot(&count, limits, 1000).err(), Some("per-uid"));
        let _b1 = take_slot(&count, limits, 1001).unwrap();
        assert_eq!(take_slot(&count, limits, 1002).err(), Some("total"));
        drop(a1);
        assert!(take_slot(&count, limits, 1000).is_ok(), "a closed connection frees its slot");
        assert_eq!(count.lock().unwrap().by_uid.get(&1000), Some(&1), "the slot taken above was dropped at once");
    }
}
