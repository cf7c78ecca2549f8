//! The agent-facing gRPC service (`hallmark.node.v1.Node`), over mTLS.

use std::sync::Arc;

use futures_util::StreamExt;
use hallmark_ca::{Bundle, CaError};
use hallmark_core::{Entry, RevocationKind, SelectorSet, SpiffeId};
use hallmark_proto::node::node_server::Node;
use hallmark_proto::node::{
    self as pb, AgentSvid, AttestNodeRequest, MintJwtSvidRequest, MintJwtSvidResponse, MintWitSvidRequest,
    MintWitSvidResponse, RecordDeliveriesRequest, RecordDeliveriesResponse, RenewAgentRequest,
    ReportProcessEndedRequest, ReportProcessEndedResponse, SignX509SvidsRequest, SignX509SvidsResponse, SvidResult,
    SyncEntriesRequest, SyncEvent, sync_event,
};
use hallmark_store::Revocation;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::issuance::{
    AuthenticatedAgent, IssueError, IssuedAgentSvid, MAX_SVIDS_PER_REQUEST, WorkloadEvidence, parse_evidence,
};
use crate::process_end::ProcessEndError;
use crate::state::ServerState;
use crate::tls_listener::PeerInfo;

/// SVIDs of one batch decided and signed at once.
const BATCH_CONCURRENCY: usize = 64;

/// The Node service implementation.
#[derive(Clone)]
pub struct NodeApi {
    state: Arc<ServerState>,
}

impl NodeApi {
    /// A service over shared server state.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    /// The calling agent, from its verified client certificate. The
    /// certificate must be the agent SVID this trust domain issued to that
    /// node (its serial is the node's current or previous one), not merely a
    /// certificate naming an agent: a workload SVID is never an agent's. The
    /// node must be known and not banned.
    async fn authenticate<T>(&self, req: &Request<T>) -> Result<AuthenticatedAgent, Status> {
        let leaf = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.certs.as_ref())
            .and_then(|c| c.first().cloned())
            .ok_or_else(|| Status::unauthenticated("an agent SVID (mTLS client certificate) is required"))?;
        let info = hallmark_ca::svid::parse_leaf(leaf.as_ref())
            .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
        let id = info.spiffe_id;
        if !id.is_agent() || id.trust_domain_name() != self.state.settings.trust_domain.as_str() {
            return Err(Status::permission_denied(format!("`{id}` is not an agent identity")));
        }
        match self.state.store.node(id.as_str()).await.map_err(internal)? {
            Some(n) if n.banned => Err(Status::permission_denied(format!("node `{id}` is banned"))),
            Some(n) if n.serial == info.serial || n.previous_serial.as_deref() == Some(info.serial.as_str()) => {
                let node_selectors = crate::node_attest::node_selector_set(&n.attestation_type, &n.selectors);
                Ok(AuthenticatedAgent {
                    agent: id,
                    attestation: n.attestation_type,
                    serial: info.serial,
                    node_selectors,
                })
            }
            Some(_) => {
                tracing::warn!(agent = %id, serial = %info.serial, "refused a certificate that is not the agent SVID of its node");
                Err(Status::permission_denied(format!(
                    "certificate {} is not the agent SVID issued to node `{id}`",
                    info.serial
                )))
            }
            None => Err(Status::permission_denied(format!("node `{id}` is not attested"))),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal server error")
}

fn status(e: IssueError) -> Status {
    match e {
        IssueError::NoEntry(_) | IssueError::UnknownCredential(_) => Status::not_found(e.to_string()),
        IssueError::NotHolder(_) => Status::permission_denied(e.to_string()),
        IssueError::NotEntitled { .. }
        | IssueError::Denied { .. }
        | IssueError::Revoked(_)
        | IssueError::Reserved(_)
        | IssueError::Task(_) => Status::permission_denied(e.to_string()),
        IssueError::NodeBanned(_) => Status::permission_denied(e.to_string()),
        IssueError::BadRequest(_) | IssueError::Evidence(_) | IssueError::Process(_) | IssueError::BadCsr(_) => {
            Status::invalid_argument(e.to_string())
        }
        IssueError::Attestation(_) => Status::permission_denied(e.to_string()),
        IssueError::MustReattest { .. } => Status::failed_precondition(e.to_string()),
        // The agent may retry: a new authority activates, or this one is renewed.
        IssueError::Signing(CaError::AuthorityExpired(_)) => {
            tracing::error!(error = %e, "cannot sign: the authority has expired");
            Status::unavailable(e.to_string())
        }
        IssueError::Signing(_) | IssueError::Server(_) => internal(e),
    }
}

/// An entry as sent to agents.
pub fn entry_to_proto(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.clone(),
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.iter().map(ToString::to_string).collect(),
        x509_ttl_seconds: e.x509_ttl.secs(),
        jwt_ttl_seconds: e.jwt_ttl.secs(),
        dns_names: e.dns_names.clone(),
        hint: e.hint.clone().unwrap_or_default(),
        revision: e.revision,
        owner: e.owner.clone(),
        class: e.class.to_string(),
        bind: e.bind.to_string(),
    }
}

