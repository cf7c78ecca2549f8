//! Registration entries: which workload gets which SPIFFE ID, under which rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Selector, SelectorError, SelectorSet, SpiffeId, SpiffeIdError, TrustDomain, Ttl, TtlError};

/// Longest hint, in bytes (the Workload API says SHOULD NOT exceed 1024).
pub const MAX_HINT_LEN: usize = 1024;
/// Most selectors one entry may require.
pub const MAX_SELECTORS: usize = 64;
/// Most DNS names one entry may carry.
pub const MAX_DNS_NAMES: usize = 64;

/// The lifecycle class of an identity: each has its own TTL ceiling, renewal and
/// recovery rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Services and jobs. Fails closed; never recovered by a human path.
    #[default]
    Machine,
    /// AI agents: task-bound, fails closed.
    Agent,
    /// People: the only class that may ever use a recovery path.
    Human,
}

/// An unknown class name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown class `{0}` (known: machine, agent, human)")]
pub struct ClassError(pub String);

impl Class {
    /// The class's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Agent => "agent",
            Self::Human => "human",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = ClassError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "machine" => Ok(Self::Machine),
            "agent" => Ok(Self::Agent),
            "human" => Ok(Self::Human),
            other => Err(ClassError(other.to_owned())),
        }
    }
}

/// What an entry's credentials belong to: by default the workload's evidence
/// (every process that shows it shares them until they expire); with
/// `process`, the one process instance that asked, whose end withdraws and
/// revokes them; with `task`, the process instance too, and only while it
/// (or an ancestor) is bound to an active task of the entry (AI agents:
/// `hallmark task run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bind {
    /// Held per evidence set, until expiry or revocation.
    #[default]
    None,
    /// Held per process instance (pid, start time, pidfd); withdrawn and
    /// revoked when that process exits.
    Process,
    /// Held per process instance, and issued only to a process of an active
    /// task of the entry: the task's root process or a descendant of it.
    /// Each credential carries the task; ending the task revokes them all.
    Task,
}

/// An unknown bind mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bind `{0}` (known: none, process, task)")]
pub struct BindError(pub String);

impl Bind {
    /// The mode's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Process => "process",
            Self::Task => "task",
        }
    }

    /// Whether credentials are held per process instance (`process`, `task`).
    pub fn per_process(self) -> bool {
        matches!(self, Self::Process | Self::Task)
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Bind {
    type Err = BindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "process" => Ok(Self::Process),
            "task" => Ok(Self::Task),
            other => Err(BindError(other.to_owned())),
        }
    }
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// A bad SPIFFE ID (the entry's or its parent's).
    #[error(transparent)]
    SpiffeId(#[from] SpiffeIdError),
    /// A bad selector.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A bad TTL.
    #[error(transparent)]
    Ttl(#[from] TtlError),
    /// A bad class.
    #[error(transparent)]
    Class(#[from] ClassError),
    /// A bad bind mode.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// No selectors were given.
    #[error("an entry needs at least one workload selector (unix:, container: or k8s:)")]
    NoSelectors,
    /// Too many selectors or DNS names.
    #[error("too many {0} (at most {1})")]
    TooMany(&'static str, usize),
    /// A workload selector given as a node selector.
    #[error(
        "`{0}` describes the workload, not its node: give it as a selector (`--selector`); node selectors are \
         node:, x509pop:, tpm: and k8s_psat:"
    )]
    NotNodeSelector(String),
    /// The same selector was given twice.
    #[error("duplicate selector `{0}`")]
    DuplicateSelector(String),
    /// An image named by tag or name alone, with no digest to pin it.
    #[error(
        "`{0}` names an image by tag, and a tag can be moved to any image: pin the digest as well \
         (`container:image_digest:sha256:…` or `k8s:container-image:sha256:…`; `podman image inspect --format '{{{{.Digest}}}}' IMAGE` or `{{{{.Id}}}}` shows it)"
    )]
    ImageTagOnly(String),
    /// The owner name is missing or malformed.
    #[error("invalid owner `{0}`: 1-128 characters of letters, digits, `.`, `-`, `_`, `@`")]
    Owner(String),
    /// A DNS name is malformed.
    #[error("invalid DNS name `{0}`")]
    DnsName(String),
    /// The hint is too long or has control characters.
    #[error("invalid hint: at most 1024 bytes with no control characters")]
    Hint,
    /// An entry was attached to a recovery path: only people are recovered,
    /// by the help desk (`hallmark human recover`), never a workload.
    #[error(
        "registration entries have no recovery path (this entry is `{0}`): machines fail closed and are re-issued from attestation; people are recovered with `hallmark human recover`"
    )]
    Recovery(Class),
    /// An entry of class `human`: people get certificates from `hallmark
    /// login`, never from a registration entry through the Workload API.
    #[error(
        "class `human` is not for registration entries: people sign in with `hallmark login` and get their certificate from the human issuing authority"
    )]
    HumanClass,
    /// An entry holding a person's SPIFFE ID.
    #[error(
        "SPIFFE ID `{0}` is a person's: paths under `/human/` are issued only by `hallmark login`, never to a workload"
    )]
    HumanId(String),
    /// No parent was given and no default applies.
    #[error("an entry needs a parent (`--parent`): the SPIFFE ID of the agent that serves it")]
    NoParent,
    /// The SPIFFE ID is one Hallmark keeps for its own servers and agents.
    #[error("SPIFFE ID `{0}` is reserved: paths under `/hallmark/` name Hallmark's own servers and agents")]
    Reserved(String),
    /// The parent is not an agent's SPIFFE ID.
    #[error("parent `{0}` is not an agent: a parent is an agent's SPIFFE ID (`spiffe://TD/hallmark/agent/...`)")]
    ParentNotAgent(String),
}

