//! The agent's health: whether it is connected to the server, and the
//! operations endpoints `/live`, `/ready` and `/metrics` (Prometheus text).
//!
//! Fail closed: when the server is unreachable the agent keeps serving SVIDs
//! that are still valid, withdraws each one the moment it expires, reports
//! itself not ready, and says so in its log and metrics. `/ready` succeeds only
//! while the entry sync stream is open and the agent's own SVID is valid.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hallmark_core::now_unix;
use tokio::net::TcpListener;

use crate::AgentInner;

/// Counters and flags the agent's loops update.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    /// Whether the sync stream was ever open, so the first connection is not
    /// reported as the end of an outage.
    ever_connected: AtomicBool,
    banned: AtomicBool,
    last_contact: AtomicI64,
    disconnected_since: AtomicI64,
    expired_withdrawn: AtomicU64,
    revoked_dropped: AtomicU64,
}

impl Health {
    /// Health of an agent starting at `now`, not yet connected.
    pub fn new(now: i64) -> Self {
        let h = Self::default();
        h.disconnected_since.store(now, Ordering::Relaxed);
        h
    }

    /// The entry sync stream is open and delivering.
    pub fn set_connected(&self, now: i64) {
        self.last_contact.store(now, Ordering::Relaxed);
        // The server serves this node again: its ban was lifted.
        if self.banned.swap(false, Ordering::Relaxed) {
            tracing::warn!("the server accepts this node again (its ban was lifted)");
        }
        if !self.connected.swap(true, Ordering::Relaxed) {
            let since = self.disconnected_since.swap(0, Ordering::Relaxed);
            // The first connection after start is no recovery from an outage.
            if self.ever_connected.swap(true, Ordering::Relaxed) {
                tracing::info!(outage_secs = now - since, "server reachable again; renewing identities");
            } else {
                tracing::info!("connected to the server; entries synced");
            }
        }
    }

    /// The entry sync stream is gone.
    pub fn set_disconnected(&self, now: i64) {
        if self.connected.swap(false, Ordering::Relaxed) {
            self.disconnected_since.store(now, Ordering::Relaxed);
            tracing::warn!(
                "server unreachable: degraded; serving SVIDs that are still valid and withdrawing each at its expiry"
            );
        }
    }

    /// The server refused this node: it was banned.
    pub fn set_banned(&self) {
        if !self.banned.swap(true, Ordering::Relaxed) {
            tracing::error!("this node has been banned by the server; every identity withdrawn");
        }
    }

    /// Whether the server has banned this node.
    pub fn banned(&self) -> bool {
        self.banned.load(Ordering::Relaxed)
    }

    /// Whether the entry sync stream is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Counts SVIDs withdrawn at expiry because they could not be renewed.
    pub fn add_expired(&self, n: usize) {
        self.expired_withdrawn.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts SVIDs and JWTs dropped because they were revoked.
    pub fn add_revoked(&self, n: usize) {
        self.revoked_dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Why the agent is not ready, or `None` when it is.
    pub fn not_ready(&self, identity_not_after: i64, now: i64) -> Option<String> {
        if self.banned() {
            Some("node banned by the server".into())
        } else if identity_not_after <= now {
            Some("agent SVID expired; the node must attest again".into())
        } else if !self.connected() {
            let since = self.disconnected_since.load(Ordering::Relaxed);
            Some(format!("server unreachable for {}s; serving cached SVIDs until they expire", now - since))
        } else {
            None
        }
    }
}

async fn ready(State(agent): State<Arc<AgentInner>>) -> impl IntoResponse {
    let now = now_unix();
    match agent.health.not_ready(agent.identity_not_after(), now) {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

fn metrics_text(agent: &AgentInner) -> String {
    let now = now_unix();
    let h = &agent.health;
    let not_after = agent.identity_not_after();
    let gauge = |name: &str, help: &str, v: i64| format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
    let counter =
        |name: &str, help: &str, v: u64| format!("# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {v}\n");
    let ready = h.not_ready(not_after, now).is_none();
    [
        gauge("hallmark_agent_ready", "1 when connected to the server with a valid agent SVID.", i64::from(ready)),
        gauge("hallmark_agent_degraded", "1 while not ready: serving cached SVIDs only.", i64::from(!ready)),
        gauge("hallmark_agent_server_connected", "1 while the entry sync stream is open.", i64::from(h.connected())),
        gauge("hallmark_agent_banned", "1 when the server has banned this node.", i64::from(h.banned())),
        gauge(
            "hallmark_agent_last_server_contact_seconds",
            "Seconds since the server last sent anything.",
            now - h.last_contact.load(Ordering::Relaxed),
        ),
        gauge("hallmark_agent_svid_expiry_seconds", "Seconds until the agent's own SVID expires.", not_after - now),
        gauge("hallmark_agent_entries", "Entries this agent may serve.", agent.cache.entry_count() as i64),
        gauge("hallmark_agent_x509_svids", "X.509-SVIDs held for workloads.", agent.cache.svid_count() as i64),
        counter(
            "hallmark_agent_svids_expired_withdrawn",
            "SVIDs withdrawn at expiry because they could not be renewed.",
            h.expired_withdrawn.load(Ordering::Relaxed),
        ),
        counter(
            "hallmark_agent_credentials_revoked_dropped",
            "SVIDs and JWT-SVIDs dropped because they were revoked.",
            h.revoked_dropped.load(Ordering::Relaxed),
        ),
    ]
    .concat()
}

async fn metrics(State(agent): State<Arc<AgentInner>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_text(&agent))
}

/// Serves `/live`, `/ready` and `/metrics` on `listener`.
pub async fn serve(listener: TcpListener, agent: Arc<AgentInner>) -> Result<(), crate::AgentError> {
    let router = Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(agent);
    axum::serve(listener, router).await.map_err(|e| crate::AgentError::Io(format!("health endpoint: {e}")))
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn readiness_follows_connection_ban_and_identity() {
        let h = Health::new(990);
        assert!(h.not_ready(2000, 1000).unwrap().contains("unreachable for 10s"), "not ready before the first sync");
        h.set_connected(1000);
        assert_eq!(h.not_ready(2000, 1000), None);
        assert!(h.not_ready(1000, 1000).unwrap().contains("expired"));
        h.set_disconnected(1010);
        assert!(h.not_ready(2000, 1015).unwrap().contains("unreachable for 5s"));
        h.set_connected(1020);
        h.set_banned();
        assert!(h.not_ready(2000, 1020).unwrap().contains("banned"));
    }
}
