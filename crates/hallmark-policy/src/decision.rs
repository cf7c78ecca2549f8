//! Where policy decides: one credential request in, one [`Verdict`] out.
//!
//! Every X.509 issuance, every renewal, every JWT-SVID audience and every
//! WIT-SVID is decided by [`decide`], by the server and by `hallmark policy
//! test` alike, so a policy author's test table cannot drift from what the
//! server does. The
//! steps, in order:
//!
//! 1. the entry's lifecycle class must allow the issuance path (server
//!    configuration, `[classes.<class>] paths`);
//! 2. Cedar decides over the policies whose scope can match
//!    ([`PolicyEngine`]); a decision that cannot be made is a denial (fail
//!    closed);
//! 3. an allowed credential's lifetime is the least of the entry's TTL, the
//!    class maximum (raised only by an active exception) and every determining
//!    permit's `@max_ttl`.
//!
//! What stays with the caller is what only a server can do: attesting and
//! entitling before the decision, and signing, recording and refusing after.

use std::str::FromStr;

use hallmark_core::{Class, Entry, ProcessInstance, SelectorSet, canonical_selectors, evidence_digest_of};

use crate::engine::Evaluation;
use crate::{ActiveException, Classes, IssuancePath, PolicyEngine, PolicyError};

/// What is being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A first X.509-SVID for this workload.
    IssueX509,
    /// A replacement X.509-SVID while one is held.
    Renew,
    /// A JWT-SVID for one audience.
    IssueJwt,
    /// A WIT-SVID: a workload identity token binding the workload's key,
    /// with no audience (its resource is the trust domain). It takes the
    /// JWT path: the class's JWT rules and the entry's `jwt_ttl`.
    IssueWit,
}

impl Action {
    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IssueX509 => "issue_x509",
            Self::Renew => "renew",
            Self::IssueJwt => "issue_jwt",
            Self::IssueWit => "issue_wit",
        }
    }

    /// The issuance path this action takes, as the class rules name it.
    pub fn path(self) -> IssuancePath {
        match self {
            Self::IssueX509 | Self::Renew => IssuancePath::X509,
            Self::IssueJwt | Self::IssueWit => IssuancePath::Jwt,
        }
    }
}

/// An action name that is none of Hallmark's issuance actions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}` (issue_x509, renew, issue_jwt, issue_wit)")]
pub struct ActionError(pub String);

impl FromStr for Action {
    type Err = ActionError;
    fn from_str(s: &str) -> Result<Self, ActionError> {
        match s {
            "issue_x509" => Ok(Self::IssueX509),
            "renew" => Ok(Self::Renew),
            "issue_jwt" => Ok(Self::IssueJwt),
            "issue_wit" => Ok(Self::IssueWit),
            o => Err(ActionError(o.to_owned())),
        }
    }
}

/// What attestation proved about the requesting workload and its node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evidence {
    /// The workload's attested selectors.
    pub selectors: SelectorSet,
    /// The agent's SPIFFE ID.
    pub node_id: String,
    /// How the node attested.
    pub node_attestation: String,
    /// Node facts.
    pub node_selectors: Vec<String>,
    /// The process the selectors were read from, when the agent said: part
    /// of the recorded evidence and its digest, never of the decision (no
    /// policy can name one process).
    pub process: Option<ProcessInstance>,
}

impl Evidence {
    /// The executable digest among the selectors, or "".
    pub fn exe_sha256(&self) -> &str {
        self.value("unix", "sha256")
    }

    /// The value of the first selector `kind:key:…`, or "".
    pub fn value(&self, kind: &str, key: &str) -> &str {
        self.selectors.iter().find(|s| s.kind() == kind && s.key() == key).map(|s| s.value()).unwrap_or("")
    }

    /// The values of every selector `kind:key:…`.
    pub fn values<'a>(&'a self, kind: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.selectors.iter().filter(move |s| s.kind() == kind && s.key() == key).map(|s| s.value())
    }

    /// The digest of the workload evidence (selectors and process) that
    /// records name it by ([`evidence_digest_of`]).
    pub fn digest(&self) -> String {
        evidence_digest_of(&canonical_selectors(&self.selectors), self.process.as_ref())
    }
}