/// A bundle as sent to agents.
pub fn bundle_to_proto(b: &Bundle) -> pb::Bundle {
    pb::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        jwks: b.jwt_jwks(),
        sequence: b.sequence,
        crls: b.status.crls.clone(),
        tainted: b.status.tainted.clone(),
        revoked_authorities: b.status.revoked.clone(),
    }
}

/// A revoked credential as sent to agents.
pub fn revoked_to_proto(r: &Revocation) -> pb::Revoked {
    pb::Revoked {
        kind: r.kind.as_str().to_owned(),
        id: r.id.clone(),
        not_after: r.not_after,
        authority_id: r.authority_id.clone(),
    }
}

fn svid_reply(issued: IssuedAgentSvid, bundle: &Bundle) -> AgentSvid {
    AgentSvid {
        spiffe_id: issued.agent_id.to_string(),
        cert_chain: issued.svid.chain,
        bundle: Some(bundle_to_proto(bundle)),
        authority_id: issued.authority_id,
    }
}

/// The caller's address, for refusal records: an unauthenticated caller
/// is known by nothing else.
fn source_of<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.remote)
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn attest_node(&self, req: Request<AttestNodeRequest>) -> Result<Response<AgentSvid>, Status> {
        let source = source_of(&req);
        let r = req.into_inner();
        if r.join_token.is_empty() || r.join_token.len() > 256 {
            return Err(Status::invalid_argument("a join token is required"));
        }
        let attested = self.state.attest_join_token(&r.join_token, &r.csr).await;
        if let Err(IssueError::Attestation(why)) = &attested {
            // Recorded (counted per source): a used token presented again is
            // a strong sign that it was copied.
            let agent = crate::issuance::join_token_id(&r.join_token);
            tracing::warn!(%source, token_id = %agent, reason = %why, "node attestation refused");
            self.state.refusals.note(crate::refusals::Refusal {
                kind: crate::refusals::RefusalKind::NodeAttestation,
                source,
                actor: "unknown".into(),
                subject: format!("join_token/{agent}"),
                reason: why.to_string(),
            });
        }
        let issued = attested.map_err(status)?;
        let bundle = self.state.authorities.bundle().borrow().clone();
        Ok(Response::new(svid_reply(issued, &bundle)))
    }

    type AttestStream = ReceiverStream<Result<pb::AttestResponse, Status>>;

    async fn attest(
        &self,
        req: Request<tonic::Streaming<pb::AttestRequest>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let source = source_of(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(2);
        let state = self.state.clone();
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(ATTEST_TIMEOUT, attest_exchange(&state, &mut inbound, &tx, &source)).await;
            let reply = match result {
                Ok(Ok(svid)) => Ok(pb::AttestResponse { step: Some(pb::attest_response::Step::Svid(svid)) }),
                Ok(Err(status)) => Err(status),
                Err(_) => Err(Status::deadline_exceeded("node attestation took longer than 30 s")),
            };
            let _ = tx.send(reply).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn renew_agent(&self, req: Request<RenewAgentRequest>) -> Result<Response<AgentSvid>, Status> {
        let caller = self.authenticate(&req).await?;
        let issued = self.state.renew_agent(&caller, &req.into_inner().csr).await.map_err(status)?;
        let bundle = self.state.authorities.bundle().borrow().clone();
        Ok(Response::new(svid_reply(issued, &bundle)))
    }

    type SyncEntriesStream = ReceiverStream<Result<SyncEvent, Status>>;

    async fn sync_entries(
        &self,
        req: Request<SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let caller = self.authenticate(&req).await?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(sync_agent(self.state.clone(), caller.agent, caller.node_selectors, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sign_x509_svids(
        &self,
        req: Request<SignX509SvidsRequest>,
    ) -> Result<Response<SignX509SvidsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let requests = req.into_inner().requests;
        if requests.len() > MAX_SVIDS_PER_REQUEST {
            return Err(Status::invalid_argument(format!("at most {MAX_SVIDS_PER_REQUEST} SVIDs per request")));
        }
        // Decided and signed concurrently (answers stay in request order), so
        // one agent's batch shares group commits instead of waiting for one each.
        let caller = &caller;
        let results: Vec<Result<SvidResult, Status>> = futures_util::stream::iter(requests)
            .map(|r| async move {
                let issued = match workload(&r.evidence, r.process, &r.lineage) {
                    Ok(ev) => self.state.issue_x509(caller, &r.entry_id, &r.csr, ev, r.renewal).await,
                    Err(e) => Err(e),
                };
                Ok(match issued {
                    Ok(i) => SvidResult {
                        entry_id: r.entry_id,
                        cert_chain: i.svid.chain,
                        error: String::new(),
                        denied: false,
                        renew_at: i.renew_at,
                        authority_id: i.authority_id,
                    },
                    // The server failed, not this request: the whole batch fails, and is retried.
                    Err(e @ (IssueError::Server(_) | IssueError::Signing(_))) => return Err(status(e)),
                    Err(e) => SvidResult {
                        entry_id: r.entry_id,
                        cert_chain: Vec::new(),
                        denied: matches!(
                            e,
                            IssueError::Denied { .. }
                                | IssueError::NotEntitled { .. }
                                | IssueError::NoEntry(_)
                                | IssueError::Revoked(_)
                                | IssueError::Reserved(_)
                                | IssueError::Task(_)
                        ),
                        error: e.to_string(),
                        renew_at: 0,
                        authority_id: String::new(),
                    },
                })
            })
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await;
        let results = results.into_iter().collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(SignX509SvidsResponse { results }))
    }

    async fn mint_jwt_svid(&self, req: Request<MintJwtSvidRequest>) -> Result<Response<MintJwtSvidResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let r = req.into_inner();
        let evidence = workload(&r.evidence, r.process, &r.lineage).map_err(status)?;
        let j = self.state.issue_jwt(&caller, &r.entry_id, &r.audience, evidence).await.map_err(status)?;
        Ok(Response::new(MintJwtSvidResponse {
            token: j.token,
            expires_at: j.expires_at,
            refresh_at: j.refresh_at,
            jti: j.jti,
            kid: j.kid,
        }))
    }

    async fn mint_wit_svid(&self, req: Request<MintWitSvidRequest>) -> Result<Response<MintWitSvidResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let r = req.into_inner();
        let evidence = workload(&r.evidence, r.process, &r.lineage).map_err(status)?;
        let w = self.state.issue_wit(&caller, &r.entry_id, &r.public_key, evidence).await.map_err(status)?;
        Ok(Response::new(MintWitSvidResponse {
            token: w.token,
            expires_at: w.expires_at,
            refresh_at: w.refresh_at,
            jti: w.jti,
            kid: w.kid,
        }))
    }

    async fn record_deliveries(
        &self,
        req: Request<RecordDeliveriesRequest>,
    ) -> Result<Response<RecordDeliveriesResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let r = req.into_inner();
        let recorded =
            self.state.record_deliveries(&caller, &r.credential_ids, &r.target, &r.evidence).await.map_err(status)?;
        Ok(Response::new(RecordDeliveriesResponse { recorded }))
    }

    async fn report_process_ended(
        &self,
        req: Request<ReportProcessEndedRequest>,
    ) -> Result<Response<ReportProcessEndedResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let ids = req.into_inner().credential_ids;
        let revoked = self.state.process_ended(&caller, &ids).await.map_err(|e| match e {
            ProcessEndError::Size => Status::invalid_argument(e.to_string()),
            ProcessEndError::OtherNode { .. } | ProcessEndError::NotBound { .. } => {
                Status::permission_denied(e.to_string())
            }
            ProcessEndError::Server(e) => internal(e),
        })?;
        Ok(Response::new(ReportProcessEndedResponse { revoked }))
    }
}

