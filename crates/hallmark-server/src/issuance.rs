//! The issuance path, top to bottom: authenticate the agent, find the entry it
//! is entitled to, check the workload's evidence against it, decide by class
//! and policy, sign with the decided lifetime, record, return.
//!
//! Every issuance and every renewal is decided here; nothing is cached as
//! "already allowed".

use std::sync::Arc;

use hallmark_ca::SignedSvid;
use hallmark_ca::x509::{SvidProfile, SvidTemplate};
use hallmark_core::{Entry, SelectorSet, SpiffeId, now_unix};
use hallmark_policy::{Action, ActiveException, ClassRules, Evidence, IssuancePath, effective_ttl};
use hallmark_store::{Denial, JoinTokenError, hash_secret};

use crate::{ServerError, ServerState};

/// Most audiences one JWT-SVID may carry.
pub const MAX_AUDIENCES: usize = 32;
/// Longest audience value, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Most X.509-SVIDs signed in one request.
pub const MAX_BATCH: usize = 1000;
/// Most evidence selectors accepted with one request.
pub const MAX_EVIDENCE: usize = 256;

/// Why an issuance was refused.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The entry does not exist.
    #[error("entry `{0}` not found")]
    NoEntry(String),
    /// The entry has been revoked: it is never issued again.
    #[error("entry `{0}` is revoked")]
    Revoked(String),
    /// The entry holds one of Hallmark's own identities (stored before they
    /// were reserved): never issued.
    #[error("entry `{0}` holds a reserved identity (under `/hallmark/`); delete it")]
    Reserved(String),
    /// The entry exists but is not served by the calling agent.
    #[error("agent `{agent}` is not entitled to entry `{entry}`")]
    NotEntitled {
        /// The caller.
        agent: String,
        /// The entry.
        entry: String,
    },
    /// Class or policy said no.
    #[error("denied by {by}")]
    Denied {
        /// What decided: `policy [ids]` or `class machine`.
        by: String,
    },
    /// A delivery report named a credential the inventory does not hold.
    #[error("credential `{0}` is not in the inventory")]
    UnknownCredential(String),
    /// A delivery report named a credential not issued to the reporting
    /// workload through the calling agent.
    #[error("credential `{0}` was not issued to this workload through this agent")]
    NotHolder(String),
    /// The request itself is malformed (bad CSR, bad audience, bad evidence).
    #[error("{0}")]
    BadRequest(String),
    /// Node attestation failed.
    #[error("{0}")]
    Attestation(#[from] JoinTokenError),
    /// A server-side failure.
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl From<hallmark_store::StoreError> for IssueError {
    fn from(e: hallmark_store::StoreError) -> Self {
        Self::Server(e.into())
    }
}

/// The authenticated caller of an issuance RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The agent's SPIFFE ID, from its verified certificate.
    pub agent: SpiffeId,
    /// How its node attested.
    pub attestation: String,
    /// The serial of the agent SVID it presented (one the server issued to
    /// this node: see [`crate::node_api`]).
    pub serial: String,
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

/// An issued JWT-SVID.
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

/// The stable, non-secret id of a join token, used in the agent's SPIFFE ID.
pub fn join_token_id(token: &str) -> String {
    hash_secret(token)[..16].to_owned()
}

/// What the node record keeps of an agent SVID just signed.
fn node_svid<'a>(
    agent: &'a SpiffeId,
    attestation_type: &'a str,
    signed: &'a SignedSvid,
    previous_serial: Option<&'a str>,
    authority_id: &'a str,
) -> hallmark_store::NodeSvid<'a> {
    hallmark_store::NodeSvid {
        agent_id: agent.as_str(),
        attestation_type,
        serial: &signed.serial,
        previous_serial,
        authority_id,
        not_after: signed.not_after,
    }
}

/// Parses the evidence selectors an agent reports.
pub fn parse_evidence(raw: &[String]) -> Result<SelectorSet, IssueError> {
    if raw.len() > MAX_EVIDENCE {
        return Err(IssueError::BadRequest(format!("at most {MAX_EVIDENCE} evidence selectors")));
    }
    raw.iter().map(|s| s.parse().map_err(|e| IssueError::BadRequest(format!("evidence: {e}")))).collect()
}

