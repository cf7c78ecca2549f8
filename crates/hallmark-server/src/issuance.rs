//! The issuance path, top to bottom. Every X.509-SVID (first issue and
//! renewal), every JWT-SVID and every WIT-SVID takes these steps, numbered
//! in the code:
//!
//! 1. entitle: the entry exists, the calling agent (authenticated by mTLS
//!    before this module) serves it, and the workload's evidence satisfies it;
//!    for an entry bound to tasks, the workload is in the process tree of a
//!    running task of the entry, and a JWT's audiences are in its scope
//!    (approved where the task says so);
//! 2. decide: one call to [`hallmark_policy::decide`], the decision
//!    `hallmark policy test` makes too (class path, policy, lifetime); a
//!    denial is recorded with its audit record and returned;
//! 3. sign with the lifetime decided;
//! 4. record in the inventory and the audit chain, durably, before the
//!    credential leaves the server (a task's credential is then checked
//!    against its task once more: one that ended meanwhile revokes it);
//! 5. return it, with when to renew.
//!
//! Every issuance and every renewal is decided here; nothing is cached as
//! "already allowed".

use std::sync::Arc;

use hallmark_ca::x509::{SvidProfile, SvidTemplate};
use hallmark_ca::{CaError, MintClaims, SignedSvid};
use hallmark_core::{
    Bind, ClaimScope, CredentialKind, Entry, ProcessInstance, ProcessInstanceError, SelectorError, SelectorSet,
    SpiffeId, TaskClaim, now_unix,
};
use hallmark_policy::{
    Action, ActiveException, ClassRules, DecidedBy, Decision, Evidence, IssuanceRequest, TaskFacts, Verdict,
};
use hallmark_store::{Denial, EvidenceSet, JoinTokenError, RevokeTarget, Task, hash_secret};

use crate::error::ServerError;
use crate::state::ServerState;

/// Most X.509-SVIDs signed in one request.
pub const MAX_SVIDS_PER_REQUEST: usize = 1000;
/// Most evidence selectors accepted with one request.
pub const MAX_EVIDENCE: usize = 256;
/// Most ancestors of a workload's process accepted with one request.
pub const MAX_LINEAGE: usize = 64;

