//! The helper's `/live` and `/ready`: live while the process runs, ready
//! only while valid credential files are in place.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Why the helper is not ready, or `None` when it is.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Mutex<Option<String>>>);

impl Readiness {
    /// Not ready until the first files are written.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Some("no SVID written yet".into()))))
    }

    /// Sets the state: `None` is ready, `Some(reason)` is not.
    pub fn set(&self, reason: Option<String>) {
        match self.0.lock() {
            Ok(mut g) => *g = reason,
            Err(p) => *p.into_inner() = reason,
        }
    }

    fn get(&self) -> Option<String> {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

async fn ready(State(r): State<Readiness>) -> (StatusCode, String) {
    match r.get() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

/// Serves the endpoints on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, readiness: Readiness) -> anyhow::Result<()> {
    let router =
        Router::new().route("/live", get(|| async { "ok\n" })).route("/ready", get(ready)).with_state(readiness);
    axum::serve(listener, router).await.map_err(|e| anyhow::anyhow!("health endpoint: {e}"))
}
