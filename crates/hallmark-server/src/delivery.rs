//! Delivery reports: the holder of a credential says where it put it
//! (`hallmark helper` writes SVIDs to files for software that reads them
//! from disk), and the inventory shows it (`delivered_to`).
//!
//! The report travels workload -> agent -> server, and each hop checks what
//! it can: the agent attests the reporting process from the kernel and
//! forwards only serials and jtis it holds for that process's evidence; the
//! server accepts only credentials issued through the calling agent, for the
//! same selectors (the digest of the selectors alone: the process facts
//! recorded with the credential name the process that asked first, and the
//! agent shares the credential with every process showing those selectors).
//! So a recorded delivery always comes from a workload the credential was
//! issued to. Where the files went is that
//! process's own statement: the record says "reported by the holder", not
//! "proven". The SPIFFE Workload API is untouched: the report is a separate
//! service on the agent's socket.

use hallmark_core::{evidence_digest, now_unix};
use hallmark_store::Credential;
use serde_json::json;

use crate::issuance::{AuthenticatedAgent, IssueError, parse_evidence};
use crate::state::ServerState;

/// Most credentials named in one report.
pub const MAX_IDS: usize = 16;
/// Longest target accepted, in bytes.
pub const MAX_TARGET_LEN: usize = 1024;

/// Checks a delivery target: `KIND:WHERE`, printable, bounded.
pub fn check_target(target: &str) -> Result<(), IssueError> {
    let well_formed = target
        .split_once(':')
        .is_some_and(|(kind, at)| !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase()) && !at.is_empty());
    if !well_formed || target.len() > MAX_TARGET_LEN || target.chars().any(char::is_control) {
        return Err(IssueError::BadRequest(format!(
            "delivery target `{}` must be `kind:where` (e.g. `files:/etc/svid`), at most {MAX_TARGET_LEN} bytes, \
             no control characters",
            target.escape_debug()
        )));
    }
    Ok(())
}

impl ServerState {
    /// Records that the workload with `evidence` delivered credentials `ids`
    /// (issued through `caller`) to `target`. All or nothing: one credential
    /// that is unknown, another agent's, or another workload's refuses the
    /// report. Returns how many were recorded.
    pub async fn record_deliveries(
        &self,
        caller: &AuthenticatedAgent,
        ids: &[String],
        target: &str,
        evidence: &[String],
    ) -> Result<u32, IssueError> {
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(IssueError::BadRequest(format!("a delivery report names 1 to {MAX_IDS} credentials")));
        }
        check_target(target)?;
        let digest = evidence_digest(&parse_evidence(evidence)?);
        for id in ids {
            let c = self.store.credential(id).await?.ok_or_else(|| IssueError::UnknownCredential(id.clone()))?;
            if c.node_id != caller.agent.as_str() || self.selectors_digest(&c).await?.as_deref() != Some(&digest) {
                return Err(IssueError::NotHolder(id.clone()));
            }
        }
        let at = now_unix();
        let mut recorded = 0;
        for id in ids {
            if self.store.record_delivery(id, target, at).await? {
                recorded += 1;
            }
        }
        let event = self.audit_event(
            &format!("node:{}", caller.agent),
            "deliver",
            &ids.join(","),
            "ok",
            json!({ "target": target, "evidence_digest": digest }),
        );
        self.audit.record_or_log(event).await;
        Ok(recorded)
    }

    /// The digest of the selectors credential `c` was issued on: from its
    /// stored evidence set, or its own digest when none is stored (issued
    /// before sets were, when the digest covered the selectors alone).
    /// `None` when the stored set no longer matches its digest.
    async fn selectors_digest(&self, c: &Credential) -> Result<Option<String>, IssueError> {
        Ok(match self.store.evidence_set(&c.evidence_digest).await? {
            Some(Ok(set)) => Some(set.selectors_digest()),
            Some(Err(_)) => None,
            None => Some(c.evidence_digest.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_target;

    #[test]
    fn targets_are_kind_colon_where() {
        assert!(check_target("files:/etc/nginx/svid").is_ok());
        for bad in ["", "files", "files:", ":/x", "Files:/x", "files:/a\nb", &format!("files:/{}", "a".repeat(1100))] {
            assert!(check_target(bad).is_err(), "{bad:?}");
        }
    }
}
