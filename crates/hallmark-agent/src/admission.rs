//! Who is calling on the agent's socket, shared by every service served
//! there: the SPIFFE Workload API, Envoy SDS and the delivery reports of
//! `hallmark helper`.
//!
//! Each call is attested afresh from the kernel facts of the connection it
//! came on (see [`crate::attest`]); no request field can name the caller.
//! The Workload API and Hallmark's own service also require the SPIFFE
//! security header; SDS does not, because Envoy never sends it (the
//! reference agent checks it only on Workload API methods too).

use std::sync::Arc;
use std::time::Duration;

use hallmark_core::{SelectorSet, now_unix};
use tonic::{Request, Status};

use crate::attest::Caller;
use crate::instance::{self, Process};
use crate::state::AgentInner;

/// How long a new stream waits for SVIDs that are being issued before answering.
pub(crate) const FIRST_SVID_WAIT: Duration = Duration::from_secs(10);

/// InvalidArgument unless the request carries `workload.spiffe.io: true`.
pub(crate) fn require_security_header<T>(req: &Request<T>) -> Result<(), Status> {
    if req.metadata().get("workload.spiffe.io").and_then(|v| v.to_str().ok()) != Some("true") {
        return Err(Status::invalid_argument("security header `workload.spiffe.io: true` is missing"));
    }
    Ok(())
}

/// The caller's selectors, attested from the connection's kernel facts.
pub(crate) async fn attest<T>(agent: &AgentInner, req: &Request<T>) -> Result<SelectorSet, Status> {
    let caller = req
        .extensions()
        .get::<Option<Caller>>()
        .cloned()
        .flatten()
        .ok_or_else(|| Status::permission_denied("caller has no kernel credentials"))?;
    // A few /proc reads, inline; reading an executable not yet hashed
    // goes to the blocking pool.
    let attestor = agent.attestor.clone();
    match attestor.attest_cached(&caller).map_err(|e| Status::permission_denied(e.to_string()))? {
        Some(selectors) => Ok(selectors),
        None => tokio::task::spawn_blocking(move || attestor.attest(&caller))
            .await
            .map_err(|_| Status::internal("attestation task failed"))?
            .map_err(|e| Status::permission_denied(e.to_string())),
    }
}

/// The caller's process instance, for entries bound to their process;
/// `None` when it cannot be told (it has exited): such a caller is served
/// no bound entry.
pub(crate) fn process<T>(req: &Request<T>) -> Option<Process> {
    let caller = req.extensions().get::<Option<Caller>>()?.as_ref()?;
    instance::identify(caller).ok()
}

/// [`attest`], and the caller must match at least one entry.
pub(crate) async fn attest_identified<T>(agent: &AgentInner, req: &Request<T>) -> Result<SelectorSet, Status> {
    let selectors = attest(agent, req).await?;
    if agent.cache.matching(&selectors).is_empty() {
        return Err(no_identity());
    }
    Ok(selectors)
}

/// What a caller with no identity (or no identity left) is told.
pub(crate) fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

/// A workload's interest in its SVIDs, from a stream's start to its end
/// however it ends: while held, the agent keeps SVIDs issued and renewed for
/// that workload's evidence.
pub(crate) struct InterestGuard {
    agent: Arc<AgentInner>,
    digest: String,
}

impl InterestGuard {
    /// Registers interest for a workload with `selectors`.
    pub(crate) fn open(agent: Arc<AgentInner>, selectors: &SelectorSet) -> Self {
        let digest = agent.cache.open_interest(selectors, now_unix());
        Self { agent, digest }
    }
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        self.agent.cache.close_interest(&self.digest, now_unix());
    }
}
