//! A person's login: a verified OpenID Connect ID token and a CSR in, a
//! short-lived client certificate from the human issuing authority out.
//!
//! The whole path reads top to bottom in [`ServerState::login`]:
//! 1. the login's nonce, used once (a replayed login is refused);
//! 2. the ID token: issuer, signature against the issuer's JWKS, expiry,
//!    audience, nonce, and `email_verified` where the template uses email;
//! 3. the person: their SPIFFE ID from the template; refused if SCIM says
//!    they left, if a recovery request for them is open, or (with
//!    `require_provisioned`) if SCIM does not know them; a break-glass login
//!    needs a live grant;
//! 4. Cedar (`login` or `break_glass`), with the token's claims and groups;
//! 5. signing under the human issuing authority, and the record: the audit
//!    record and the inventory row in one transaction (and a break-glass
//!    use, a finding until reviewed).
//!
//! Nothing here is the machine path: no entry, no agent, no Workload API.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hallmark_ca::svid::to_pem;
use hallmark_ca::x509::{SvidProfile, SvidTemplate};
use hallmark_core::{CredentialKind, HumanClaims, Ttl, now_unix};
use hallmark_policy::{LoginRequest as PolicyLogin, decide_login};
use hallmark_store::{BreakGlassGrant, BreakGlassUse, LoginNonceError, Person, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::PeopleIssuer;
use crate::audit::Change;
use crate::error::ServerError;
use crate::jwks::{Jws, JwsError, KeyError, shown};
use crate::state::ServerState;
use crate::token_exchange::Aud;

/// How long a login may take between `start` and `finish`.
pub const LOGIN_WINDOW_SECS: i64 = 600;
/// Largest CSR accepted, bytes of DER.
const MAX_CSR: usize = 8 * 1024;
/// Largest ID token accepted.
const MAX_ID_TOKEN: usize = 16 * 1024;
/// Clock skew allowed on `iat` and `nbf`.
const CLOCK_SKEW: i64 = 60;
/// Most groups read from a token.
const MAX_GROUPS: usize = 256;

/// What `POST /v1/login/start` answers.
#[derive(Debug, Serialize)]
pub struct LoginStart {
    /// Names this login in `POST /v1/login`.
    pub login_id: String,
    /// The issuer's configured name.
    pub issuer_name: String,
    /// Its URL.
    pub issuer: String,
    /// The client id to use at the issuer.
    pub client_id: String,
    /// The scopes to ask for.
    pub scopes: Vec<String>,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// Unix seconds after which the login is refused.
    pub expires_at: i64,
    /// The longest certificate a login gets.
    pub max_ttl: String,
}

/// `POST /v1/login`'s body. Its `Debug` leaves the token out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// From `POST /v1/login/start`.
    pub login_id: String,
    /// The issuer's ID token. Never logged.
    pub id_token: String,
    /// PKCS#10 CSR, DER, base64: the key stays with the person.
    pub csr: String,
    /// Lifetime asked for (capped by the human class and policy).
    #[serde(default)]
    pub ttl: Option<String>,
    /// An emergency login under a break-glass grant.
    #[serde(default)]
    pub break_glass: bool,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("LoginRequest")
            .field("login_id", &self.login_id)
            .field("ttl", &self.ttl)
            .field("break_glass", &self.break_glass)
            .finish_non_exhaustive()
    }
}

/// What a login gets.
#[derive(Debug, Serialize)]
pub struct LoginCertificate {
    /// The person's SPIFFE ID.
    pub spiffe_id: String,
    /// The certificate's serial.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// PEM, leaf first.
    pub certificate_chain: String,
    /// Every X.509 authority of the trust domain, PEM.
    pub trust_bundle: String,
    /// The human issuing authority that signed it.
    pub authority_id: String,
    /// Whether it is a break-glass certificate.
    pub break_glass: bool,
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// The token or login does not verify (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The person may not have a certificate now (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such issuer (404).
    #[error("{0}")]
    NotFound(String),
    /// Too many logins in flight (503).
    #[error("{0}")]
    Busy(String),
    /// A server-side failure (500).
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        Self::Server(e.into())
    }
}

