//! Delegation by OAuth 2.0 Token Exchange (RFC 8693), top to bottom. An
//! agent (the actor) that holds a token of someone it works for (the
//! subject) exchanges it at `POST /v1/token` for a short-lived JWT that says
//! both: `sub` is the subject, `act` names the actor and, nested inside,
//! every actor before it. Every exchange takes these steps, numbered in the
//! code:
//!
//! 1. parse the form (RFC 8693 §2.1): the grant type, both tokens and their
//!    types, at least one audience or resource, the scopes; anything
//!    malformed is `invalid_request` before a token is looked at;
//! 2. verify the actor token: a JWT-SVID this server signed, for the
//!    exchange audience, in the inventory and not revoked (`invalid_client`);
//! 3. verify the subject token: a JWT this server signed (a JWT-SVID, or a
//!    token this endpoint issued: the chain grows), or an ID token of a
//!    configured OpenID Connect issuer (`invalid_grant`);
//! 4. build the chain: the subject's `may_act` must name this actor
//!    (RFC 8693 §4.4), the new `act` nests the subject's under this actor
//!    (newest outermost), and it may not be deeper than `max_depth`;
//! 5. decide: one [`hallmark_policy::decide_exchange`] per audience, Cedar
//!    seeing the whole chain; all must allow (`invalid_target` otherwise);
//! 6. sign with the active JWT key, living no longer than either token, the
//!    key, `max_ttl` and any permit's `@max_ttl`;
//! 7. record in the audit chain (refusals from step 4 on too, with the
//!    reason) and, when allowed, in the inventory, durably, before the token
//!    leaves: it is listed and revoked like any JWT-SVID;
//! 8. return it (RFC 8693 §2.2.1).
//!
//! What the threat is: a token for the exchange audience lets its holder
//! act *for* its subject, so both tokens must be this server's (or a
//! configured issuer's), live and meant for this endpoint; the actor proves
//! who is asking with its own JWT-SVID, and Cedar, not the caller, says
//! which audiences a chain may reach. Token bodies are never logged,
//! recorded or echoed in an error.

use hallmark_core::{CredentialKind, SpiffeId, now_unix};
use hallmark_policy::{Decision, ExchangeRequest, SubjectKind};
use hallmark_store::Credential;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::OidcIssuer;
use crate::error::ServerError;
use crate::jwks::{Jws, JwsError, KeyError, shown};
use crate::state::ServerState;

/// `grant_type` of a token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type of a JWT (subject, actor, issued).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Token type of an OpenID Connect ID token (subject only).
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Largest request body read, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = hallmark_ca::jwt::MAX_TOKEN_LEN;
/// Most scopes in one request.
pub const MAX_SCOPES: usize = 32;
/// Longest scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 256;
/// How far in the future `iat` and `nbf` may be (the issuer's clock may run
/// ahead). `exp` gets no leeway.
pub const CLOCK_SKEW: i64 = 60;
/// Longest `sub` accepted from a subject token, in bytes.
const MAX_SUB_LEN: usize = 1024;

/// Why an exchange was refused: each variant is one RFC 6749 §5.2 error
/// code, with a one-line description that never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// A parameter is missing, repeated, malformed or of an unsupported type.
    #[error("{0}")]
    InvalidRequest(String),
    /// The subject token does not verify, or does not allow this exchange.
    #[error("{0}")]
    InvalidGrant(String),
    /// The actor token does not verify.
    #[error("{0}")]
    InvalidClient(String),
    /// Policy refused an audience, or an audience is unacceptable.
    #[error("{0}")]
    InvalidTarget(String),
    /// `grant_type` is not token exchange.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// The server failed (the datastore, the signing key).
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl ExchangeError {
    /// The RFC 6749 §5.2 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidTarget(_) => "invalid_target",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::Server(_) => "server_error",
        }
    }
}

impl From<hallmark_store::StoreError> for ExchangeError {
    fn from(e: hallmark_store::StoreError) -> Self {
        Self::Server(e.into())
    }
}

/// A token exchange request, parsed (step 1): every value checked for form,
/// nothing verified yet.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The subject token.
    pub subject_token: String,
    /// Whether it is a JWT or an ID token.
    pub subject_is_id_token: bool,
    /// The actor token (a JWT).
    pub actor_token: String,
    /// The `audience` and `resource` values, in order, without repeats.
    pub audiences: Vec<String>,
    /// The scopes, in order, without repeats.
    pub scope: Vec<String>,
}

