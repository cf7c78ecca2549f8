//! The chain itself: the events recorded, the records they become, and how
//! each record's hash covers its content and the hash of the one before.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::carried::{Credential, Denial, EvidenceSet};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as given by the caller. Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Who: an admin identity, or `node:<agent id>` (with the evidence digest in details).
    pub actor: String,
    /// What: `issue_x509`, `renew`, `issue_jwt`, `issue_wit`, `deny`, `attest_node`, `entry_create`, ...
    pub action: String,
    /// On what: an entry id, SPIFFE ID, owner, policy version, exception id.
    pub subject: String,
    /// `ok`, `denied`, `refused`.
    pub outcome: String,
    /// Policy version in force.
    pub policy_version: i64,
    /// Further facts as JSON (serial, jti, evidence digest, policy ids...).
    pub details: serde_json::Value,
    /// The credential this event issued, recorded in the inventory in the
    /// same transaction as the audit record.
    #[serde(skip)]
    pub credential: Option<Credential>,
    /// The denial this event records, stored with the denial reports read
    /// in the same transaction as the audit record.
    #[serde(skip)]
    pub denial: Option<Denial>,
    /// The workload evidence the event was decided on (its digest is the
    /// `evidence_digest` in the details), stored once per distinct digest
    /// in the same transaction as the audit record.
    #[serde(skip)]
    pub evidence: Option<EvidenceSet>,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this record's canonical form.
    pub hash: String,
}

/// The hash of a record: SHA-256 over the previous hash and a canonical,
/// length-prefixed encoding of every field.
pub fn record_hash(seq: i64, e: &AuditEvent, prev_hash: &str) -> String {
    hash_parts(seq, e, &e.details.to_string(), prev_hash)
}

pub(super) fn hash_parts(seq: i64, e: &AuditEvent, details: &str, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        &seq.to_string(),
        &e.at.to_string(),
        &e.actor,
        &e.action,
        &e.subject,
        &e.outcome,
        &e.policy_version.to_string(),
        details,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A record placed in the chain, ready to write.
pub(super) struct Linked<'a> {
    pub(super) seq: i64,
    pub(super) event: &'a AuditEvent,
    pub(super) details: String,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

/// Links `events` after (`seq`, `prev`).
pub(super) fn link<'a>(events: &'a [AuditEvent], mut seq: i64, mut prev: String) -> Vec<Linked<'a>> {
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let details = e.details.to_string();
        let hash = hash_parts(seq, e, &details, &prev);
        rows.push(Linked { seq, event: e, details, prev_hash: std::mem::replace(&mut prev, hash.clone()), hash });
    }
    rows
}