/// Why an issuance was refused.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The entry does not exist.
    #[error("entry `{0}` not found")]
    NoEntry(String),
    /// The entry has been revoked: it is never issued again.
    #[error("entry `{0}` is revoked")]
    Revoked(String),
    /// The node has been banned (`hallmark revoke node`): its agent is not
    /// attested or given an SVID again until the ban is lifted.
    #[error("node `{0}` is banned")]
    NodeBanned(SpiffeId),
    /// The entry holds one of Hallmark's own identities (stored before they
    /// were reserved): never issued.
    #[error("entry `{0}` holds a reserved identity (under `/hallmark/`); delete it")]
    Reserved(String),
    /// The entry exists but is not served by the calling agent.
    #[error(
        "agent `{agent}` is not entitled to entry `{entry}` (another parent, or node selectors its node did not prove)"
    )]
    NotEntitled {
        /// The caller.
        agent: String,
        /// The entry.
        entry: String,
    },
    /// An entry bound to tasks: no running task holds the workload's
    /// process, the task has run out, or a JWT audience is outside its scope
    /// (a breach) or waits for approval. Recorded like a denial.
    #[error("task: {0}")]
    Task(String),
    /// Class or policy said no.
    #[error("denied by {by}")]
    Denied {
        /// The verdict's reason: the class rule, or the policy version and
        /// what in it decided.
        by: String,
    },
    /// A delivery report named a credential the inventory does not hold.
    #[error("credential `{0}` is not in the inventory")]
    UnknownCredential(String),
    /// A delivery report named a credential not issued to the reporting
    /// workload through the calling agent.
    #[error("credential `{0}` was not issued to this workload through this agent")]
    NotHolder(String),
    /// The request itself is malformed (bad audience, bad evidence).
    #[error("{0}")]
    BadRequest(String),
    /// An evidence selector the agent reported does not parse.
    #[error("evidence: {0}")]
    Evidence(#[source] SelectorError),
    /// The process facts the agent reported are out of range.
    #[error("evidence: {0}")]
    Process(#[source] ProcessInstanceError),
    /// The CSR is malformed or asks for another identity
    /// ([`CaError::is_bad_csr`]): the requester's fault.
    #[error(transparent)]
    BadCsr(CaError),
    /// The signing authority could not sign (it has expired, or a key or
    /// certificate operation failed): the server's fault, never the
    /// requester's.
    #[error("signing failed: {0}")]
    Signing(#[source] CaError),
    /// Node attestation failed.
    #[error("{0}")]
    Attestation(#[from] JoinTokenError),
    /// The node re-attests with its attestor instead of renewing.
    #[error("node `{agent}` attested with {attestor} re-attests instead of renewing (the `Attest` call)")]
    MustReattest {
        /// The agent.
        agent: SpiffeId,
        /// Its node attestor.
        attestor: String,
    },
    /// A server-side failure.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A CSR at fault is a bad request; anything else the authority failed at is
/// a signing failure.
impl From<CaError> for IssueError {
    fn from(e: CaError) -> Self {
        if e.is_bad_csr() { Self::BadCsr(e) } else { Self::Signing(e) }
    }
}

impl From<hallmark_store::StoreError> for IssueError {
    fn from(e: hallmark_store::StoreError) -> Self {
        Self::Server(e.into())
    }
}

/// The agent calling an issuance RPC, as mTLS authenticated it
/// ([`crate::node_api`]): its SPIFFE ID, how its node attested, and the agent
/// SVID it presented. (The agent's own `Caller` is the workload calling it.)
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    /// The agent's SPIFFE ID, from its verified certificate.
    pub agent: SpiffeId,
    /// How its node attested.
    pub attestation: String,
    /// The serial of the agent SVID it presented (one the server issued to
    /// this node: see [`crate::node_api`]).
    pub serial: String,
    /// What its node's attestor proved, `node:attestation:TYPE` among them.
    pub node_selectors: SelectorSet,
}

/// An issued X.509-SVID and when the agent should renew it.
#[derive(Debug)]
pub struct IssuedX509 {
    /// The signed SVID.
    pub svid: SignedSvid,
    /// Unix seconds: the class's renewal point, with jitter.
    pub renew_at: i64,
    /// The authority that signed it.
    pub authority_id: String,
}

/// An issued JWT-SVID or WIT-SVID.
#[derive(Debug)]
pub struct IssuedJwt {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// The key that signed it.
    pub kid: String,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// When the agent should mint a replacement.
    pub refresh_at: i64,
}

/// The selector every node has: how it attested.
fn node_attestation_selectors(attestor: &str) -> Vec<String> {
    vec![format!("node:attestation:{attestor}")]
}

/// The stable, non-secret id of a join token, used in the agent's SPIFFE ID
/// (the store's [`hallmark_store::join_token_id`] of its hash).
pub fn join_token_id(token: &str) -> String {
    hallmark_store::join_token_id(&hash_secret(token)).to_owned()
}

/// What the node record keeps of an agent SVID just signed.
/// An agent SVID, signed at node attestation or renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAgentSvid {
    /// The agent's SPIFFE ID.
    pub agent_id: SpiffeId,
    /// The signed SVID.
    pub svid: SignedSvid,
    /// The id of the authority that signed it.
    pub authority_id: String,
}

impl IssuedAgentSvid {
    /// The node's row: this SVID, how the node attested, and the serial it
    /// renewed with (accepted beside the new one).
    fn node_svid<'a>(
        &'a self,
        attestation_type: &'a str,
        previous_serial: Option<&'a str>,
        attested: Option<(&'a [String], i64)>,
    ) -> hallmark_store::NodeSvid<'a> {
        hallmark_store::NodeSvid {
            agent_id: self.agent_id.as_str(),
            attestation_type,
            attested,
            serial: &self.svid.serial,
            previous_serial,
            authority_id: &self.authority_id,
            not_after: self.svid.not_after,
        }
    }
}

/// What the agent reports of the workload asking: its attested selectors,
/// and the process they were read from (older agents send none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEvidence {
    /// The selectors: what entries match and the decision reads.
    pub selectors: SelectorSet,
    /// The process: recorded with the selectors, never matched.
    pub process: Option<ProcessInstance>,
    /// The process's ancestors, parent first, as `(pid, start_ticks)`: for
    /// an entry bound to tasks, which task's process tree it is in.
    pub lineage: Vec<(i64, i64)>,
}

impl From<SelectorSet> for WorkloadEvidence {
    /// Selectors with no process facts.
    fn from(selectors: SelectorSet) -> Self {
        Self { selectors, process: None, lineage: Vec::new() }
    }
}

impl WorkloadEvidence {
    /// The process and its ancestors, nearest first, as `(pid, start_ticks)`.
    fn process_tree(&self) -> Vec<(i64, i64)> {
        let own = self.process.iter().map(|p| (i64::from(p.pid()), i64::try_from(p.start_ticks()).unwrap_or(-1)));
        own.chain(self.lineage.iter().copied()).collect()
    }
}

/// What step 1 establishes: the entry the workload may have, the evidence
/// the decision reads, and the evidence set the records name.
struct Entitled {
    entry: Arc<Entry>,
    evidence: Evidence,
    recorded: EvidenceSet,
    /// The task it is issued for (entries bound to tasks), and what the
    /// decision sees of it.
    task: Option<(Task, TaskFacts)>,
}

/// A new `jti`: time-ordered, with 64 random bits.
pub(crate) fn new_jti() -> String {
    let mut random = [0u8; 8];
    rand::Rng::fill(&mut rand::rng(), &mut random);
    hex::encode(hallmark_core::time_ordered_id(random))
}

/// Seconds task `t` has left at `now` (at least 1): no credential outlives its task.
fn remaining(t: &Task, now: i64) -> u64 {
    u64::try_from(t.expires_at - now).unwrap_or(1).max(1)
}

