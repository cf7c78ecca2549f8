//! The agent API over real mTLS: only attested agents get in, and each gets
//! only what its entries entitle it to.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)]

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hallmark_agent::server_conn::{Trust, channel};
use hallmark_ca::keys::new_key_and_csr;
use hallmark_core::{EntrySpec, SpiffeId, Ttl};
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    AttestNodeRequest, MintJwtSvidRequest, MintWitSvidRequest, ReportProcessEndedRequest, SignX509SvidsRequest,
    SvidRequest, SyncEntriesRequest,
};
use hallmark_server::config::ServerConfig;
use tonic::Code;
use tonic::transport::Channel;

async fn server(dir: &std::path::Path) -> hallmark_server::RunningServer {
    let cfg = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
        dir.display()
    );
    let settings = ServerConfig::parse(&cfg, &HashMap::new()).unwrap().validate().unwrap();
    hallmark_server::start(settings).await.unwrap()
}

fn anchors(s: &hallmark_server::RunningServer) -> Arc<RwLock<Vec<Vec<u8>>>> {
    Arc::new(RwLock::new(s.state.authorities.bundle().borrow().x509_authorities.clone()))
}

/// Evidence of a workload with uid 1000, as an agent reports it.
fn ev() -> Vec<String> {
    vec!["unix:uid:1000".into(), "unix:gid:1000".into()]
}

fn server_id() -> SpiffeId {
    SpiffeId::new("spiffe://example.org/hallmark/server").unwrap()
}

/// Attests a new agent with a fresh join token; returns its ID and an mTLS client.
async fn attested_agent(s: &hallmark_server::RunningServer) -> (SpiffeId, NodeClient<Channel>) {
    let hallmark_server::admin::NewJoinToken { token, agent_id, .. } =
        s.state.new_join_token(Ttl::parse("10m").unwrap(), "test").await.unwrap();
    let addr = s.agent_addr.to_string();
    let mut c = channel(&addr, Trust::Attest { anchors: Some(anchors(s)), server_id: server_id() }).unwrap();
    let kc = new_key_and_csr(None).unwrap();
    let r = c.attest_node(AttestNodeRequest { join_token: token.clone(), csr: kc.csr_der }).await.unwrap().into_inner();
    assert_eq!(r.spiffe_id, agent_id);
    // The token is single-use.
    let kc2 = new_key_and_csr(None).unwrap();
    let again = c.attest_node(AttestNodeRequest { join_token: token, csr: kc2.csr_der }).await.unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied);
    assert!(again.message().contains("already been used"));
    let id = SpiffeId::new(&r.spiffe_id).unwrap();
    let client = mtls_client(s, r.cert_chain, kc.key_pkcs8);
    (id, client)
}

/// A client presenting `chain` (leaf first) with `key`.
fn mtls_client(s: &hallmark_server::RunningServer, chain: Vec<Vec<u8>>, key: Vec<u8>) -> NodeClient<Channel> {
    let mtls = Trust::Mtls { anchors: anchors(s), server_id: server_id(), chain, key };
    channel(&s.agent_addr.to_string(), mtls).unwrap()
}

/// An entry for workloads with uid 1000 under agent `parent`, known to the server.
async fn entry_for_uid_1000(s: &hallmark_server::RunningServer, parent: &SpiffeId, id: &str) -> hallmark_core::Entry {
    uid_1000_entry(s, parent, id, None).await
}

/// Creates an entry served by `parent` for uid 1000, with `bind` (`None`: the default).
async fn uid_1000_entry(
    s: &hallmark_server::RunningServer,
    parent: &SpiffeId,
    id: &str,
    bind: Option<&str>,
) -> hallmark_core::Entry {
    let spec = EntrySpec {
        spiffe_id: id.into(),
        parent_id: Some(parent.to_string()),
        selectors: vec!["unix:uid:1000".into()],
        owner: "team".into(),
        bind: bind.map(str::to_owned),
        ..Default::default()
    };
    create_entry(s, spec).await
}

/// Creates the entry `spec` describes, known to the server when this returns.
async fn create_entry(s: &hallmark_server::RunningServer, spec: EntrySpec) -> hallmark_core::Entry {
    let valid = spec
        .validate(&s.state.settings.trust_domain, None, Ttl::parse("1h").unwrap(), Ttl::parse("5m").unwrap())
        .unwrap();
    let rec = s.state.record_change("test", "entry_create", |e: &hallmark_core::Entry| {
        hallmark_server::audit::Change::new(&e.id, serde_json::Value::Null)
    });
    let entry = s.state.store.create_entry(&valid, rec).await.unwrap();
    s.state.catch_up().await.unwrap();
    entry
}

