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

use hallmark_core::{ProcessInstance, Selector, now_unix};
use tonic::{Request, Status};

use crate::attest::{Caller, ProcessFacts};
use crate::evidence::Evidence;
use crate::instance::{self, Process};
use crate::process::process_instance;
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

/// A caller, attested.
#[derive(Debug, Clone)]
pub(crate) struct Attested {
    /// Its evidence: the selectors entries match, and their digest.
    pub(crate) evidence: Arc<Evidence>,
    /// The process they were read from, sent with them to be recorded
    /// (never matched); `None` when its start time could not be read.
    pub(crate) process: Option<ProcessInstance>,
}

/// The caller's selectors, attested from the connection's kernel facts:
/// `unix:*` from /proc, then `container:*` from the container runtime and
/// `k8s:*` from the kubelet for the container and pod its cgroup names;
/// and its process.
pub(crate) async fn attest<T>(agent: &AgentInner, req: &Request<T>) -> Result<Attested, Status> {
    let caller = req
        .extensions()
        .get::<Option<Caller>>()
        .and_then(Option::as_ref)
        .ok_or_else(|| Status::permission_denied("caller has no kernel credentials"))?;
    let process = process_instance(caller);
    // A few /proc reads, inline; reading an executable not yet hashed
    // goes to the blocking pool, a bounded number at a time per uid and in
    // all (`hash_slots`: a user's slow or stuck reads wait behind their own).
    let facts = match agent.attestor.attest_cached(caller).map_err(|e| Status::permission_denied(e.to_string()))? {
        Some(facts) => facts,
        None => {
            let slot = agent
                .hash_slots
                .take(caller.uid.unwrap_or(u32::MAX))
                .await
                .ok_or_else(|| Status::unavailable("cannot read the executable now; try again"))?;
            // Another call may have read the same executable while this
            // one waited: `attest` takes the digest from the cache then.
            let (attestor, caller) = (agent.attestor.clone(), caller.clone());
            // The slot goes with the read: if the client gives up, this
            // future is dropped, but the read goes on until the file
            // answers, and holds its slot until then.
            tokio::task::spawn_blocking(move || {
                let facts = attestor.attest(&caller);
                drop(slot);
                facts
            })
            .await
            .map_err(|_| Status::internal("attestation task failed"))?
            .map_err(|e| Status::permission_denied(e.to_string()))?
        }
    };
    let evidence = with_runtime_facts(agent, facts).await;
    Ok(Attested { evidence, process })
}

/// The workload's `unix:*` evidence, with `container:*` and `k8s:*`
/// selectors added for the container and pod its cgroup names, where the
/// agent is set up to ask. What fails here leaves the workload with its unix
/// selectors only: an entry that needs container or pod facts then does not
/// match.
async fn with_runtime_facts(agent: &AgentInner, facts: ProcessFacts) -> Arc<Evidence> {
    let unix = facts.evidence;
    if agent.containers.is_none() && agent.kubelet.is_none() {
        return unix;
    }
    let where_from = match facts.cgroup {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(pid = facts.pid, "{e}");
            return unix;
        }
    };
    let Some(container) = &where_from.container else { return unix };
    let mut more: Vec<Selector> = Vec::new();
    if let Some(containers) = &agent.containers {
        match containers.selectors(container, facts.mount_ns).await {
            Ok(found) => more.extend(found),
            Err(e) => tracing::warn!(pid = facts.pid, "no container selectors: {e}"),
        }
    }
    if let (Some(kubelet), Some(pod)) = (&agent.kubelet, &where_from.pod_uid) {
        // A user's delegated cgroup subtree can be named like any pod.
        if where_from.delegated {
            tracing::warn!(pid = facts.pid, "pod {pod} named in a user's delegated cgroup subtree: no pod selectors");
        } else {
            match kubelet.selectors(pod, &container.id).await {
                Ok(found) => more.extend(found.iter().cloned()),
                Err(e) => tracing::warn!(pid = facts.pid, "no pod selectors: {e}"),
            }
        }
    }
    if more.is_empty() {
        return unix;
    }
    // Evidence of its own, its digest computed once for the whole call.
    let mut selectors = unix.selectors().clone();
    selectors.extend(more);
    Arc::new(Evidence::new(selectors))
}

/// The caller's process instance, for entries bound to their process;
/// `None` when it cannot be told (it has exited): such a caller is served
/// no bound entry.
pub(crate) fn process<T>(req: &Request<T>) -> Option<Process> {
    let caller = req.extensions().get::<Option<Caller>>()?.as_ref()?;
    instance::identify(caller).ok()
}

/// [`attest`], and the caller must match at least one entry.
pub(crate) async fn attest_identified<T>(agent: &AgentInner, req: &Request<T>) -> Result<Attested, Status> {
    let attested = attest(agent, req).await?;
    if !agent.cache.matches_any(attested.evidence.selectors()) {
        return Err(no_identity());
    }
    Ok(attested)
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
    /// Registers interest for an attested workload.
    pub(crate) fn open(agent: Arc<AgentInner>, caller: &Attested) -> Self {
        let digest = agent.cache.open_interest(&caller.evidence, caller.process, now_unix());
        Self { agent, digest }
    }
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        self.agent.cache.close_interest(&self.digest, now_unix());
    }
}