/// The claims read from an ID token. Claims of loose shape (`groups`,
/// `amr`, `email_verified`) are read as JSON and taken only when well formed.
#[derive(Debug, Deserialize)]
struct IdClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Aud>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    groups: Option<Value>,
    #[serde(default)]
    amr: Option<Value>,
}

/// Strings of a JSON array (others skipped), at most [`MAX_GROUPS`], each
/// cut to a line's length.
fn strings(v: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = v else { return Vec::new() };
    items.iter().filter_map(Value::as_str).take(MAX_GROUPS).map(shown).collect()
}

/// A verified ID token, as the rest of the login uses it.
struct Verified {
    sub: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
    preferred_username: Option<String>,
    groups: Vec<String>,
    amr: Vec<String>,
}

impl ServerState {
    /// `POST /v1/login/start`: a nonce for a login with `issuer` (its
    /// name; the only one when there is one).
    /// `source` is the caller's address: one address holds a bounded
    /// number of logins in flight.
    pub async fn start_login(&self, issuer: Option<&str>, source: &str) -> Result<LoginStart, LoginError> {
        let issuers = &self.settings.people.issuers;
        let names = || issuers.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
        let chosen = match issuer {
            Some(name) => issuers.iter().find(|i| i.name == name).ok_or_else(|| {
                LoginError::NotFound(format!("no issuer `{}` for people (configured: {})", shown(name), names()))
            })?,
            None => match issuers.as_slice() {
                [one] => one,
                [] => {
                    return Err(LoginError::NotFound(
                        "no OpenID Connect issuer is configured for people ([[people.oidc_issuer]])".into(),
                    ));
                }
                _ => return Err(LoginError::BadRequest(format!("name the issuer: one of {}", names()))),
            },
        };
        let now = now_unix();
        let nonce = hallmark_store::random_hex::<32>();
        let n =
            self.store.create_login_nonce(&chosen.name, &nonce, source, now, LOGIN_WINDOW_SECS).await.map_err(|e| {
                match e {
                    LoginNonceError::Busy | LoginNonceError::SourceBusy => LoginError::Busy(e.to_string()),
                    LoginNonceError::Store(e) => e.into(),
                }
            })?;
        Ok(LoginStart {
            login_id: n.id,
            issuer_name: chosen.name.clone(),
            issuer: chosen.issuer.clone(),
            client_id: chosen.client_id.clone(),
            scopes: chosen.scopes.clone(),
            nonce: n.nonce,
            expires_at: n.expires_at,
            max_ttl: self.settings.classes.human.max_ttl.to_string(),
        })
    }

