//! Cedar policies: compiled once per version, evaluated per request. The
//! decision around the evaluation (class gate, failing closed, lifetime) is
//! [`crate::decide`]'s, in `decision.rs`; only it asks the engine.
//!
//! Cedar evaluates every policy it is handed, so a decision over thousands of
//! policies would cost milliseconds. Policies are therefore indexed by their
//! principal and resource scope, and each decision hands Cedar only the
//! policies whose scope can match the request: unscoped ones, those naming
//! this workload or its owner, and those naming this resource.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use hallmark_core::{Entry, Ttl};
use sha2::{Digest, Sha256};

use crate::{Action, ExchangeRequest, IssuanceRequest, LoginRequest, SCHEMA, TaskFacts};

/// The line of the schema after which the token-exchange part begins
/// (validated only for policies naming `exchange_token`).
const EXCHANGE_SECTION: &str = "// ---- token exchange (RFC 8693) ----";

/// The Cedar id of the token-exchange action.
pub const EXCHANGE_ACTION: &str = "exchange_token";

/// The Cedar ids of a person's login and break-glass login.
pub const LOGIN_ACTIONS: [&str; 2] = ["login", "break_glass"];

/// Why a policy set was refused or a decision could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text does not parse as Cedar.
    #[error("policy does not parse: {0}")]
    Parse(String),
    /// The policies do not validate against Hallmark's schema.
    #[error("policy fails schema validation: {0}")]
    Validation(String),
    /// An annotation is malformed, or two policies share an `@id`.
    #[error("{0}")]
    Annotation(String),
    /// The request could not be built (a bug, or input the schema rejects).
    #[error("cannot build policy request: {what}: {}", one_line(source))]
    Request {
        /// What was being built.
        what: &'static str,
        /// Cedar's error.
        #[source]
        source: CedarError,
    },
    /// A JWT-SVID request names no audience: there is no resource to decide on.
    #[error("cannot build policy request: issue_jwt needs an audience")]
    NoAudience,
    /// The action is missing from the schema (a bug).
    #[error("cannot build policy request: action `{0}` is not in the schema")]
    UnknownAction(&'static str),
}

/// An error Cedar returned while a request was built, kept as the source of
/// [`PolicyError::Request`]. Shared, so a [`PolicyError`] stays cheap to
/// clone; two are equal when they say the same.
#[derive(Clone)]
pub struct CedarError(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Debug for CedarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for CedarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for CedarError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for CedarError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for CedarError {}

/// Cedar's error while building `what`, as a [`PolicyError::Request`].
fn request_error<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> PolicyError {
    move |e| PolicyError::Request { what, source: CedarError(Arc::new(e)) }
}

/// Cedar's answer to one request, before the class gate and the lifetime
/// turn it into a [`crate::Verdict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evaluation {
    /// Allowed or denied.
    pub(crate) allowed: bool,
    /// Ids of the policies that determined the decision (sorted).
    pub(crate) policy_ids: Vec<String>,
    /// The least `@max_ttl` among the determining permits, seconds.
    pub(crate) ttl_cap: Option<u64>,
    /// Policies that failed to evaluate (they are skipped by Cedar).
    pub(crate) errors: Vec<String>,
    /// Ids of the permits whose scope could match this request (sorted): what
    /// a denial with no determining policy had to choose from.
    pub(crate) considered: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Any,
    Uid(EntityUid),
}

/// A compiled, validated, indexed policy version.
pub struct PolicyEngine {
    text: String,
    hash: String,
    version: u64,
    count: usize,
    index: HashMap<(Scope, Scope), PolicySet>,
    effects: HashMap<PolicyId, Effect>,
    caps: HashMap<PolicyId, u64>,
    /// The policies whose action scope names `exchange_token`: the only
    /// ones that decide an exchange.
    exchange: PolicySet,
    /// The policies whose action scope names `login` or `break_glass`: the
    /// only ones that decide a person's login.
    people: PolicySet,
    authorizer: Authorizer,
    names: Names,
    /// Cedar entities keyed by everything they are built from (entry id,
    /// SPIFFE ID, owner, class). They come from the entry alone, never from
    /// evidence or a previous decision, so reusing them caches data, not an answer.
    entities: Mutex<HashMap<EntitiesKey, Arc<Entities>>>,
}

type EntitiesKey = (String, String, String, &'static str);

/// Most entries whose Cedar entities are kept; the cache is cleared beyond this.
const MAX_CACHED_ENTITIES: usize = 100_000;

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("version", &self.version).field("policies", &self.count).finish()
    }
}

fn type_name(kind: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(kind).map_err(request_error("an entity type"))
}