/// One request for one credential: everything the decision reads.
///
/// The requested lifetime is not a field: it is the entry's TTL for the
/// action's path ([`IssuanceRequest::requested_ttl`]), so no caller can ask
/// for another.
#[derive(Debug, Clone, Copy)]
pub struct IssuanceRequest<'a> {
    /// What is asked for.
    pub action: Action,
    /// The entry the workload matched (and is entitled to).
    pub entry: &'a Entry,
    /// The audience, for `issue_jwt` (each audience is its own request).
    pub audience: Option<&'a str>,
    /// What attestation proved.
    pub evidence: &'a Evidence,
    /// The entry's approved exceptions in force at `now`.
    pub exceptions: &'a [ActiveException],
    /// Unix seconds of the decision.
    pub now: i64,
    /// The lifecycle class rules in force.
    pub classes: &'a Classes,
    /// The trust domain's name: the resource of X.509 actions.
    pub trust_domain: &'a str,
    /// The task it is made for, if any (`bind: task` entries).
    pub task: Option<&'a TaskFacts>,
}

/// What the decision sees of the task a request is made for (AI agents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFacts {
    /// The task's id.
    pub id: String,
    /// SHA-256 (hex) of its current objective.
    pub objective_sha256: String,
    /// The audiences in its scope.
    pub scope: Vec<String>,
    /// The subject it acts for ("" if none).
    pub on_behalf_of: String,
    /// Scope audiences a person approved under the current objective.
    pub approved: Vec<String>,
    /// Scope audiences still waiting for approval.
    pub pending_approval: Vec<String>,
    /// How many actors delegated before this one (0: the agent itself).
    pub delegation_depth: i64,
}

impl IssuanceRequest<'_> {
    /// Seconds the entry asks for on this action's path.
    pub fn requested_ttl(&self) -> u64 {
        match self.action.path() {
            IssuancePath::Jwt => self.entry.jwt_ttl.secs(),
            IssuancePath::X509 | IssuancePath::Recovery => self.entry.x509_ttl.secs(),
        }
    }
}

/// Allowed with a lifetime, or denied with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Issue a credential living at most `ttl_secs`.
    Allowed {
        /// The lifetime granted, seconds (before the signing authority's own
        /// expiry, which the signer applies).
        ttl_secs: u64,
    },
    /// Refuse.
    Denied {
        /// Why, in one line: what is recorded with the denial and shown by
        /// `hallmark entry denials`.
        reason: String,
    },
}

/// What decided a [`Verdict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// The entry's lifecycle class does not allow the issuance path.
    ClassRule {
        /// The entry's class.
        class: Class,
        /// The path it does not allow.
        path: IssuancePath,
    },
    /// The determining permits allowed it (no forbid applied).
    Permit,
    /// One or more forbids denied it.
    Forbid,
    /// No permit matched: Cedar's default deny.
    NoPermit {
        /// The permits whose scope names this action, principal and
        /// resource (sorted): what the default deny chose from.
        considered: Vec<String>,
    },
    /// The decision could not be made, so it is a denial (fail closed).
    EvaluationFailed {
        /// Why it could not be made.
        error: PolicyError,
    },
}

/// The answer to one [`IssuanceRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed with a lifetime, or denied with a reason.
    pub decision: Decision,
    /// What decided.
    pub decided_by: DecidedBy,
    /// The ids recorded with the decision: the determining permits (allowed)
    /// or forbids (denied), sorted; `class:<class>` for a class rule; none
    /// for a default deny or a failed evaluation.
    pub policy_ids: Vec<String>,
    /// The policy version consulted.
    pub policy_version: u64,
    /// Policies whose evaluation failed for this request, one line each.
    /// Cedar skips them (a skipped forbid cannot deny), so the caller should
    /// make them visible.
    pub skipped: Vec<String>,
}

impl Verdict {
    /// Whether a credential may be issued.
    pub fn allowed(&self) -> bool {
        matches!(self.decision, Decision::Allowed { .. })
    }

    /// The lifetime granted, seconds, when allowed.
    pub fn ttl_secs(&self) -> Option<u64> {
        match self.decision {
            Decision::Allowed { ttl_secs } => Some(ttl_secs),
            Decision::Denied { .. } => None,
        }
    }