    /// `POST /v1/login`: the whole login, steps 1 to 5 (module docs).
    pub async fn login(&self, r: &LoginRequest) -> Result<LoginCertificate, LoginError> {
        let now = now_unix();
        let csr = STANDARD
            .decode(r.csr.trim())
            .map_err(|_| LoginError::BadRequest("`csr` is not base64 (standard alphabet) DER".into()))?;
        if csr.is_empty() || csr.len() > MAX_CSR {
            return Err(LoginError::BadRequest(format!("`csr` must be 1-{MAX_CSR} bytes of DER")));
        }
        if r.id_token.len() > MAX_ID_TOKEN {
            return Err(LoginError::BadRequest(format!("`id_token` is longer than {MAX_ID_TOKEN} bytes")));
        }
        let asked =
            r.ttl.as_deref().map(Ttl::parse).transpose().map_err(|e| LoginError::BadRequest(format!("ttl: {e}")))?;

        // 1. The nonce, once.
        let nonce = self.store.take_login_nonce(&r.login_id, now).await?.ok_or_else(|| {
            LoginError::Unauthenticated(format!(
                "login `{}` is unknown, expired or already used: start again (`hallmark login`)",
                shown(&r.login_id)
            ))
        })?;
        let issuer =
            self.settings.people.issuers.iter().find(|i| i.name == nonce.issuer).cloned().ok_or_else(|| {
                LoginError::Unauthenticated(format!("issuer `{}` is no longer configured", nonce.issuer))
            })?;

        // 2. The ID token.
        let token = verify_id_token(&issuer, &r.id_token, &nonce.nonce, now).await?;

        // 3. The person.
        let claims = HumanClaims {
            sub: &token.sub,
            email: token.email.as_deref(),
            preferred_username: token.preferred_username.as_deref(),
        };
        let spiffe_id = issuer.template.render(&claims).map_err(|e| LoginError::Forbidden(e.to_string()))?;
        if issuer.template.uses_email() && !token.email_verified {
            return Err(LoginError::Unauthenticated(
                "ID token: `email_verified` is not true, and the SPIFFE ID is made from the email".into(),
            ));
        }
        // Who SCIM says this is: by the email only, and only when the issuer
        // verified it. Anyone can put someone else's address on an account,
        // and `preferred_username` is neither verified nor unique (OpenID
        // Connect Core 5.7); a wrong match would hand one person another's
        // groups, or let a leaver through as a colleague.
        let verified_email = token.email.as_deref().filter(|_| token.email_verified);
        let keys: Vec<&str> = verified_email.into_iter().collect();
        let person: Option<Person> = self.store.person_for_login(&keys).await?;
        if let Some(p) = &person
            && p.has_left()
        {
            return Err(LoginError::Forbidden(format!(
                "`{spiffe_id}` has left (SCIM user `{}` is inactive or deleted): no login",
                p.user_name
            )));
        }
        if person.is_none() && self.settings.people.require_provisioned {
            return Err(LoginError::Forbidden(format!(
                "`{spiffe_id}` is not provisioned over SCIM, and only provisioned people may sign in"
            )));
        }
        if let Some(open) = self.store.recoveries(Some(spiffe_id.as_str()), true).await?.first() {
            return Err(LoginError::Forbidden(format!(
                "recovery request `{}` for `{spiffe_id}` is open: no login until the help desk verifies it and a second admin approves (`hallmark human recover`)",
                open.id
            )));
        }
        let grant: Option<BreakGlassGrant> = if r.break_glass {
            Some(self.store.break_glass_grant_for(spiffe_id.as_str(), now).await?.ok_or_else(|| {
                LoginError::Forbidden(format!(
                    "`{spiffe_id}` holds no live break-glass grant (`hallmark human break-glass grant`)"
                ))
            })?)
        } else {
            None
        };
        let scim_groups = match &person {
            Some(p) => self.store.person_group_names(&p.id).await?,
            None => Vec::new(),
        };

        // 4. Policy.
        let rules = &self.settings.classes.human;
        let max_ttl = match &grant {
            // Never past the grant itself.
            Some(g) => {
                let left = u64::try_from(g.expires_at - now).unwrap_or(1).max(1);
                self.settings.people.break_glass_ttl.secs().min(left)
            }
            None => rules.max_ttl.secs(),
        };
        let policy = self.policy()?;
        let verdict = decide_login(
            &policy,
            &PolicyLogin {
                spiffe_id: spiffe_id.as_str(),
                path: spiffe_id.path(),
                issuer: &issuer.name,
                issuer_url: &issuer.issuer,
                subject: &token.sub,
                email: token.email.as_deref().unwrap_or_default(),
                email_verified: token.email_verified,
                name: token.name.as_deref().unwrap_or_default(),
                token_groups: &token.groups,
                scim_groups: &scim_groups,
                provisioned: person.is_some(),
                amr: &token.amr,
                requested_ttl: asked.map_or(max_ttl, |t| t.secs()).min(max_ttl),
                break_glass: r.break_glass,
                trust_domain: self.settings.trust_domain.as_str(),
                now,
                max_ttl,
            },
        );
        let action = if r.break_glass { "break_glass" } else { "login" };
        let facts = json!({
            "issuer": issuer.name,
            "email": token.email,
            "groups": token.groups,
            "scim_groups": scim_groups,
            "person_id": person.as_ref().map(|p| p.id.clone()),
            "break_glass_grant": grant.as_ref().map(|g| g.id.clone()),
            "policy_ids": verdict.policy_ids,
        });
        let Some(ttl_secs) = verdict.ttl_secs() else {
            let reason = verdict.reason().unwrap_or("denied").to_owned();
            let mut details = facts;
            set(&mut details, "reason", json!(reason));
            let event = self.audit_event(spiffe_id.as_str(), action, spiffe_id.as_str(), "denied", details);
            self.audit.record(event).await?;
            return Err(LoginError::Forbidden(format!("login of `{spiffe_id}` denied: {reason}")));
        };

        // 5. Sign and record.
        let ca = self.authorities.human()?;
        // The CN is what the issuer verified (the email) or the SPIFFE ID:
        // services that map a CN to a user must never read a display name
        // the person chose ("admin") as an account.
        let name = verified_email.map_or_else(|| spiffe_id.to_string(), str::to_owned);
        let signed = ca
            .sign_svid(&SvidTemplate {
                csr_der: &csr,
                spiffe_id: &spiffe_id,
                dns_names: &[],
                ttl_secs,
                now,
                profile: SvidProfile::Person { break_glass: r.break_glass },
                task_id: None,
                person_name: Some(&shown(&name)),
            })
            .map_err(|e| LoginError::BadRequest(format!("csr: {e}")))?;
        let authority_id = ca.id();
        let mut details = facts;
        set(&mut details, "serial", json!(signed.serial));
        set(&mut details, "not_after", json!(signed.not_after));
        set(&mut details, "approval", json!(approval(&issuer, grant.as_ref())));
        let mut event = self.audit_event(spiffe_id.as_str(), action, spiffe_id.as_str(), "ok", details);
        event.credential = Some(hallmark_store::Credential {
            id: signed.serial.clone(),
            kind: CredentialKind::X509,
            entry_id: String::new(),
            spiffe_id: spiffe_id.to_string(),
            node_id: String::new(),
            class: hallmark_core::Class::Human.to_string(),
            owner: String::new(),
            policy_version: event.policy_version,
            evidence_digest: String::new(),
            issued_at: event.at,
            not_before: signed.not_before,
            not_after: signed.not_after,
            revoked_at: None,
            revoke_reason: None,
            authority_id: authority_id.clone(),
            audit_seq: 0,
            delivered_to: None,
            delivered_at: None,
            audience: None,
            task_id: None,
            person_id: person.as_ref().map(|p| p.id.clone()),
        });
        self.audit.record(event).await?;
        self.still_allowed(&spiffe_id, person.as_ref(), grant.as_ref(), &signed.serial).await?;
        if let Some(g) = &grant {
            let serial = signed.serial.clone();
            let rec = self.record_change(spiffe_id.as_str(), "break_glass_use", move |u: &BreakGlassUse| {
                Change::new(&u.id, json!({ "grant_id": u.grant_id, "subject": u.subject, "serial": serial }))
            });
            self.store.record_break_glass_use(g, &signed.serial, now, rec).await?;
            tracing::warn!(subject = %spiffe_id, grant = %g.id, serial = %signed.serial, "break-glass certificate issued");
        } else {
            tracing::info!(subject = %spiffe_id, serial = %signed.serial, not_after = signed.not_after, "person signed in");
        }
        let bundle = self.authorities.bundle().borrow().clone();
        Ok(LoginCertificate {
            spiffe_id: spiffe_id.to_string(),
            serial: signed.serial,
            not_before: signed.not_before,
            not_after: signed.not_after,
            certificate_chain: to_pem(&signed.chain),
            trust_bundle: to_pem(&bundle.x509_authorities),
            authority_id,
            break_glass: r.break_glass,
        })
    }
}