/// Entity types and action ids, parsed once: Cedar parses names with its full
/// grammar, which would otherwise be a visible share of every decision.
struct Names {
    workload: EntityTypeName,
    owner: EntityTypeName,
    trust_domain: EntityTypeName,
    audience: EntityTypeName,
    actor: EntityTypeName,
    human: EntityTypeName,
    actions: HashMap<Action, EntityUid>,
    exchange: EntityUid,
    /// `login`, `break_glass`.
    logins: [EntityUid; 2],
}

impl Names {
    fn new() -> Result<Self, PolicyError> {
        let action = type_name("Action")?;
        let actions = [Action::IssueX509, Action::Renew, Action::IssueJwt, Action::IssueWit]
            .into_iter()
            .map(|a| (a, EntityUid::from_type_name_and_id(action.clone(), EntityId::new(a.as_str()))))
            .collect();
        Ok(Self {
            workload: type_name("Workload")?,
            owner: type_name("Owner")?,
            trust_domain: type_name("TrustDomain")?,
            audience: type_name("Audience")?,
            actor: type_name("Actor")?,
            human: type_name("Human")?,
            logins: LOGIN_ACTIONS.map(|a| EntityUid::from_type_name_and_id(action.clone(), EntityId::new(a))),
            exchange: EntityUid::from_type_name_and_id(action, EntityId::new(EXCHANGE_ACTION)),
            actions,
        })
    }

    fn uid(t: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
    }
}

fn str_set<'a>(items: impl IntoIterator<Item = &'a str>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(|s| RestrictedExpression::new_string(s.to_owned())))
}

/// Joins a multi-error report into one line.
/// The task's part of the context: empty strings and sets, and depth 0,
/// when the request is made for no task.
fn task_context(task: Option<&TaskFacts>) -> [(String, RestrictedExpression); 7] {
    let none = TaskFacts::default();
    let t = task.unwrap_or(&none);
    [
        ("task_id".to_owned(), RestrictedExpression::new_string(t.id.clone())),
        ("task_objective_sha256".to_owned(), RestrictedExpression::new_string(t.objective_sha256.clone())),
        ("task_scope".to_owned(), str_set(t.scope.iter().map(String::as_str))),
        ("task_on_behalf_of".to_owned(), RestrictedExpression::new_string(t.on_behalf_of.clone())),
        ("task_approved".to_owned(), str_set(t.approved.iter().map(String::as_str))),
        ("task_pending_approval".to_owned(), str_set(t.pending_approval.iter().map(String::as_str))),
        ("delegation_depth".to_owned(), RestrictedExpression::new_long(t.delegation_depth)),
    ]
}

fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Renders a Cedar diagnostic as `line L:C: message (help)` on one line.
fn diagnostic(text: &str, d: &dyn miette::Diagnostic) -> String {
    let mut out = String::new();
    if let Some(label) = d.labels().and_then(|mut l| l.next()) {
        let offset = label.offset().min(text.len());
        let before = text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        out.push_str(&format!("line {line}:{col}: "));
    }
    out.push_str(&one_line(d));
    if let Some(help) = d.help() {
        out.push_str(&format!(" ({})", one_line(help)));
    }
    out
}

/// Hallmark's schema, parsed: issuance and token exchange.
pub fn schema() -> Result<Schema, PolicyError> {
    parse_schema(SCHEMA)
}

/// The issuance part of the schema (everything before the token-exchange
/// section), which policies that do not name `exchange_token` are
/// validated against: a policy with an unscoped action that reads issuance
/// context must not become invalid because another action exists.
fn issuance_schema() -> Result<Schema, PolicyError> {
    let (issuance, _) = SCHEMA
        .split_once(EXCHANGE_SECTION)
        .ok_or_else(|| PolicyError::Validation("built-in schema: no token-exchange section".into()))?;
    parse_schema(issuance)
}

fn parse_schema(text: &str) -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(text)
        .map(|(s, _)| s)
        .map_err(|e| PolicyError::Validation(format!("built-in schema: {e}")))
}

/// Whether `p`'s action scope names one of `actions`.
fn names_any(p: &Policy, actions: &[EntityUid]) -> bool {
    match p.action_constraint() {
        ActionConstraint::Any => false,
        ActionConstraint::Eq(a) => actions.contains(&a),
        ActionConstraint::In(list) => list.iter().any(|a| actions.contains(a)),
    }
}

