//! The rows an audit record carries into other tables: an issued
//! credential's inventory row ([`crate::AuditEvent::credential`]), a
//! denial's row ([`crate::AuditEvent::denial`]) and the workload evidence
//! the decision was made on ([`crate::AuditEvent::evidence`]). The appender
//! writes them in the transaction of their record; `inventory`, `denials`
//! and `evidence` read them.
//!
//! Only types live here, so that the chain (`audit`), which writes these
//! rows, and the modules that read them and make recorded changes of their
//! own (`inventory` prunes through `recorded`, which extends the chain)
//! depend on this leaf rather than on each other.

use hallmark_core::{CredentialKind, ProcessInstance, SelectorSet, canonical_selectors, evidence_digest_of};
use serde::{Deserialize, Serialize};

/// An issued credential, as the inventory holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// X.509 serial (hex) or JWT `jti`.
    pub id: String,
    /// `x509` or `jwt`.
    pub kind: CredentialKind,
    /// The entry.
    pub entry_id: String,
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The agent it was issued through.
    pub node_id: String,
    /// Lifecycle class.
    pub class: String,
    /// Owner at issuance.
    pub owner: String,
    /// Policy version that allowed it.
    pub policy_version: i64,
    /// Digest of the workload evidence.
    pub evidence_digest: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// The authority that signed it: X.509 CA id or JWT key id.
    pub authority_id: String,
    /// The audit record of its issuance.
    pub audit_seq: i64,
    /// Where its holder reported delivering it, e.g. `files:/etc/nginx/svid`
    /// (`hallmark helper`); `None` when it was only served over the socket.
    #[serde(default)]
    pub delivered_to: Option<String>,
    /// Unix seconds of the last delivery report.
    #[serde(default)]
    pub delivered_at: Option<i64>,
    /// For a JWT-SVID, the audiences it was minted for, comma-joined.
    #[serde(default)]
    pub audience: Option<String>,
    /// The task it was issued for (`bind: task` entries).
    #[serde(default)]
    pub task_id: Option<String>,
    /// The person a human certificate was issued to (`None` for machines).
    #[serde(default)]
    pub person_id: Option<String>,
}

/// A denial to record, carried by the audit event that records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Entry.
    pub entry_id: String,
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// Action.
    pub action: String,
    /// Audience, for JWTs.
    pub audience: Option<String>,
    /// The agent.
    pub node_id: String,
    /// Evidence digest.
    pub evidence_digest: String,
    /// Policy version in force.
    pub policy_version: i64,
    /// Determining policies.
    pub policy_ids: Vec<String>,
    /// Human-readable reason.
    pub reason: String,
}

/// A workload's evidence, as the `evidence` table holds it: written once
/// per distinct digest, with the first record that names it. What an auditor
/// reads to answer "which binary, as which user, in which process got this".
///
/// Only attested facts: selectors (ids, names, paths, digests) and the
/// process's id and start time, never key material or tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceSet {
    /// [`evidence_digest_of`] the selectors and the process: the
    /// `evidence_digest` of the records and rows that name this set.
    pub digest: String,
    /// The selectors, `type:key:value`, sorted.
    pub selectors: Vec<String>,
    /// The process they were read from, when the agent said.
    pub process: Option<ProcessInstance>,
}

impl EvidenceSet {
    /// The evidence of a workload with `selectors`, read from `process`.
    pub fn new(selectors: &SelectorSet, process: Option<ProcessInstance>) -> Self {
        let text = canonical_selectors(selectors);
        Self {
            digest: evidence_digest_of(&text, process.as_ref()),
            selectors: selectors.iter().map(ToString::to_string).collect(),
            process,
        }
    }

    /// The digest of the selectors alone: what the agent keys the
    /// workload's credentials by, and what a delivery report names.
    pub fn selectors_digest(&self) -> String {
        evidence_digest_of(&self.selectors_text(), None)
    }

    /// The selectors' canonical text, as stored and hashed: each ended by a newline.
    pub(crate) fn selectors_text(&self) -> String {
        canonical_selectors(&self.selectors)
    }
}