/// A validated registration entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable identifier, assigned by the store.
    pub id: String,
    /// The SPIFFE ID the workload receives.
    pub spiffe_id: SpiffeId,
    /// The agent (node) that may serve this entry.
    pub parent_id: SpiffeId,
    /// Facts a workload must all show to match.
    pub selectors: SelectorSet,
    /// The accountable owner (a team name).
    pub owner: String,
    /// Lifecycle class.
    pub class: Class,
    /// X.509-SVID lifetime, seconds.
    #[serde(with = "ttl_secs")]
    pub x509_ttl: Ttl,
    /// JWT-SVID lifetime, seconds.
    #[serde(with = "ttl_secs")]
    pub jwt_ttl: Ttl,
    /// DNS SANs for the X.509-SVID.
    pub dns_names: Vec<String>,
    /// Optional hint shown to workloads holding several identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Whether the entry may use a recovery path (only `human` entries may).
    #[serde(default)]
    pub recovery: bool,
    /// What its credentials belong to: the evidence (default) or one process instance.
    #[serde(default)]
    pub bind: Bind,
    /// Incremented on every change.
    pub revision: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// When the entry was revoked (`hallmark revoke --entry` or `--owner`).
    /// A revoked entry stays as a record but is never served or issued again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl Entry {
    /// True when every workload selector the entry requires is among the
    /// workload's. Node selectors are not the workload's to show: see
    /// [`Entry::serves_node`].
    pub fn matches(&self, workload: &SelectorSet) -> bool {
        self.selectors.iter().filter(|s| !s.is_node()).all(|s| workload.contains(s))
    }

    /// True when every node selector the entry requires (`--node-selector`)
    /// is among the node's: only such a node's agent is sent the entry or may
    /// ask for its credentials.
    pub fn serves_node(&self, node: &SelectorSet) -> bool {
        self.selectors.iter().filter(|s| s.is_node()).all(|s| node.contains(s))
    }

    /// The node selectors the entry requires, in order.
    pub fn node_selectors(&self) -> impl Iterator<Item = &Selector> {
        self.selectors.iter().filter(|s| s.is_node())
    }
}

