//! Checking the audit chain: the newest signed checkpoint, exported for an
//! auditor to keep, and verification of the chain against its checkpoints
//! and the ones auditors kept.

use hallmark_ca::audit_key::AuditPublicKey;
use hallmark_store::{AuditBreak, AuditVerification, Checkpoint};
use serde::{Deserialize, Serialize};

use crate::audit::signed_by;
use crate::error::ServerError;
use crate::state::ServerState;

/// A checkpoint as exported for an auditor to keep: with the public key
/// that checks it, so that it can be checked later with that key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedCheckpoint {
    /// The signed head.
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// The audit public key (PEM) that signed it.
    pub public_key: String,
}

impl ServerState {
    /// The newest signed checkpoint, for an auditor to keep.
    pub async fn audit_checkpoint(&self) -> Result<Option<ExportedCheckpoint>, ServerError> {
        let Some(c) = self.store.latest_audit_checkpoint().await? else { return Ok(None) };
        let public_key =
            self.audit_keys.public_keys().find(|k| k.id() == c.key_id).map(AuditPublicKey::to_pem).unwrap_or_default();
        Ok(Some(ExportedCheckpoint { checkpoint: c, public_key }))
    }

    /// Verifies the audit chain: every hash link (the store's check), every
    /// stored checkpoint against the chain, the newest checkpoint's signature
    /// with a key this server knows and its position at the chain's head, and
    /// each checkpoint an auditor kept (`kept`, with the key they kept it with).
    /// Someone who rewrote or cut the chain without the audit key fails here.
    pub async fn verify_audit(&self, kept: &[ExportedCheckpoint]) -> Result<AuditVerification, ServerError> {
        let mut v = self.store.verify_audit().await?;
        if v.broken.is_some() {
            return Ok(v);
        }
        let broken = |seq: i64, problem: String| Some(AuditBreak { seq, problem });
        if let Some((seq, problem)) = self.store.first_disagreeing_checkpoint().await? {
            v.broken = broken(seq, problem);
            return Ok(v);
        }
        if let Some((seq, reason)) = self.store.first_head_notice().await? {
            v.broken = broken(seq, format!("a server found the chain changed without the audit key: {reason}"));
            return Ok(v);
        }
        for k in kept {
            let c = &k.checkpoint;
            let key = AuditPublicKey::from_pem(&k.public_key).map_err(ServerError::CheckpointKey)?;
            let problem = if !signed_by(c, &key) {
                Some(format!("the kept checkpoint at record {} does not verify with its public key", c.seq))
            } else {
                match self.store.audit_hash_at(c.seq).await? {
                    None => Some(format!(
                        "record {}, which a kept checkpoint covers, is missing (the chain was cut)",
                        c.seq
                    )),
                    Some(h) if h != c.hash => Some(format!(
                        "record {} does not match the checkpoint kept for it (the chain was rewritten)",
                        c.seq
                    )),
                    Some(_) => None,
                }
            };
            if let Some(p) = problem {
                v.broken = broken(c.seq, p);
                return Ok(v);
            }
        }
        if v.records == 0 {
            return Ok(v);
        }
        // The chain as read ends at record `records` (others may append
        // meanwhile): the checkpoint that covers it.
        let Some(c) = self.store.audit_checkpoint_upto(v.records).await? else {
            v.broken = broken(v.records, "the chain's head is not signed: no checkpoint exists".into());
            return Ok(v);
        };
        if c.seq != v.records {
            v.broken = broken(
                c.seq + 1,
                format!(
                    "records after {} are not covered by a signed checkpoint (appended without the audit key)",
                    c.seq
                ),
            );
            return Ok(v);
        }
        let Some(key) = self.audit_keys.public_keys().find(|k| k.id() == c.key_id) else {
            v.broken = broken(
                c.seq,
                format!(
                    "the newest checkpoint is signed by audit key `{}`, which this server does not know (add the other servers' public keys to `audit_trusted_keys`)",
                    c.key_id
                ),
            );
            return Ok(v);
        };
        if !signed_by(&c, key) {
            v.broken = broken(c.seq, "the newest checkpoint's signature does not verify (forged)".into());
        }
        Ok(v)
    }
}