/// The renewal point: `renew_at` of the remaining life, +-5% jitter so a fleet
/// issued together does not renew together.
fn renewal_point(now: i64, not_after: i64, rules: &ClassRules) -> i64 {
    let life = (not_after - now).max(1) as f64;
    let jitter = (rand::random::<f64>() - 0.5) * 0.1;
    let at = now + (life * (rules.renew_at + jitter).clamp(0.05, 0.95)) as i64;
    at.min(not_after - 1).max(now)
}

impl ServerState {
    /// Loads the entry, checks that the calling agent may serve it and that
    /// the workload's evidence satisfies it, and completes the evidence with
    /// what the server knows of the node.
    async fn entitled_entry(
        &self,
        caller: &Caller,
        entry_id: &str,
        selectors: SelectorSet,
    ) -> Result<(Arc<Entry>, Evidence), IssueError> {
        let entry = self.registry.entry(entry_id).ok_or_else(|| IssueError::NoEntry(entry_id.to_owned()))?;
        if entry.revoked_at.is_some() {
            return Err(IssueError::Revoked(entry_id.to_owned()));
        }
        if entry.spiffe_id.is_reserved() {
            return Err(IssueError::Reserved(entry_id.to_owned()));
        }
        if entry.parent_id != caller.agent {
            return Err(IssueError::NotEntitled { agent: caller.agent.to_string(), entry: entry_id.to_owned() });
        }
        if !entry.matches(&selectors) {
            return Err(IssueError::BadRequest(format!("the workload's evidence does not satisfy entry `{entry_id}`")));
        }
        let evidence = Evidence {
            selectors,
            node_id: caller.agent.to_string(),
            node_attestation: caller.attestation.clone(),
            node_selectors: vec![format!("node:attestation:{}", caller.attestation)],
        };
        Ok((entry, evidence))
    }

    fn active_exceptions(&self, entry_id: &str, now: i64) -> Vec<ActiveException> {
        self.registry
            .active_exceptions(entry_id, now)
            .into_iter()
            .filter_map(|r| {
                Some(ActiveException { rule: r.rule.parse().ok()?, id: r.id, value: r.value, expires_at: r.expires_at })
            })
            .collect()
    }

    /// Decides one request by class and policy; records and returns a denial.
    /// Returns the policy's TTL cap and the determining policy ids when allowed.
    #[expect(clippy::too_many_arguments, reason = "the decision's inputs, named at the one call site per credential")]
    async fn decide(
        &self,
        action: Action,
        path: IssuancePath,
        entry: &Entry,
        audience: Option<&str>,
        evidence: &Evidence,
        exceptions: &[ActiveException],
        requested_ttl: u64,
        now: i64,
    ) -> Result<(Option<u64>, Vec<String>), IssueError> {
        let engine = self.policy()?;
        let rules = self.settings.classes.rules(entry.class);
        let (allowed, by, ids, cap) = if !rules.allows(path) {
            (
                false,
                format!(
                    "class `{}` rules: the `{path}` issuance path is not among the class's paths (server configuration \
                     `[classes.{}] paths`)",
                    entry.class, entry.class
                ),
                vec![format!("class:{}", entry.class)],
                None,
            )
        } else {
            let request = hallmark_policy::DecisionRequest {
                action,
                entry,
                trust_domain: self.settings.trust_domain.as_str(),
                audience,
                evidence,
                exceptions,
                requested_ttl,
                now,
            };
            let started = std::time::Instant::now();
            let decided = engine.decide(&request);
            self.metrics.decision(started.elapsed());
            match decided {
                Ok(d) => {
                    for e in &d.errors {
                        tracing::warn!(entry = %entry.id, error = %e, "policy evaluation error (policy skipped)");
                    }
                    let by = if d.allowed {
                        format!("policy v{} [{}]", engine.version(), d.policy_ids.join(", "))
                    } else {
                        d.denial_reason(engine.version())
                    };
                    (d.allowed, by, d.policy_ids, d.ttl_cap)
                }
                Err(e) => {
                    // Fail closed: a decision that cannot be made is a denial.
                    tracing::error!(entry = %entry.id, error = %e, "policy decision failed");
                    (false, format!("policy v{} (evaluation failed)", engine.version()), Vec::new(), None)
                }
            }
        };
        if allowed {
            return Ok((cap, ids));
        }
        self.metrics.denied(entry.class);
        let details = serde_json::json!({
            "requested": action.as_str(),
            "audience": audience,
            "spiffe_id": entry.spiffe_id.as_str(),
            "evidence_digest": evidence.digest(),
            "policy_ids": ids,
            "reason": by,
        });
        let mut event = self.audit_event(&format!("node:{}", evidence.node_id), "deny", &entry.id, "denied", details);
        // The denial row the reports read is written with its record, in the same batch.
        event.denial = Some(Denial {
            entry_id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.to_string(),
            action: action.as_str().to_owned(),
            audience: audience.map(str::to_owned),
            node_id: evidence.node_id.clone(),
            evidence_digest: evidence.digest(),
            policy_version: i64::try_from(engine.version()).unwrap_or(i64::MAX),
            policy_ids: ids,
            reason: by.clone(),
        });
        self.audit.record(event).await?;
        tracing::info!(entry = %entry.id, spiffe_id = %entry.spiffe_id, action = action.as_str(), audience, %by, "issuance denied");
        Err(IssueError::Denied { by })
    }

