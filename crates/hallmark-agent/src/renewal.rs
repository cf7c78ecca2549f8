//! How the agent gets its own identity and keeps it.
//!
//! 1. At start, [`resume_or_attest`]: the identity stored in the data
//!    directory (see [`crate::identity`]) is used while valid; otherwise the
//!    node attests afresh with its join token ([`attest`]), verifying the
//!    server by the configured bundle.
//! 2. While running, [`renewal_loop`]: past half its life, or at once when
//!    the authority that signed it is tainted, the agent SVID is renewed over
//!    mTLS with a new key, stored, and the server connection replaced. An
//!    agent SVID that expired is never presented again: the node attests
//!    afresh, or the agent stays degraded, saying what it needs.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use hallmark_ca::keys::new_key_and_csr;
use hallmark_ca::svid;
use hallmark_core::now_unix;
use hallmark_proto::node as pb;

use hallmark_proto::node::node_client::NodeClient;
use tonic::transport::Channel;

use crate::config::{AgentSettings, Bootstrap, NodeAttestorConfig};
use crate::error::{AgentError, io_err};
use crate::from_proto::bundle_from_proto;
use crate::identity::{AgentIdentity, load_bundle, save_bundle};
use crate::node_attestor::Prover;
use crate::server_conn::{self, Trust};
use crate::state::{AgentInner, Attested};

/// A stored agent SVID with less validity left than this is not resumed:
/// the node attests afresh instead.
const RESUME_MIN_LEFT_SECS: i64 = 5;

/// The identity to start with: the stored one while it is valid (with the
/// bundle stored beside it), else a fresh node attestation, stored for the
/// next start.
pub(crate) async fn resume_or_attest(settings: &AgentSettings, now: i64) -> Result<Attested, AgentError> {
    let dir = &settings.data_dir;
    let stored = AgentIdentity::load(dir)?.filter(|i| i.not_after > now + RESUME_MIN_LEFT_SECS);
    if let (Some(identity), Some(bundle)) = (stored, load_bundle(dir, &settings.trust_domain)) {
        tracing::info!(
            agent = %identity.id,
            valid_until = %hallmark_core::time::rfc3339(identity.not_after),
            dir = %dir.display(),
            "using stored agent SVID"
        );
        return Ok(Attested { identity, bundle });
    }
    let attested = attest(settings, None).await?;
    attested.identity.save(dir)?;
    save_bundle(dir, &attested.bundle)?;
    tracing::info!(agent = %attested.identity.id, "node attested");
    Ok(attested)
}

/// Node attestation, with the configured attestor's evidence or else the
/// join token: the server assigns the agent's SPIFFE ID from what the node
/// proved, signs its CSR and sends the bundle. `anchors` (the current
/// bundle's authorities, when the node attests again) verify the server;
/// otherwise the configured bootstrap does.
async fn attest(settings: &AgentSettings, anchors: Option<Vec<Vec<u8>>>) -> Result<Attested, AgentError> {
    let anchors = match (anchors.as_ref(), &settings.bootstrap) {
        (Some(a), _) | (None, Bootstrap::Anchors(a)) if !a.is_empty() => Some(Arc::new(RwLock::new(a.clone()))),
        (_, Bootstrap::BundleFile(p)) => {
            let text = std::fs::read_to_string(p).map_err(|e| io_err(p, e))?;
            Some(Arc::new(RwLock::new(svid::pem_certs(&text).map_err(|e| io_err(p, e))?)))
        }
        (_, Bootstrap::Insecure) => {
            tracing::warn!(
                server = %settings.server_address,
                "insecure_bootstrap: trusting whichever server answers at this address for the first attestation, \
                 unverified, and pinning its bundle from then on; set `trust_bundle_path` to verify it instead"
            );
            None
        }
        _ => {
            return Err(AgentError::Attestation(
                "no bundle to verify the server: set `trust_bundle_path` (or `insecure_bootstrap = true`)".into(),
            ));
        }
    };
    // The CSR carries no SPIFFE ID: the server assigns it from the evidence.
    let kc = new_key_and_csr(None).map_err(|e| AgentError::Attestation(e.to_string()))?;
    let mut client = server_conn::channel(
        &settings.server_address,
        Trust::Attest { anchors, server_id: settings.trust_domain.server_id() },
    )?;
    let reply = match &settings.node_attestor {
        Some(cfg) => attest_with_evidence(&mut client, cfg, &kc.csr_der).await?,
        None => {
            let token = settings.join_token.clone().ok_or_else(|| {
                AgentError::Attestation(
                    "no stored agent SVID is valid, and neither a join token (`join_token`) nor a `[node_attestor]` \
                     is configured"
                        .into(),
                )
            })?;
            client
                .attest_node(pb::AttestNodeRequest { join_token: token, csr: kc.csr_der })
                .await
                .map_err(|s| AgentError::Attestation(s.message().to_owned()))?
                .into_inner()
        }
    };
    let identity = AgentIdentity::from_chain(reply.cert_chain, kc.key_pkcs8, reply.authority_id)?;
    let bundle = reply
        .bundle
        .map(|b| bundle_from_proto(&settings.trust_domain, &b))
        .ok_or_else(|| AgentError::Attestation("server sent no bundle".into()))?;
    Ok(Attested { identity, bundle })
}

