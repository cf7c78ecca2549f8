//! Revocation in one step, and the feed that pushes it to agents.
//!
//! A revocation is one datastore transaction (see `Store::revoke`): the
//! inventory is marked, an entry or node is disabled where the target calls
//! for it, the revocation log grows, and the audit record is appended. Every server follows that log, so an
//! agent connected to any of them receives each revocation as a pushed
//! message; the server holding an X.509 authority re-signs its CRL.

use std::sync::Arc;
use std::time::Duration;

use hallmark_core::{RevocationKind, now_unix};
use hallmark_store::{Recorder, RevokeOutcome, RevokeTarget};

use crate::error::ServerError;
use crate::state::ServerState;

/// Longest revocation reason accepted.
pub const MAX_REASON_LEN: usize = 1024;

/// A target's kind and value, for audit records and logs.
pub fn describe(target: &RevokeTarget) -> (&'static str, &str) {
    match target {
        RevokeTarget::Credential(id) => ("credential", id),
        RevokeTarget::Entry(id) => ("entry", id),
        RevokeTarget::Owner(name) => ("owner", name),
        RevokeTarget::Node(id) => ("node", id),
        RevokeTarget::Task(id) => ("task", id),
        RevokeTarget::AgentEntry(id) => ("agent_entry", id),
        RevokeTarget::Person(id) => ("person", id),
        RevokeTarget::Human(id) => ("human", id),
    }
}

/// How long after revoking an entry, owner or node to look again for
/// credentials recorded after the revocation by issuances already under way
/// (here or on another server) when it committed.
const SWEEP_AFTER: Duration = Duration::from_secs(2);

impl ServerState {
    /// Revokes `target` for `reason`, on behalf of admin identity `by`, records
    /// it in the audit chain, and wakes the feeds so agents hear of it at once.
    /// For an entry, owner or node it looks again shortly after and revokes
    /// any credential an issuance in flight recorded meanwhile.
    pub async fn revoke(
        self: &Arc<Self>,
        target: &RevokeTarget,
        reason: &str,
        by: &str,
    ) -> Result<RevokeOutcome, ServerError> {
        let out = self.revoke_now(target, reason, by).await?;
        if !matches!(target, RevokeTarget::Credential(_)) {
            let (state, target, reason, by) = (self.clone(), target.clone(), reason.to_owned(), by.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(SWEEP_AFTER).await;
                match state.revoke_now(&target, &reason, &by).await {
                    Ok(late) if !late.credentials.is_empty() => {
                        tracing::warn!(late = late.credentials.len(), "revoked credentials issued while revoking")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "revocation sweep failed"),
                }
            });
        }
        Ok(out)
    }

    /// Revokes `target` now, recorded, and wakes the feeds: no second look
    /// (see [`ServerState::revoke`]).
    pub(crate) async fn revoke_now(
        &self,
        target: &RevokeTarget,
        reason: &str,
        by: &str,
    ) -> Result<RevokeOutcome, ServerError> {
        let (kind, subject) = describe(target);
        // One record of what this revocation did, none when it found nothing
        // (left) to revoke; a node ban is recorded as such.
        let rec = Recorder::signed(&*self.audit_keys, |out: &RevokeOutcome| {
            if revoked_nothing(out) {
                return Vec::new();
            }
            let details = serde_json::json!({
                "target": kind,
                "reason": reason,
                "credentials": out.credentials,
                "entries": out.entries,
                "node": out.node,
                "tasks": out.tasks,
            });
            let action = if out.node.is_some() { "node_ban" } else { "revoke" };
            vec![self.audit_event(by, action, subject, "ok", details)]
        });
        let out = self.store.revoke(target, reason, now_unix(), rec).await?;
        self.revocation_notify.notify_one();
        self.entries_written().await;
        if revoked_nothing(&out) {
            // The sweep after an entry, owner or node revocation usually finds nothing new.
            tracing::debug!(by, target = kind, subject, "nothing (more) to revoke");
            return Ok(out);
        }
        tracing::warn!(
            by,
            target = kind,
            subject,
            reason,
            credentials = out.credentials.len(),
            entries = out.entries.len(),
            node = out.node.as_deref().unwrap_or(""),
            tasks = out.tasks.len(),
            "revoked"
        );
        Ok(out)
    }
}

fn revoked_nothing(out: &RevokeOutcome) -> bool {
    out.credentials.is_empty() && out.entries.is_empty() && out.node.is_none() && out.tasks.is_empty()
}

/// Reads the datastore's revocation log and broadcasts each record to the
/// agents' sync streams; re-signs this server's CRLs when an X.509 serial was
/// revoked. Polling the log (not only local revocations) is what makes a
/// revocation through any server reach agents connected to every server.
pub(crate) async fn revocation_feed(state: Arc<ServerState>) -> Result<(), ServerError> {
    let mut last = state.store.last_revocation().await?;
    loop {
        tokio::select! {
            () = state.revocation_notify.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let list = match state.store.revocations_since(last, 1000).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "revocation feed read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut serial_revoked = false;
        for r in list {
            last = r.seq;
            serial_revoked |= r.kind == RevocationKind::X509;
            let _ = state.revocations.send(r);
        }
        if serial_revoked {
            if let Err(e) = state.authorities.refresh_crls().await {
                tracing::error!(error = %e, "cannot re-sign CRLs after a revocation");
            }
            if let Err(e) = state.authorities.refresh_bundle().await {
                tracing::warn!(error = %e, "bundle refresh failed after a revocation");
            }
        }
    }
}