impl std::fmt::Debug for TokenRequest {
    /// Never the tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("subject_is_id_token", &self.subject_is_id_token)
            .field("audiences", &self.audiences)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Step 1: parses an `application/x-www-form-urlencoded` body (RFC 8693
/// §2.1). Single-valued parameters may appear once (RFC 6749 §3.2);
/// `audience` and `resource` may repeat; unknown parameters are ignored
/// (RFC 6749 §3.2). The grant type is checked first, so a client of another
/// grant hears `unsupported_grant_type`.
pub fn parse_request(body: &[u8]) -> Result<TokenRequest, ExchangeError> {
    let bad = |m: String| ExchangeError::InvalidRequest(m);
    if body.len() > MAX_BODY {
        return Err(bad(format!("the request body is over {MAX_BODY} bytes")));
    }
    let mut single: std::collections::BTreeMap<&'static str, String> = Default::default();
    let mut audiences: Vec<String> = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if v.contains('\0') || k.contains('\0') {
            return Err(bad("a parameter contains a NUL character".into()));
        }
        let name = match k.as_ref() {
            "audience" | "resource" => {
                hallmark_core::check_audience(&v).map_err(|e| bad(format!("{k}: {e}")))?;
                if !audiences.iter().any(|a| *a == v) {
                    audiences.push(v.into_owned());
                }
                continue;
            }
            "grant_type" => "grant_type",
            "subject_token" => "subject_token",
            "subject_token_type" => "subject_token_type",
            "actor_token" => "actor_token",
            "actor_token_type" => "actor_token_type",
            "requested_token_type" => "requested_token_type",
            "scope" => "scope",
            _ => continue,
        };
        if single.insert(name, v.into_owned()).is_some() {
            return Err(bad(format!("`{name}` is given more than once")));
        }
    }
    let mut take = |name: &'static str| single.remove(name).filter(|v| !v.is_empty());
    match take("grant_type").as_deref() {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return Err(ExchangeError::UnsupportedGrantType(format!(
                "grant type `{}` is not supported (only `{GRANT_TYPE}`)",
                shown(other)
            )));
        }
        None => return Err(bad("`grant_type` is required".into())),
    }
    let token = |name: &str, value: Option<String>| -> Result<String, ExchangeError> {
        let t = value.ok_or_else(|| bad(format!("`{name}` is required")))?;
        if t.len() > MAX_TOKEN_LEN {
            return Err(bad(format!("`{name}` is over {MAX_TOKEN_LEN} bytes")));
        }
        Ok(t)
    };
    let subject_token = token("subject_token", take("subject_token"))?;
    let subject_is_id_token = match take("subject_token_type").as_deref() {
        Some(TOKEN_TYPE_JWT) => false,
        Some(TOKEN_TYPE_ID_TOKEN) => true,
        Some(other) => {
            return Err(bad(format!(
                "subject_token_type `{}` is not supported (`{TOKEN_TYPE_JWT}`, `{TOKEN_TYPE_ID_TOKEN}`)",
                shown(other)
            )));
        }
        None => return Err(bad("`subject_token_type` is required".into())),
    };
    // This endpoint is for delegation: there is always an actor.
    let actor_token = token("actor_token", take("actor_token"))
        .map_err(|_| bad("`actor_token` is required (the calling agent's JWT-SVID)".into()))?;
    match take("actor_token_type").as_deref() {
        Some(TOKEN_TYPE_JWT) => {}
        Some(other) => {
            return Err(bad(format!("actor_token_type `{}` is not supported (`{TOKEN_TYPE_JWT}`)", shown(other))));
        }
        None => return Err(bad("`actor_token_type` is required with `actor_token`".into())),
    }
    match take("requested_token_type").as_deref() {
        None | Some(TOKEN_TYPE_JWT) => {}
        Some(other) => {
            return Err(bad(format!("requested_token_type `{}` is not supported (`{TOKEN_TYPE_JWT}`)", shown(other))));
        }
    }
    if audiences.is_empty() {
        return Err(bad("at least one `audience` or `resource` is required".into()));
    }
    if audiences.len() > hallmark_core::MAX_AUDIENCES {
        return Err(bad(format!("at most {} audiences and resources", hallmark_core::MAX_AUDIENCES)));
    }
    let scope = parse_scope(take("scope").as_deref().unwrap_or(""))?;
    Ok(TokenRequest { subject_token, subject_is_id_token, actor_token, audiences, scope })
}