/// The `Attest` exchange: evidence and CSR, the answer to each challenge
/// (at most two), then the agent SVID.
async fn attest_with_evidence(
    client: &mut NodeClient<Channel>,
    cfg: &NodeAttestorConfig,
    csr: &[u8],
) -> Result<pb::AgentSvid, AgentError> {
    let refused = |s: tonic::Status| AgentError::Attestation(format!("{} attestation: {}", cfg.name(), s.message()));
    let mut prover = Prover::open(cfg)?;
    let evidence = prover.evidence().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let begin = pb::AttestBegin { csr: csr.to_vec(), evidence: Some(evidence) };
    let send = |step| pb::AttestRequest { step: Some(step) };
    tx.send(send(pb::attest_request::Step::Begin(begin)))
        .await
        .map_err(|_| AgentError::Attestation("attestation stream closed".into()))?;
    let mut inbound =
        client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map_err(refused)?.into_inner();
    for _ in 0..3 {
        match inbound.message().await.map_err(refused)?.and_then(|m| m.step) {
            Some(pb::attest_response::Step::Svid(svid)) => return Ok(svid),
            Some(pb::attest_response::Step::Challenge(pb::Challenge { kind: Some(kind) })) => {
                let answer = pb::ChallengeResponse { kind: Some(prover.answer(kind, csr).await?) };
                tx.send(send(pb::attest_request::Step::Response(answer)))
                    .await
                    .map_err(|_| AgentError::Attestation("attestation stream closed".into()))?;
            }
            _ => break,
        }
    }
    Err(AgentError::Attestation(format!("{} attestation: the server ended the exchange without an SVID", cfg.name())))
}

/// Renews the agent's own SVID past half its life, or at once when the
/// authority that signed it is tainted, and reconnects with it. An agent SVID
/// that expired (the server was unreachable all along) is never presented
/// again: the agent attests afresh if it has a join token, and otherwise stays
/// degraded, saying what it needs.
pub(crate) async fn renewal_loop(agent: Arc<AgentInner>) -> Result<(), AgentError> {
    let mut expired_logged = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let id = agent.identity();
        let now = now_unix();
        if id.not_after <= now {
            if !expired_logged {
                tracing::error!(agent = %id.id, "agent SVID expired without renewal; attesting again");
                expired_logged = true;
            }
            if attest_again(&agent).await? {
                expired_logged = false;
            } else {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            continue;
        }
        let tainted = agent.cache.bundle().is_some_and(|b| b.status.tainted.contains(&id.authority_id));
        // Backdating makes not_before earlier than issuance; renewing at the
        // midpoint of the certificate's span is still well before expiry.
        if now < id.not_before + (id.not_after - id.not_before) / 2 && !tainted {
            continue;
        }
        if agent.settings.node_attestor.is_some() {
            // Its evidence is verified again at each rotation (the server
            // refuses renewal to such nodes).
            if !attest_again(&agent).await? {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            continue;
        }
        renew(&agent, &id, tainted).await?;
    }
}

/// Attests the node afresh after its SVID expired; whether it could. Only a
/// failure to store or use the new identity ends the loop.
async fn attest_again(agent: &AgentInner) -> Result<bool, AgentError> {
    // The server is verified by the bundle the agent holds now (the bootstrap
    // file may be long out of date).
    let anchors = agent.cache.bundle().map(|b| b.x509_authorities.clone());
    match attest(&agent.settings, anchors).await {
        Ok(Attested { identity, bundle }) => {
            identity.save(&agent.settings.data_dir)?;
            agent.set_bundle(bundle);
            tracing::info!(agent = %identity.id, "node attested again");
            agent.use_identity(identity)?;
            Ok(true)
        }
        Err(e) => {
            match &agent.settings.node_attestor {
                Some(a) => tracing::warn!(error = %e, attestor = a.name(), "cannot attest again; will retry"),
                None => tracing::warn!(
                    error = %e,
                    "cannot attest again; give the agent a new join token (`hallmark token create`)"
                ),
            }
            Ok(false)
        }
    }
}

/// One renewal of the agent SVID `id` with a new key. A failure is logged
/// and tried again on a later pass; only a failure to use the new identity
/// ends the loop.
async fn renew(agent: &AgentInner, id: &AgentIdentity, tainted: bool) -> Result<(), AgentError> {
    let kc = match new_key_and_csr(Some(&id.id)) {
        Ok(kc) => kc,
        Err(e) => {
            tracing::error!(error = %e, "cannot generate agent key");
            return Ok(());
        }
    };
    match agent.client().renew_agent(pb::RenewAgentRequest { csr: kc.csr_der }).await {
        Ok(r) => {
            let r = r.into_inner();
            let new_id = match AgentIdentity::from_chain(r.cert_chain, kc.key_pkcs8, r.authority_id) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(error = %e, "server returned an unusable agent SVID");
                    return Ok(());
                }
            };
            if let Err(e) = new_id.save(&agent.settings.data_dir) {
                tracing::error!(error = %e, "cannot persist renewed agent SVID");
            }
            agent.use_identity(new_id)?;
            tracing::info!(tainted, "renewed agent SVID");
        }
        Err(s) => {
            tracing::warn!(code = ?s.code(), status = %s.message(), "agent SVID renewal failed; will retry");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Ok(())
}
