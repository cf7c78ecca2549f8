//! Credentials that end with their process (`bind: process`, issue 16).
//!
//! A caller that matches an entry bound to its process is watched from its
//! first call (`watch`): the cache holds that entry's SVIDs for its
//! process instance alone ([`crate::instance`]). When the process exits:
//!
//! 1. the cache withdraws everything held for the instance at once, which
//!    wakes every open stream ([`Cache::end_instance`]);
//! 2. the serials and jtis go into [`EndedReports`], and `report_loop`
//!    sends them to the server (`ReportProcessEnded`), which revokes them
//!    (reason "ended with its process"): the CRL lists the serials and every
//!    agent's ValidateJWTSVID refuses the jtis;
//! 3. while the server is away the reports are kept and sent again, until
//!    the server answers or the credentials have expired anyway; the
//!    withdrawal (1) never waits for it.
//!
//! An SVID or JWT the server issued for an instance that ended meanwhile is
//! refused by the cache and reported the same way
//! ([`crate::cache::Kept::ProcessEnded`]).
//!
//! What this does not promise: a credential already copied out of the
//! process (written to a file, sent elsewhere) stays valid for relying
//! parties that check neither the CRL nor ValidateJWTSVID until it expires;
//! and the reports live in the agent's memory, so an agent restarted while
//! the server is away forgets them (the credentials then end at expiry).
//!
//! [`Cache::end_instance`]: crate::cache::Cache::end_instance

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hallmark_core::{Entry, now_unix};
use hallmark_proto::node as pb;
use tokio::sync::Notify;
use tonic::Code;

use crate::admission::Attested;
use crate::cache::Ended;
use crate::error::AgentError;
use crate::instance::{self, Process, ProcessInstance, wait_exit};
use crate::state::AgentInner;

/// How long to wait before sending reports again after the server failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most credentials named in one report (the server takes up to 1000).
const REPORT_BATCH: usize = 500;
/// Most reports kept while the server is away; beyond, the soonest to
/// expire are let go (they end at expiry).
const MAX_KEPT: usize = 100_000;

/// Credentials withdrawn because their process ended, not yet reported to
/// the server.
#[derive(Debug, Default)]
pub struct EndedReports {
    pending: Mutex<Vec<Ended>>,
    wake: Notify,
    /// How many process ends withdrew something, and how many credentials
    /// the server has revoked on the agent's report (for tests and metrics).
    counts: Mutex<EndedCounts>,
}

/// Counts of ended processes and reported credentials.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndedCounts {
    /// Process instances whose end withdrew at least one credential.
    pub processes: u64,
    /// Credentials withdrawn on a process end.
    pub withdrawn: u64,
    /// Credentials the server confirmed revoking.
    pub reported: u64,
}

impl EndedReports {
    /// Queues `ended` for the server and wakes the reporter.
    pub fn push(&self, ended: Vec<Ended>) {
        if ended.is_empty() {
            return;
        }
        if let Ok(mut p) = self.pending.lock() {
            p.extend(ended);
            if p.len() > MAX_KEPT {
                p.sort_by_key(|e| std::cmp::Reverse(e.not_after));
                p.truncate(MAX_KEPT);
            }
        }
        self.wake.notify_one();
    }

    /// Everything queued that has not expired by `now`, taken out.
    fn take(&self, now: i64) -> Vec<Ended> {
        let mut p = match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::take(&mut *p).into_iter().filter(|e| e.not_after > now).collect()
    }

    /// Puts back what could not be sent.
    fn put_back(&self, ended: Vec<Ended>) {
        if let Ok(mut p) = self.pending.lock() {
            p.extend(ended);
        }
    }

    fn count(&self, f: impl FnOnce(&mut EndedCounts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> EndedCounts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }
}

/// Makes sure the attested `caller`, running as `process`, is watched when
/// one of the entries it matches (`matched`, which the caller has looked up
/// anyway) is bound to its process: registered with the cache (so SVIDs of
/// those entries are issued for it) and, the first time, a task waits for
/// its exit. A caller with no bound entry is left alone.
pub(crate) fn watch(agent: &Arc<AgentInner>, process: &Process, caller: &Attested, matched: &[Arc<Entry>]) {
    if !matched.iter().any(|e| e.bind.per_process()) {
        return;
    }
    // A stream can outlive its process (a connection inherited by a child):
    // an instance that has ended is never registered again.
    if !instance::alive(process) {
        return;
    }
    if !agent.cache.open_instance(process.instance, &caller.evidence, caller.process) {
        return;
    }
    let (agent, process) = (agent.clone(), process.clone());
    tokio::spawn(async move {
        wait_exit(&process).await;
        ended(&agent, process.instance);
    });
}

/// Process `instance` exited: withdraw what it held, and report it.
pub(crate) fn ended(agent: &AgentInner, instance: ProcessInstance) {
    let started = Instant::now();
    let withdrawn = agent.cache.end_instance(instance);
    if withdrawn.is_empty() {
        return;
    }
    tracing::info!(
        %instance,
        credentials = withdrawn.len(),
        took_us = started.elapsed().as_micros() as u64,
        "process ended: its credentials are withdrawn; reporting them for revocation"
    );
    agent.ended.count(|c| {
        c.processes += 1;
        c.withdrawn += withdrawn.len() as u64;
    });
    agent.ended.push(withdrawn);
}

/// Sends the ended credentials to the server as they come, and again after
/// a failure, until the server has them or they have expired. A report the
/// server refuses (not this agent's, or not bound) is dropped and logged:
/// sending it again would be refused again.
pub(crate) async fn report_loop(agent: Arc<AgentInner>) -> Result<(), AgentError> {
    loop {
        tokio::select! {
            () = agent.ended.wake.notified() => {}
            () = tokio::time::sleep(RETRY_AFTER) => {}
        }
        let mut pending = agent.ended.take(now_unix());
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(REPORT_BATCH));
            let batch = std::mem::replace(&mut pending, rest);
            let req = pb::ReportProcessEndedRequest { credential_ids: batch.iter().map(|e| e.id.clone()).collect() };
            match agent.client().report_process_ended(req).await {
                Ok(r) => {
                    let revoked = r.into_inner().revoked;
                    tracing::info!(
                        reported = batch.len(),
                        revoked,
                        "server revoked the credentials of ended processes"
                    );
                    agent.ended.count(|c| c.reported += batch.len() as u64);
                }
                Err(s) if matches!(s.code(), Code::PermissionDenied | Code::InvalidArgument | Code::NotFound) => {
                    tracing::error!(code = ?s.code(), status = %s.message(), dropped = batch.len(),
                        "server refused a process-end report; its credentials end at expiry");
                }
                Err(s) => {
                    tracing::warn!(code = ?s.code(), status = %s.message(), kept = batch.len() + pending.len(),
                        "cannot report ended processes; will retry (their credentials are withdrawn here already)");
                    agent.ended.put_back(batch);
                    agent.ended.put_back(std::mem::take(&mut pending));
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_kept_until_sent_or_expired() {
        let r = EndedReports::default();
        r.push(vec![Ended { id: "a".into(), not_after: 100 }, Ended { id: "b".into(), not_after: 50 }]);
        let taken = r.take(60);
        assert_eq!(taken, vec![Ended { id: "a".into(), not_after: 100 }], "b expired anyway: nothing to revoke");
        assert!(r.take(60).is_empty());
        r.put_back(taken);
        assert_eq!(r.take(60).len(), 1, "put back after a failure");
    }
}