impl PolicyEngine {
    /// Parses, names (`@id`), validates (strict, against the schema), checks
    /// annotations and indexes `text` as policy `version`.
    pub fn compile(text: &str, version: u64) -> Result<Self, PolicyError> {
        let (schema, issuance) = (schema()?, issuance_schema()?);
        let names = Names::new()?;
        let parsed = PolicySet::from_str(text)
            .map_err(|e| PolicyError::Parse(e.iter().map(|d| diagnostic(text, d)).collect::<Vec<_>>().join("; ")))?;
        if parsed.templates().next().is_some() {
            return Err(PolicyError::Parse("policy templates are not supported".into()));
        }
        let mut named = PolicySet::new();
        let mut seen = HashSet::new();
        let mut caps = HashMap::new();
        for p in parsed.policies() {
            let id = p.annotation("id").map(str::to_owned).unwrap_or_else(|| p.id().to_string());
            if !seen.insert(id.clone()) {
                return Err(PolicyError::Annotation(format!("two policies have the id `{id}`")));
            }
            let p = p.new_id(PolicyId::new(&id));
            if let Some(v) = p.annotation("max_ttl") {
                if p.effect() != Effect::Permit {
                    return Err(PolicyError::Annotation(format!(
                        "policy `{id}`: @max_ttl applies to permit policies only"
                    )));
                }
                let ttl =
                    Ttl::parse(v).map_err(|e| PolicyError::Annotation(format!("policy `{id}`: @max_ttl: {e}")))?;
                caps.insert(p.id().clone(), ttl.secs());
            }
            named.add(p).map_err(|e| PolicyError::Parse(one_line(e)))?;
        }
        // Policies naming `exchange_token`, `login` or `break_glass` are
        // checked against the whole schema, the others against the issuance
        // part (see the schema).
        let scoped = |p: &Policy| names_any(p, std::slice::from_ref(&names.exchange)) || names_any(p, &names.logins);
        let (whole, rest): (Vec<Policy>, Vec<Policy>) = named.policies().cloned().partition(scoped);
        let exchange: Vec<Policy> =
            whole.iter().filter(|p| names_any(p, std::slice::from_ref(&names.exchange))).cloned().collect();
        // A forbid for every action (a kill switch) stops logins too; one
        // reading issuance context fails to evaluate for a login and is
        // skipped, as Cedar skips a policy in error.
        let people: Vec<Policy> = whole
            .iter()
            .filter(|p| names_any(p, &names.logins))
            .chain(
                rest.iter().filter(|p| p.effect() == Effect::Forbid && p.action_constraint() == ActionConstraint::Any),
            )
            .cloned()
            .collect();
        let mut errs: Vec<String> = Vec::new();
        for (list, schema) in [(&whole, &schema), (&rest, &issuance)] {
            let set = PolicySet::from_policies(list.iter().cloned()).map_err(|e| PolicyError::Parse(one_line(e)))?;
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            errs.extend(result.validation_errors().map(|d| diagnostic(text, d)));
        }
        if !errs.is_empty() {
            return Err(PolicyError::Validation(errs.join("; ")));
        }
        let exchange = PolicySet::from_policies(exchange).map_err(|e| PolicyError::Parse(one_line(e)))?;
        let people = PolicySet::from_policies(people).map_err(|e| PolicyError::Parse(one_line(e)))?;
        let mut buckets: HashMap<(Scope, Scope), Vec<Policy>> = HashMap::new();
        let mut effects = HashMap::new();
        let mut count = 0;
        for p in named.policies() {
            let principal = match p.principal_constraint() {
                PrincipalConstraint::Any | PrincipalConstraint::Is(_) => Scope::Any,
                PrincipalConstraint::Eq(u) | PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => {
                    Scope::Uid(u)
                }
            };
            let resource = match p.resource_constraint() {
                ResourceConstraint::Any | ResourceConstraint::Is(_) => Scope::Any,
                ResourceConstraint::Eq(u) | ResourceConstraint::In(u) | ResourceConstraint::IsIn(_, u) => Scope::Uid(u),
            };
            // Actions are few; Cedar checks the action constraint itself.
            let _: ActionConstraint = p.action_constraint();
            effects.insert(p.id().clone(), p.effect());
            buckets.entry((principal, resource)).or_default().push(p.clone());
            count += 1;
        }
        // One precompiled set per scope bucket: a decision evaluates only the
        // buckets that can match, with no per-request copying.
        let mut index = HashMap::new();
        for (k, list) in buckets {
            index.insert(k, PolicySet::from_policies(list).map_err(|e| PolicyError::Parse(one_line(e)))?);
        }
        Ok(Self {
            text: text.to_owned(),
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            version,
            count,
            index,
            effects,
            caps,
            exchange,
            people,
            authorizer: Authorizer::new(),
            names,
            entities: Mutex::new(HashMap::new()),
        })
    }