    /// Why it was denied, when denied.
    pub fn reason(&self) -> Option<&str> {
        match &self.decision {
            Decision::Allowed { .. } => None,
            Decision::Denied { reason } => Some(reason),
        }
    }
}

/// Decides one credential request: class rule, then Cedar, then lifetime.
/// This is the only decision; it never fails, because a decision that cannot
/// be made is a denial ([`DecidedBy::EvaluationFailed`]).
pub fn decide(engine: &PolicyEngine, request: &IssuanceRequest<'_>) -> Verdict {
    let version = engine.version();
    let class = request.entry.class;
    let path = request.action.path();
    let rules = request.classes.rules(class);
    // 1. The class gate: a path the class does not have is never put to policy.
    if !rules.allows(path) {
        return Verdict {
            decision: Decision::Denied {
                reason: format!(
                    "class `{class}` rules: the `{path}` issuance path is not among the class's paths (server \
                     configuration `[classes.{class}] paths`)"
                ),
            },
            decided_by: DecidedBy::ClassRule { class, path },
            policy_ids: vec![format!("class:{class}")],
            policy_version: version,
            skipped: Vec::new(),
        };
    }
    // 2. Cedar; failing to decide is denying.
    let Evaluation { allowed, policy_ids, ttl_cap, errors, considered } = match engine.evaluate(request) {
        Ok(e) => e,
        Err(error) => return evaluation_failed(version, error),
    };
    let (decision, decided_by) = if allowed {
        // 3. The lifetime.
        (Decision::Allowed { ttl_secs: lifetime(request, ttl_cap) }, DecidedBy::Permit)
    } else if !policy_ids.is_empty() {
        let reason = format!("policy v{version}: forbidden by {}", quoted(&policy_ids));
        (Decision::Denied { reason }, DecidedBy::Forbid)
    } else {
        let reason = if considered.is_empty() {
            format!("policy v{version}: no permit applies to this action and resource (default deny)")
        } else {
            format!("policy v{version}: no permit matched (default deny); permits considered: {}", quoted(&considered))
        };
        (Decision::Denied { reason }, DecidedBy::NoPermit { considered })
    };
    Verdict { decision, decided_by, policy_ids, policy_version: version, skipped: errors }
}

/// The lifetime of an allowed credential: the least of the entry's TTL, the
/// class ceiling (raised by exceptions for this path) and the determining
/// permits' least `@max_ttl`.
fn lifetime(request: &IssuanceRequest<'_>, permit_cap: Option<u64>) -> u64 {
    let path = request.action.path();
    let class_max = request.classes.rules(request.entry.class).max_ttl.secs();
    let ceiling = request.exceptions.iter().filter_map(|e| e.raised_ceiling(path)).fold(class_max, u64::max);
    let ttl = request.requested_ttl().min(ceiling);
    permit_cap.map_or(ttl, |cap| ttl.min(cap))
}

/// Policy ids as a reason names them: `` `a`, `b` ``.
fn quoted(ids: &[String]) -> String {
    ids.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

/// What the subject token of a token exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A JWT-SVID this server issued.
    JwtSvid,
    /// An ID token from a configured OpenID Connect issuer.
    IdToken,
    /// A token this server's token exchange issued earlier (the chain grows).
    Exchanged,
}

impl SubjectKind {
    /// The value of the context's `subject_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JwtSvid => "jwt_svid",
            Self::IdToken => "id_token",
            Self::Exchanged => "exchanged",
        }
    }
}

/// One token exchange (RFC 8693) for one audience: everything the decision
/// reads. Both tokens are verified before it is asked.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeRequest<'a> {
    /// The actor's SPIFFE ID (its token's `sub`): the principal.
    pub actor: &'a str,
    /// That SPIFFE ID's path.
    pub actor_path: &'a str,
    /// The audience or resource asked for: the resource.
    pub audience: &'a str,
    /// The subject token's `sub`.
    pub subject: &'a str,
    /// The subject token's issuer.
    pub subject_issuer: &'a str,
    /// What the subject token is.
    pub subject_kind: SubjectKind,
    /// Every actor SPIFFE ID in the new token's `act` chain, newest first.
    pub chain: &'a [String],
    /// How many `act` levels the new token nests.
    pub depth: u32,
    /// Where the chain starts (the subject).
    pub origin: &'a str,
    /// The scopes asked for.
    pub scope: &'a [String],
    /// Unix seconds of the decision.
    pub now: i64,
    /// The longest lifetime the server gives an exchanged token, seconds
    /// (`[token_exchange] max_ttl`); a permit's `@max_ttl` may lower it.
    pub max_ttl: u64,
}

