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

use crate::config::{AgentSettings, Bootstrap};
use crate::error::{AgentError, io_err};
use crate::from_proto::bundle_from_proto;
use crate::identity::{AgentIdentity, load_bundle, save_bundle};
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
    let attested = attest(settings).await?;
    attested.identity.save(dir)?;
    save_bundle(dir, &attested.bundle)?;
    tracing::info!(agent = %attested.identity.id, "node attested");
    Ok(attested)
}

/// Node attestation with the join token: the server assigns the agent's
/// SPIFFE ID from the token, signs its CSR and sends the bundle.
async fn attest(settings: &AgentSettings) -> Result<Attested, AgentError> {
    let token = settings.join_token.clone().ok_or_else(|| {
        AgentError::Attestation("no stored agent SVID is valid and no join token is configured (`join_token`)".into())
    })?;
    let anchors = match &settings.bootstrap {
        Bootstrap::Anchors(a) => Some(Arc::new(RwLock::new(a.clone()))),
        Bootstrap::BundleFile(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| io_err(p, e))?;
            Some(Arc::new(RwLock::new(svid::pem_certs(&text).map_err(|e| io_err(p, e))?)))
        }
        Bootstrap::Insecure => {
            tracing::warn!(
                server = %settings.server_address,
                "insecure_bootstrap: trusting whichever server answers at this address for the first attestation, \
                 unverified, and pinning its bundle from then on; set `trust_bundle_path` to verify it instead"
            );
            None
        }
        Bootstrap::None => {
            return Err(AgentError::Attestation(
                "no bundle to verify the server: set `trust_bundle_path` (or `insecure_bootstrap = true`)".into(),
            ));
        }
    };
    // The CSR carries no SPIFFE ID: the server assigns it from the token.
    let kc = new_key_and_csr(None).map_err(|e| AgentError::Attestation(e.to_string()))?;
    let mut client = server_conn::channel(
        &settings.server_address,
        Trust::Attest { anchors, server_id: settings.trust_domain.server_id() },
    )?;
    let reply = client
        .attest_node(pb::AttestNodeRequest { join_token: token, csr: kc.csr_der })
        .await
        .map_err(|s| AgentError::Attestation(s.message().to_owned()))?
        .into_inner();
    let identity = AgentIdentity::from_chain(reply.cert_chain, kc.key_pkcs8, reply.authority_id)?;
    let bundle = reply
        .bundle
        .map(|b| bundle_from_proto(&settings.trust_domain, &b))
        .ok_or_else(|| AgentError::Attestation("server sent no bundle".into()))?;
    Ok(Attested { identity, bundle })
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
        renew(&agent, &id, tainted).await?;
    }
}

/// Attests the node afresh after its SVID expired; whether it could. Only a
/// failure to store or use the new identity ends the loop.
async fn attest_again(agent: &AgentInner) -> Result<bool, AgentError> {
    match attest(&agent.settings).await {
        Ok(Attested { identity, bundle }) => {
            identity.save(&agent.settings.data_dir)?;
            agent.set_bundle(bundle);
            tracing::info!(agent = %identity.id, "node attested again");
            agent.use_identity(identity)?;
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot attest again; give the agent a new join token (`hallmark token create`)");
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