    /// The version number in the store.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// SHA-256 of the policy text (goes into audit records).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The policy text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are no policies (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The workload and its owner as Cedar entities, built once per entry revision.
    fn entities_for(&self, e: &Entry, principal: &EntityUid, owner: &EntityUid) -> Result<Arc<Entities>, PolicyError> {
        let key = (e.id.clone(), e.spiffe_id.to_string(), e.owner.clone(), e.class.as_str());
        if let Some(found) = self.entities.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(found);
        }
        let attrs = HashMap::from([
            ("entry_id".to_owned(), RestrictedExpression::new_string(e.id.clone())),
            ("spiffe_id".to_owned(), RestrictedExpression::new_string(e.spiffe_id.to_string())),
            ("path".to_owned(), RestrictedExpression::new_string(e.spiffe_id.path().to_owned())),
            ("owner".to_owned(), RestrictedExpression::new_string(e.owner.clone())),
            ("class".to_owned(), RestrictedExpression::new_string(e.class.to_string())),
        ]);
        let workload = Entity::new(principal.clone(), attrs, HashSet::from([owner.clone()]))
            .map_err(request_error("the workload entity"))?;
        // Built exactly to the schema by this function, so not re-validated;
        // the policies are what the schema validation protects. Resources need
        // no entity: they have no attributes or parents.
        let entities = Arc::new(
            Entities::from_entities([workload, Entity::with_uid(owner.clone())], None)
                .map_err(request_error("the entities"))?,
        );
        if let Ok(mut c) = self.entities.lock() {
            if c.len() >= MAX_CACHED_ENTITIES {
                c.clear();
            }
            c.insert(key, entities.clone());
        }
        Ok(entities)
    }

    /// Cedar's answer to one request, from the policies whose scope can
    /// match it. Only [`crate::decide`] asks: it gates by class first and
    /// turns the answer into a verdict and a lifetime.
    pub(crate) fn evaluate(&self, r: &IssuanceRequest<'_>) -> Result<Evaluation, PolicyError> {
        let n = &self.names;
        let principal = Names::uid(&n.workload, &r.entry.id);
        let owner = Names::uid(&n.owner, &r.entry.owner);
        let resource = match (r.action, r.audience) {
            (Action::IssueJwt, Some(aud)) => Names::uid(&n.audience, aud),
            (Action::IssueJwt, None) => return Err(PolicyError::NoAudience),
            _ => Names::uid(&n.trust_domain, r.trust_domain),
        };
        // Hand Cedar only the policy buckets whose scope can match.
        let mut sets = Vec::with_capacity(6);
        for p in [Scope::Any, Scope::Uid(principal.clone()), Scope::Uid(owner.clone())] {
            for q in [Scope::Any, Scope::Uid(resource.clone())] {
                if let Some(set) = self.index.get(&(p.clone(), q)) {
                    sets.push(set);
                }
            }
        }
        if sets.is_empty() {
            return Ok(Evaluation {
                allowed: false,
                policy_ids: Vec::new(),
                ttl_cap: None,
                errors: Vec::new(),
                considered: Vec::new(),
            });
        }

        let entities = self.entities_for(r.entry, &principal, &owner)?;

        let exceptions = r.exceptions.iter().map(|x| {
            RestrictedExpression::new_record([
                ("rule".to_owned(), RestrictedExpression::new_string(x.rule.as_str().to_owned())),
                ("value".to_owned(), RestrictedExpression::new_string(x.value.clone())),
                ("expires_at".to_owned(), RestrictedExpression::new_long(x.expires_at)),
            ])
        });
        let exceptions: Vec<RestrictedExpression> =
            exceptions.collect::<Result<_, _>>().map_err(request_error("the exceptions"))?;
        let ev = r.evidence;
        let selectors: Vec<String> = ev.selectors.iter().map(ToString::to_string).collect();
        let context = Context::from_pairs(
            [
                ("selectors".to_owned(), str_set(selectors.iter().map(String::as_str))),
                ("exe_sha256".to_owned(), RestrictedExpression::new_string(ev.exe_sha256().to_owned())),
                ("container_id".to_owned(), RestrictedExpression::new_string(ev.value("container", "id").to_owned())),
                (
                    "image_digests".to_owned(),
                    str_set(ev.values("container", "image_digest").chain(ev.values("k8s", "container-image"))),
                ),
                ("k8s_namespace".to_owned(), RestrictedExpression::new_string(ev.value("k8s", "ns").to_owned())),
                ("k8s_service_account".to_owned(), RestrictedExpression::new_string(ev.value("k8s", "sa").to_owned())),
                ("host_namespaces".to_owned(), str_set(ev.values("unix", "host_ns"))),
                ("node_id".to_owned(), RestrictedExpression::new_string(ev.node_id.clone())),
                ("node_attestation".to_owned(), RestrictedExpression::new_string(ev.node_attestation.clone())),
                ("node_selectors".to_owned(), str_set(ev.node_selectors.iter().map(String::as_str))),
                (
                    "requested_ttl".to_owned(),
                    RestrictedExpression::new_long(i64::try_from(r.requested_ttl()).unwrap_or(i64::MAX)),
                ),
                ("exceptions".to_owned(), RestrictedExpression::new_set(exceptions)),
                ("exception_rules".to_owned(), str_set(r.exceptions.iter().map(|x| x.rule.as_str()))),
                ("now".to_owned(), RestrictedExpression::new_long(r.now)),
            ]
            .into_iter()
            .chain(task_context(r.task)),
        )
        .map_err(request_error("the context"))?;
        let action = n.actions.get(&r.action).cloned().ok_or(PolicyError::UnknownAction(r.action.as_str()))?;
        let request =
            Request::new(principal, action.clone(), resource, context, None).map_err(request_error("the request"))?;

        // Cedar's semantics across the buckets: any satisfied forbid denies;
        // otherwise any satisfied permit allows; otherwise deny.
        let mut forbids = Vec::new();
        let mut permits = Vec::new();
        let mut errors = Vec::new();
        // The permits whose scope names this action (the buckets already
        // match principal and resource): what a default deny chose from.
        let mut considered: Vec<String> = sets
            .iter()
            .flat_map(|set| set.policies())
            .filter(|p| p.effect() == Effect::Permit)
            .filter(|p| match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => a == action,
                ActionConstraint::In(list) => list.contains(&action),
            })
            .map(|p| p.id().to_string())
            .collect();
        considered.sort();
        for set in sets {
            let resp = self.authorizer.is_authorized(&request, set, entities.as_ref());
            for id in resp.diagnostics().reason() {
                match self.effects.get(id) {
                    Some(Effect::Forbid) => forbids.push(id.clone()),
                    _ => permits.push(id.clone()),
                }
            }
            errors.extend(resp.diagnostics().errors().map(one_line));
        }
        let allowed = forbids.is_empty() && !permits.is_empty();
        let determining = if forbids.is_empty() { &permits } else { &forbids };
        let ttl_cap = if allowed { permits.iter().filter_map(|id| self.caps.get(id).copied()).min() } else { None };
        let mut policy_ids: Vec<String> = determining.iter().map(ToString::to_string).collect();
        policy_ids.sort();
        Ok(Evaluation { allowed, policy_ids, ttl_cap, errors, considered })
    }
}