/// What the decision sees of `t`.
fn task_facts(t: &Task) -> TaskFacts {
    TaskFacts {
        id: t.id.clone(),
        objective_sha256: t.objective_sha256.clone(),
        scope: t.scope.iter().map(|i| i.audience.clone()).collect(),
        on_behalf_of: t.on_behalf_of.clone().unwrap_or_default(),
        approved: t.scope.iter().filter(|i| i.approved_by.is_some()).map(|i| i.audience.clone()).collect(),
        pending_approval: t.scope.iter().filter(|i| !i.cleared()).map(|i| i.audience.clone()).collect(),
        delegation_depth: 0,
    }
}

/// The claims a task's JWT-SVID carries beyond the standard's: `task` (id,
/// objective hash, the scope of the token's audiences, on whose behalf)
/// and, when the task acts for someone, `act` naming the agent as the
/// acting party (RFC 8693 section 4.1); `sub` stays the SPIFFE ID.
fn task_claims(t: &Task, entry: &Entry, audience: &[String]) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("task".into(), task_claim(t, audience));
    if t.on_behalf_of.is_some() {
        m.insert("act".into(), serde_json::json!({ "sub": entry.spiffe_id.as_str() }));
    }
    m
}

/// The `task` claim of a token of `t` for `audience`: the scope items of
/// those audiences only (a token exchanged for other audiences gets its own).
pub(crate) fn task_claim(t: &Task, audience: &[String]) -> serde_json::Value {
    let claim = TaskClaim {
        id: t.id.clone(),
        objective_sha256: t.objective_sha256.clone(),
        scope: t
            .scope
            .iter()
            .filter(|i| audience.contains(&i.audience))
            .map(|i| ClaimScope { aud: i.audience.clone(), actions: i.actions.clone() })
            .collect(),
        on_behalf_of: t.on_behalf_of.clone(),
    };
    serde_json::to_value(claim).unwrap_or_default()
}

/// The audiences of `t`'s scope that are cleared (approved where the task
/// asks for approval): what a task's WIT-SVID, which names no audience,
/// carries in its `task` claim, so a verifier of the WIT's proof can check
/// the proof's audience against it.
fn cleared_scope(t: &Task) -> Vec<String> {
    t.scope.iter().filter(|i| i.cleared()).map(|i| i.audience.clone()).collect()
}

/// What step 2 grants when the verdict allows.
struct Granted {
    /// The lifetime decided, seconds.
    ttl_secs: u64,
    /// The determining permits, for the issuance record.
    policy_ids: Vec<String>,
}

/// What step 3 signed, as its inventory row records it.
struct SignedCredential<'a> {
    /// X.509-SVID, JWT-SVID or WIT-SVID.
    kind: CredentialKind,
    /// The serial or `jti`.
    id: &'a str,
    /// The authority or key that signed it.
    authority_id: String,
    /// The audiences, comma-joined, for a JWT.
    audience: Option<String>,
    /// Unix seconds.
    not_before: i64,
    /// Unix seconds.
    not_after: i64,
}

impl Entitled {
    /// The inventory row for `signed`, issued with `event`.
    fn inventory_row(
        &self,
        signed: SignedCredential<'_>,
        event: &hallmark_store::AuditEvent,
    ) -> hallmark_store::Credential {
        let entry = &self.entry;
        hallmark_store::Credential {
            id: signed.id.to_owned(),
            kind: signed.kind,
            entry_id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.to_string(),
            // The calling agent: step 1 put its SPIFFE ID in the evidence.
            node_id: self.evidence.node_id.clone(),
            class: entry.class.to_string(),
            owner: entry.owner.clone(),
            policy_version: event.policy_version,
            evidence_digest: self.recorded.digest.clone(),
            issued_at: event.at,
            not_before: signed.not_before,
            not_after: signed.not_after,
            revoked_at: None,
            revoke_reason: None,
            authority_id: signed.authority_id,
            audit_seq: 0,
            delivered_to: None,
            delivered_at: None,
            audience: signed.audience,
            task_id: self.task.as_ref().map(|(t, _)| t.id.clone()),
            person_id: None,
        }
    }
}

/// Parses the evidence selectors an agent reports.
pub fn parse_evidence(raw: &[String]) -> Result<SelectorSet, IssueError> {
    if raw.len() > MAX_EVIDENCE {
        return Err(IssueError::BadRequest(format!("at most {MAX_EVIDENCE} evidence selectors")));
    }
    raw.iter().map(|s| s.parse().map_err(IssueError::Evidence)).collect()
}

/// The renewal point (unix seconds): the class's `renew_fraction` of the
/// remaining life, +-5% jitter so a fleet issued together does not renew together.
fn renewal_point(now: i64, not_after: i64, rules: &ClassRules) -> i64 {
    let life = (not_after - now).max(1) as f64;
    let jitter = (rand::random::<f64>() - 0.5) * 0.1;
    let at = now + (life * (rules.renew_fraction + jitter).clamp(0.05, 0.95)) as i64;
    at.min(not_after - 1).max(now)
}

