//! Entry sync: the stream of changes the server pushes to this agent
//! (entries it may serve, the bundle, revocations), applied to the cache the
//! moment each arrives.
//!
//! The stream opens with a snapshot and then carries one event per change,
//! so a new, changed or revoked entry reaches the agent in well under a
//! second. While it is down the agent is degraded (see [`crate::health`])
//! and keeps serving only what is still valid.

use std::sync::Arc;
use std::time::Duration;

use hallmark_core::now_unix;
use hallmark_proto::node::{self as pb, sync_event};
use tonic::{Code, Status};

use crate::error::AgentError;
use crate::from_proto::{bundle_from_proto, entry_from_proto, revocations};
use crate::state::AgentInner;

/// Keeps a sync stream open; on any failure reconnects with backoff. While
/// the stream is down the agent is degraded (see [`crate::health`]). A ban ends the
/// stream with PermissionDenied: everything is withdrawn at once and the agent
/// keeps asking, in case the node is attested again.
pub(crate) async fn sync_loop(agent: Arc<AgentInner>) -> Result<(), AgentError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match agent.client().sync_entries(pb::SyncEntriesRequest {}).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            backoff = Duration::from_millis(200);
                            agent.health.set_connected(now_unix());
                            if let Some(e) = ev.event {
                                apply(&agent, e);
                            }
                        }
                        Ok(None) => break,
                        Err(s) => {
                            refused(&agent, &s);
                            tracing::warn!(status = %s.message(), "entry sync stream ended");
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                refused(&agent, &s);
                tracing::warn!(code = ?s.code(), status = %s.message(), "cannot open entry sync")
            }
        }
        agent.health.set_disconnected(now_unix());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A PermissionDenied from the server means this node is banned (or unknown):
/// fail closed and withdraw everything.
fn refused(agent: &AgentInner, s: &Status) {
    if s.code() == Code::PermissionDenied {
        agent.health.set_banned();
        agent.cache.clear();
    }
}

/// Applies one sync event from the server.
fn apply(agent: &AgentInner, ev: sync_event::Event) {
    let td = &agent.settings.trust_domain;
    match ev {
        sync_event::Event::Snapshot(s) => {
            let dropped = agent.cache.replace_revoked(&revocations(&s.revoked), now_unix());
            agent.health.add_revoked(dropped);
            if let Some(b) = &s.bundle {
                agent.set_bundle(bundle_from_proto(td, b));
            }
            agent.cache.replace_entries(s.entries.into_iter().filter_map(entry_from_proto).collect());
        }
        sync_event::Event::Revoked(r) => {
            let dropped = agent.cache.revoke(&revocations(&r.items), now_unix());
            agent.health.add_revoked(dropped);
            if dropped > 0 {
                tracing::warn!(dropped, "revoked credentials withdrawn; replacements requested where still entitled");
            }
        }
        sync_event::Event::Upsert(e) => {
            if let Some(e) = entry_from_proto(e) {
                agent.cache.upsert_entry(e);
            }
        }
        sync_event::Event::Delete(id) => agent.cache.delete_entry(&id),
        sync_event::Event::Bundle(b) => agent.set_bundle(bundle_from_proto(td, &b)),
    }
}
