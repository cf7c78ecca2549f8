//! Simulated agents for benchmarks: each attests with its own join token and
//! keeps an entry-sync stream open over mTLS, exactly as a real agent does
//! (the same protocol and client code), recording when each revocation and
//! entry change reaches it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use hallmark_agent::server_conn::{Trust, channel};
use hallmark_ca::keys::new_key_and_csr;
use hallmark_core::SpiffeId;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{AttestNodeRequest, SvidRequest, SyncEntriesRequest, sync_event};
use hyper::Method;
use serde_json::json;
use tonic::transport::Channel;

use crate::client::Client;
use crate::drill::report::now_ms;

/// When each simulated agent first saw each revoked id: id -> arrival times (unix ms).
pub type Arrivals = Arc<Mutex<HashMap<String, Vec<i64>>>>;

/// One simulated agent.
pub struct SimAgent {
    /// Its SPIFFE ID.
    pub id: String,
    /// Its mTLS client.
    pub client: NodeClient<Channel>,
}

/// What simulated agents need to reach the server.
pub struct Target {
    /// The server's agent API.
    pub addr: String,
    /// Trust anchors (DER) from the bundle.
    pub anchors: Vec<Vec<u8>>,
    /// The server's SPIFFE ID.
    pub server_id: SpiffeId,
}

impl Target {
    /// Reads the bundle and trust domain from the admin API.
    pub async fn new(admin: &Client, addr: &str, trust_domain: &str) -> anyhow::Result<Self> {
        let pem_text = admin.send(Method::GET, "/v1/bundle?format=pem", None, None).await?.body;
        let anchors = pem::parse_many(&pem_text)?.into_iter().map(|p| p.into_contents()).collect::<Vec<Vec<u8>>>();
        let server_id = SpiffeId::new(&format!("spiffe://{trust_domain}/hallmark/server"))?;
        Ok(Self { addr: addr.to_owned(), anchors, server_id })
    }

    fn anchors(&self) -> hallmark_ca::tls::SharedAnchors {
        Arc::new(RwLock::new(self.anchors.clone()))
    }
}

/// `count` SignX509Svids requests for `entry`, the workload evidence
/// `unix:uid:1000`, taking CSRs from `csrs` round-robin from position `from`.
#[expect(clippy::indexing_slicing, reason = "the position is reduced modulo the slice's length, which is not zero")]
pub fn svid_requests(entry: &str, csrs: &[Vec<u8>], from: usize, count: usize) -> Vec<SvidRequest> {
    (0..count)
        .map(|j| SvidRequest {
            entry_id: entry.to_owned(),
            csr: csrs[(from + j) % csrs.len()].clone(),
            evidence: vec!["unix:uid:1000".into()],
            renewal: false,
            // As a real agent sends it: one process, so one evidence set.
            process: Some(hallmark_proto::node::ProcessInstance { pid: 4242, start_ticks: 1, started_at: 1 }),
            lineage: Vec::new(),
        })
        .collect()
}

/// Attests one simulated agent with a fresh join token (AttestNode, the real
/// node-attestation RPC) and returns it with an mTLS client.
#[expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value read by key: a missing key reads as Null, never a panic"
)]
pub async fn attest(admin: &Client, t: &Target) -> anyhow::Result<SimAgent> {
    let tok = admin.json(Method::POST, "/v1/join-tokens", Some(&json!({ "ttl": "10m" }))).await?;
    let token = tok["token"].as_str().context("no token")?.to_owned();
    let kc = new_key_and_csr(None)?;
    let mut bootstrap = channel(&t.addr, Trust::Attest { anchors: Some(t.anchors()), server_id: t.server_id.clone() })?;
    let reply = bootstrap
        .attest_node(AttestNodeRequest { join_token: token, csr: kc.csr_der })
        .await
        .map_err(|s| anyhow::anyhow!("AttestNode: {}", s.message()))?
        .into_inner();
    let client = channel(
        &t.addr,
        Trust::Mtls {
            anchors: t.anchors(),
            server_id: t.server_id.clone(),
            chain: reply.cert_chain,
            key: kc.key_pkcs8,
        },
    )?;
    Ok(SimAgent { id: reply.spiffe_id, client })
}

/// Keeps `agent`'s sync stream open, recording the arrival of every revoked
/// id, every upserted entry id and every deleted entry id; counts snapshots.
pub fn sync(
    agent: SimAgent,
    arrivals: Arrivals,
    snapshots: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = agent.client;
        loop {
            let Ok(resp) = client.sync_entries(SyncEntriesRequest {}).await else {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            };
            let mut stream = resp.into_inner();
            while let Ok(Some(ev)) = stream.message().await {
                let at = now_ms();
                let ids: Vec<String> = match ev.event {
                    Some(sync_event::Event::Revoked(r)) => r.items.into_iter().map(|i| i.id).collect(),
                    Some(sync_event::Event::Upsert(e)) => vec![e.id],
                    Some(sync_event::Event::Delete(id)) => vec![id],
                    Some(sync_event::Event::Snapshot(_)) => {
                        snapshots.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
                if !ids.is_empty() {
                    let mut g = arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for id in ids {
                        g.entry(id).or_default().push(at);
                    }
                }
            }
        }
    })
}