impl ServerState {
    /// Step 1: loads the entry, checks that the calling agent may serve it and
    /// that the workload's evidence satisfies it, and completes the evidence
    /// with what the server knows of the node. Returns it with the workload's
    /// process tree, for [`ServerState::task_for`].
    fn entitled_entry(
        &self,
        caller: &AuthenticatedAgent,
        entry_id: &str,
        workload: WorkloadEvidence,
    ) -> Result<(Entitled, Vec<(i64, i64)>), IssueError> {
        let tree = workload.process_tree();
        let WorkloadEvidence { selectors, process, .. } = workload;
        let entry = self.registry.entry(entry_id).ok_or_else(|| IssueError::NoEntry(entry_id.to_owned()))?;
        if entry.revoked_at.is_some() {
            return Err(IssueError::Revoked(entry_id.to_owned()));
        }
        if entry.spiffe_id.is_reserved() {
            return Err(IssueError::Reserved(entry_id.to_owned()));
        }
        if entry.parent_id != caller.agent || !entry.serves_node(&caller.node_selectors) {
            return Err(IssueError::NotEntitled { agent: caller.agent.to_string(), entry: entry_id.to_owned() });
        }
        if !entry.matches(&selectors) {
            return Err(IssueError::BadRequest(format!("the workload's evidence does not satisfy entry `{entry_id}`")));
        }
        let evidence = Evidence {
            selectors,
            node_id: caller.agent.to_string(),
            node_attestation: caller.attestation.clone(),
            node_selectors: caller.node_selectors.iter().map(ToString::to_string).collect(),
            process,
        };
        let recorded = EvidenceSet::new(&evidence.selectors, evidence.process);
        Ok((Entitled { entry, evidence, recorded, task: None }, tree))
    }

    /// Step 1, for an entry bound to tasks: the running task whose process
    /// tree (`tree`: the workload's process and its ancestors) the workload
    /// is in. None, or one past its lifetime, is a refusal, recorded.
    async fn task_for(
        &self,
        entitled: &mut Entitled,
        tree: &[(i64, i64)],
        action: Action,
        now: i64,
    ) -> Result<(), IssueError> {
        if entitled.entry.bind != Bind::Task {
            return Ok(());
        }
        let entry = &entitled.entry;
        let found = self.store.task_of_process(&entry.id, &entitled.evidence.node_id, tree).await?;
        let refusal = match found {
            Some(t) if t.active(now) => {
                let facts = task_facts(&t);
                entitled.task = Some((t, facts));
                return Ok(());
            }
            Some(t) => format!("task `{}` has run out of its lifetime", t.id),
            None => format!(
                "no running task of entry `{}` holds this process or an ancestor of it (start one with `hallmark task run`)",
                entry.id
            ),
        };
        let request = self.issuance_request(action, entitled, &[], now);
        self.record_refusal(&request, 0, &[], &refusal).await?;
        Err(IssueError::Task(refusal))
    }

    /// Step 4: records `signed`, issued to `entitled` through `caller`, in the
    /// inventory and the audit chain (an `action` record with `details`),
    /// durably, before it leaves the server; a task's credential is then
    /// checked against its task once more ([`ServerState::still_in_task`]).
    async fn record_issued(
        &self,
        caller: &AuthenticatedAgent,
        action: &str,
        entitled: &Entitled,
        details: serde_json::Value,
        signed: SignedCredential<'_>,
    ) -> Result<(), IssueError> {
        let id = signed.id.to_owned();
        let mut event = self.audit_event(&format!("node:{}", caller.agent), action, &entitled.entry.id, "ok", details);
        event.credential = Some(entitled.inventory_row(signed, &event));
        event.evidence = Some(entitled.recorded.clone());
        self.audit.record(event).await?;
        self.still_in_task(entitled.task.as_ref().map(|(t, _)| t), &id).await
    }

    /// After step 4, for a task's credential `id`: the task it was decided
    /// for must still be running under the same objective. A task that ended
    /// (or changed objective) while this credential was being decided and
    /// recorded revoked what was recorded before; this one is revoked here,
    /// so none decided under an ended task or an old objective survives.
    async fn still_in_task(&self, task: Option<&Task>, id: &str) -> Result<(), IssueError> {
        let Some(t) = task else { return Ok(()) };
        let now = self.store.task(&t.id).await?;
        let why = match now {
            Some(n) if n.ended_at.is_none() && n.objective_sha256 == t.objective_sha256 => return Ok(()),
            Some(n) if n.ended_at.is_some() => format!("task `{}` ended while it was issued", t.id),
            _ => format!("task `{}` changed objective while it was issued", t.id),
        };
        self.revoke_now(&RevokeTarget::Credential(id.to_owned()), &why, "hallmark/issuance").await?;
        Err(IssueError::Task(why))
    }

    /// Step 1, for a task's JWT: `request`'s audience must be in the task's
    /// scope, and approved if it waits for a person. Outside the scope is a
    /// breach: recorded with the task, counted on it, and, when the task
    /// says so, the end of the task and of everything issued for it.
    async fn check_task_scope(&self, request: &IssuanceRequest<'_>, task: &Task) -> Result<(), IssueError> {
        let aud = request.audience.unwrap_or_default();
        let refusal = match task.scope_item(aud) {
            Some(item) if item.cleared() => return Ok(()),
            Some(_) => format!(
                "pending approval: audience `{aud}` of task `{}` waits for `hallmark task approve {} --scope {aud}`",
                task.id, task.id
            ),
            None => format!("scope breach: audience `{aud}` is outside the scope of task `{}`", task.id),
        };
        self.record_refusal(request, 0, &[], &refusal).await?;
        if refusal.starts_with("scope breach") {
            let details =
                serde_json::json!({ "audience": aud, "entry_id": task.entry_id, "node": request.evidence.node_id });
            let rec = self.record_change("hallmark/issuance", "task_breach", move |t: &Task| {
                crate::audit::Change::new(&t.id, details)
            });
            let t = self.store.record_task_breach(&task.id, rec).await?;
            tracing::warn!(task = %t.id, audience = aud, breaches = t.breaches, "task scope breach");
            if t.revoke_on_breach {
                let target = RevokeTarget::Task(t.id.clone());
                self.revoke_now(&target, &refusal, "hallmark/issuance").await?;
            }
        }
        Err(IssueError::Task(refusal))
    }