/// One SignX509SVIDs request for `entry_id`, its first (only) result.
async fn sign_one(
    c: &mut NodeClient<Channel>,
    entry_id: &str,
    csr: Vec<u8>,
    evidence: Vec<String>,
) -> hallmark_proto::node::SvidResult {
    let req = SvidRequest {
        entry_id: entry_id.to_owned(),
        csr,
        evidence,
        renewal: false,
        process: None,
        lineage: Vec::new(),
    };
    let r = c.sign_x509_svids(SignX509SvidsRequest { requests: vec![req] }).await.unwrap().into_inner();
    r.results.into_iter().next().unwrap()
}

/// MintJWTSVID for `entry_id` and `audience`, with [`ev`] as the evidence.
async fn mint_jwt(c: &mut NodeClient<Channel>, entry_id: &str, audience: &[&str]) -> Result<(), tonic::Status> {
    let audience = audience.iter().map(|&a| a.to_owned()).collect();
    let req = MintJwtSvidRequest {
        entry_id: entry_id.to_owned(),
        audience,
        evidence: ev(),
        process: None,
        lineage: Vec::new(),
    };
    c.mint_jwt_svid(req).await.map(|_| ())
}

/// Security issue 12: a certificate that names an agent and chains to the
/// bundle is not enough. Only the agent SVID the server issued to that node
/// (its current serial, or the one it renewed with) authenticates it; a
/// workload SVID or any other certificate for the agent's ID does not.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_agent_svid_issued_to_a_node_authenticates_it() {
    use hallmark_ca::x509::{SvidProfile, SvidTemplate};
    use hallmark_proto::node::RenewAgentRequest;
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let (a_id, mut a) = attested_agent(&s).await;
    assert!(a.sync_entries(SyncEntriesRequest {}).await.is_ok());
    // Certificates for A's ID signed by the trust domain's own CA, but never
    // issued to A's node: a workload SVID (what an entry holding the ID
    // would have been served) and one with the agent profile.
    let ca = s.state.authorities.x509().unwrap();
    for profile in [SvidProfile::Workload, SvidProfile::Agent] {
        let kc = new_key_and_csr(Some(&a_id)).unwrap();
        let t = SvidTemplate {
            csr_der: &kc.csr_der,
            spiffe_id: &a_id,
            dns_names: &[],
            ttl_secs: 600,
            now: hallmark_core::now_unix(),
            profile,
            task_id: None,
            person_name: None,
        };
        let forged = ca.sign_svid(&t).unwrap();
        let mut c = mtls_client(&s, forged.chain, kc.key_pkcs8);
        let e = c.sync_entries(SyncEntriesRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{profile:?}: {e:?}");
        assert!(e.message().contains("is not the agent SVID issued to node"), "{e:?}");
        let e = c.renew_agent(RenewAgentRequest { csr: new_key_and_csr(Some(&a_id)).unwrap().csr_der }).await;
        assert_eq!(e.unwrap_err().code(), Code::PermissionDenied, "{profile:?}: a forged certificate cannot renew");
    }
    // Renewal: the SVID renewed with stays accepted beside the new one, and
    // renewing again with it (the answer was lost) keeps it accepted.
    let mut renewed = Vec::new();
    for _ in 0..2 {
        let kc = new_key_and_csr(Some(&a_id)).unwrap();
        let r = a.renew_agent(RenewAgentRequest { csr: kc.csr_der }).await.unwrap().into_inner();
        renewed.push(mtls_client(&s, r.cert_chain, kc.key_pkcs8));
    }
    assert!(a.sync_entries(SyncEntriesRequest {}).await.is_ok(), "the SVID renewed with is still accepted");
    assert!(renewed[1].sync_entries(SyncEntriesRequest {}).await.is_ok(), "the newest SVID is accepted");
    let e = renewed[0].sync_entries(SyncEntriesRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "an SVID replaced twice over is not: {e:?}");
}