/// Longest a node attestation exchange may take, answers included.
const ATTEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One `Attest` exchange: the evidence, the challenge and its answer when the
/// attestor has one, then the agent SVID. A known node (same agent ID, same
/// attestor) whose evidence no longer verifies is revoked: its node banned
/// and its credentials revoked, as `hallmark revoke --node` would.
async fn attest_exchange(
    state: &Arc<ServerState>,
    inbound: &mut tonic::Streaming<pb::AttestRequest>,
    tx: &mpsc::Sender<Result<pb::AttestResponse, Status>>,
    source: &str,
) -> Result<AgentSvid, Status> {
    use crate::node_attest::{AttestError, Begun};
    let begin = match inbound.message().await? {
        Some(pb::AttestRequest { step: Some(pb::attest_request::Step::Begin(b)) }) => b,
        _ => return Err(Status::invalid_argument("the first message must be `begin`, with evidence and a CSR")),
    };
    let attestors = state.settings.node_attestors.clone();
    let now = hallmark_core::now_unix();
    let proven = match attestors.begin(&begin, now).await {
        Ok(Begun::Proven(p)) => Ok(p),
        Ok(Begun::Challenge(kind, pending)) => {
            let challenge = pb::Challenge { kind: Some(kind) };
            tx.send(Ok(pb::AttestResponse { step: Some(pb::attest_response::Step::Challenge(challenge)) }))
                .await
                .map_err(|_| Status::cancelled("the agent went away"))?;
            match inbound.message().await? {
                Some(pb::AttestRequest { step: Some(pb::attest_request::Step::Response(answer)) }) => {
                    attestors.finish(pending, &answer)
                }
                _ => Err(AttestError::Malformed("the second message must answer the challenge".into())),
            }
        }
        Err(e) => Err(e),
    };
    // The node proved it holds evidence that is no longer trusted.
    if let Err(AttestError::Untrusted { agent_path, why }) = &proven {
        revoke_known_node(state, agent_path, why).await;
    }
    let proof = match proven {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%source, reason = %e, "node attestation refused");
            state.refusals.note(crate::refusals::Refusal {
                kind: crate::refusals::RefusalKind::NodeAttestation,
                source: source.to_owned(),
                actor: "unknown".into(),
                subject: match &e {
                    AttestError::Untrusted { agent_path, .. } => agent_path.join("/"),
                    _ => "unknown".into(),
                },
                reason: e.to_string(),
            });
            return Err(match e {
                AttestError::Malformed(m) => Status::invalid_argument(m),
                AttestError::Refused(m) | AttestError::Untrusted { why: m, .. } => Status::permission_denied(m),
                AttestError::Unavailable(m) => Status::unavailable(m),
            });
        }
    };
    let issued = state.attest_proven(&proof, &begin.csr).await.map_err(status)?;
    let bundle = state.authorities.bundle().borrow().clone();
    Ok(svid_reply(issued, &bundle))
}