mod ttl_secs {
    use super::Ttl;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &Ttl, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ttl, D::Error> {
        Ttl::from_secs(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An entry as an operator asks for it, before validation: the admin API's
/// request body for create and update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// SPIFFE ID to issue.
    pub spiffe_id: String,
    /// Parent agent ID; the server may supply a default.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// `type:key:value` selectors.
    pub selectors: Vec<String>,
    /// Node selectors (`node:`, `x509pop:`, `tpm:`, `k8s_psat:`): the
    /// parent's node must have proved each of them.
    #[serde(default)]
    pub node_selectors: Vec<String>,
    /// Owner name.
    pub owner: String,
    /// `machine` (default), `agent` or `human`.
    #[serde(default)]
    pub class: Option<String>,
    /// X.509 TTL like `1h`; the server default applies when absent.
    #[serde(default)]
    pub x509_ttl: Option<String>,
    /// JWT TTL like `5m`; the server default applies when absent.
    #[serde(default)]
    pub jwt_ttl: Option<String>,
    /// DNS SANs.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Hint.
    #[serde(default)]
    pub hint: Option<String>,
    /// Attach to a recovery path (human entries only).
    #[serde(default)]
    pub recovery: Option<bool>,
    /// `none` (default) or `process`: credentials that end with their process.
    #[serde(default)]
    pub bind: Option<String>,
}

/// The checked content of an [`EntrySpec`]: everything but the store-assigned fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEntrySpec {
    /// SPIFFE ID to issue.
    pub spiffe_id: SpiffeId,
    /// Parent agent ID.
    pub parent_id: SpiffeId,
    /// Selectors.
    pub selectors: SelectorSet,
    /// Owner.
    pub owner: String,
    /// Class.
    pub class: Class,
    /// X.509 TTL.
    pub x509_ttl: Ttl,
    /// JWT TTL.
    pub jwt_ttl: Ttl,
    /// DNS names, lowercased, in the order given.
    pub dns_names: Vec<String>,
    /// Hint.
    pub hint: Option<String>,
    /// Recovery path attached.
    pub recovery: bool,
    /// What its credentials belong to.
    pub bind: Bind,
}

impl ValidEntrySpec {
    /// The entry this spec becomes when stored as `id` at `now` (unix
    /// seconds): first revision, not revoked.
    pub fn into_entry(self, id: String, now: i64) -> Entry {
        Entry {
            id,
            spiffe_id: self.spiffe_id,
            parent_id: self.parent_id,
            selectors: self.selectors,
            owner: self.owner,
            class: self.class,
            x509_ttl: self.x509_ttl,
            jwt_ttl: self.jwt_ttl,
            dns_names: self.dns_names,
            hint: self.hint,
            recovery: self.recovery,
            bind: self.bind,
            revision: 1,
            created_at: now,
            updated_at: now,
            revoked_at: None,
        }
    }
}

impl EntrySpec {
    /// Checks every field against the trust domain and fills defaults.
    pub fn validate(
        &self,
        td: &TrustDomain,
        default_parent: Option<&SpiffeId>,
        default_x509_ttl: Ttl,
        default_jwt_ttl: Ttl,
    ) -> Result<ValidEntrySpec, EntryError> {
        let spiffe_id = SpiffeId::workload_in(&self.spiffe_id, td)?;
        // Whatever the caller's role: an entry holding the server's or an
        // agent's ID would let a workload act as that server or agent.
        if spiffe_id.is_reserved() {
            return Err(EntryError::Reserved(spiffe_id.to_string()));
        }
        // Nor may it hold a person's: the Workload API never serves a human identity.
        if spiffe_id.is_human() {
            return Err(EntryError::HumanId(spiffe_id.to_string()));
        }
        let parent_id = match (&self.parent_id, default_parent) {
            (Some(p), _) => SpiffeId::workload_in(p, td)?,
            (None, Some(d)) => d.clone(),
            (None, None) => return Err(EntryError::NoParent),
        };
        if !parent_id.is_agent() {
            return Err(EntryError::ParentNotAgent(parent_id.to_string()));
        }
        if self.selectors.len() + self.node_selectors.len() > MAX_SELECTORS {
            return Err(EntryError::TooMany("selectors", MAX_SELECTORS));
        }
        // Both kinds are kept in one set; which is which follows from the
        // type. `selectors` may hold node selectors too (an entry read back
        // and sent again has them there); `node_selectors` holds only those.
        let mut selectors = SelectorSet::new();
        for (raw, node_only) in
            self.selectors.iter().map(|s| (s, false)).chain(self.node_selectors.iter().map(|s| (s, true)))
        {
            let sel: Selector = raw.parse()?;
            if node_only && !sel.is_node() {
                return Err(EntryError::NotNodeSelector(raw.clone()));
            }
            if !selectors.insert(sel) {
                return Err(EntryError::DuplicateSelector(raw.clone()));
            }
        }
        // A workload selector at least: node selectors alone would match
        // every process on the node.
        if selectors.iter().all(Selector::is_node) {
            return Err(EntryError::NoSelectors);
        }
        check_image_pinned(&selectors)?;
        validate_owner(&self.owner)?;
        let class = match &self.class {
            Some(c) => c.parse()?,
            None => Class::default(),
        };
        let x509_ttl = self.x509_ttl.as_deref().map(Ttl::parse).transpose()?.unwrap_or(default_x509_ttl);
        let jwt_ttl = self.jwt_ttl.as_deref().map(Ttl::parse).transpose()?.unwrap_or(default_jwt_ttl);
        if self.dns_names.len() > MAX_DNS_NAMES {
            return Err(EntryError::TooMany("DNS names", MAX_DNS_NAMES));
        }
        let mut dns_names = Vec::with_capacity(self.dns_names.len());
        for d in &self.dns_names {
            validate_dns_name(d)?;
            let d = d.to_ascii_lowercase();
            if !dns_names.contains(&d) {
                dns_names.push(d);
            }
        }
        if let Some(h) = &self.hint {
            validate_hint(h)?;
        }
        if class == Class::Human {
            return Err(EntryError::HumanClass);
        }
        let recovery = self.recovery.unwrap_or(false);
        if recovery {
            return Err(EntryError::Recovery(class));
        }
        let bind = self.bind.as_deref().map(Bind::from_str).transpose()?.unwrap_or_default();
        Ok(ValidEntrySpec {
            spiffe_id,
            parent_id,
            selectors,
            owner: self.owner.clone(),
            class,
            x509_ttl,
            jwt_ttl,
            dns_names,
            hint: self.hint.clone().filter(|h| !h.is_empty()),
            recovery,
            bind,
        })
    }
}

/// Refuses an entry that names a container image without a digest: digests,
/// not tags, decide which image a workload runs.
fn check_image_pinned(selectors: &SelectorSet) -> Result<(), EntryError> {
    let has = |kind: &str, key: &str| selectors.iter().find(|s| s.kind() == kind && s.key() == key);
    let pinned = has("container", "image_digest").is_some() || has("k8s", "container-image").is_some();
    match has("container", "image") {
        Some(tag) if !pinned => Err(EntryError::ImageTagOnly(tag.to_string())),
        _ => Ok(()),
    }
}

/// Checks an owner name: 1-128 of `[A-Za-z0-9._@-]`.
pub fn validate_owner(owner: &str) -> Result<(), EntryError> {
    let ok = !owner.is_empty()
        && owner.len() <= 128
        && owner.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'));
    if ok { Ok(()) } else { Err(EntryError::Owner(owner.to_owned())) }
}

/// Checks a DNS name: labels of letters, digits and `-`, an optional leading `*.`, at most 253 bytes.
pub fn validate_dns_name(name: &str) -> Result<(), EntryError> {
    let err = || EntryError::DnsName(name.to_owned());
    let body = name.strip_prefix("*.").unwrap_or(name);
    if body.is_empty() || name.len() > 253 {
        return Err(err());
    }
    for label in body.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(err());
        }
    }
    Ok(())
}