impl PolicyEngine {
    /// Cedar's answer to one token exchange, from the policies whose action
    /// scope names `exchange_token` (no others decide an exchange). Only
    /// [`crate::decide_exchange`] asks.
    pub(crate) fn evaluate_exchange(&self, r: &ExchangeRequest<'_>) -> Result<Evaluation, PolicyError> {
        let n = &self.names;
        let principal = Names::uid(&n.actor, r.actor);
        let resource = Names::uid(&n.audience, r.audience);
        let considered: Vec<String> = {
            let mut ids: Vec<String> =
                self.exchange.policies().filter(|p| p.effect() == Effect::Permit).map(|p| p.id().to_string()).collect();
            ids.sort();
            ids
        };
        let attrs = HashMap::from([
            ("spiffe_id".to_owned(), RestrictedExpression::new_string(r.actor.to_owned())),
            ("path".to_owned(), RestrictedExpression::new_string(r.actor_path.to_owned())),
        ]);
        let actor = Entity::new(principal.clone(), attrs, HashSet::new()).map_err(request_error("the actor entity"))?;
        let entities = Entities::from_entities([actor], None).map_err(request_error("the entities"))?;
        let context = Context::from_pairs([
            ("subject".to_owned(), RestrictedExpression::new_string(r.subject.to_owned())),
            ("subject_issuer".to_owned(), RestrictedExpression::new_string(r.subject_issuer.to_owned())),
            ("subject_kind".to_owned(), RestrictedExpression::new_string(r.subject_kind.as_str().to_owned())),
            ("chain".to_owned(), str_set(r.chain.iter().map(String::as_str))),
            ("depth".to_owned(), RestrictedExpression::new_long(i64::from(r.depth))),
            ("origin".to_owned(), RestrictedExpression::new_string(r.origin.to_owned())),
            ("scope".to_owned(), str_set(r.scope.iter().map(String::as_str))),
            ("now".to_owned(), RestrictedExpression::new_long(r.now)),
        ])
        .map_err(request_error("the context"))?;
        let request = Request::new(principal, n.exchange.clone(), resource, context, None)
            .map_err(request_error("the request"))?;
        Ok(self.answer(&request, &self.exchange, &entities, considered))
    }

