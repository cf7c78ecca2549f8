//! The state every handler shares: settings, datastore, authorities,
//! registry, feeds, the policy in force and the server's own certificate.

use std::sync::{Arc, RwLock};

use hallmark_ca::keys::new_key_and_csr;
use hallmark_ca::tls::provider;
use hallmark_ca::x509::{SvidProfile, SvidTemplate};
use hallmark_core::{SpiffeId, now_unix};
use hallmark_policy::{DEFAULT_POLICY, PolicyEngine};
use hallmark_store::{Recorder, Revocation, Store, StoreError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::{Notify, broadcast};

use crate::audit::{self, Change};
use crate::authority::Authorities;
use crate::change_hub::ChangeHub;
use crate::config::ServerSettings;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::refusals::Refusals;
use crate::registry::Registry;
use crate::tls_listener::SwappableCert;

/// Everything the server's handlers share.
pub struct ServerState {
    /// Validated settings.
    pub settings: ServerSettings,
    /// The datastore.
    pub store: Store,
    /// Signing authorities and bundle.
    pub authorities: Arc<Authorities>,
    /// Entries and exceptions, in memory.
    pub registry: Registry,
    /// Entry changes, as read from the datastore's change log, routed to
    /// the agent each concerns.
    pub changes: ChangeHub,
    /// Wakes the change feed right after a local write.
    pub change_notify: Notify,
    /// One reader of the change log at a time (the feed, or a local writer catching up).
    pub(crate) catch_up_lock: tokio::sync::Mutex<()>,
    /// Revocations, as read from the datastore's revocation log.
    pub revocations: broadcast::Sender<Revocation>,
    /// Wakes the revocation feed right after a local revocation.
    pub revocation_notify: Notify,
    /// The policy version in force.
    pub(crate) policy: RwLock<Arc<PolicyEngine>>,
    /// The audit chain's group-commit appender.
    pub audit: audit::Auditor,
    /// The key that signs the audit chain's head (never in the datastore),
    /// and the other servers' public keys.
    pub(crate) audit_keys: Arc<audit::AuditKeys>,
    /// Refusals, counted and written to the audit chain once a second.
    pub refusals: Refusals,
    /// Parent used for entries that name none (set by `hallmark up`).
    pub default_parent: RwLock<Option<SpiffeId>>,
    /// Where this server keeps the bootstrap admin token, once written.
    pub(crate) bootstrap_file: RwLock<Option<std::path::PathBuf>>,
    /// Issuance, denial and decision-latency counters for `/metrics`.
    pub metrics: Metrics,
    pub(crate) server_cert: RwLock<Option<ServerCert>>,
}

/// The server's own TLS certificate: the swappable key, its expiry, and the
/// authority that signed it (a new active authority means a new certificate).
pub(crate) struct ServerCert {
    pub(crate) swap: Arc<SwappableCert>,
    pub(crate) not_after: i64,
    pub(crate) authority_id: String,
}

/// Why a policy was not set.
#[derive(Debug, thiserror::Error)]
pub enum SetPolicyError {
    /// It does not parse or validate.
    #[error(transparent)]
    Invalid(hallmark_policy::PolicyError),
    /// The datastore failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A newly issued server TLS certificate.
pub(crate) struct IssuedServerCert {
    /// The chain and its key, for rustls.
    pub(crate) key: CertifiedKey,
    /// Its expiry, unix seconds.
    pub(crate) not_after: i64,
    /// The authority that signed it.
    pub(crate) authority_id: String,
}

/// Loads the policy in force from the store, storing the default policy as
/// version 1 on first start, with its record signed by `keys`.
pub(crate) async fn load_policy(store: &Store, keys: &audit::AuditKeys) -> Result<PolicyEngine, ServerError> {
    let current = match store.current_policy().await? {
        Some(p) => p,
        None => {
            let default = PolicyEngine::compile(DEFAULT_POLICY, 1)
                .map_err(|source| ServerError::Policy { what: "the default policy".into(), source })?;
            let details = serde_json::json!({ "sha256": default.hash(), "policies": default.len() });
            let rec = Recorder::signed(keys, |v: &i64| {
                vec![hallmark_store::AuditEvent {
                    at: now_unix(),
                    actor: "hallmark".into(),
                    action: "policy_set".into(),
                    subject: v.to_string(),
                    outcome: "ok".into(),
                    policy_version: *v,
                    details,
                    credential: None,
                    denial: None,
                    evidence: None,
                }]
            });
            // Another server may store it at the same moment; either copy is the default.
            if let Err(e) = store.add_policy(DEFAULT_POLICY, default.hash(), "hallmark (default)", rec).await {
                tracing::debug!(error = %e, "default policy stored concurrently");
            }
            store.current_policy().await?.ok_or(ServerError::NoPolicy)?
        }
    };
    let version = u64::try_from(current.version).unwrap_or(0);
    PolicyEngine::compile(&current.text, version)
        .map_err(|source| ServerError::Policy { what: format!("stored policy v{version}"), source })
}

impl ServerState {
    /// An audit event at the current time under the policy version in force.
    pub fn audit_event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        outcome: &str,
        details: serde_json::Value,
    ) -> hallmark_store::AuditEvent {
        let policy_version = self.policy().map(|p| i64::try_from(p.version()).unwrap_or(0)).unwrap_or(0);
        hallmark_store::AuditEvent {
            at: now_unix(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            outcome: outcome.to_owned(),
            policy_version,
            details,
            credential: None,
            denial: None,
            evidence: None,
        }
    }

    /// The policy version in force.
    pub fn policy(&self) -> Result<Arc<PolicyEngine>, ServerError> {
        Ok(self.policy.read().map_err(|_| ServerError::LockPoisoned("policy"))?.clone())
    }

    /// Validates and stores a new policy version with its audit record, then
    /// puts it in force here at once (other servers pick it up within a second). An invalid policy is
    /// refused with Cedar's diagnostics and the current one stays in force.
    pub async fn set_policy(&self, text: &str, by: &str) -> Result<Arc<PolicyEngine>, SetPolicyError> {
        let next = self.store.policy_version().await.map_err(SetPolicyError::Store)? + 1;
        let engine = PolicyEngine::compile(text, u64::try_from(next).unwrap_or(0)).map_err(SetPolicyError::Invalid)?;
        let details = serde_json::json!({ "sha256": engine.hash(), "policies": engine.len() });
        // Recorded under the version it puts in force, not the one it replaces.
        let rec = Recorder::signed(&*self.audit_keys, |v: &i64| {
            let mut e = self.audit_event(by, "policy_set", &v.to_string(), "ok", details);
            e.policy_version = *v;
            vec![e]
        });
        let version = self.store.add_policy(text, engine.hash(), by, rec).await.map_err(SetPolicyError::Store)?;
        let engine = if version == next {
            engine
        } else {
            PolicyEngine::compile(text, u64::try_from(version).unwrap_or(0)).map_err(SetPolicyError::Invalid)?
        };
        let engine = Arc::new(engine);
        if let Ok(mut p) = self.policy.write() {
            *p = engine.clone();
        }
        tracing::info!(version, by, policies = engine.len(), sha256 = engine.hash(), "policy set");
        Ok(engine)
    }

    /// Issues the server's own TLS certificate from the active CA.
    pub(crate) fn issue_server_cert(&self) -> Result<IssuedServerCert, ServerError> {
        let id = self.settings.trust_domain.server_id();
        let kc = new_key_and_csr(Some(&id))?;
        let ca = self.authorities.x509()?;
        let t = SvidTemplate {
            csr_der: &kc.csr_der,
            spiffe_id: &id,
            dns_names: &["hallmark-server".to_owned()],
            ttl_secs: self.settings.agent_svid_ttl.secs(),
            now: now_unix(),
            profile: SvidProfile::Server,
            task_id: None,
            person_name: None,
        };
        let signed = ca.sign_svid(&t)?;
        let key = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kc.key_pkcs8)))
            .map_err(ServerError::Tls)?;
        let chain = signed.chain.into_iter().map(CertificateDer::from).collect();
        Ok(IssuedServerCert { key: CertifiedKey::new(chain, key), not_after: signed.not_after, authority_id: ca.id() })
    }

    /// Renews the server certificate past half its life, or at once when
    /// another authority has become active (the old one may be tainted next).
    pub(crate) fn renew_server_cert_if_due(&self) -> Result<(), ServerError> {
        let guard = self.server_cert.read().map_err(|_| ServerError::LockPoisoned("server certificate"))?;
        let Some(cur) = guard.as_ref() else {
            return Ok(());
        };
        let half = i64::try_from(self.settings.agent_svid_ttl.secs() / 2).unwrap_or(i64::MAX);
        let active = self.authorities.x509()?.id();
        if cur.not_after - now_unix() > half && cur.authority_id == active {
            return Ok(());
        }
        let swap = cur.swap.clone();
        drop(guard);
        let issued = self.issue_server_cert()?;
        swap.set(issued.key);
        *self.server_cert.write().map_err(|_| ServerError::LockPoisoned("server certificate"))? =
            Some(ServerCert { swap, not_after: issued.not_after, authority_id: issued.authority_id });
        Ok(())
    }

    /// The bootstrap admin token's file, when this server wrote one.
    pub fn bootstrap_token_file(&self) -> Option<std::path::PathBuf> {
        self.bootstrap_file.read().ok().and_then(|f| f.clone())
    }
}