impl ServerState {
    /// After recording certificate `serial`: the person may still have it.
    /// A leaver, a recovery filed or a break-glass grant withdrawn while it
    /// was decided and recorded would otherwise leave it live (the checks
    /// of step 3 ran before); it is revoked here and the login refused.
    async fn still_allowed(
        &self,
        spiffe_id: &hallmark_core::SpiffeId,
        person: Option<&Person>,
        grant: Option<&BreakGlassGrant>,
        serial: &str,
    ) -> Result<(), LoginError> {
        let now = now_unix();
        let mut why = None;
        if let Some(p) = person
            && self.store.person(&p.id).await?.is_none_or(|p| p.has_left())
        {
            why = Some(format!("`{spiffe_id}` left while signing in"));
        }
        if !self.store.recoveries(Some(spiffe_id.as_str()), true).await?.is_empty() {
            why = Some(format!("a recovery of `{spiffe_id}` was filed while signing in"));
        }
        if let Some(g) = grant
            && self.store.break_glass_grant_for(spiffe_id.as_str(), now).await?.is_none_or(|live| live.id != g.id)
        {
            why = Some(format!("break-glass grant `{}` was withdrawn while signing in", g.id));
        }
        let Some(why) = why else { return Ok(()) };
        let target = hallmark_store::RevokeTarget::Credential(serial.to_owned());
        self.revoke_now(&target, &why, "hallmark/login").await?;
        Err(LoginError::Forbidden(why))
    }
}