/// Revokes the node an attestation names when the server knows it by that
/// attestor and its evidence was refused: what it proved before is no
/// longer true.
async fn revoke_known_node(state: &Arc<ServerState>, path: &[String], why: &str) {
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let Ok(agent) = state.settings.trust_domain.agent_id(&segments) else { return };
    let Some(attestor) = path.first() else { return };
    match state.store.node(agent.as_str()).await {
        Ok(Some(n)) if !n.banned && &n.attestation_type == attestor => {
            let reason = format!("re-attestation refused: {why}");
            let target = hallmark_store::RevokeTarget::Node(agent.to_string());
            match state.revoke(&target, &reason, "hallmark/node-attestation").await {
                Ok(out) => tracing::warn!(agent = %agent, credentials = out.credentials.len(), %reason, "node revoked"),
                Err(e) => {
                    tracing::error!(agent = %agent, error = %e, "cannot revoke a node whose evidence was refused")
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot look up the node an attestation names"),
    }
}

/// What the agent reports of a workload, checked: its selectors, the
/// process they were read from when the agent says, and that process's
/// ancestors (for entries bound to tasks).
fn workload(
    evidence: &[String],
    process: Option<pb::ProcessInstance>,
    lineage: &[pb::ProcessInstance],
) -> Result<WorkloadEvidence, IssueError> {
    let selectors = parse_evidence(evidence)?;
    let process = process
        .map(|p| hallmark_core::ProcessInstance::new(p.pid, p.start_ticks, p.started_at))
        .transpose()
        .map_err(IssueError::Process)?;
    if lineage.len() > crate::issuance::MAX_LINEAGE {
        return Err(IssueError::BadRequest(format!("at most {} ancestors", crate::issuance::MAX_LINEAGE)));
    }
    let lineage = lineage.iter().map(|p| (i64::from(p.pid), i64::try_from(p.start_ticks).unwrap_or(-1))).collect();
    Ok(WorkloadEvidence { selectors, process, lineage })
}

fn event(e: sync_event::Event) -> Result<SyncEvent, Status> {
    Ok(SyncEvent { event: Some(e) })
}

/// Feeds one agent: a snapshot (entries, bundle, live revocations), then each
/// change to its entries, each revocation and each new bundle. If it falls
/// behind either feed it gets a fresh snapshot. A ban of the agent's node ends
/// the stream with PermissionDenied. Entries whose node selectors this
/// node did not prove are not its (a node attesting again reconnects, and is
/// served by what it proved then).
async fn sync_agent(
    state: Arc<ServerState>,
    agent: SpiffeId,
    node: SelectorSet,
    tx: mpsc::Sender<Result<SyncEvent, Status>>,
) {
    // Subscribe before reading the snapshot, so no change can fall between them.
    let mut changes = state.changes.subscribe(agent.as_str());
    let mut revocations = state.revocations.subscribe();
    let mut bundle_rx = state.authorities.bundle();
    let banned = || Status::permission_denied(format!("node `{agent}` is banned"));
    'snapshot: loop {
        let (entries, mut seq) = state.registry.snapshot(agent.as_str());
        let (revoked, mut revoked_seq) = match state.store.live_revocations(hallmark_core::now_unix()).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(internal(e))).await;
                return;
            }
        };
        // A ban committed before the snapshot: the node check at connect may have raced it.
        if matches!(state.store.node(agent.as_str()).await, Ok(Some(n)) if n.banned) {
            let _ = tx.send(Err(banned())).await;
            return;
        }
        let bundle = bundle_rx.borrow_and_update().clone();
        let snap = pb::Snapshot {
            // Entries stored with a reserved ID before the upgrade that
            // reserved them are never sent: no agent serves them.
            entries: entries
                .iter()
                .filter(|e| !e.spiffe_id.is_reserved() && e.serves_node(&node))
                .map(|e| entry_to_proto(e))
                .collect(),
            bundle: Some(bundle_to_proto(&bundle)),
            revoked: revoked.iter().map(revoked_to_proto).collect(),
        };
        if tx.send(event(sync_event::Event::Snapshot(snap))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => {
                        if c.seq <= seq {
                            continue;
                        }
                        seq = c.seq;
                        let ev = match state.registry.entry(&c.entry_id) {
                            Some(e)
                                if e.parent_id == agent
                                    && e.revoked_at.is_none()
                                    && !e.spiffe_id.is_reserved()
                                    && e.serves_node(&node) =>
                            {
                                sync_event::Event::Upsert(entry_to_proto(&e))
                            }
                            _ => sync_event::Event::Delete(c.entry_id),
                        };
                        if tx.send(event(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'snapshot,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                r = revocations.recv() => {
                    // Everything revoked at once (an entry, a node) goes in one message.
                    let mut batch = match r {
                        Ok(r) => vec![r],
                        Err(broadcast::error::RecvError::Lagged(_)) => continue 'snapshot,
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    loop {
                        match revocations.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => continue 'snapshot,
                            Err(_) => break,
                        }
                    }
                    let mut items = Vec::new();
                    let mut banned_now = false;
                    for r in batch {
                        if r.seq <= revoked_seq {
                            continue;
                        }
                        revoked_seq = r.seq;
                        if r.kind == RevocationKind::Node {
                            banned_now |= r.id == agent.as_str();
                            continue;
                        }
                        items.push(revoked_to_proto(&r));
                    }
                    if !items.is_empty() {
                        let ev = sync_event::Event::Revoked(pb::Revocations { items });
                        if tx.send(event(ev)).await.is_err() {
                            return;
                        }
                    }
                    if banned_now {
                        let _ = tx.send(Err(banned())).await;
                        return;
                    }
                }
                r = bundle_rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let b = bundle_rx.borrow_and_update().clone();
                    if tx.send(event(sync_event::Event::Bundle(bundle_to_proto(&b)))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hallmark_ca::X509Authority;
    use hallmark_ca::keys::new_key_and_csr;
    use hallmark_ca::x509::{SvidProfile, SvidTemplate};
    use hallmark_core::TrustDomain;
    use tonic::Code;

    use super::*;

    /// What an agent hears when the server signs `csr` for `id` at `now`,
    /// for `ttl_secs`, with an authority made at `made` that lives an hour:
    /// the CA's error taken the way issuance takes it (`?` into [`IssueError`]).
    fn signed(csr: &[u8], id: &SpiffeId, ttl_secs: u64, made: i64, now: i64) -> Result<(), Status> {
        let td = TrustDomain::new("example.org").unwrap();
        let ca = X509Authority::generate_self_signed(&td, 3600, made).unwrap();
        let t = SvidTemplate {
            csr_der: csr,
            spiffe_id: id,
            dns_names: &[],
            ttl_secs,
            now,
            profile: SvidProfile::Workload,
            task_id: None,
            person_name: None,
        };
        let sign = || -> Result<(), IssueError> {
            ca.sign_svid(&t)?;
            Ok(())
        };
        sign().map_err(status)
    }

    /// Issue 15: only a bad CSR is the agent's bad request. An expired
    /// authority is Unavailable (the agent retries, a new one activates) and
    /// any other authority failure is Internal; neither is InvalidArgument,
    /// which the agent would pass on to the workload as its own fault.
    #[test]
    fn only_a_bad_csr_is_a_bad_request() {
        let id = SpiffeId::new("spiffe://example.org/w").unwrap();
        let csr = new_key_and_csr(Some(&id)).unwrap().csr_der;
        let now = hallmark_core::now_unix();
        assert!(signed(&csr, &id, 60, now, now).is_ok());
        let expired = signed(&csr, &id, 60, now - 7200, now).unwrap_err();
        assert_eq!(expired.code(), Code::Unavailable, "{expired:?}");
        assert!(expired.message().contains("signing authority expires at"), "{expired:?}");
        // A lifetime no certificate can hold: the authority fails, not the CSR.
        let far = signed(&csr, &id, u64::MAX, now, now).unwrap_err();
        assert_eq!(far.code(), Code::Internal, "{far:?}");
        assert_eq!(far.message(), "internal server error");
        let garbage = signed(b"garbage", &id, 60, now, now).unwrap_err();
        assert_eq!(garbage.code(), Code::InvalidArgument);
        assert!(garbage.message().starts_with("invalid CSR: "), "{garbage:?}");
        let other = SpiffeId::new("spiffe://example.org/other").unwrap();
        let wrong = signed(&csr, &other, 60, now, now).unwrap_err();
        assert_eq!(wrong.code(), Code::InvalidArgument);
        assert!(wrong.message().contains("CSR requests `spiffe://example.org/w`"), "{wrong:?}");
    }
}