/// The scopes of a `scope` value (RFC 6749 §3.3: space-delimited, each of
/// printable ASCII but `"` and `\`).
fn parse_scope(value: &str) -> Result<Vec<String>, ExchangeError> {
    let mut scope: Vec<String> = Vec::new();
    for s in value.split(' ').filter(|s| !s.is_empty()) {
        let ok = s.len() <= MAX_SCOPE_LEN && s.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
        if !ok {
            return Err(ExchangeError::InvalidRequest(format!(
                "scope `{}` is not 1-{MAX_SCOPE_LEN} printable ASCII characters without `\"` or `\\`",
                shown(s)
            )));
        }
        if !scope.iter().any(|x| x == s) {
            scope.push(s.to_owned());
        }
    }
    if scope.len() > MAX_SCOPES {
        return Err(ExchangeError::InvalidRequest(format!("at most {MAX_SCOPES} scopes")));
    }
    Ok(scope)
}

/// A token that verified (steps 2 and 3): what the rest reads of it.
#[derive(Debug, Clone)]
struct Verified {
    /// `sub`.
    sub: String,
    /// `iss`; for this server's tokens without one, the trust domain's ID.
    iss: String,
    /// `exp`, unix seconds.
    exp: i64,
    kind: SubjectKind,
    /// `act`, for a token this endpoint issued.
    act: Option<Value>,
    /// `may_act` (RFC 8693 §4.4).
    may_act: Option<Value>,
    /// `jti`.
    jti: Option<String>,
    /// Its inventory row, for this server's tokens.
    row: Option<Credential>,
}

/// What a token says of whom it is for, read from its claims: one string or
/// a list (also read by people's logins, [`crate::human`]).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Aud {
    One(String),
    Many(Vec<String>),
}

impl Aud {
    /// Whether `want` is one of the audiences.
    pub(crate) fn contains(&self, want: &str) -> bool {
        match self {
            Self::One(a) => a == want,
            Self::Many(list) => list.iter().any(|a| a == want),
        }
    }

    /// How many audiences.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(list) => list.len(),
        }
    }
}

/// The claims read from an ID token.
#[derive(Debug, Deserialize)]
struct IdClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Aud>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    may_act: Option<Value>,
}

/// The chain an exchange builds (step 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// The new token's `act` claim: this actor, the subject's `act` nested.
    pub act: Value,
    /// Every actor's `sub` in `act`, newest first.
    pub actors: Vec<String>,
}

/// Step 4: checks the subject's `may_act` against the actor (its `sub`, and
/// its `iss` when `may_act` names one) and nests the subject's `act` (if
/// any) under the actor: `{"sub": actor, "act": <subject's act>}`, newest
/// actor outermost. Refused beyond `max_depth` levels.
pub fn build_chain(
    actor_sub: &str,
    actor_iss: &str,
    subject_act: Option<&Value>,
    may_act: Option<&Value>,
    max_depth: u32,
) -> Result<Chain, ExchangeError> {
    let refused = |m: String| ExchangeError::InvalidGrant(m);
    if let Some(may) = may_act {
        let names = may.get("sub").and_then(Value::as_str) == Some(actor_sub)
            && may.get("iss").is_none_or(|i| i.as_str() == Some(actor_iss));
        if !names {
            return Err(refused(format!("the subject token's `may_act` does not name actor `{}`", shown(actor_sub))));
        }
    }
    let mut actors = vec![actor_sub.to_owned()];
    let mut level = subject_act;
    while let Some(act) = level {
        // The subject's chain is one this server signed; beyond the limit
        // it is refused without walking further.
        if actors.len() > crate::config::MAX_EXCHANGE_DEPTH as usize {
            break;
        }
        let sub =
            act.get("sub").and_then(Value::as_str).ok_or_else(|| refused("an `act` level has no `sub`".into()))?;
        actors.push(sub.to_owned());
        level = act.get("act");
    }
    let depth = actors.len();
    if depth > max_depth as usize {
        return Err(refused(format!("the delegation chain would be {depth} actors deep; max_depth is {max_depth}")));
    }
    let mut act = Map::new();
    act.insert("sub".into(), Value::String(actor_sub.to_owned()));
    if let Some(inner) = subject_act {
        act.insert("act".into(), inner.clone());
    }
    Ok(Chain { act: Value::Object(act), actors })
}