/// How a certificate was approved, as its record says: an issuer's login
/// decided by policy, or a break-glass grant and who gave it.
fn approval(issuer: &PeopleIssuer, grant: Option<&BreakGlassGrant>) -> String {
    match grant {
        Some(g) => format!("break-glass grant {} by {}", g.id, g.granted_by),
        None => format!("oidc login ({}) decided by policy", issuer.name),
    }
}

/// Step 2: the ID token is the issuer's (signature with its keys), live,
/// for Hallmark's client id, and for this login (nonce).
async fn verify_id_token(issuer: &PeopleIssuer, token: &str, nonce: &str, now: i64) -> Result<Verified, LoginError> {
    let refused = |m: String| LoginError::Unauthenticated(format!("ID token: {m}"));
    let jws: Jws<'_, IdClaims> = Jws::parse(token, MAX_ID_TOKEN).map_err(|e| match e {
        JwsError::Malformed(m) | JwsError::Refused(m) => refused(m),
    })?;
    let c = &jws.claims;
    if c.iss.as_deref() != Some(issuer.issuer.as_str()) {
        return Err(refused(format!(
            "issued by `{}`, not by `{}` where this login started",
            shown(c.iss.as_deref().unwrap_or("nobody")),
            issuer.issuer
        )));
    }
    issuer.keys.verify_signature(&jws).await.map_err(|e| match e {
        KeyError::Unavailable(_) => {
            tracing::warn!(issuer = %issuer.name, error = %e, "login: the issuer's keys are unavailable");
            LoginError::Unauthenticated(format!("issuer `{}` could not be reached for its keys", issuer.name))
        }
        KeyError::Refused(m) => refused(m),
    })?;
    match c.exp {
        Some(exp) if exp > now => {}
        Some(_) => return Err(refused("the token has expired".into())),
        None => return Err(refused("no `exp`".into())),
    }
    for (name, t) in [("nbf", c.nbf), ("iat", c.iat)] {
        if t.is_some_and(|t| t > now.saturating_add(CLOCK_SKEW)) {
            return Err(refused(format!("`{name}` is in the future")));
        }
    }
    let aud = c.aud.as_ref().ok_or_else(|| refused("no `aud`".into()))?;
    if !aud.contains(&issuer.client_id) {
        return Err(refused(format!("the token's audience does not include `{}`", issuer.client_id)));
    }
    // OpenID Connect Core 3.1.3.7: with several audiences, `azp` must be us.
    if aud.len() > 1 && c.azp.as_deref() != Some(issuer.client_id.as_str()) {
        return Err(refused(format!("several audiences, and `azp` is not `{}`", issuer.client_id)));
    }
    // Constant time is not needed for a nonce that is used once, but costs nothing.
    let same = c.nonce.as_deref().is_some_and(|n| {
        n.len() == nonce.len() && n.bytes().zip(nonce.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !same {
        return Err(refused("the nonce is not this login's (a token from another login, or replayed)".into()));
    }
    let sub = c
        .sub
        .clone()
        .filter(|s| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control))
        .ok_or_else(|| refused("`sub` is missing or invalid".into()))?;
    let email_verified = match &c.email_verified {
        Some(Value::Bool(b)) => *b,
        // Some issuers send the string.
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    Ok(Verified {
        sub,
        email: c.email.clone().filter(|e| e.len() <= 255),
        email_verified,
        name: c.name.clone().filter(|n| !n.is_empty()),
        preferred_username: c.preferred_username.clone(),
        groups: strings(c.groups.as_ref()),
        amr: strings(c.amr.as_ref()),
    })
}

/// Sets `key` in a JSON object.
fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}
