//! The operations endpoints of a running agent: `/live`, `/ready` (see
//! [`crate::health`] for what ready means) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hallmark_core::now_unix;
use tokio::net::TcpListener;

use crate::error::AgentError;
use crate::state::AgentInner;

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
    let ended = agent.ended.counts();
    [
        gauge("hallmark_agent_ready", "1 when connected to the server with a valid agent SVID.", i64::from(ready)),
        gauge("hallmark_agent_degraded", "1 while not ready: serving cached SVIDs only.", i64::from(!ready)),
        gauge("hallmark_agent_server_connected", "1 while the entry sync stream is open.", i64::from(h.connected())),
        gauge("hallmark_agent_banned", "1 when the server has banned this node.", i64::from(h.banned())),
        gauge(
            "hallmark_agent_last_server_contact_seconds",
            "Seconds since the server last sent anything.",
            now - h.last_contact(),
        ),
        gauge("hallmark_agent_svid_expiry_seconds", "Seconds until the agent's own SVID expires.", not_after - now),
        gauge("hallmark_agent_entries", "Entries this agent may serve.", agent.cache.entry_count() as i64),
        gauge("hallmark_agent_x509_svids", "X.509-SVIDs held for workloads.", agent.cache.svid_count() as i64),
        gauge(
            "hallmark_agent_executables_being_read",
            "Callers' executables being read in full to be hashed (at most 4 per uid, 64 in all).",
            agent.hash_slots.held_in_all() as i64,
        ),
        gauge(
            "hallmark_agent_executable_reads_waiting",
            "Callers waiting for their executable to be read, behind their uid's or all uids' limit.",
            agent.hash_slots.waiting() as i64,
        ),
        counter(
            "hallmark_agent_svids_expired_withdrawn",
            "SVIDs withdrawn at expiry because they could not be renewed.",
            h.expired_withdrawn(),
        ),
        counter(
            "hallmark_agent_credentials_revoked_dropped",
            "SVIDs and JWT-SVIDs dropped because they were revoked.",
            h.revoked_dropped(),
        ),
        counter(
            "hallmark_agent_process_ended_withdrawn",
            "SVIDs and JWT-SVIDs of `bind: process` entries withdrawn because their process exited.",
            ended.withdrawn,
        ),
        counter(
            "hallmark_agent_process_ended_reported",
            "Of those, how many the server has been told of (and revoked).",
            ended.reported,
        ),
    ]
    .concat()
}

async fn metrics(State(agent): State<Arc<AgentInner>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_text(&agent))
}

/// Serves `/live`, `/ready` and `/metrics` on `listener`.
pub async fn serve(listener: TcpListener, agent: Arc<AgentInner>) -> Result<(), AgentError> {
    let router = Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(agent);
    axum::serve(listener, router).await.map_err(|e| AgentError::Io(format!("health endpoint: {e}")))
}