/// Checks a hint: at most 1024 bytes, no control characters.
pub fn validate_hint(hint: &str) -> Result<(), EntryError> {
    if hint.len() > MAX_HINT_LEN || hint.chars().any(char::is_control) {
        return Err(EntryError::Hint);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EntrySpec {
        EntrySpec {
            spiffe_id: "spiffe://example.org/web".into(),
            parent_id: Some("spiffe://example.org/hallmark/agent/join_token/abc".into()),
            selectors: vec!["unix:uid:1000".into()],
            owner: "payments".into(),
            ..Default::default()
        }
    }

    fn validate(s: &EntrySpec) -> Result<ValidEntrySpec, EntryError> {
        let td = TrustDomain::new("example.org").unwrap();
        s.validate(&td, None, Ttl::parse("1h").unwrap(), Ttl::parse("5m").unwrap())
    }

    #[test]
    fn valid_with_defaults() {
        let v = validate(&spec()).unwrap();
        assert_eq!(v.x509_ttl.secs(), 3600);
        assert_eq!(v.jwt_ttl.secs(), 300);
        assert_eq!(v.class, Class::Machine);
    }

    #[test]
    fn refusals_name_the_value() {
        type Mutation = fn(&mut EntrySpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.spiffe_id = "spiffe://example.org/a//b".into(), "a//b"),
            (|s| s.spiffe_id = "spiffe://other.org/a".into(), "other.org"),
            (|s| s.selectors = vec!["kube:ns:x".into()], "kube"),
            (|s| s.selectors = vec!["container:image:localhost/app:1".into()], "pin the digest"),
            (|s| s.selectors = vec!["unix:uid:1".into(), "unix:uid:1".into()], "unix:uid:1"),
            (|s| s.selectors.clear(), "selector"),
            (|s| s.x509_ttl = Some("0s".into()), "0s"),
            (|s| s.jwt_ttl = Some("soon".into()), "soon"),
            (|s| s.owner = String::new(), "owner"),
            (|s| s.class = Some("robot".into()), "robot"),
            (|s| s.dns_names = vec!["bad..name".into()], "bad..name"),
            (|s| s.hint = Some("x".repeat(2000)), "hint"),
            (|s| s.parent_id = None, "parent"),
            (|s| s.recovery = Some(true), "machine"),
            (|s| s.bind = Some("thread".into()), "thread"),
            (|s| s.spiffe_id = "spiffe://example.org/hallmark/server".into(), "reserved"),
            (|s| s.spiffe_id = "spiffe://example.org/hallmark/agent/local".into(), "reserved"),
            (|s| s.spiffe_id = "spiffe://example.org/HALLMARK/x".into(), "reserved"),
            (|s| s.parent_id = Some("spiffe://example.org/web".into()), "not an agent"),
            (|s| s.parent_id = Some("spiffe://example.org/hallmark/server".into()), "not an agent"),
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = validate(&s).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should name {needle:?}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn bind_defaults_to_none_and_parses_process() {
        assert_eq!(validate(&spec()).unwrap().bind, Bind::None);
        let mut s = spec();
        s.bind = Some("process".into());
        assert_eq!(validate(&s).unwrap().bind, Bind::Process);
        // An entry stored before `bind` existed reads as unbound.
        let e = validate(&spec()).unwrap().into_entry("e1".into(), 0);
        let mut v = serde_json::to_value(&e).unwrap();
        v.as_object_mut().unwrap().remove("bind");
        assert_eq!(serde_json::from_value::<Entry>(v).unwrap().bind, Bind::None);
    }

    #[test]
    fn matching_is_subset() {
        let v = validate(&spec()).unwrap();
        let e = v.into_entry("e1".into(), 0);
        let mut w: SelectorSet = ["unix:uid:1000", "unix:gid:1000"].iter().map(|s| s.parse().unwrap()).collect();
        assert!(e.matches(&w));
        w.remove(&"unix:uid:1000".parse().unwrap());
        assert!(!e.matches(&w));
    }
}
