//! Node attestors: what a node proves about itself before it gets an agent
//! SVID, from evidence it holds and cannot hand over (unlike a join token).
//!
//! Each attestor verifies its own evidence and says what it proved as a
//! [`NodeProof`]: the agent ID's name and the node's selectors. Attestors
//! with a challenge (x509pop's nonce, TPM 2.0's credential activation) do it
//! in two steps, `begin` then `finish`, over one `Attest` stream; the state
//! between them lives in that stream only, so a captured answer is worth
//! nothing on another.

pub mod tpm;

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