    /// The inventory row for a credential issued with `event`.
    #[expect(clippy::too_many_arguments, reason = "every column of the inventory row, from one issuance")]
    fn inventory_row(
        &self,
        kind: &str,
        id: &str,
        entry: &Entry,
        caller: &Caller,
        evidence: &Evidence,
        event: &hallmark_store::AuditEvent,
        not_before: i64,
        not_after: i64,
    ) -> hallmark_store::Credential {
        hallmark_store::Credential {
            id: id.to_owned(),
            kind: kind.to_owned(),
            entry_id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.to_string(),
            node_id: caller.agent.to_string(),
            class: entry.class.to_string(),
            owner: entry.owner.clone(),
            policy_version: event.policy_version,
            evidence_digest: evidence.digest(),
            issued_at: event.at,
            not_before,
            not_after,
            revoked_at: None,
            revoke_reason: None,
            authority_id: String::new(),
            audit_seq: 0,
            delivered_to: None,
            delivered_at: None,
            audience: None,
        }
    }

    /// Signs an X.509-SVID for `entry_id` from the agent's CSR, for a workload
    /// that showed `evidence`.
    pub async fn issue_x509(
        &self,
        caller: &Caller,
        entry_id: &str,
        csr: &[u8],
        evidence: SelectorSet,
        renewal: bool,
    ) -> Result<IssuedX509, IssueError> {
        let now = now_unix();
        // 1. The entry exists, belongs to the calling agent, and the evidence satisfies it.
        let (entry, evidence) = self.entitled_entry(caller, entry_id, evidence).await?;
        // 2. Decide: class path, then policy, at this request.
        let exceptions = self.active_exceptions(&entry.id, now);
        let action = if renewal { Action::Renew } else { Action::IssueX509 };
        let ttl_secs = entry.x509_ttl.secs();
        let (cap, policy_ids) =
            self.decide(action, IssuancePath::X509, &entry, None, &evidence, &exceptions, ttl_secs, now).await?;
        // 3. The lifetime: least of entry TTL, class ceiling (raised by exceptions), policy cap.
        let rules = self.settings.classes.rules(entry.class);
        let ttl_secs = effective_ttl(ttl_secs, rules, IssuancePath::X509, &exceptions, cap);
        // 4. Sign: the CSR signature is verified and may ask for no other identity.
        let ca = self.authorities.x509()?;
        let template = SvidTemplate {
            csr_der: csr,
            spiffe_id: &entry.spiffe_id,
            dns_names: &entry.dns_names,
            ttl_secs,
            now,
            profile: SvidProfile::Workload,
        };
        let svid = ca.sign_svid(&template).map_err(|e| IssueError::BadRequest(e.to_string()))?;
        // 5. Record, durably, before the SVID leaves the server.
        let details = serde_json::json!({
            "spiffe_id": entry.spiffe_id.as_str(),
            "serial": svid.serial,
            "not_after": svid.not_after,
            "owner": entry.owner,
            "class": entry.class.as_str(),
            "evidence_digest": evidence.digest(),
            "policy_ids": policy_ids,
        });
        let mut event = self.audit_event(&format!("node:{}", caller.agent), action.as_str(), &entry.id, "ok", details);
        let mut row = self.inventory_row(
            "x509",
            &svid.serial,
            &entry,
            caller,
            &evidence,
            &event,
            svid.not_before,
            svid.not_after,
        );
        row.authority_id = ca.id();
        event.credential = Some(row);
        self.audit.record(event).await?;
        tracing::debug!(entry = %entry.id, spiffe_id = %entry.spiffe_id, serial = %svid.serial, ttl_secs, "issued X.509-SVID");
        let renew_at = renewal_point(now, svid.not_after, rules);
        self.metrics.issued(entry.class, "x509");
        Ok(IssuedX509 { svid, renew_at, authority_id: ca.id() })
    }