/// The verdict when Cedar could not decide: a denial.
fn evaluation_failed(version: u64, error: PolicyError) -> Verdict {
    Verdict {
        decision: Decision::Denied { reason: format!("policy v{version} (evaluation failed)") },
        decided_by: DecidedBy::EvaluationFailed { error },
        policy_ids: Vec::new(),
        policy_version: version,
        skipped: Vec::new(),
    }
}

/// The verdict of an action decided only by the policies naming it (token
/// exchange, a login): allowed for the least of `ceiling` and the permits'
/// `@max_ttl`; denied by the forbids, or by default when no permit matched.
fn scoped_verdict(version: u64, action: &str, ceiling: u64, eval: Evaluation) -> Verdict {
    let Evaluation { allowed, policy_ids, ttl_cap, errors, considered } = eval;
    let (decision, decided_by) = if allowed {
        let ttl_secs = ttl_cap.map_or(ceiling, |cap| cap.min(ceiling));
        (Decision::Allowed { ttl_secs }, DecidedBy::Permit)
    } else if !policy_ids.is_empty() {
        let reason = format!("policy v{version}: forbidden by {}", quoted(&policy_ids));
        (Decision::Denied { reason }, DecidedBy::Forbid)
    } else {
        let reason = if considered.is_empty() {
            format!("policy v{version}: no permit names action `{action}` (default deny)")
        } else {
            format!("policy v{version}: no permit matched (default deny); permits considered: {}", quoted(&considered))
        };
        (Decision::Denied { reason }, DecidedBy::NoPermit { considered })
    };
    Verdict { decision, decided_by, policy_ids, policy_version: version, skipped: errors }
}

/// Decides one token exchange: Cedar, over the policies whose action scope
/// names `exchange_token` (an unscoped permit does not allow delegation),
/// then the lifetime (the least of `max_ttl` and the determining permits'
/// `@max_ttl`). No permit is a denial; so is a decision that cannot be made.
pub fn decide_exchange(engine: &PolicyEngine, request: &ExchangeRequest<'_>) -> Verdict {
    let version = engine.version();
    match engine.evaluate_exchange(request) {
        Ok(eval) => scoped_verdict(version, "exchange_token", request.max_ttl, eval),
        Err(error) => evaluation_failed(version, error),
    }
}

/// A person's login (`hallmark login`) or break-glass login: everything the
/// decision reads. The ID token is verified before it is asked.
#[derive(Debug, Clone, Copy)]
pub struct LoginRequest<'a> {
    /// The person's SPIFFE ID (rendered from the token): the principal.
    pub spiffe_id: &'a str,
    /// Its path.
    pub path: &'a str,
    /// The configured issuer's name.
    pub issuer: &'a str,
    /// The token's `iss`.
    pub issuer_url: &'a str,
    /// The token's `sub`.
    pub subject: &'a str,
    /// The token's `email`, or "".
    pub email: &'a str,
    /// The token's `email_verified`.
    pub email_verified: bool,
    /// The token's `name`, or "".
    pub name: &'a str,
    /// The token's `groups`.
    pub token_groups: &'a [String],
    /// The person's SCIM groups.
    pub scim_groups: &'a [String],
    /// Whether SCIM provisioned the person.
    pub provisioned: bool,
    /// The token's `amr`.
    pub amr: &'a [String],
    /// Seconds asked for.
    pub requested_ttl: u64,
    /// A break-glass login (action `break_glass`) rather than `login`.
    pub break_glass: bool,
    /// The trust domain: the resource.
    pub trust_domain: &'a str,
    /// Unix seconds of the decision.
    pub now: i64,
    /// The longest lifetime the server gives: the human class's maximum, or
    /// the break-glass lifetime; a permit's `@max_ttl` may lower it.
    pub max_ttl: u64,
}