impl ServerState {
    /// Applies every change logged since the registry's position to the
    /// registry, then broadcasts it to the agents' sync streams. Local writers
    /// call it before answering, so what they wrote is in force here at once.
    pub async fn catch_up(&self) -> Result<(), ServerError> {
        let _one = self.catch_up_lock.lock().await;
        loop {
            let list = self.store.changes_since(self.registry.seq(), 1000).await?;
            if list.is_empty() {
                return Ok(());
            }
            // The changed entries' current state, read at once (a bulk
            // registration logs thousands of changes).
            let ids: Vec<String> = list.iter().map(|c| c.entry_id.clone()).collect();
            let current: std::collections::HashMap<String, hallmark_core::Entry> =
                self.store.entries_by_id(&ids).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
            for c in list {
                self.registry.apply(&c.entry_id, current.get(&c.entry_id).cloned(), c.seq);
                self.changes.publish(c);
            }
        }
    }

    /// [`ServerState::catch_up`] after a local write, which has taken effect
    /// whatever happens here: a failure is logged and the feed retries.
    pub async fn entries_written(&self) {
        if let Err(e) = self.catch_up().await {
            tracing::warn!(error = %e, "registry catch-up failed; the change feed will retry");
            self.change_notify.notify_one();
        }
    }

    /// Re-reads the approved exceptions into the registry.
    pub async fn reload_exceptions(&self) -> Result<(), ServerError> {
        self.registry.set_exceptions(self.store.approved_exceptions(now_unix()).await?);
        Ok(())
    }
}

impl ServerState {
    /// How a change made by `actor` is recorded: one `action` record of what
    /// `describe` says of the change's result, under the policy version in
    /// force, written in the change's own transaction with the chain's new
    /// head signed by this server's audit key.
    pub fn record_change<'a, T: ?Sized>(
        &'a self,
        actor: &'a str,
        action: &'a str,
        describe: impl FnOnce(&T) -> Change + Send + 'a,
    ) -> Recorder<'a, T> {
        self.record_changes(actor, action, move |v| vec![describe(v)])
    }

    /// As [`ServerState::record_change`], for a change that makes one record
    /// per item (a batch registration, the exceptions that expired); none
    /// when `describe` gives none (the change found nothing to do).
    pub fn record_changes<'a, T: ?Sized>(
        &'a self,
        actor: &'a str,
        action: &'a str,
        describe: impl FnOnce(&T) -> Vec<Change> + Send + 'a,
    ) -> Recorder<'a, T> {
        Recorder::signed(&*self.audit_keys, move |v| {
            describe(v).into_iter().map(|c| self.audit_event(actor, action, &c.subject, "ok", c.details)).collect()
        })
    }
}