    /// Mints a JWT-SVID for `entry_id` and `audience`.
    /// Each audience is decided on its own; all must be allowed, and the
    /// token lives no longer than the shortest cap among them.
    pub async fn issue_jwt(
        &self,
        caller: &Caller,
        entry_id: &str,
        audience: &[String],
        evidence: SelectorSet,
    ) -> Result<IssuedJwt, IssueError> {
        if audience.is_empty() {
            return Err(IssueError::BadRequest("at least one audience is required".into()));
        }
        if audience.len() > MAX_AUDIENCES {
            return Err(IssueError::BadRequest(format!("at most {MAX_AUDIENCES} audiences")));
        }
        if audience.iter().any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control)) {
            return Err(IssueError::BadRequest(format!(
                "each audience must be 1-{MAX_AUDIENCE_LEN} bytes with no control characters"
            )));
        }
        let now = now_unix();
        // 1. The entry exists, belongs to the calling agent, and the evidence satisfies it.
        let (entry, evidence) = self.entitled_entry(caller, entry_id, evidence).await?;
        // 2. Decide each audience.
        let exceptions = self.active_exceptions(&entry.id, now);
        let requested = entry.jwt_ttl.secs();
        let mut cap: Option<u64> = None;
        let mut policy_ids = Vec::new();
        for aud in audience {
            let (c, ids) = self
                .decide(Action::IssueJwt, IssuancePath::Jwt, &entry, Some(aud), &evidence, &exceptions, requested, now)
                .await?;
            policy_ids.extend(ids);
            cap = match (cap, c) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // 3. The lifetime; a token never outlives the key that signs it.
        let rules = self.settings.classes.rules(entry.class);
        let ttl = effective_ttl(requested, rules, IssuancePath::Jwt, &exceptions, cap);
        let key = self.authorities.jwt()?;
        let exp = (now + i64::try_from(ttl).unwrap_or(i64::MAX / 2)).min(self.authorities.jwt_not_after()?);
        // 4. Sign.
        let mut random = [0u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut random);
        let jti = hex::encode(hallmark_core::time_ordered_id(random));
        let token = key
            .mint(&entry.spiffe_id, audience, now, exp, &jti, self.settings.jwt_issuer.as_deref())
            .map_err(|e| ServerError::Ca(e.to_string()))?;
        // 5. Record, durably, before the token leaves the server.
        let details = serde_json::json!({
            "spiffe_id": entry.spiffe_id.as_str(),
            "jti": jti,
            "audience": audience,
            "not_after": exp,
            "owner": entry.owner,
            "class": entry.class.as_str(),
            "evidence_digest": evidence.digest(),
            "policy_ids": policy_ids,
        });
        let mut event = self.audit_event(&format!("node:{}", caller.agent), "issue_jwt", &entry.id, "ok", details);
        let mut row = self.inventory_row("jwt", &jti, &entry, caller, &evidence, &event, now, exp);
        row.authority_id = key.kid().to_owned();
        row.audience = Some(audience.join(","));
        event.credential = Some(row);
        self.audit.record(event).await?;
        tracing::debug!(entry = %entry.id, spiffe_id = %entry.spiffe_id, %jti, "issued JWT-SVID");
        let kid = key.kid().to_owned();
        self.metrics.issued(entry.class, "jwt");
        Ok(IssuedJwt { token, jti, kid, expires_at: exp, refresh_at: renewal_point(now, exp, rules) })
    }

    /// Node attestation by join token: verifies the CSR, burns the token, and
    /// signs the agent SVID. The CSR is checked before the token is consumed,
    /// so a malformed request does not waste a token.
    pub async fn attest_join_token(
        &self,
        token: &str,
        csr: &[u8],
    ) -> Result<(SpiffeId, SignedSvid, String), IssueError> {
        let agent_id = self
            .settings
            .trust_domain
            .agent_id(&["join_token", &join_token_id(token)])
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        let (signed, authority) = self.sign_agent(&agent_id, csr)?;
        self.store.consume_join_token(&hash_secret(token), agent_id.as_str(), now_unix()).await??;
        if self.store.node(agent_id.as_str()).await?.is_some_and(|n| n.banned) {
            return Err(IssueError::Revoked(agent_id.to_string()));
        }
        self.store.upsert_node(&node_svid(&agent_id, "join_token", &signed, None, &authority)).await?;
        let details =
            serde_json::json!({ "attestation": "join_token", "serial": signed.serial, "not_after": signed.not_after });
        self.audit.record(self.audit_event(agent_id.as_str(), "attest_node", agent_id.as_str(), "ok", details)).await?;
        tracing::info!(agent = %agent_id, "node attested with join token");
        Ok((agent_id, signed, authority))
    }

    /// Signs an agent SVID for the agent embedded in this process (`hallmark up`).
    /// The caller is this process, so no attestation evidence is exchanged.
    pub async fn attest_local(&self, agent_id: &SpiffeId, csr: &[u8]) -> Result<(SignedSvid, String), IssueError> {
        if self.store.node(agent_id.as_str()).await?.is_some_and(|n| n.banned) {
            return Err(IssueError::Revoked(agent_id.to_string()));
        }
        let (signed, authority) = self.sign_agent(agent_id, csr)?;
        self.store.upsert_node(&node_svid(agent_id, "local", &signed, None, &authority)).await?;
        Ok((signed, authority))
    }

    /// Renews an authenticated agent's SVID. The SVID it renewed with stays
    /// accepted beside the new one, so its open calls finish and a lost
    /// answer does not lock it out.
    pub async fn renew_agent(&self, caller: &Caller, csr: &[u8]) -> Result<(SignedSvid, String), IssueError> {
        let (signed, authority) = self.sign_agent(&caller.agent, csr)?;
        let record = node_svid(&caller.agent, &caller.attestation, &signed, Some(&caller.serial), &authority);
        self.store.upsert_node(&record).await?;
        Ok((signed, authority))
    }

    /// Signs an agent SVID; returns it with the id of the authority that signed it.
    fn sign_agent(&self, agent: &SpiffeId, csr: &[u8]) -> Result<(SignedSvid, String), IssueError> {
        let ca = self.authorities.x509()?;
        let t = SvidTemplate {
            csr_der: csr,
            spiffe_id: agent,
            dns_names: &[],
            ttl_secs: self.settings.agent_svid_ttl.secs(),
            now: now_unix(),
            profile: SvidProfile::Agent,
        };
        let signed = ca.sign_svid(&t).map_err(|e| IssueError::BadRequest(e.to_string()))?;
        Ok((signed, ca.id()))
    }
}