/// An exchanged token, as `POST /v1/token` returns it (RFC 8693 §2.2.1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exchanged {
    /// The signed JWT.
    pub access_token: String,
    /// Always [`TOKEN_TYPE_JWT`].
    pub issued_token_type: &'static str,
    /// `N_A`: not an OAuth access token of a bearer scheme (RFC 8693 §2.2.1).
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The scopes, space-separated, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Display for Exchanged {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exchanged token (expires in {}s)", self.expires_in)
    }
}

/// What an exchange asked, for its audit record.
struct Asked<'a> {
    actor: &'a Verified,
    subject: &'a Verified,
    request: &'a TokenRequest,
    actors: &'a [String],
}

impl Asked<'_> {
    fn details(&self, decision: &str, reason: &str, policy_ids: &[String]) -> Value {
        json!({
            "subject": self.subject.sub,
            "subject_issuer": self.subject.iss,
            "subject_kind": self.subject.kind.as_str(),
            "subject_jti": self.subject.jti,
            "actor": self.actor.sub,
            "actor_jti": self.actor.jti,
            "chain": self.actors,
            "depth": self.actors.len(),
            "audience": self.request.audiences,
            "scope": self.request.scope,
            "decision": decision,
            "reason": reason,
            "policy_ids": policy_ids,
        })
    }
}