    /// Cedar's answer to `request` over one policy set (token exchange, a
    /// login): forbids win, then permits; the lifetime cap is the least of
    /// the determining permits' `@max_ttl`.
    fn answer(&self, request: &Request, set: &PolicySet, entities: &Entities, considered: Vec<String>) -> Evaluation {
        let resp = self.authorizer.is_authorized(request, set, entities);
        let (mut forbids, mut permits) = (Vec::new(), Vec::new());
        for id in resp.diagnostics().reason() {
            match self.effects.get(id) {
                Some(Effect::Forbid) => forbids.push(id.to_string()),
                _ => permits.push(id.to_string()),
            }
        }
        let errors = resp.diagnostics().errors().map(one_line).collect();
        let allowed = forbids.is_empty() && !permits.is_empty();
        let ttl_cap = if allowed {
            permits.iter().filter_map(|id| self.caps.get(&PolicyId::new(id)).copied()).min()
        } else {
            None
        };
        let mut policy_ids = if forbids.is_empty() { permits } else { forbids };
        policy_ids.sort();
        Evaluation { allowed, policy_ids, ttl_cap, errors, considered }
    }
}

impl PolicyEngine {
    /// Cedar's answer to a person's login (or break-glass login), from the
    /// policies naming that action only. Only [`crate::decide_login`] asks.
    pub(crate) fn evaluate_login(&self, r: &LoginRequest<'_>) -> Result<Evaluation, PolicyError> {
        let n = &self.names;
        let principal = Names::uid(&n.human, r.spiffe_id);
        let resource = Names::uid(&n.trust_domain, r.trust_domain);
        let [login, break_glass] = &n.logins;
        let action = if r.break_glass { break_glass.clone() } else { login.clone() };
        let considered: Vec<String> = {
            let mut ids: Vec<String> = self
                .people
                .policies()
                .filter(|p| p.effect() == Effect::Permit && names_any(p, std::slice::from_ref(&action)))
                .map(|p| p.id().to_string())
                .collect();
            ids.sort();
            ids
        };
        let attrs = HashMap::from([
            ("spiffe_id".to_owned(), RestrictedExpression::new_string(r.spiffe_id.to_owned())),
            ("path".to_owned(), RestrictedExpression::new_string(r.path.to_owned())),
            ("issuer".to_owned(), RestrictedExpression::new_string(r.issuer.to_owned())),
        ]);
        let human = Entity::new(principal.clone(), attrs, HashSet::new()).map_err(request_error("the human entity"))?;
        let entities = Entities::from_entities([human], None).map_err(request_error("the entities"))?;
        let groups = r.token_groups.iter().chain(r.scim_groups).map(String::as_str);
        let context = Context::from_pairs([
            ("issuer_url".to_owned(), RestrictedExpression::new_string(r.issuer_url.to_owned())),
            ("subject".to_owned(), RestrictedExpression::new_string(r.subject.to_owned())),
            ("email".to_owned(), RestrictedExpression::new_string(r.email.to_owned())),
            ("email_verified".to_owned(), RestrictedExpression::new_bool(r.email_verified)),
            ("name".to_owned(), RestrictedExpression::new_string(r.name.to_owned())),
            ("groups".to_owned(), str_set(groups)),
            ("token_groups".to_owned(), str_set(r.token_groups.iter().map(String::as_str))),
            ("scim_groups".to_owned(), str_set(r.scim_groups.iter().map(String::as_str))),
            ("provisioned".to_owned(), RestrictedExpression::new_bool(r.provisioned)),
            ("amr".to_owned(), str_set(r.amr.iter().map(String::as_str))),
            (
                "requested_ttl".to_owned(),
                RestrictedExpression::new_long(i64::try_from(r.requested_ttl).unwrap_or(i64::MAX)),
            ),
            ("now".to_owned(), RestrictedExpression::new_long(r.now)),
        ])
        .map_err(request_error("the context"))?;
        let request = Request::new(principal, action, resource, context, None).map_err(request_error("the request"))?;
        Ok(self.answer(&request, &self.people, &entities, considered))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hallmark_core::{Class, SpiffeId};

    pub(crate) fn entry(id: &str, owner: &str) -> Entry {
        Entry {
            id: id.into(),
            spiffe_id: SpiffeId::new(&format!("spiffe://example.org/{id}")).unwrap(),
            parent_id: SpiffeId::new("spiffe://example.org/hallmark/agent/local").unwrap(),
            selectors: ["unix:uid:1000".parse().unwrap()].into(),
            owner: owner.into(),
            class: Class::Machine,
            x509_ttl: Ttl::parse("1h").unwrap(),
            jwt_ttl: Ttl::parse("5m").unwrap(),
            dns_names: vec![],
            hint: None,
            recovery: false,
            bind: hallmark_core::Bind::None,
            revision: 1,
            created_at: 0,
            updated_at: 0,
            revoked_at: None,
        }
    }

    /// Cedar's answer alone (the class gate and lifetime are
    /// [`crate::decide`]'s, tested there).
    fn ask(engine: &PolicyEngine, e: &Entry, action: Action, aud: Option<&str>) -> Evaluation {
        ask_with(engine, e, action, aud, &["unix:uid:1000"])
    }

    /// [`ask`] for a workload with `selectors`.
    fn ask_with(engine: &PolicyEngine, e: &Entry, action: Action, aud: Option<&str>, selectors: &[&str]) -> Evaluation {
        let ev = crate::Evidence {
            selectors: selectors.iter().map(|s| s.parse().unwrap()).collect(),
            node_id: "spiffe://example.org/hallmark/agent/local".into(),
            node_attestation: "local".into(),
            node_selectors: vec![],
            process: None,
        };
        engine
            .evaluate(&IssuanceRequest {
                action,
                entry: e,
                audience: aud,
                evidence: &ev,
                exceptions: &[],
                now: 1_700_000_000,
                classes: &crate::Classes::default(),
                trust_domain: "example.org",
                task: None,
            })
            .unwrap()
    }

    #[test]
    fn default_and_bare_forms_are_accepted() {
        let d = PolicyEngine::compile(crate::DEFAULT_POLICY, 1).unwrap();
        let e = entry("web", "team");
        let r = ask(&d, &e, Action::IssueX509, None);
        assert!(r.allowed);
        assert_eq!(r.policy_ids, vec!["default-allow"]);
        let f = PolicyEngine::compile("permit(principal, action, resource);\nforbid(principal, action, resource);", 2)
            .unwrap();
        let r = ask(&f, &e, Action::IssueX509, None);
        assert!(!r.allowed);
        assert_eq!(r.policy_ids, vec!["policy1"]);
    }

    #[test]
    fn container_pod_and_namespace_facts() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!(
            r#"
            @id("containers-only") permit(principal, action, resource)
              when {{ context.container_id != "" && context.image_digests.contains("{digest}") }};
            @id("not-in-host-pid-ns") forbid(principal, action, resource)
              when {{ context.host_namespaces.contains("pid") }};
            @id("payments-sa") permit(principal, action == Action::"issue_jwt", resource)
              when {{ context.k8s_namespace == "payments" && context.k8s_service_account == "api" }};
        "#
        );
        let p = PolicyEngine::compile(&text, 4).unwrap();
        let e = entry("web", "team");
        let id = format!("container:id:{}", "b".repeat(64));
        let image = format!("container:image_digest:{digest}");
        let r = ask_with(&p, &e, Action::IssueX509, None, &["unix:uid:1000", &id, &image]);
        assert!(r.allowed, "{r:?}");
        assert!(!ask_with(&p, &e, Action::IssueX509, None, &["unix:uid:1000", &id]).allowed, "other image");
        assert!(!ask(&p, &e, Action::IssueX509, None).allowed, "not in a container");
        let r = ask_with(&p, &e, Action::IssueX509, None, &["unix:uid:1000", &id, &image, "unix:host_ns:pid"]);
        assert_eq!((r.allowed, r.policy_ids), (false, vec!["not-in-host-pid-ns".to_owned()]));
        let pod = ["unix:uid:1000", "k8s:ns:payments", "k8s:sa:api"];
        assert!(ask_with(&p, &e, Action::IssueJwt, Some("db"), &pod).allowed);
        assert!(!ask_with(&p, &e, Action::IssueJwt, Some("db"), &["k8s:ns:payments", "k8s:sa:web"]).allowed);
        let pinned = format!("k8s:container-image:{digest}");
        assert!(ask_with(&p, &e, Action::IssueX509, None, &[&id, &pinned]).allowed, "a pod's image digest counts");
    }

