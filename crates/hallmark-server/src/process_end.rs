//! Credentials that end with their process (`bind: process`, issue 16).
//!
//! An entry bound to its process has its SVIDs held by the agent for one
//! process instance. When that process exits the agent withdraws them at
//! once and reports their serials and jtis here; each is revoked through
//! the ordinary revocation path ([`ServerState::revoke`]), so the CRL lists
//! the serial, every agent's ValidateJWTSVID refuses the jti, the inventory
//! row says "ended with its process" and the audit chain has a `revoke`
//! record by `node:<agent>`.
//!
//! The report comes from an agent, not an administrator, so it may only
//! end what that agent was given: every credential it names must have been
//! issued through the calling agent, and under an entry bound to its
//! process. One that is not refuses the whole report and revokes nothing:
//! an agent may never revoke another node's credentials, nor use this path
//! to revoke its own unbound ones under a reason that would be false. A
//! credential the inventory no longer holds (pruned long after expiry) is
//! nothing to revoke and is passed over.

use std::sync::Arc;

use hallmark_store::RevokeTarget;

use crate::error::ServerError;
use crate::issuance::AuthenticatedAgent;
use crate::state::ServerState;

/// The reason recorded on every credential revoked because its process ended.
pub const ENDED_REASON: &str = "ended with its process";

/// Most credentials named in one report.
pub const MAX_IDS: usize = 1000;

/// Why a process-end report was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessEndError {
    /// Empty, or longer than [`MAX_IDS`].
    #[error("a process-end report names 1 to {MAX_IDS} credentials")]
    Size,
    /// A credential issued through another agent.
    #[error("credential `{id}` was not issued through agent `{agent}`")]
    OtherNode {
        /// The credential.
        id: String,
        /// The calling agent.
        agent: String,
    },
    /// A credential of an entry that is not bound to its process.
    #[error("credential `{id}` is of entry `{entry}`, which is not bound to its process")]
    NotBound {
        /// The credential.
        id: String,
        /// Its entry.
        entry: String,
    },
    /// A server-side failure.
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl ServerState {
    /// Revokes `ids` (X.509 serials and JWT jtis) because the process
    /// instances holding them exited, as reported by `caller`. All or
    /// nothing: the report is checked whole before anything is revoked.
    /// Returns how many were revoked now (one already revoked is not counted).
    pub async fn process_ended(
        self: &Arc<Self>,
        caller: &AuthenticatedAgent,
        ids: &[String],
    ) -> Result<u32, ProcessEndError> {
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(ProcessEndError::Size);
        }
        let mut known = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(c) = self.store.credential(id).await.map_err(ServerError::from)? else {
                tracing::debug!(credential = %id, "process-end report names a credential no longer in the inventory");
                continue;
            };
            if c.node_id != caller.agent.as_str() {
                tracing::warn!(
                    agent = %caller.agent, credential = %id, issued_through = %c.node_id,
                    "refused a process-end report naming another node's credential"
                );
                return Err(ProcessEndError::OtherNode { id: id.clone(), agent: caller.agent.to_string() });
            }
            // A deleted entry's credentials were revoked with it; a live
            // entry must be bound to its process.
            if self.registry.entry(&c.entry_id).is_some_and(|e| !e.bind.per_process()) {
                return Err(ProcessEndError::NotBound { id: id.clone(), entry: c.entry_id });
            }
            known.push(c.id);
        }
        let by = format!("node:{}", caller.agent);
        let mut revoked = 0u32;
        for id in known {
            let out = self.revoke(&RevokeTarget::Credential(id), ENDED_REASON, &by).await?;
            revoked = revoked.saturating_add(u32::try_from(out.credentials.len()).unwrap_or(u32::MAX));
        }
        Ok(revoked)
    }
}
