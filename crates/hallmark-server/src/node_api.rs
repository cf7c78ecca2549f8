//! The agent-facing gRPC service (`hallmark.node.v1.Node`), over mTLS.

use std::sync::Arc;

use hallmark_ca::Bundle;
use hallmark_core::{Entry, SpiffeId};
use hallmark_proto::node::node_server::Node;
use hallmark_proto::node::{
    self as pb, AgentSvid, AttestNodeRequest, MintJwtSvidRequest, MintJwtSvidResponse, RenewAgentRequest,
    SignX509SvidsRequest, SignX509SvidsResponse, SvidResult, SyncEntriesRequest, SyncEvent, sync_event,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::ServerState;
use crate::issuance::{Caller, IssueError, MAX_BATCH, parse_evidence};
use crate::tls_listener::PeerInfo;

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

    /// The calling agent's SPIFFE ID, from its verified client certificate. The
    /// node must be known and not banned.
    async fn authenticate<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let leaf = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.certs.as_ref())
            .and_then(|c| c.first().cloned())
            .ok_or_else(|| Status::unauthenticated("an agent SVID (mTLS client certificate) is required"))?;
        let id = hallmark_ca::tls::peer_id(leaf.as_ref())
            .ok_or_else(|| Status::unauthenticated("client certificate carries no SPIFFE ID"))?;
        let agent_prefix = format!("spiffe://{}/hallmark/agent/", self.state.settings.trust_domain);
        if !id.as_str().starts_with(&agent_prefix) {
            return Err(Status::permission_denied(format!("`{id}` is not an agent identity")));
        }
        match self.state.store.node(id.as_str()).await.map_err(internal)? {
            Some(n) if !n.banned => Ok(Caller { agent: id, attestation: n.attestation_type }),
            Some(_) => Err(Status::permission_denied(format!("node `{id}` is banned"))),
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
        IssueError::NoEntry(_) => Status::not_found(e.to_string()),
        IssueError::NotEntitled { .. } | IssueError::Denied { .. } => Status::permission_denied(e.to_string()),
        IssueError::BadRequest(_) => Status::invalid_argument(e.to_string()),
        IssueError::Attestation(_) => Status::permission_denied(e.to_string()),
        IssueError::Server(s) => internal(s),
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
    }
}

/// A bundle as sent to agents.
pub fn bundle_to_proto(b: &Bundle) -> pb::Bundle {
    pb::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        jwks: b.jwt_jwks(),
        sequence: b.sequence,
    }
}

fn svid_reply(id: &SpiffeId, chain: Vec<Vec<u8>>, bundle: &Bundle) -> AgentSvid {
    AgentSvid { spiffe_id: id.to_string(), cert_chain: chain, bundle: Some(bundle_to_proto(bundle)) }
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn attest_node(&self, req: Request<AttestNodeRequest>) -> Result<Response<AgentSvid>, Status> {
        let r = req.into_inner();
        if r.join_token.is_empty() || r.join_token.len() > 256 {
            return Err(Status::invalid_argument("a join token is required"));
        }
        let (id, signed) = self.state.attest_join_token(&r.join_token, &r.csr).await.map_err(status)?;
        let bundle = self.state.authorities.bundle().borrow().clone();
        Ok(Response::new(svid_reply(&id, signed.chain, &bundle)))
    }

    async fn renew_agent(&self, req: Request<RenewAgentRequest>) -> Result<Response<AgentSvid>, Status> {
        let caller = self.authenticate(&req).await?;
        let signed = self.state.renew_agent(&caller, &req.into_inner().csr).await.map_err(status)?;
        let bundle = self.state.authorities.bundle().borrow().clone();
        Ok(Response::new(svid_reply(&caller.agent, signed.chain, &bundle)))
    }

    type SyncEntriesStream = ReceiverStream<Result<SyncEvent, Status>>;

    async fn sync_entries(
        &self,
        req: Request<SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let caller = self.authenticate(&req).await?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(sync_agent(self.state.clone(), caller.agent, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sign_x509_svids(
        &self,
        req: Request<SignX509SvidsRequest>,
    ) -> Result<Response<SignX509SvidsResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let requests = req.into_inner().requests;
        if requests.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!("at most {MAX_BATCH} SVIDs per request")));
        }
        let mut results = Vec::with_capacity(requests.len());
        for r in requests {
            let issued = match parse_evidence(&r.evidence) {
                Ok(ev) => self.state.issue_x509(&caller, &r.entry_id, &r.csr, ev, r.renewal).await,
                Err(e) => Err(e),
            };
            let result = match issued {
                Ok(i) => SvidResult {
                    entry_id: r.entry_id,
                    cert_chain: i.svid.chain,
                    error: String::new(),
                    denied: false,
                    renew_at: i.renew_at,
                },
                Err(IssueError::Server(e)) => return Err(internal(e)),
                Err(e) => SvidResult {
                    entry_id: r.entry_id,
                    cert_chain: Vec::new(),
                    denied: matches!(
                        e,
                        IssueError::Denied { .. } | IssueError::NotEntitled { .. } | IssueError::NoEntry(_)
                    ),
                    error: e.to_string(),
                    renew_at: 0,
                },
            };
            results.push(result);
        }
        Ok(Response::new(SignX509SvidsResponse { results }))
    }

    async fn mint_jwt_svid(&self, req: Request<MintJwtSvidRequest>) -> Result<Response<MintJwtSvidResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let r = req.into_inner();
        let evidence = parse_evidence(&r.evidence).map_err(status)?;
        let (token, expires_at, refresh_at) =
            self.state.issue_jwt(&caller, &r.entry_id, &r.audience, evidence).await.map_err(status)?;
        Ok(Response::new(MintJwtSvidResponse { token, expires_at, refresh_at }))
    }
}

fn event(e: sync_event::Event) -> Result<SyncEvent, Status> {
    Ok(SyncEvent { event: Some(e) })
}

/// Feeds one agent: a snapshot, then each change to its entries and the
/// bundle. If it falls behind the change feed it gets a fresh snapshot.
async fn sync_agent(state: Arc<ServerState>, agent: SpiffeId, tx: mpsc::Sender<Result<SyncEvent, Status>>) {
    // Subscribe before reading the snapshot, so no change can fall between them.
    let mut changes = state.changes.subscribe();
    let mut bundle_rx = state.authorities.bundle();
    'snapshot: loop {
        let (entries, mut seq) = match state.store.entries_snapshot(agent.as_str()).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(internal(e))).await;
                return;
            }
        };
        let bundle = bundle_rx.borrow_and_update().clone();
        let snap = pb::Snapshot {
            entries: entries.iter().map(entry_to_proto).collect(),
            bundle: Some(bundle_to_proto(&bundle)),
        };
        if tx.send(event(sync_event::Event::Snapshot(snap))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => {
                        if c.seq <= seq || c.parent_id != agent.as_str() {
                            continue;
                        }
                        seq = c.seq;
                        let ev = match state.store.entry(&c.entry_id).await {
                            Ok(Some(e)) if e.parent_id == agent => sync_event::Event::Upsert(entry_to_proto(&e)),
                            Ok(_) => sync_event::Event::Delete(c.entry_id),
                            Err(e) => {
                                tracing::warn!(error = %e, "entry read failed during sync; resending snapshot");
                                continue 'snapshot;
                            }
                        };
                        if tx.send(event(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'snapshot,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
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
