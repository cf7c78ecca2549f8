//! Node attestors: what a node proves about itself before it gets an agent
//! SVID, from evidence it holds and cannot hand over (unlike a join token).
//!
//! Each attestor verifies its own evidence and says what it proved as a
//! [`NodeProof`]: the agent ID's name and the node's selectors. Attestors
//! with a challenge (x509pop's nonce, TPM 2.0's credential activation) do it
//! in two steps, `begin` then `finish`, over one `Attest` stream; the state
//! between them lives in that stream only, so a captured answer is worth
//! nothing on another.

pub mod psat;

/// What a node attestor proved about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProof {
    /// The attestor: `x509pop`, `tpm` or `k8s_psat`.
    pub attestor: &'static str,
    /// The agent ID's segments below `/hallmark/agent/`, the attestor first
    /// (e.g. `["x509pop", "<sha1 of the leaf>"]`). Each segment is made of
    /// SPIFFE path characters.
    pub agent_path: Vec<String>,
    /// The node's selectors, canonical `type:key:value` (e.g.
    /// `x509pop:subject:cn:node-1`), sorted and without duplicates.
    pub selectors: Vec<String>,
    /// When the evidence itself stops being valid (a node certificate's
    /// `notAfter`, a token's `exp`), unix seconds, if it says.
    pub evidence_expires_at: Option<i64>,
}

/// Why a node's evidence was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The evidence is malformed (cannot be parsed): the agent is wrong.
    #[error("malformed attestation evidence: {0}")]
    Malformed(String),
    /// The evidence is well formed but does not prove the node: not trusted,
    /// expired, not allowed, a wrong answer to the challenge.
    #[error("node attestation refused: {0}")]
    Refused(String),
    /// Something the check needs is out of reach now (an issuer's keys could
    /// not be fetched); the agent may retry.
    #[error("node attestation unavailable: {0}")]
    Unavailable(String),
}

pub mod x509pop;

use hallmark_proto::node::{AttestBegin, ChallengeResponse, attest_begin, challenge, challenge_response};
use serde::Deserialize;

/// One `[[node_attestor]]` table of the server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeAttestorConfig {
    /// A node certificate and possession of its key.
    X509pop(x509pop::X509PopConfig),
    /// Kubernetes projected service-account tokens of the agent pods.
    K8sPsat(psat::PsatAttestorConfig),
}

/// The node attestors a server runs, from its configuration.
#[derive(Default)]
pub struct NodeAttestors {
    x509pop: Option<x509pop::X509PopVerifier>,
    k8s_psat: Option<psat::PsatVerifier>,
}

/// What the server asks the node before it decides, and what it keeps to
/// check the answer.
pub enum Begun {
    /// The evidence proves the node on its own.
    Proven(NodeProof),
    /// The node must answer this challenge.
    Challenge(challenge::Kind, Pending),
}

/// A challenge's state, kept on the attestation stream.
#[derive(Debug)]
pub enum Pending {
    /// x509pop: the verified chain and the nonce.
    X509pop(x509pop::X509PopPending),
}

impl NodeAttestors {
    /// Builds every configured attestor; an error names the attestor and why
    /// (an unreadable CA file, a missing key). Each type may be configured once.
    pub fn new(configs: &[NodeAttestorConfig]) -> Result<Self, String> {
        let mut a = Self::default();
        for c in configs {
            match c {
                NodeAttestorConfig::X509pop(cfg) => {
                    if a.x509pop.is_some() {
                        return Err("node_attestor x509pop: configured twice".into());
                    }
                    a.x509pop =
                        Some(x509pop::X509PopVerifier::new(cfg).map_err(|e| format!("node_attestor x509pop: {e}"))?);
                }
                NodeAttestorConfig::K8sPsat(cfg) => {
                    if a.k8s_psat.is_some() {
                        return Err("node_attestor k8s_psat: configured twice (list every cluster in one table)".into());
                    }
                    a.k8s_psat =
                        Some(psat::PsatVerifier::new(cfg).map_err(|e| format!("node_attestor k8s_psat: {e}"))?);
                }
            }
        }
        Ok(a)
    }

    /// The attestor types configured, for logs and errors.
    pub fn names(&self) -> Vec<&'static str> {
        let mut n = Vec::new();
        if self.x509pop.is_some() {
            n.push("x509pop");
        }
        if self.k8s_psat.is_some() {
            n.push("k8s_psat");
        }
        n
    }

    /// Verifies the first message's evidence at `now`.
    pub async fn begin(&self, begin: &AttestBegin, now: i64) -> Result<Begun, AttestError> {
        let not_configured = |t: &str| {
            AttestError::Refused(format!(
                "node attestor `{t}` is not configured on this server (configured: {})",
                self.names().join(", ")
            ))
        };
        match &begin.evidence {
            Some(attest_begin::Evidence::X509pop(ev)) => {
                let v = self.x509pop.as_ref().ok_or_else(|| not_configured("x509pop"))?;
                let (nonce, pending) = v.begin(ev, &begin.csr, now)?;
                Ok(Begun::Challenge(challenge::Kind::X509popNonce(nonce), Pending::X509pop(pending)))
            }
            Some(attest_begin::Evidence::Tpm(_)) => Err(not_configured("tpm")),
            Some(attest_begin::Evidence::K8sPsat(ev)) => {
                let v = self.k8s_psat.as_ref().ok_or_else(|| not_configured("k8s_psat"))?;
                Ok(Begun::Proven(v.verify(ev, now).await?))
            }
            None => Err(AttestError::Malformed("the first message carries no evidence".into())),
        }
    }

    /// Checks the answer to a challenge.
    pub fn finish(&self, pending: Pending, answer: &ChallengeResponse) -> Result<NodeProof, AttestError> {
        match (pending, &answer.kind) {
            (Pending::X509pop(p), Some(challenge_response::Kind::X509popSignature(sig))) => {
                let v =
                    self.x509pop.as_ref().ok_or_else(|| AttestError::Refused("x509pop is not configured".into()))?;
                v.finish(p, sig)
            }
            _ => Err(AttestError::Malformed("the answer does not fit the challenge".into())),
        }
    }

    /// The agent (path below `/hallmark/agent/`) that evidence names even if
    /// it does not verify, for attestors whose agent ID is derived from the
    /// evidence itself (x509pop's leaf hash): a known node presenting evidence
    /// that no longer verifies is then revoked. None for the others: their
    /// unverified evidence could name any node.
    pub fn claimed_agent(begin: &AttestBegin) -> Option<Vec<String>> {
        match &begin.evidence {
            Some(attest_begin::Evidence::X509pop(ev)) => x509pop::X509PopVerifier::claimed_agent(ev),
            _ => None,
        }
    }
}

impl std::fmt::Debug for NodeAttestors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Attestors whose nodes prove themselves again at every agent SVID
/// rotation instead of renewing: their evidence can be checked again, and a
/// node whose evidence was withdrawn must not live on by renewing.
pub const REATTESTING: &[&str] = &["x509pop", "tpm", "k8s_psat"];

/// A node's recorded selectors as a set; a node recorded before selectors
/// were kept has `node:attestation:TYPE` only. A recorded value that no
/// longer parses is left out (it can only narrow what the node is served).
pub fn node_selector_set(attestation_type: &str, recorded: &[String]) -> hallmark_core::SelectorSet {
    let mut set: hallmark_core::SelectorSet = recorded.iter().filter_map(|s| s.parse().ok()).collect();
    if let Ok(s) = format!("node:attestation:{attestation_type}").parse() {
        set.insert(s);
    }
    set
}