impl ServerState {
    /// Exchanges `request`'s tokens for a delegated JWT (steps 2 to 8; the
    /// handler parsed it, step 1).
    pub async fn exchange_token(&self, request: &TokenRequest) -> Result<Exchanged, ExchangeError> {
        let now = now_unix();
        let settings = &self.settings.token_exchange;
        // 2. The actor: a JWT-SVID of this server, for this endpoint, live.
        let actor = self.verify_own(&request.actor_token, now).await.map_err(|e| match e {
            ExchangeError::InvalidGrant(m) => ExchangeError::InvalidClient(format!("actor token: {m}")),
            other => other,
        })?;
        if actor.kind != SubjectKind::JwtSvid {
            return Err(ExchangeError::InvalidClient(
                "actor token: an exchanged token cannot act; present the agent's own JWT-SVID".into(),
            ));
        }
        let actor_id = SpiffeId::new(&actor.sub)
            .map_err(|_| ExchangeError::InvalidClient("actor token: `sub` is not a SPIFFE ID".into()))?;
        // 3. The subject: this server's JWT, or a configured issuer's ID token.
        let subject = if request.subject_is_id_token {
            self.verify_id_token(&request.subject_token, now).await?
        } else {
            let s = self.verify_own(&request.subject_token, now).await?;
            if s.kind == SubjectKind::JwtSvid {
                SpiffeId::new(&s.sub).map_err(|_| ExchangeError::InvalidGrant("`sub` is not a SPIFFE ID".into()))?;
            }
            s
        };
        if subject.jti.is_some() && subject.jti == actor.jti {
            return Err(ExchangeError::InvalidGrant(
                "the subject token is the actor token: an agent cannot delegate to itself".into(),
            ));
        }
        // 4. The chain. From here on, a refusal is recorded.
        let chain = match build_chain(
            &actor.sub,
            &actor.iss,
            subject.act.as_ref(),
            subject.may_act.as_ref(),
            settings.max_depth,
        ) {
            Ok(c) => c,
            Err(e) => {
                let asked =
                    Asked { actor: &actor, subject: &subject, request, actors: std::slice::from_ref(&actor.sub) };
                self.record_exchange_refusal(&asked, e.code(), &e.to_string(), &[]).await?;
                return Err(e);
            }
        };
        let asked = Asked { actor: &actor, subject: &subject, request, actors: &chain.actors };
        // An actor working for a task gets tokens only for the task's scope
        // (approved where it asks), as the Workload API would give it.
        let task = self.actor_task(&asked).await?;
        // 5. Decide each audience, the chain in view.
        let engine = self.policy()?;
        let depth = u32::try_from(chain.actors.len()).unwrap_or(u32::MAX);
        let mut ttl_secs = settings.max_ttl.secs();
        let mut policy_ids = Vec::new();
        for audience in &request.audiences {
            let verdict = hallmark_policy::decide_exchange(
                &engine,
                &ExchangeRequest {
                    actor: actor_id.as_str(),
                    actor_path: actor_id.path(),
                    audience,
                    subject: &subject.sub,
                    subject_issuer: &subject.iss,
                    subject_kind: subject.kind,
                    chain: &chain.actors,
                    depth,
                    origin: &subject.sub,
                    scope: &request.scope,
                    now,
                    max_ttl: settings.max_ttl.secs(),
                },
            );
            for e in &verdict.skipped {
                tracing::warn!(actor = %actor.sub, error = %e, "policy evaluation error (policy skipped)");
            }
            match verdict.decision {
                Decision::Allowed { ttl_secs: t } => {
                    ttl_secs = ttl_secs.min(t);
                    policy_ids.extend(verdict.policy_ids);
                }
                Decision::Denied { reason } => {
                    let reason = format!("audience `{audience}`: {reason}");
                    self.record_exchange_refusal(&asked, "invalid_target", &reason, &verdict.policy_ids).await?;
                    return Err(ExchangeError::InvalidTarget(reason));
                }
            }
        }
        policy_ids.sort();
        policy_ids.dedup();
        // 6. Sign: no longer than either token, the key, or the decision.
        let key = self.authorities.jwt()?;
        let exp = (now + i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2))
            .min(subject.exp)
            .min(actor.exp)
            .min(self.authorities.jwt_not_after()?);
        let jti = crate::issuance::new_jti();
        let mut claims = Map::new();
        let iss = self.settings.jwt_issuer.clone().unwrap_or_else(|| self.settings.trust_domain.id().to_string());
        claims.insert("iss".into(), Value::String(iss));
        claims.insert("sub".into(), Value::String(subject.sub.clone()));
        claims.insert("aud".into(), json!(request.audiences));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(exp));
        claims.insert("jti".into(), Value::String(jti.clone()));
        if !request.scope.is_empty() {
            claims.insert("scope".into(), Value::String(request.scope.join(" ")));
        }
        claims.insert("act".into(), chain.act.clone());
        if let Some(t) = &task {
            claims.insert("task".into(), crate::issuance::task_claim(t, &request.audiences));
        }
        let token = key.sign_claims(&claims).map_err(|e| ExchangeError::Server(ServerError::Ca(e)))?;
        // 7. Record, durably, before the token leaves the server.
        let mut details = asked.details("allowed", "", &policy_ids);
        if let Some(d) = details.as_object_mut() {
            d.insert("jti".into(), Value::String(jti.clone()));
            d.insert("not_after".into(), json!(exp));
        }
        let mut event = self.audit_event(&actor.sub, "exchange_token", &subject.sub, "ok", details);
        event.credential = actor.row.as_ref().map(|row| Credential {
            id: jti.clone(),
            kind: CredentialKind::Jwt,
            // The actor's entry: revoking the agent revokes what it was
            // handed, and its owner answers for it.
            entry_id: row.entry_id.clone(),
            // Whom the token speaks for, as its `sub` says.
            spiffe_id: subject.sub.clone(),
            node_id: row.node_id.clone(),
            class: row.class.clone(),
            owner: row.owner.clone(),
            policy_version: event.policy_version,
            evidence_digest: row.evidence_digest.clone(),
            issued_at: now,
            not_before: now,
            not_after: exp,
            revoked_at: None,
            revoke_reason: None,
            authority_id: key.kid().to_owned(),
            audit_seq: 0,
            delivered_to: None,
            delivered_at: None,
            audience: Some(request.audiences.join(",")),
            // The actor's task: ending the task revokes what it delegated.
            task_id: row.task_id.clone(),
            person_id: None,
        });
        self.audit.record(event).await?;
        tracing::info!(actor = %actor.sub, subject = %shown(&subject.sub), depth, %jti, "token exchanged");
        // 8. Return it.
        Ok(Exchanged {
            access_token: token,
            issued_token_type: TOKEN_TYPE_JWT,
            token_type: "N_A",
            expires_in: exp - now,
            scope: (!request.scope.is_empty()).then(|| request.scope.join(" ")),
        })
    }

    /// Records a refused exchange (its tokens verified) in the audit chain.
    async fn record_exchange_refusal(
        &self,
        asked: &Asked<'_>,
        code: &str,
        reason: &str,
        policy_ids: &[String],
    ) -> Result<(), ExchangeError> {
        let mut details = asked.details("refused", reason, policy_ids);
        if let Some(d) = details.as_object_mut() {
            d.insert("error".into(), Value::String(code.to_owned()));
        }
        let event = self.audit_event(&asked.actor.sub, "exchange_token", &asked.subject.sub, "denied", details);
        self.audit.record(event).await?;
        tracing::info!(actor = %asked.actor.sub, subject = %shown(&asked.subject.sub), %reason, "token exchange refused");
        Ok(())
    }

    /// The running task the actor's token was issued for, if any. Each
    /// requested audience must be in its scope and cleared; one outside is a
    /// breach of the task (counted, and the end of a strict task), one
    /// waiting for approval is refused; both are recorded. A task that ended
    /// refuses the exchange.
    async fn actor_task(&self, asked: &Asked<'_>) -> Result<Option<hallmark_store::Task>, ExchangeError> {
        let Some(id) = asked.actor.row.as_ref().and_then(|r| r.task_id.clone()) else { return Ok(None) };
        let refuse = async |reason: String| -> Result<Option<hallmark_store::Task>, ExchangeError> {
            self.record_exchange_refusal(asked, "invalid_target", &reason, &[]).await?;
            Err(ExchangeError::InvalidTarget(reason))
        };
        let task = match self.store.task(&id).await? {
            Some(t) if t.active(now_unix()) => t,
            _ => return refuse(format!("the actor's task `{id}` is not running")).await,
        };
        for aud in &asked.request.audiences {
            match task.scope_item(aud) {
                Some(item) if item.cleared() => {}
                Some(_) => {
                    return refuse(format!("pending approval: audience `{aud}` of task `{id}` waits for approval"))
                        .await;
                }
                None => {
                    let reason = format!("scope breach: audience `{aud}` is outside the scope of task `{id}`");
                    let details = json!({ "audience": aud, "via": "token_exchange" });
                    let rec = self.record_change(
                        "hallmark/token-exchange",
                        "task_breach",
                        move |t: &hallmark_store::Task| crate::audit::Change::new(&t.id, details),
                    );
                    let t = self.store.record_task_breach(&id, rec).await?;
                    if t.revoke_on_breach {
                        let target = hallmark_store::RevokeTarget::Task(id.clone());
                        self.revoke_now(&target, &reason, "hallmark/token-exchange").await?;
                    }
                    return refuse(reason).await;
                }
            }
        }
        Ok(Some(task))
    }

    /// Verifies a JWT this server signed (any key still in the bundle) for
    /// the exchange audience: times, `sub`, and a `jti` the inventory holds
    /// unrevoked. Failures are `invalid_grant`; the caller renames them for
    /// the actor.
    async fn verify_own(&self, token: &str, now: i64) -> Result<Verified, ExchangeError> {
        let refused = |m: String| ExchangeError::InvalidGrant(m);
        let bundle = self.authorities.bundle().borrow().clone();
        // A tainted key is being retired because it may be compromised: what
        // it signed is not exchanged for a fresh token.
        let keys: Vec<hallmark_ca::JwtAuthority> = bundle
            .jwt_authorities
            .iter()
            .filter(|k| !bundle.status.tainted.iter().any(|t| t == k.kid()))
            .cloned()
            .collect();
        let claims = hallmark_ca::jwt::verify(token, &keys, now).map_err(|e| refused(e.to_string()))?;
        let audience = &self.settings.token_exchange.audience;
        let aud: Option<Aud> = claims.get("aud").cloned().and_then(|a| serde_json::from_value(a).ok());
        if !aud.is_some_and(|a| a.contains(audience)) {
            return Err(refused(format!("the token's audience does not include `{audience}`")));
        }
        for name in ["iat", "nbf"] {
            if let Some(t) = claims.get(name) {
                let t = t.as_i64().ok_or_else(|| refused(format!("`{name}` is not a number")))?;
                if t > now.saturating_add(CLOCK_SKEW) {
                    return Err(refused(format!("`{name}` is in the future")));
                }
            }
        }
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| refused("no `exp`".into()))?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= MAX_SUB_LEN)
            .ok_or_else(|| refused("`sub` is missing or invalid".into()))?
            .to_owned();
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or_else(|| refused("no `jti`: the token cannot be checked for revocation".into()))?
            .to_owned();
        // Every token this server signs is in the inventory before it
        // leaves: one missing is not ours to honour, one revoked is dead.
        let row = self
            .store
            .credential(&jti)
            .await?
            .filter(|r| r.kind == CredentialKind::Jwt)
            .ok_or_else(|| refused("the token is not in the inventory".into()))?;
        if row.revoked_at.is_some() {
            return Err(refused("the token has been revoked".into()));
        }
        let iss = match claims.get("iss") {
            None => self.settings.trust_domain.id().to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(refused("`iss` is not a string".into())),
        };
        // A task's JWT-SVID acting for someone names its own agent in `act`
        // (`act.sub` = `sub`, nothing nested): it is a JWT-SVID, and its
        // `act` is no earlier actor. A token this endpoint issued names
        // another party there.
        let act = claims
            .get("act")
            .cloned()
            .filter(|a| a.get("sub").and_then(Value::as_str) != Some(sub.as_str()) || a.get("act").is_some());
        let kind = if act.is_some() { SubjectKind::Exchanged } else { SubjectKind::JwtSvid };
        Ok(Verified {
            sub,
            iss,
            exp,
            kind,
            act,
            may_act: claims.get("may_act").cloned(),
            jti: Some(jti),
            row: Some(row),
        })
    }

    /// Verifies an ID token of a configured OpenID Connect issuer: the
    /// issuer is the one its `iss` names, its key signed it, it is live and
    /// for the audience configured for that issuer.
    async fn verify_id_token(&self, token: &str, now: i64) -> Result<Verified, ExchangeError> {
        let refused = |m: String| ExchangeError::InvalidGrant(format!("ID token: {m}"));
        let jws: Jws<'_, IdClaims> = Jws::parse(token, MAX_TOKEN_LEN).map_err(|e| match e {
            JwsError::Malformed(m) | JwsError::Refused(m) => refused(m),
        })?;
        let claims = &jws.claims;
        let iss = claims.iss.as_deref().ok_or_else(|| refused("no `iss`".into()))?;
        let issuer: &OidcIssuer = self
            .settings
            .token_exchange
            .oidc_issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| refused(format!("issuer `{}` is not configured", shown(iss))))?;
        issuer.keys.verify_signature(&jws).await.map_err(|e| match e {
            KeyError::Unavailable(_) => {
                tracing::warn!(issuer = %issuer.name, error = %e, "token exchange: the ID token's issuer is unavailable");
                refused(format!("issuer `{}` could not be reached for its keys", issuer.name))
            }
            KeyError::Refused(m) => refused(m),
        })?;
        let exp = claims.exp.ok_or_else(|| refused("no `exp`".into()))?;
        if exp <= now {
            return Err(refused("the token has expired".into()));
        }
        for (name, t) in [("nbf", claims.nbf), ("iat", claims.iat)] {
            if t.is_some_and(|t| t > now.saturating_add(CLOCK_SKEW)) {
                return Err(refused(format!("`{name}` is in the future")));
            }
        }
        if !claims.aud.as_ref().is_some_and(|a| a.contains(&issuer.audience)) {
            return Err(refused(format!("the token's audience does not include `{}`", issuer.audience)));
        }
        let sub = claims
            .sub
            .clone()
            .filter(|s| !s.is_empty() && s.len() <= MAX_SUB_LEN && !s.chars().any(char::is_control))
            .ok_or_else(|| refused("`sub` is missing or invalid".into()))?;
        Ok(Verified {
            sub,
            iss: issuer.issuer.clone(),
            exp,
            kind: SubjectKind::IdToken,
            act: None,
            may_act: claims.may_act.clone(),
            jti: None,
            row: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish().into_bytes()
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token", "s.s.s"),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("actor_token", "a.a.a"),
            ("actor_token_type", TOKEN_TYPE_JWT),
            ("audience", "db"),
        ]
    }

    #[test]
    fn parses_a_full_request() {
        let mut p = good();
        p.extend([("resource", "https://api.example/"), ("audience", "db"), ("scope", "read  write read")]);
        p.push(("unknown_parameter", "ignored"));
        p.push(("requested_token_type", TOKEN_TYPE_JWT));
        let r = parse_request(&form(&p)).unwrap();
        assert_eq!(r.audiences, vec!["db", "https://api.example/"]);
        assert_eq!(r.scope, vec!["read", "write"]);
        assert!(!r.subject_is_id_token);
        assert_eq!((r.subject_token.as_str(), r.actor_token.as_str()), ("s.s.s", "a.a.a"));
        // The tokens never show.
        let shown = format!("{r:?}");
        assert!(!shown.contains("s.s.s") && !shown.contains("a.a.a"), "{shown}");
    }

    #[test]
    fn refuses_each_malformed_request_with_its_code() {
        let with = |k: &str, v: Option<&str>| {
            let mut p: Vec<(&str, &str)> = good().into_iter().filter(|(n, _)| *n != k).collect();
            if let Some(v) = v {
                p.push((k, v));
            }
            parse_request(&form(&p)).unwrap_err()
        };
        let code = |e: ExchangeError| (e.code(), e.to_string());
        assert_eq!(code(with("grant_type", Some("client_credentials"))).0, "unsupported_grant_type");
        for (k, v, says) in [
            ("grant_type", None, "`grant_type` is required"),
            ("subject_token", None, "`subject_token` is required"),
            ("subject_token_type", Some("urn:ietf:params:oauth:token-type:saml2"), "not supported"),
            ("actor_token", None, "`actor_token` is required"),
            ("actor_token_type", None, "`actor_token_type` is required"),
            ("actor_token_type", Some(TOKEN_TYPE_ID_TOKEN), "not supported"),
            ("requested_token_type", Some("urn:ietf:params:oauth:token-type:access_token"), "not supported"),
            ("audience", None, "at least one `audience` or `resource`"),
            ("audience", Some("a\u{1}b"), "audience"),
            ("scope", Some("read \"quoted\""), "scope"),
        ] {
            let (c, m) = code(with(k, v));
            assert_eq!(c, "invalid_request", "{k}: {m}");
            assert!(m.contains(says), "{k}: `{m}` does not say `{says}`");
        }
        let mut twice = good();
        twice.push(("subject_token", "again"));
        assert!(parse_request(&form(&twice)).unwrap_err().to_string().contains("more than once"));
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert!(with("subject_token", Some(&long)).to_string().contains("over"));
        assert!(parse_request(&vec![b'a'; MAX_BODY + 1]).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("aud{i}")).collect();
        let mut p = good();
        p.extend(many.iter().map(|a| ("audience", a.as_str())));
        assert!(parse_request(&form(&p)).unwrap_err().to_string().contains("at most"));
        for junk in [&b""[..], b"&&&=", b"grant_type", b"%ff%fe=%00", b"\xff\xfe"] {
            assert!(parse_request(junk).is_err());
        }
    }

    #[test]
    fn chains_nest_the_newest_actor_outermost() {
        let td = "spiffe://example.org";
        let first = build_chain("spiffe://example.org/a", td, None, None, 5).unwrap();
        assert_eq!(first.act, json!({"sub": "spiffe://example.org/a"}));
        assert_eq!(first.actors, vec!["spiffe://example.org/a"]);
        let second = build_chain("spiffe://example.org/b", td, Some(&first.act), None, 5).unwrap();
        assert_eq!(second.act, json!({"sub": "spiffe://example.org/b", "act": {"sub": "spiffe://example.org/a"}}));
        assert_eq!(second.actors, vec!["spiffe://example.org/b", "spiffe://example.org/a"]);
        let e = build_chain("spiffe://example.org/c", td, Some(&second.act), None, 2).unwrap_err();
        assert_eq!(e.code(), "invalid_grant");
        assert!(e.to_string().contains("3 actors deep; max_depth is 2"), "{e}");
        let broken = json!({"sub": "x", "act": {"no_sub": true}});
        assert!(build_chain("spiffe://example.org/c", td, Some(&broken), None, 5).is_err());
        // A chain deeper than any limit is refused without walking it all.
        let mut deep = json!({"sub": "x"});
        for _ in 0..100 {
            deep = json!({"sub": "x", "act": deep});
        }
        assert!(build_chain("spiffe://example.org/c", td, Some(&deep), None, 32).is_err());
    }

    #[test]
    fn may_act_must_name_the_actor() {
        let td = "spiffe://example.org";
        let may = json!({"sub": "spiffe://example.org/a"});
        assert!(build_chain("spiffe://example.org/a", td, None, Some(&may), 5).is_ok());
        let e = build_chain("spiffe://example.org/b", td, None, Some(&may), 5).unwrap_err();
        assert!(e.to_string().contains("`may_act` does not name actor"), "{e}");
        let with_iss = json!({"sub": "spiffe://example.org/a", "iss": "https://elsewhere"});
        assert!(build_chain("spiffe://example.org/a", td, None, Some(&with_iss), 5).is_err());
        let same_iss = json!({"sub": "spiffe://example.org/a", "iss": td});
        assert!(build_chain("spiffe://example.org/a", td, None, Some(&same_iss), 5).is_ok());
        assert!(build_chain("spiffe://example.org/a", td, None, Some(&json!("a")), 5).is_err());
    }
}