    /// The entry's approved exceptions in force at `now`.
    fn active_exceptions(&self, entry_id: &str, now: i64) -> Vec<ActiveException> {
        self.registry
            .active_exceptions(entry_id, now)
            .into_iter()
            .filter_map(|r| {
                Some(ActiveException { rule: r.rule.parse().ok()?, id: r.id, value: r.value, expires_at: r.expires_at })
            })
            .collect()
    }

    /// The question step 2 puts for `entitled`, under this server's class
    /// rules and trust domain (no audience: JWTs set one per request).
    fn issuance_request<'a>(
        &'a self,
        action: Action,
        entitled: &'a Entitled,
        exceptions: &'a [ActiveException],
        now: i64,
    ) -> IssuanceRequest<'a> {
        IssuanceRequest {
            action,
            entry: &entitled.entry,
            audience: None,
            evidence: &entitled.evidence,
            exceptions,
            now,
            classes: &self.settings.classes,
            trust_domain: self.settings.trust_domain.as_str(),
            task: entitled.task.as_ref().map(|(_, facts)| facts),
        }
    }

    /// Step 2: the verdict on `request` ([`hallmark_policy::decide`], the one
    /// decision). A denial is recorded, with its audit record, and returned.
    async fn decide(&self, request: &IssuanceRequest<'_>) -> Result<Granted, IssueError> {
        let engine = self.policy()?;
        let started = std::time::Instant::now();
        let verdict = hallmark_policy::decide(&engine, request);
        let entry = request.entry;
        match &verdict.decided_by {
            // Nothing was put to policy: there is no decision latency to count.
            DecidedBy::ClassRule { .. } => {}
            DecidedBy::EvaluationFailed { error } => {
                self.metrics.decision(started.elapsed());
                tracing::error!(entry = %entry.id, error = %error, "policy decision failed");
            }
            DecidedBy::Permit | DecidedBy::Forbid | DecidedBy::NoPermit { .. } => {
                self.metrics.decision(started.elapsed());
            }
        }
        for e in &verdict.skipped {
            tracing::warn!(entry = %entry.id, error = %e, "policy evaluation error (policy skipped)");
        }
        match &verdict.decision {
            Decision::Allowed { ttl_secs } => Ok(Granted { ttl_secs: *ttl_secs, policy_ids: verdict.policy_ids }),
            Decision::Denied { reason } => {
                self.record_denial(request, &verdict, reason).await?;
                Err(IssueError::Denied { by: reason.clone() })
            }
        }
    }

    /// Records a denied request in the denials `hallmark entry denials`
    /// reads and in the audit chain.
    async fn record_denial(
        &self,
        request: &IssuanceRequest<'_>,
        verdict: &Verdict,
        reason: &str,
    ) -> Result<(), IssueError> {
        self.record_refusal(request, verdict.policy_version, &verdict.policy_ids, reason).await
    }

    /// Records a refused request (by policy version `policy_version` and
    /// permits `policy_ids`, both empty for a task's refusal) in the denials
    /// and the audit chain.
    async fn record_refusal(
        &self,
        request: &IssuanceRequest<'_>,
        policy_version: u64,
        policy_ids: &[String],
        reason: &str,
    ) -> Result<(), IssueError> {
        let IssuanceRequest { action, entry, audience, evidence, task, .. } = *request;
        self.metrics.denied(entry.class);
        let recorded = EvidenceSet::new(&evidence.selectors, evidence.process);
        let details = serde_json::json!({
            "requested": action.as_str(),
            "audience": audience,
            "spiffe_id": entry.spiffe_id.as_str(),
            "evidence_digest": recorded.digest,
            "policy_ids": policy_ids,
            "reason": reason,
            "task": task.map(|t| t.id.as_str()),
        });
        let mut event = self.audit_event(&format!("node:{}", evidence.node_id), "deny", &entry.id, "denied", details);
        // The denial row the reports read is written with its record, in the same batch.
        event.denial = Some(Denial {
            entry_id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.to_string(),
            action: action.as_str().to_owned(),
            audience: audience.map(str::to_owned),
            node_id: evidence.node_id.clone(),
            evidence_digest: recorded.digest.clone(),
            policy_version: i64::try_from(policy_version).unwrap_or(i64::MAX),
            policy_ids: policy_ids.to_vec(),
            reason: reason.to_owned(),
        });
        // What was refused is kept as what was issued is: which binary, as whom, in which process.
        event.evidence = Some(recorded);
        self.audit.record(event).await?;
        tracing::info!(entry = %entry.id, spiffe_id = %entry.spiffe_id, action = action.as_str(), audience, by = %reason, "issuance denied");
        Ok(())
    }

    /// Signs an X.509-SVID for `entry_id` from the agent's CSR, for a workload
    /// that showed `evidence`.
    pub async fn issue_x509(
        &self,
        caller: &AuthenticatedAgent,
        entry_id: &str,
        csr: &[u8],
        evidence: WorkloadEvidence,
        renewal: bool,
    ) -> Result<IssuedX509, IssueError> {
        let now = now_unix();
        // 1. Entitle: the entry exists, belongs to the calling agent, and the
        //    evidence satisfies it; for an entry bound to tasks, a task holds the process.
        let action = if renewal { Action::Renew } else { Action::IssueX509 };
        let (mut entitled, tree) = self.entitled_entry(caller, entry_id, evidence)?;
        self.task_for(&mut entitled, &tree, action, now).await?;
        let entry = &entitled.entry;
        // 2. Decide: class path, policy and lifetime, at this request; never past the task's end.
        let exceptions = self.active_exceptions(&entry.id, now);
        let mut granted = self.decide(&self.issuance_request(action, &entitled, &exceptions, now)).await?;
        let task = entitled.task.as_ref().map(|(t, _)| t);
        if let Some(t) = task {
            granted.ttl_secs = granted.ttl_secs.min(remaining(t, now));
        }
        // 3. Sign: the CSR signature is verified and may ask for no other identity.
        let ca = self.authorities.x509()?;
        let template = SvidTemplate {
            csr_der: csr,
            spiffe_id: &entry.spiffe_id,
            dns_names: &entry.dns_names,
            ttl_secs: granted.ttl_secs,
            now,
            profile: SvidProfile::Workload,
            task_id: task.map(|t| t.id.as_str()),
            person_name: None,
        };
        let svid = ca.sign_svid(&template)?;
        // 4. Record, durably, before the SVID leaves the server.
        let details = serde_json::json!({
            "spiffe_id": entry.spiffe_id.as_str(),
            "serial": svid.serial,
            "not_after": svid.not_after,
            "owner": entry.owner,
            "class": entry.class.as_str(),
            "evidence_digest": entitled.recorded.digest,
            "policy_ids": granted.policy_ids,
            "task": task.map(|t| t.id.as_str()),
        });
        let signed = SignedCredential {
            kind: CredentialKind::X509,
            id: &svid.serial,
            authority_id: ca.id(),
            audience: None,
            not_before: svid.not_before,
            not_after: svid.not_after,
        };
        self.record_issued(caller, action.as_str(), &entitled, details, signed).await?;
        tracing::debug!(entry = %entry.id, spiffe_id = %entry.spiffe_id, serial = %svid.serial, ttl_secs = granted.ttl_secs, "issued X.509-SVID");
        // 5. Return, with the class's renewal point.
        let renew_at = renewal_point(now, svid.not_after, self.settings.classes.rules(entry.class));
        self.metrics.issued(entry.class, CredentialKind::X509);
        Ok(IssuedX509 { svid, renew_at, authority_id: ca.id() })
    }

    /// Mints a JWT-SVID for `entry_id` and `audience`.
    /// Each audience is decided on its own; all must be allowed, and the
    /// token lives no longer than the least lifetime among them.
    pub async fn issue_jwt(
        &self,
        caller: &AuthenticatedAgent,
        entry_id: &str,
        audience: &[String],
        evidence: WorkloadEvidence,
    ) -> Result<IssuedJwt, IssueError> {
        hallmark_core::check_audiences(audience).map_err(|e| IssueError::BadRequest(e.to_string()))?;
        let now = now_unix();
        // 1. Entitle: the entry exists, belongs to the calling agent, and the
        //    evidence satisfies it; for an entry bound to tasks, a task holds the process.
        let (mut entitled, tree) = self.entitled_entry(caller, entry_id, evidence)?;
        self.task_for(&mut entitled, &tree, Action::IssueJwt, now).await?;
        let entry = &entitled.entry;
        let task = entitled.task.as_ref().map(|(t, _)| t);
        // 2. Decide each audience (for a task, first: is it in the task's scope?).
        let exceptions = self.active_exceptions(&entry.id, now);
        let request = self.issuance_request(Action::IssueJwt, &entitled, &exceptions, now);
        // No verdict grants more than the entry asks for, so starting there changes nothing.
        let mut ttl_secs = request.requested_ttl();
        let mut policy_ids = Vec::new();
        for aud in audience {
            let request = IssuanceRequest { audience: Some(aud), ..request };
            if let Some(t) = task {
                self.check_task_scope(&request, t).await?;
            }
            let granted = self.decide(&request).await?;
            ttl_secs = ttl_secs.min(granted.ttl_secs);
            policy_ids.extend(granted.policy_ids);
        }
        if let Some(t) = task {
            ttl_secs = ttl_secs.min(remaining(t, now));
        }
        // 3. Sign; a token never outlives the key that signs it.
        let key = self.authorities.jwt()?;
        let exp = (now + i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2)).min(self.authorities.jwt_not_after()?);
        let jti = new_jti();
        let extra = task.map(|t| task_claims(t, entry, audience));
        let token = key
            .mint(&MintClaims {
                sub: &entry.spiffe_id,
                aud: audience,
                issued_at: now,
                expires_at: exp,
                jti: &jti,
                issuer: self.settings.jwt_issuer.as_deref(),
                extra: extra.as_ref(),
            })
            .map_err(IssueError::Signing)?;
        // 4. Record, durably, before the token leaves the server.
        let details = serde_json::json!({
            "spiffe_id": entry.spiffe_id.as_str(),
            "jti": jti,
            "audience": audience,
            "not_after": exp,
            "owner": entry.owner,
            "class": entry.class.as_str(),
            "evidence_digest": entitled.recorded.digest,
            "policy_ids": policy_ids,
            "task": task.map(|t| t.id.as_str()),
        });
        let signed = SignedCredential {
            kind: CredentialKind::Jwt,
            id: &jti,
            authority_id: key.kid().to_owned(),
            audience: Some(audience.join(",")),
            not_before: now,
            not_after: exp,
        };
        self.record_issued(caller, "issue_jwt", &entitled, details, signed).await?;
        tracing::debug!(entry = %entry.id, spiffe_id = %entry.spiffe_id, %jti, "issued JWT-SVID");
        // 5. Return, with when to mint a replacement.
        let kid = key.kid().to_owned();
        self.metrics.issued(entry.class, CredentialKind::Jwt);
        let refresh_at = renewal_point(now, exp, self.settings.classes.rules(entry.class));
        Ok(IssuedJwt { token, jti, kid, expires_at: exp, refresh_at })
    }

    /// Mints a WIT-SVID for `entry_id` binding `public_key` (an EC P-256
    /// public JWK the agent made for the workload): one decision, on the
    /// trust domain (`issue_wit`), with the JWT path's lifetime; no audience.
    pub async fn issue_wit(
        &self,
        caller: &AuthenticatedAgent,
        entry_id: &str,
        public_key: &str,
        evidence: WorkloadEvidence,
    ) -> Result<IssuedJwt, IssueError> {
        let bound = hallmark_ca::EcPublicJwk::parse(public_key).map_err(|e| IssueError::BadRequest(e.to_string()))?;
        let now = now_unix();
        // 1. Entitle: the entry exists, belongs to the calling agent, and the
        //    evidence satisfies it; for an entry bound to tasks, a task holds the process.
        let (mut entitled, tree) = self.entitled_entry(caller, entry_id, evidence)?;
        self.task_for(&mut entitled, &tree, Action::IssueWit, now).await?;
        let entry = &entitled.entry;
        let task = entitled.task.as_ref().map(|(t, _)| t);
        // 2. Decide: class path (JWT), policy and lifetime; never past the task's end.
        let exceptions = self.active_exceptions(&entry.id, now);
        let granted = self.decide(&self.issuance_request(Action::IssueWit, &entitled, &exceptions, now)).await?;
        let mut ttl_secs = granted.ttl_secs;
        if let Some(t) = task {
            ttl_secs = ttl_secs.min(remaining(t, now));
        }
        // 3. Sign; a token never outlives the key that signs it.
        let key = self.authorities.jwt()?;
        let exp = (now + i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2)).min(self.authorities.jwt_not_after()?);
        let jti = new_jti();
        let extra = task.map(|t| task_claims(t, entry, &cleared_scope(t)));
        let token = hallmark_ca::wit::mint(
            &key,
            &hallmark_ca::WitClaims {
                sub: &entry.spiffe_id,
                issued_at: now,
                expires_at: exp,
                jti: &jti,
                issuer: self.settings.jwt_issuer.as_deref(),
                key: &bound,
                extra: extra.as_ref(),
            },
        )
        .map_err(IssueError::Signing)?;
        // 4. Record, durably, before the token leaves the server.
        let details = serde_json::json!({
            "spiffe_id": entry.spiffe_id.as_str(),
            "jti": jti,
            "not_after": exp,
            "owner": entry.owner,
            "class": entry.class.as_str(),
            "evidence_digest": entitled.recorded.digest,
            "policy_ids": granted.policy_ids,
            "task": task.map(|t| t.id.as_str()),
        });
        let signed = SignedCredential {
            kind: CredentialKind::Wit,
            id: &jti,
            authority_id: key.kid().to_owned(),
            audience: None,
            not_before: now,
            not_after: exp,
        };
        self.record_issued(caller, "issue_wit", &entitled, details, signed).await?;
        tracing::debug!(entry = %entry.id, spiffe_id = %entry.spiffe_id, %jti, "issued WIT-SVID");
        // 5. Return, with when to mint a replacement.
        let kid = key.kid().to_owned();
        self.metrics.issued(entry.class, CredentialKind::Wit);
        let refresh_at = renewal_point(now, exp, self.settings.classes.rules(entry.class));
        Ok(IssuedJwt { token, jti, kid, expires_at: exp, refresh_at })
    }

    /// Node attestation by join token: verifies the CSR, burns the token, and
    /// signs the agent SVID. The CSR is checked before the token is consumed,
    /// so a malformed request does not waste a token.
    pub async fn attest_join_token(&self, token: &str, csr: &[u8]) -> Result<IssuedAgentSvid, IssueError> {
        let agent_id =
            self.settings.trust_domain.join_token_agent_id(&join_token_id(token)).map_err(ServerError::AgentId)?;
        let issued = self.sign_agent(&agent_id, csr)?;
        self.store.consume_join_token(&hash_secret(token), agent_id.as_str(), now_unix()).await??;
        if self.store.node(agent_id.as_str()).await?.is_some_and(|n| n.banned) {
            return Err(IssueError::NodeBanned(agent_id));
        }
        let selectors = node_attestation_selectors("join_token");
        self.store.upsert_node(&issued.node_svid("join_token", None, Some((&selectors, now_unix())))).await?;
        let details = serde_json::json!({
            "attestation": "join_token",
            "serial": issued.svid.serial,
            "not_after": issued.svid.not_after,
        });
        self.audit.record(self.audit_event(agent_id.as_str(), "attest_node", agent_id.as_str(), "ok", details)).await?;
        tracing::info!(agent = %agent_id, "node attested with join token");
        Ok(issued)
    }

    /// Signs an agent SVID for the agent embedded in this process (`hallmark up`).
    /// The caller is this process, so no attestation evidence is exchanged.
    pub async fn attest_local(&self, agent_id: &SpiffeId, csr: &[u8]) -> Result<IssuedAgentSvid, IssueError> {
        if self.store.node(agent_id.as_str()).await?.is_some_and(|n| n.banned) {
            return Err(IssueError::NodeBanned(agent_id.clone()));
        }
        let issued = self.sign_agent(agent_id, csr)?;
        let selectors = node_attestation_selectors("local");
        self.store.upsert_node(&issued.node_svid("local", None, Some((&selectors, now_unix())))).await?;
        Ok(issued)
    }

    /// Renews an authenticated agent's SVID. The SVID it renewed with stays
    /// accepted beside the new one, so its open calls finish and a lost
    /// answer does not lock it out.
    pub async fn renew_agent(&self, caller: &AuthenticatedAgent, csr: &[u8]) -> Result<IssuedAgentSvid, IssueError> {
        if crate::node_attest::REATTESTING.contains(&caller.attestation.as_str()) {
            // Its evidence is checked again at every rotation: a node whose
            // certificate or key was withdrawn must not live on by renewing.
            return Err(IssueError::MustReattest { agent: caller.agent.clone(), attestor: caller.attestation.clone() });
        }
        let issued = self.sign_agent(&caller.agent, csr)?;
        self.store.upsert_node(&issued.node_svid(&caller.attestation, Some(&caller.serial), None)).await?;
        Ok(issued)
    }

    /// Signs an agent SVID for a node its attestor proved (`proof`): the
    /// agent ID and node selectors come from the proof, never from the
    /// agent. A node attesting again (same agent ID) gets its selectors
    /// replaced by what was proved now. A banned node is refused.
    pub async fn attest_proven(
        &self,
        proof: &crate::node_attest::NodeProof,
        csr: &[u8],
    ) -> Result<IssuedAgentSvid, IssueError> {
        let segments: Vec<&str> = proof.agent_path.iter().map(String::as_str).collect();
        let agent_id = self.settings.trust_domain.agent_id(&segments).map_err(ServerError::AgentId)?;
        let known = self.store.node(agent_id.as_str()).await?;
        if known.as_ref().is_some_and(|n| n.banned) {
            return Err(IssueError::NodeBanned(agent_id));
        }
        let mut selectors = proof.selectors.clone();
        selectors.extend(node_attestation_selectors(proof.attestor));
        selectors.sort();
        selectors.dedup();
        let issued = self.sign_agent(&agent_id, csr)?;
        let now = now_unix();
        self.store.upsert_node(&issued.node_svid(proof.attestor, None, Some((&selectors, now)))).await?;
        let details = serde_json::json!({
            "attestation": proof.attestor,
            "again": known.is_some(),
            "selectors": selectors,
            "serial": issued.svid.serial,
            "not_after": issued.svid.not_after,
            "evidence_expires_at": proof.evidence_expires_at,
        });
        self.audit.record(self.audit_event(agent_id.as_str(), "attest_node", agent_id.as_str(), "ok", details)).await?;
        tracing::info!(agent = %agent_id, attestor = proof.attestor, again = known.is_some(), "node attested");
        Ok(issued)
    }

    /// Signs an agent SVID with the active authority.
    fn sign_agent(&self, agent: &SpiffeId, csr: &[u8]) -> Result<IssuedAgentSvid, IssueError> {
        let ca = self.authorities.x509()?;
        let t = SvidTemplate {
            csr_der: csr,
            spiffe_id: agent,
            dns_names: &[],
            ttl_secs: self.settings.agent_svid_ttl.secs(),
            now: now_unix(),
            profile: SvidProfile::Agent,
            task_id: None,
            person_name: None,
        };
        let svid = ca.sign_svid(&t)?;
        Ok(IssuedAgentSvid { agent_id: agent.clone(), svid, authority_id: ca.id() })
    }
}