    #[test]
    fn the_task_is_in_the_context() {
        let text = r#"
            @id("agents") permit(principal, action, resource);
            @id("payments-only-for-a-person") forbid(principal, action == Action::"issue_jwt", resource == Audience::"payments")
              when { context.task_on_behalf_of == "" };
            @id("only-tasks") forbid(principal, action, resource) when { principal.class == "agent" && context.task_id == "" };
            @id("objective") forbid(principal, action, resource)
              when { context.task_id != "" && !context.task_scope.contains("payments") && context.delegation_depth > 0 };
        "#;
        let p = PolicyEngine::compile(text, 5).unwrap();
        let mut e = entry("agent", "team");
        e.class = hallmark_core::Class::Agent;
        let ev = crate::Evidence {
            selectors: ["unix:uid:1000".parse().unwrap()].into_iter().collect(),
            node_id: "spiffe://example.org/hallmark/agent/local".into(),
            node_attestation: "local".into(),
            node_selectors: vec![],
            process: None,
        };
        let task = |on_behalf_of: &str| crate::TaskFacts {
            id: "t1".into(),
            objective_sha256: "ab".repeat(32),
            scope: vec!["payments".into()],
            on_behalf_of: on_behalf_of.into(),
            approved: vec![],
            pending_approval: vec![],
            delegation_depth: 0,
        };
        let ask_task = |t: Option<&crate::TaskFacts>| {
            p.evaluate(&IssuanceRequest {
                action: Action::IssueJwt,
                entry: &e,
                audience: Some("payments"),
                evidence: &ev,
                exceptions: &[],
                now: 1_700_000_000,
                classes: &crate::Classes::default(),
                trust_domain: "example.org",
                task: t,
            })
            .unwrap()
        };
        assert_eq!(ask_task(None).policy_ids, vec!["only-tasks".to_owned(), "payments-only-for-a-person".to_owned()]);
        assert_eq!(ask_task(Some(&task(""))).policy_ids, vec!["payments-only-for-a-person".to_owned()]);
        assert!(ask_task(Some(&task("alice@example.org"))).allowed);
    }