/// Decides a person's login: Cedar, over the policies whose action scope
/// names `login` (or `break_glass`), then the lifetime (the least of what
/// was asked, `max_ttl` and the determining permits' `@max_ttl`). No permit
/// is a denial; so is a decision that cannot be made.
pub fn decide_login(engine: &PolicyEngine, request: &LoginRequest<'_>) -> Verdict {
    let version = engine.version();
    let action = if request.break_glass { "break_glass" } else { "login" };
    let ceiling = request.max_ttl.min(request.requested_ttl.max(1));
    match engine.evaluate_login(request) {
        Ok(eval) => scoped_verdict(version, action, ceiling, eval),
        Err(error) => evaluation_failed(version, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExceptionRule;
    use crate::engine::tests::entry;
    use hallmark_core::Ttl;

    fn evidence() -> Evidence {
        Evidence {
            selectors: ["unix:uid:1000".parse().unwrap()].into(),
            node_id: "spiffe://example.org/hallmark/agent/local".into(),
            node_attestation: "local".into(),
            node_selectors: vec![],
            process: None,
        }
    }

    fn ask(
        engine: &PolicyEngine,
        e: &Entry,
        action: Action,
        aud: Option<&str>,
        exceptions: &[ActiveException],
        classes: &Classes,
    ) -> Verdict {
        let ev = evidence();
        decide(
            engine,
            &IssuanceRequest {
                action,
                entry: e,
                audience: aud,
                evidence: &ev,
                exceptions,
                now: 1_700_000_000,
                classes,
                trust_domain: "example.org",
                task: None,
            },
        )
    }

    /// A denial says what decided it: the forbids, or (default deny) that no
    /// permit matched and which permits were considered.
    #[test]
    fn denials_explain_themselves() {
        let text = "@id(\"db-only\") permit(principal, action == Action::\"issue_jwt\", resource == Audience::\"db\") \
                    when { context.requested_ttl < 0 };\n\
                    @id(\"any-jwt\") permit(principal, action == Action::\"issue_jwt\", resource) when { false };\n\
                    @id(\"no-s3\") forbid(principal, action, resource == Audience::\"s3\");";
        let engine = PolicyEngine::compile(text, 7).unwrap();
        let e = entry("w", "team");
        let c = Classes::default();
        let v = ask(&engine, &e, Action::IssueJwt, Some("db"), &[], &c);
        assert!(!v.allowed());
        assert_eq!(
            v.reason(),
            Some("policy v7: no permit matched (default deny); permits considered: `any-jwt`, `db-only`")
        );
        assert_eq!(v.decided_by, DecidedBy::NoPermit { considered: vec!["any-jwt".into(), "db-only".into()] });
        let v = ask(&engine, &e, Action::IssueJwt, Some("s3"), &[], &c);
        assert_eq!(v.reason(), Some("policy v7: forbidden by `no-s3`"));
        assert_eq!((v.decided_by, v.policy_ids), (DecidedBy::Forbid, vec!["no-s3".to_owned()]));
        let v = ask(&engine, &e, Action::IssueX509, None, &[], &c);
        assert_eq!(v.reason(), Some("policy v7: no permit applies to this action and resource (default deny)"));
    }

    /// The class gate comes first: a path the class lacks is denied before
    /// any policy, even one that permits everything.
    #[test]
    fn the_class_gate_comes_before_policy() {
        let engine = PolicyEngine::compile(crate::DEFAULT_POLICY, 2).unwrap();
        let mut classes = Classes::default();
        classes.agent.paths = vec![IssuancePath::X509];
        let mut e = entry("bot", "team");
        e.class = Class::Agent;
        let v = ask(&engine, &e, Action::IssueJwt, Some("db"), &[], &classes);
        assert_eq!(v.decided_by, DecidedBy::ClassRule { class: Class::Agent, path: IssuancePath::Jwt });
        assert_eq!(v.policy_ids, vec!["class:agent"]);
        assert_eq!(
            v.reason(),
            Some(
                "class `agent` rules: the `jwt` issuance path is not among the class's paths (server configuration \
                 `[classes.agent] paths`)"
            )
        );
        assert!(ask(&engine, &e, Action::Renew, None, &[], &classes).allowed());
    }

    /// A request Cedar cannot evaluate is denied, never allowed.
    #[test]
    fn a_decision_that_cannot_be_made_is_a_denial() {
        let engine = PolicyEngine::compile(crate::DEFAULT_POLICY, 3).unwrap();
        let v = ask(&engine, &entry("w", "team"), Action::IssueJwt, None, &[], &Classes::default());
        assert!(matches!(v.decided_by, DecidedBy::EvaluationFailed { error: PolicyError::NoAudience }), "{v:?}");
        assert_eq!(v.reason(), Some("policy v3 (evaluation failed)"));
        assert!(v.policy_ids.is_empty());
    }

    /// The lifetime is the least of entry TTL, class ceiling (raised by an
    /// exception for its path only) and the determining permits' caps.
    #[test]
    fn the_lifetime_is_the_least_of_every_limit() {
        let text = r#"@id("short") @max_ttl("15m") permit(principal, action == Action::"issue_jwt", resource);
                      @id("x509") permit(principal, action in [Action::"issue_x509", Action::"renew"], resource);"#;
        let engine = PolicyEngine::compile(text, 1).unwrap();
        let c = Classes::default();
        let mut e = entry("w", "team");
        e.x509_ttl = Ttl::parse("48h").unwrap();
        e.jwt_ttl = Ttl::parse("1h").unwrap();
        let day = 24 * 3600;
        assert_eq!(ask(&engine, &e, Action::IssueX509, None, &[], &c).ttl_secs(), Some(day), "class maximum");
        assert_eq!(ask(&engine, &e, Action::IssueJwt, Some("a"), &[], &c).ttl_secs(), Some(900), "@max_ttl");
        let long = |rule, value: &str| ActiveException {
            id: "x".into(),
            rule,
            value: value.into(),
            expires_at: 1_700_086_400,
        };
        let legacy = [long(ExceptionRule::LongLivedCertificate, "36h")];
        assert_eq!(ask(&engine, &e, Action::Renew, None, &legacy, &c).ttl_secs(), Some(36 * 3600));
        e.jwt_ttl = Ttl::parse("48h").unwrap();
        let engine = PolicyEngine::compile(crate::DEFAULT_POLICY, 1).unwrap();
        let v = ask(&engine, &e, Action::IssueJwt, Some("a"), &legacy, &c);
        assert_eq!(v.ttl_secs(), Some(day), "long_lived_certificate raises X.509 only");
        let raised = [long(ExceptionRule::TtlAboveClassMax, "30h")];
        assert_eq!(ask(&engine, &e, Action::IssueJwt, Some("a"), &raised, &c).ttl_secs(), Some(30 * 3600));
    }

    /// A WIT-SVID is its own Cedar action on the trust domain: the default
    /// permit allows it, a policy can name it alone, and it takes the JWT
    /// path (the class's JWT rules, the entry's `jwt_ttl`).
    #[test]
    fn wits_are_decided_on_the_trust_domain_by_the_jwt_path() {
        assert_eq!("issue_wit".parse::<Action>(), Ok(Action::IssueWit));
        assert_eq!(Action::IssueWit.as_str(), "issue_wit");
        let c = Classes::default();
        let mut e = entry("w", "team");
        e.x509_ttl = Ttl::parse("12h").unwrap();
        e.jwt_ttl = Ttl::parse("10m").unwrap();
        let default = PolicyEngine::compile(crate::DEFAULT_POLICY, 1).unwrap();
        let v = ask(&default, &e, Action::IssueWit, None, &[], &c);
        assert_eq!(v.ttl_secs(), Some(600), "the entry's jwt_ttl: {v:?}");
        let text = r#"@id("wit") @max_ttl("5m") permit(principal, action == Action::"issue_wit", resource == TrustDomain::"example.org");
                      @id("no-wit-for-root") forbid(principal, action == Action::"issue_wit", resource) when { context.selectors.contains("unix:uid:0") };"#;
        let engine = PolicyEngine::compile(text, 2).unwrap();
        assert_eq!(ask(&engine, &e, Action::IssueWit, None, &[], &c).ttl_secs(), Some(300));
        assert!(!ask(&engine, &e, Action::IssueJwt, Some("db"), &[], &c).allowed(), "a WIT permit is not a JWT's");
        let mut classes = Classes::default();
        classes.machine.paths = vec![IssuancePath::X509];
        let v = ask(&default, &e, Action::IssueWit, None, &[], &classes);
        assert_eq!(v.decided_by, DecidedBy::ClassRule { class: Class::Machine, path: IssuancePath::Jwt });
        // A WIT's resource is the trust domain: a permit naming an audience never applies to it.
        let aud = PolicyEngine::compile(r#"permit(principal, action, resource == Audience::"db");"#, 3).unwrap();
        assert!(!ask(&aud, &e, Action::IssueWit, None, &[], &c).allowed());
    }

    fn exchange<'a>(
        actor: &'a str,
        audience: &'a str,
        chain: &'a [String],
        scope: &'a [String],
    ) -> ExchangeRequest<'a> {
        ExchangeRequest {
            actor,
            actor_path: actor.trim_start_matches("spiffe://example.org"),
            audience,
            subject: "spiffe://example.org/user/alice",
            subject_issuer: "spiffe://example.org",
            subject_kind: SubjectKind::JwtSvid,
            chain,
            depth: u32::try_from(chain.len()).unwrap(),
            origin: "spiffe://example.org/user/alice",
            scope,
            now: 1_700_000_000,
            max_ttl: 300,
        }
    }

    /// An exchange is decided only by policies naming `exchange_token`: the
    /// default policy permits issuance, not delegation; a permit reads the
    /// actor, the chain, the depth and the scopes; forbids win; `@max_ttl`
    /// lowers the server's maximum.
    #[test]
    fn exchanges_are_decided_by_policies_naming_exchange_token() {
        let planner = "spiffe://example.org/agents/planner".to_owned();
        let tool = "spiffe://example.org/agents/tool".to_owned();
        let one = [planner.clone()];
        let two = [tool.clone(), planner.clone()];
        let read = ["read".to_owned()];
        let default = PolicyEngine::compile(crate::DEFAULT_POLICY, 1).unwrap();
        let v = decide_exchange(&default, &exchange(&planner, "db", &one, &read));
        assert_eq!(v.reason(), Some("policy v1: no permit names action `exchange_token` (default deny)"));

        let text = r#"
            @id("agents-to-db") @max_ttl("1m")
            permit(principal, action == Action::"exchange_token", resource == Audience::"db")
              when { principal.path like "/agents/*" && context.depth <= 2
                     && context.chain.contains("spiffe://example.org/agents/planner")
                     && context.subject_kind == "jwt_svid" && context.origin like "spiffe://example.org/user/*"
                     && context.scope.containsAll(["read"]) };
            @id("no-deep-tools") forbid(principal, action in [Action::"exchange_token"], resource)
              when { context.depth > 1 && principal.spiffe_id == "spiffe://example.org/agents/tool" };
            @id("issuance") permit(principal, action, resource) when { context.selectors.contains("unix:uid:0") };
        "#;
        let engine = PolicyEngine::compile(text, 2).unwrap();
        let v = decide_exchange(&engine, &exchange(&planner, "db", &one, &read));
        assert_eq!((v.ttl_secs(), v.policy_ids.clone()), (Some(60), vec!["agents-to-db".to_owned()]), "{v:?}");
        let v = decide_exchange(&engine, &exchange(&planner, "db", &one, &[]));
        assert_eq!(v.decided_by, DecidedBy::NoPermit { considered: vec!["agents-to-db".into()] }, "scope missing");
        assert!(!decide_exchange(&engine, &exchange(&planner, "s3", &one, &read)).allowed(), "other audience");
        let v = decide_exchange(&engine, &exchange(&tool, "db", &two, &read));
        assert_eq!((v.decided_by, v.policy_ids), (DecidedBy::Forbid, vec!["no-deep-tools".to_owned()]));
        // Without a cap, the server's maximum.
        let uncapped =
            PolicyEngine::compile(r#"permit(principal, action == Action::"exchange_token", resource);"#, 3).unwrap();
        assert_eq!(decide_exchange(&uncapped, &exchange(&planner, "db", &one, &[])).ttl_secs(), Some(300));
        // The README's sample validates.
        let sample = r#"
            @id("agents-act-for-users") @max_ttl("2m")
            permit(principal, action == Action::"exchange_token", resource == Audience::"db")
              when { principal.path like "/agents/*" && context.origin like "spiffe://example.org/user/*"
                     && context.depth <= 2 && ["read"].containsAll(context.scope) };
            @id("no-untrusted-tools-in-chains")
            forbid(principal, action == Action::"exchange_token", resource)
              when { context.chain.contains("spiffe://example.org/agents/untrusted") };
        "#;
        let sample = PolicyEngine::compile(sample, 5).unwrap();
        assert!(decide_exchange(&sample, &exchange(&planner, "db", &one, &read)).allowed());
        // An exchange policy reading issuance context does not validate.
        let bad = PolicyEngine::compile(
            r#"permit(principal, action == Action::"exchange_token", resource) when { context.selectors.isEmpty() };"#,
            4,
        );
        assert!(matches!(bad, Err(PolicyError::Validation(_))), "{bad:?}");
    }

    fn login<'a>(groups: &'a [String], break_glass: bool) -> LoginRequest<'a> {
        LoginRequest {
            spiffe_id: "spiffe://example.org/human/example.com/alice",
            path: "/human/example.com/alice",
            issuer: "corp",
            issuer_url: "https://idp.example.com",
            subject: "alice",
            email: "alice@example.com",
            email_verified: true,
            name: "Alice",
            token_groups: groups,
            scim_groups: &[],
            provisioned: false,
            amr: &[],
            requested_ttl: 8 * 3600,
            break_glass,
            trust_domain: "example.org",
            now: 1_700_000_000,
            max_ttl: 8 * 3600,
        }
    }

    /// Issue 19: logins are decided only by policies naming `login` (or
    /// `break_glass`): the default policy names them; a workload policy's
    /// unscoped permit does not let anyone sign in; a group rule and a
    /// `@max_ttl` apply; a forbid wins.
    #[test]
    fn logins_are_decided_by_login_policies_only() {
        let eng = PolicyEngine::compile(crate::DEFAULT_POLICY, 1).unwrap();
        let v = decide_login(&eng, &login(&[], false));
        assert_eq!(v.decision, Decision::Allowed { ttl_secs: 8 * 3600 });
        assert_eq!(v.policy_ids, vec!["people-login".to_owned()]);
        assert!(decide_login(&eng, &login(&[], true)).allowed());

        let workloads_only = PolicyEngine::compile("permit(principal, action, resource);", 2).unwrap();
        let v = decide_login(&workloads_only, &login(&[], false));
        assert!(!v.allowed());
        assert!(v.reason().unwrap().contains("no permit names action `login`"), "{:?}", v.reason());

        let groups = PolicyEngine::compile(
            r#"@id("eng") @max_ttl("1h") permit(principal, action == Action::"login", resource)
                 when { context.groups.contains("eng") && context.email_verified };
               @id("no-contractors") forbid(principal, action in [Action::"login", Action::"break_glass"], resource)
                 when { context.groups.contains("contractors") };"#,
            3,
        )
        .unwrap();
        let eng_group = ["eng".to_owned()];
        assert_eq!(decide_login(&groups, &login(&eng_group, false)).decision, Decision::Allowed { ttl_secs: 3600 });
        assert!(!decide_login(&groups, &login(&[], false)).allowed());
        assert!(!decide_login(&groups, &login(&eng_group, true)).allowed(), "break_glass is its own action");
        let both = ["eng".to_owned(), "contractors".to_owned()];
        let v = decide_login(&groups, &login(&both, false));
        assert!(!v.allowed());
        assert_eq!(v.policy_ids, vec!["no-contractors".to_owned()]);

        // A kill switch (a forbid for every action) stops logins as well.
        let text = format!("{}\n@id(\"freeze\") forbid(principal, action, resource);", crate::DEFAULT_POLICY);
        let frozen = PolicyEngine::compile(&text, 4).unwrap();
        let v = decide_login(&frozen, &login(&[], false));
        assert!(!v.allowed());
        assert_eq!(v.policy_ids, vec!["freeze".to_owned()]);
    }
}