/// The process facts an agent sends are recorded with the selectors, under
/// the digest the inventory row and the audit record carry; facts out of
/// range are refused; a delivery report, which names the selectors only,
/// still finds the credential.
#[tokio::test(flavor = "multi_thread")]
async fn process_facts_are_recorded_with_the_evidence() {
    use hallmark_proto::node::{ProcessInstance, RecordDeliveriesRequest};
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let (b_id, mut b) = attested_agent(&s).await;
    let entry = entry_for_uid_1000(&s, &b_id, "spiffe://example.org/w").await;
    let sid = SpiffeId::new("spiffe://example.org/w").unwrap();
    let process = ProcessInstance { pid: 4242, start_ticks: 987_654, started_at: 1_767_225_600 };
    let sign = |process: ProcessInstance| {
        let csr = new_key_and_csr(Some(&sid)).unwrap().csr_der;
        let req = SvidRequest {
            entry_id: entry.id.clone(),
            csr,
            evidence: ev(),
            renewal: false,
            process: Some(process),
            lineage: Vec::new(),
        };
        SignX509SvidsRequest { requests: vec![req] }
    };
    let r = b.sign_x509_svids(sign(process)).await.unwrap().into_inner().results.remove(0);
    assert!(r.error.is_empty(), "{}", r.error);
    let serial = hallmark_ca::svid::parse_leaf(&r.cert_chain[0]).unwrap().serial;
    let c = s.state.store.credential(&serial).await.unwrap().unwrap();
    let set = s.state.store.evidence_set(&c.evidence_digest).await.unwrap().unwrap().unwrap();
    let p = set.process.unwrap();
    assert_eq!((p.pid(), p.start_ticks(), p.started_at()), (4242, 987_654, 1_767_225_600));
    assert_eq!(set.selectors, vec!["unix:gid:1000", "unix:uid:1000"]);
    let records = s.state.store.audit_records(0, 0, i64::MAX, 1000).await.unwrap();
    let issued = records.iter().find(|r| r.event.details["serial"] == serial.as_str()).unwrap();
    assert_eq!(issued.event.details["evidence_digest"], c.evidence_digest.as_str());

    // A JWT-SVID's too.
    let req = MintJwtSvidRequest {
        entry_id: entry.id.clone(),
        audience: vec!["x".into()],
        evidence: ev(),
        process: Some(ProcessInstance { pid: 4243, ..process }),
        lineage: Vec::new(),
    };
    let jti = b.mint_jwt_svid(req).await.unwrap().into_inner().jti;
    let j = s.state.store.credential(&jti).await.unwrap().unwrap();
    let jset = s.state.store.evidence_set(&j.evidence_digest).await.unwrap().unwrap().unwrap();
    assert_eq!(jset.process.map(|p| p.pid()), Some(4243));

    // PID 0 names no process: refused as a bad request, nothing signed.
    let r =
        b.sign_x509_svids(sign(ProcessInstance { pid: 0, ..process })).await.unwrap().into_inner().results.remove(0);
    assert!(r.cert_chain.is_empty() && r.error.contains("process id"), "{:?}", r.error);

    // The holder reports delivery with its selectors alone.
    let report =
        RecordDeliveriesRequest { credential_ids: vec![serial.clone()], target: "files:/x".into(), evidence: ev() };
    assert_eq!(b.record_deliveries(report).await.unwrap().into_inner().recorded, 1);
    let other = vec!["unix:uid:1000".to_owned()];
    let report = RecordDeliveriesRequest { credential_ids: vec![serial], target: "files:/x".into(), evidence: other };
    assert_eq!(b.record_deliveries(report).await.unwrap_err().code(), Code::PermissionDenied);
    assert!(s.state.verify_audit(&[]).await.unwrap().broken.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_get_only_their_own_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let (a_id, mut a) = attested_agent(&s).await;
    let (b_id, mut b) = attested_agent(&s).await;
    let entry = entry_for_uid_1000(&s, &b_id, "spiffe://example.org/b-only").await;
    let sid = SpiffeId::new("spiffe://example.org/b-only").unwrap();

    // B is entitled.
    let csr = new_key_and_csr(Some(&sid)).unwrap().csr_der;
    let r = sign_one(&mut b, &entry.id, csr, ev()).await;
    assert!(r.error.is_empty(), "{}", r.error);
    assert!(!r.cert_chain.is_empty());
    assert!(mint_jwt(&mut b, &entry.id, &["x"]).await.is_ok());

    // A is not: its request for B's entry is refused, not signed.
    let csr = new_key_and_csr(Some(&sid)).unwrap().csr_der;
    let r = sign_one(&mut a, &entry.id, csr, ev()).await;
    assert!(r.cert_chain.is_empty());
    assert!(r.error.contains("not entitled"), "{}", r.error);
    let e = mint_jwt(&mut a, &entry.id, &["x"]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains(a_id.as_str()));

    // A CSR asking for another identity than the entry's is refused.
    let other = SpiffeId::new("spiffe://example.org/admin").unwrap();
    let csr = new_key_and_csr(Some(&other)).unwrap().csr_der;
    let r = sign_one(&mut b, &entry.id, csr, ev()).await;
    assert!(r.error.contains("spiffe://example.org/admin"), "{}", r.error);
    // Garbage CSR and empty audience are refused as bad input.
    let r = sign_one(&mut b, &entry.id, b"junk".to_vec(), ev()).await;
    assert!(r.error.contains("CSR"), "{}", r.error);
    let e = mint_jwt(&mut b, &entry.id, &[]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Evidence that does not satisfy the entry is refused.
    let csr = new_key_and_csr(Some(&sid)).unwrap().csr_der;
    let wrong = vec!["unix:uid:0".to_owned()];
    let r = sign_one(&mut b, &entry.id, csr, wrong).await;
    assert!(r.cert_chain.is_empty() && r.error.contains("evidence"), "{:?}", r.error);

    // Sync: B's snapshot has the entry, A's has nothing.
    let mut sb = b.sync_entries(SyncEntriesRequest {}).await.unwrap().into_inner();
    let first = sb.message().await.unwrap().unwrap();
    match first.event.unwrap() {
        hallmark_proto::node::sync_event::Event::Snapshot(snap) => {
            assert_eq!(snap.entries.len(), 1);
            assert!(snap.bundle.is_some());
        }
        other => panic!("first sync message must be a snapshot, got {other:?}"),
    }
    let mut sa = a.sync_entries(SyncEntriesRequest {}).await.unwrap().into_inner();
    match sa.message().await.unwrap().unwrap().event.unwrap() {
        hallmark_proto::node::sync_event::Event::Snapshot(snap) => assert!(snap.entries.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_client_certificate_no_access() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let mut anon =
        channel(&s.agent_addr.to_string(), Trust::Attest { anchors: Some(anchors(&s)), server_id: server_id() })
            .unwrap();
    let e = anon.sync_entries(SyncEntriesRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = mint_jwt(&mut anon, "x", &["a"]).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Unknown and expired tokens are refused.
    let kc = new_key_and_csr(None).unwrap();
    let e =
        anon.attest_node(AttestNodeRequest { join_token: "nope".into(), csr: kc.csr_der.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("not valid"));
    let token = s.state.new_join_token(Ttl::parse("1s").unwrap(), "test").await.unwrap().token;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let e = anon.attest_node(AttestNodeRequest { join_token: token, csr: kc.csr_der.clone() }).await.unwrap_err();
    assert!(e.message().contains("expired"), "{e:?}");
    // A bad CSR does not burn a token.
    let token = s.state.new_join_token(Ttl::parse("1m").unwrap(), "test").await.unwrap().token;
    let e = anon.attest_node(AttestNodeRequest { join_token: token.clone(), csr: b"junk".to_vec() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(anon.attest_node(AttestNodeRequest { join_token: token, csr: kc.csr_der }).await.is_ok());
    // A server that is not ours (different CA) is rejected by the agent side.
    let other_dir = tempfile::tempdir().unwrap();
    let other = server(other_dir.path()).await;
    let mut wrong =
        channel(&other.agent_addr.to_string(), Trust::Attest { anchors: Some(anchors(&s)), server_id: server_id() })
            .unwrap();
    let e = wrong.attest_node(AttestNodeRequest { join_token: "x".into(), csr: b"x".to_vec() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

/// Issue 15: a banned node asking for an agent SVID is told its node is
/// banned, not that some entry is revoked (it asked for no entry).
#[tokio::test(flavor = "multi_thread")]
async fn a_banned_node_is_told_it_is_banned() {
    use hallmark_server::issuance::IssueError;
    use hallmark_store::RevokeTarget;
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let agent = SpiffeId::new("spiffe://example.org/hallmark/agent/local").unwrap();
    s.state.attest_local(&agent, &new_key_and_csr(None).unwrap().csr_der).await.unwrap();
    s.state.revoke(&RevokeTarget::Node(agent.to_string()), "stolen", "admin").await.unwrap();
    let err = s.state.attest_local(&agent, &new_key_and_csr(None).unwrap().csr_der).await.unwrap_err();
    assert!(matches!(&err, IssueError::NodeBanned(id) if *id == agent), "{err:?}");
    assert_eq!(err.to_string(), "node `spiffe://example.org/hallmark/agent/local` is banned");
}

/// Creates an entry served by `parent` for uid 1000, bound to its process when `bound`.
async fn entry_for(s: &hallmark_server::RunningServer, spiffe_id: &str, parent: &SpiffeId, bound: bool) -> String {
    uid_1000_entry(s, parent, spiffe_id, bound.then_some("process")).await.id
}

/// The serial of an X.509-SVID `c` gets signed for `entry_id` (`spiffe_id`).
async fn signed_serial(c: &mut NodeClient<Channel>, entry_id: &str, spiffe_id: &str) -> String {
    let csr = new_key_and_csr(Some(&SpiffeId::new(spiffe_id).unwrap())).unwrap().csr_der;
    let r = sign_one(c, entry_id, csr, ev()).await;
    assert!(r.error.is_empty(), "{}", r.error);
    hallmark_ca::svid::parse_leaf(&r.cert_chain[0]).unwrap().serial
}

fn report(ids: &[&str]) -> ReportProcessEndedRequest {
    ReportProcessEndedRequest { credential_ids: ids.iter().map(|&i| i.to_owned()).collect() }
}

/// Issue 16: an agent reports the end of a process that held credentials
/// of a `bind: process` entry, and the server revokes them, reason "ended
/// with its process", recorded as the agent's revocation. The attack: agent
/// A names B's credentials (alone, or hidden among its own) to revoke
/// another node's workloads. Refused whole, nothing revoked; so is A using
/// the path on its own credentials of an unbound entry.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_may_end_only_its_own_bound_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let (a_id, mut a) = attested_agent(&s).await;
    let (b_id, mut b) = attested_agent(&s).await;
    let a_bound = entry_for(&s, "spiffe://example.org/a-job", &a_id, true).await;
    let a_plain = entry_for(&s, "spiffe://example.org/a-web", &a_id, false).await;
    let b_bound = entry_for(&s, "spiffe://example.org/b-job", &b_id, true).await;
    let mine = signed_serial(&mut a, &a_bound, "spiffe://example.org/a-job").await;
    let my_plain = signed_serial(&mut a, &a_plain, "spiffe://example.org/a-web").await;
    let theirs = signed_serial(&mut b, &b_bound, "spiffe://example.org/b-job").await;
    let revoked = |id: String| {
        let st = s.state.clone();
        async move { st.store.credential(&id).await.unwrap().unwrap().revoked_at.is_some() }
    };

    for ids in [vec![theirs.as_str()], vec![mine.as_str(), theirs.as_str()]] {
        let e = a.report_process_ended(report(&ids)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains(&theirs) && e.message().contains(a_id.as_str()), "{e:?}");
    }
    let e = a.report_process_ended(report(&[&my_plain])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not bound to its process"), "{e:?}");
    let e = a.report_process_ended(report(&[])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(!revoked(theirs.clone()).await, "B's credential is untouched");
    assert!(!revoked(mine.clone()).await, "a refused report revokes nothing, not even A's own");
    assert!(!revoked(my_plain.clone()).await);

    // A's own, bound: revoked once; a second report (a retry) changes nothing.
    let r = a.report_process_ended(report(&[&mine, "00ffnotinventory"])).await.unwrap().into_inner();
    assert_eq!(r.revoked, 1);
    let c = s.state.store.credential(&mine).await.unwrap().unwrap();
    assert_eq!(c.revoke_reason.as_deref(), Some("ended with its process"));
    assert_eq!(a.report_process_ended(report(&[&mine])).await.unwrap().into_inner().revoked, 0);
    assert!(s.state.store.live_revocations(hallmark_core::now_unix()).await.unwrap().0.iter().any(|r| r.id == mine));
    // Recorded like every revocation, by the agent.
    let records = s.state.store.audit_records(0, 0, i64::MAX, 10_000).await.unwrap();
    let rec = records.iter().map(|r| &r.event).find(|e| e.action == "revoke" && e.subject == mine).expect("a record");
    assert_eq!(rec.actor, format!("node:{a_id}"));
    assert!(rec.details.to_string().contains("ended with its process"), "{:?}", rec.details);
}

/// Issue 17: an entry needing node selectors this node did not prove is not
/// the node's, even with the node as its parent: not synced to it, and
/// asking for its credentials anyway is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_needing_another_nodes_provenance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let (a_id, mut a) = attested_agent(&s).await;
    let spec = EntrySpec {
        spiffe_id: "spiffe://example.org/db".into(),
        parent_id: Some(a_id.to_string()),
        selectors: vec!["unix:uid:1000".into()],
        node_selectors: vec!["node:attestation:tpm".into()],
        owner: "team".into(),
        ..Default::default()
    };
    let entry = create_entry(&s, spec).await;

    let mut sync = a.sync_entries(SyncEntriesRequest {}).await.unwrap().into_inner();
    let Some(hallmark_proto::node::sync_event::Event::Snapshot(snap)) = sync.message().await.unwrap().unwrap().event
    else {
        panic!("no snapshot first")
    };
    assert!(snap.entries.iter().all(|e| e.id != entry.id), "sent to a join-token node");
    let csr = hallmark_ca::keys::new_key_and_csr(Some(&SpiffeId::new("spiffe://example.org/db").unwrap())).unwrap();
    let r = sign_one(&mut a, &entry.id, csr.csr_der, ev()).await;
    assert!(r.cert_chain.is_empty() && r.denied, "{r:?}");
    assert!(r.error.contains("node selectors its node did not prove"), "{r:?}");
    assert!(mint_jwt(&mut a, &entry.id, &["db"]).await.is_err());
}

/// MintWitSvid: a WIT binding the key the agent sent, signed by the trust
/// domain's JWT key, recorded as a `wit` with its jti and revoked as a `jwt`
/// record; a key that is not a public EC P-256 JWK is refused, and so is
/// another agent's entry.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_mints_wits_binding_the_key_it_sends() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let (a_id, mut a) = attested_agent(&s).await;
    let (_, mut b) = attested_agent(&s).await;
    let entry = entry_for_uid_1000(&s, &a_id, "spiffe://example.org/wit").await;
    let key = hallmark_ca::WitKey::generate().unwrap();
    let public = serde_json::Value::Object(key.public_jwk().unwrap().to_json()).to_string();
    let req = |public_key: String| MintWitSvidRequest {
        entry_id: entry.id.clone(),
        public_key,
        evidence: ev(),
        process: None,
        lineage: Vec::new(),
    };
    let w = a.mint_wit_svid(req(public.clone())).await.unwrap().into_inner();
    let authorities = s.state.authorities.bundle().borrow().jwt_authorities.clone();
    let (claims, bound) = hallmark_ca::wit::verify(&w.token, &authorities, hallmark_core::now_unix()).unwrap();
    assert_eq!(bound, key.public_jwk().unwrap());
    assert_eq!((claims["sub"].as_str(), claims["jti"].as_str()), (Some("spiffe://example.org/wit"), Some(&*w.jti)));
    assert!(
        w.refresh_at < w.expires_at && w.expires_at - claims["iat"].as_i64().unwrap() == 300,
        "the entry's jwt_ttl"
    );
    let row = s.state.store.credential(&w.jti).await.unwrap().unwrap();
    assert_eq!(
        (row.kind, row.authority_id.as_str(), row.audience),
        (hallmark_core::CredentialKind::Wit, &*w.kid, None)
    );

    // The private key, or any other curve, is refused before anything is decided.
    let private = key.private_jwk().unwrap();
    let refused = a.mint_wit_svid(req(private)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("`d`") && !refused.message().contains("\"d\":"), "{}", refused.message());
    assert_eq!(a.mint_wit_svid(req("{}".into())).await.unwrap_err().code(), Code::InvalidArgument);
    // Another agent's entry.
    assert_eq!(b.mint_wit_svid(req(public)).await.unwrap_err().code(), Code::PermissionDenied);

    // Revoked by jti: the log says `jwt`, which every agent drops by jti.
    let target = hallmark_store::RevokeTarget::Credential(w.jti.clone());
    s.state.revoke(&target, "test", "test").await.unwrap();
    let log = s.state.store.revocations_since(0, 100).await.unwrap();
    let r = log.iter().find(|r| r.id == w.jti).unwrap();
    assert_eq!(r.kind, hallmark_core::RevocationKind::Jwt);
    assert!(s.state.verify_audit(&[]).await.unwrap().broken.is_none());
}