    #[test]
    fn caps_scope_and_audiences() {
        let text = r#"
            @id("db-short") @max_ttl("15m")
            permit(principal, action == Action::"issue_jwt", resource == Audience::"db");
            @id("telemetry") @max_ttl("2m")
            permit(principal in Owner::"obs", action == Action::"issue_jwt", resource == Audience::"telemetry");
            @id("x509") permit(principal, action in [Action::"issue_x509", Action::"renew"], resource);
            @id("no-web-jwt") forbid(principal == Workload::"web", action, resource == Audience::"db")
              when { context.selectors.contains("unix:uid:1000") };
        "#;
        let p = PolicyEngine::compile(text, 3).unwrap();
        let obs = entry("agent1", "obs");
        let r = ask(&p, &obs, Action::IssueJwt, Some("db"));
        assert!(r.allowed);
        assert_eq!(r.ttl_cap, Some(900));
        let r = ask(&p, &obs, Action::IssueJwt, Some("telemetry"));
        assert_eq!((r.allowed, r.ttl_cap), (true, Some(120)));
        let other = entry("svc", "payments");
        assert!(!ask(&p, &other, Action::IssueJwt, Some("telemetry")).allowed, "scoped to owner obs");
        assert!(!ask(&p, &other, Action::IssueJwt, Some("unknown")).allowed, "no permit for this audience");
        let web = entry("web", "payments");
        let r = ask(&p, &web, Action::IssueJwt, Some("db"));
        assert!(!r.allowed);
        assert_eq!(r.policy_ids, vec!["no-web-jwt"]);
        let r = ask(&p, &web, Action::Renew, None);
        assert_eq!((r.allowed, r.ttl_cap), (true, None));
    }

    #[test]
    fn refusals_carry_cedar_diagnostics() {
        let bad_parse = PolicyEngine::compile("permit(principal, action, resource", 1).unwrap_err();
        assert!(matches!(bad_parse, PolicyError::Parse(_)), "{bad_parse}");
        let bad_attr =
            PolicyEngine::compile("permit(principal, action, resource) when { context.no_such_thing == 1 };", 1)
                .unwrap_err();
        assert!(matches!(bad_attr, PolicyError::Validation(_)), "{bad_attr}");
        assert!(bad_attr.to_string().contains("no_such_thing"), "{bad_attr}");
        let bad_action =
            PolicyEngine::compile(r#"permit(principal, action == Action::"delete", resource);"#, 1).unwrap_err();
        assert!(matches!(bad_action, PolicyError::Validation(_)), "{bad_action}");
        let bad_ttl = PolicyEngine::compile(r#"@max_ttl("soon") permit(principal, action, resource);"#, 1).unwrap_err();
        assert!(bad_ttl.to_string().contains("soon"));
        let forbid_ttl =
            PolicyEngine::compile(r#"@max_ttl("1m") forbid(principal, action, resource);"#, 1).unwrap_err();
        assert!(forbid_ttl.to_string().contains("permit"));
        let dup = PolicyEngine::compile(
            r#"@id("a") permit(principal, action, resource); @id("a") forbid(principal, action, resource);"#,
            1,
        )
        .unwrap_err();
        assert!(dup.to_string().contains("`a`"));
        for e in [bad_parse, bad_attr, bad_action, bad_ttl, forbid_ttl, dup] {
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn empty_policy_denies() {
        let p = PolicyEngine::compile("", 1).unwrap();
        assert!(!ask(&p, &entry("a", "b"), Action::IssueX509, None).allowed);
    }
}
