//! Hallmark's identity model, with no I/O.
//!
//! Every type here can only hold a valid value: a [`SpiffeId`] always obeys the
//! SPIFFE ID rules, a [`Selector`] always has a known type and key, a [`Ttl`] is
//! never zero. Input is checked once, at the edge, by their parsers.

mod audience;
mod config_error;
mod credential_kind;
mod duration;
mod entry;
mod evidence;
mod human;
mod scope;
mod selector;
mod spiffe_id;
mod task;
pub mod time;

pub use audience::{AudienceError, MAX_AUDIENCE_LEN, MAX_AUDIENCES, check_audience, check_audiences};
pub use config_error::ConfigError;
pub use credential_kind::{CredentialKind, CredentialKindError, RevocationKind, RevocationKindError};
pub use duration::{Ttl, TtlError, format_duration, parse_duration};
pub use entry::{
    Bind, BindError, Class, ClassError, Entry, EntryError, EntrySpec, ValidEntrySpec, validate_dns_name, validate_hint,
    validate_owner,
};
pub use evidence::{ProcessInstance, ProcessInstanceError, canonical_selectors, evidence_digest, evidence_digest_of};
pub use human::{HumanClaims, HumanIdTemplate, HumanTemplateError};
pub use scope::{MAX_SCOPES, NodeScope, OutOfScope, OwnerScopes, PathScope, ScopeError, ScopeLists};
pub use selector::{NAMESPACE_KINDS, NODE_KINDS, Selector, SelectorError, SelectorSet, is_image_digest};
pub use spiffe_id::{HUMAN_SEGMENT, RESERVED_SEGMENT, SpiffeId, SpiffeIdError, TrustDomain};
pub use task::{
    ClaimScope, MAX_OBJECTIVE_LEN, MAX_SCOPE_ITEMS, ScopeItem, TaskClaim, TaskError, check_objective, check_subject,
    objective_sha256, parse_scope,
};

/// Current time as unix seconds. Hallmark stores and compares every instant this way.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A 16-byte identifier that sorts by creation time: 8 bytes of microseconds
/// since the epoch, then 8 random bytes (64 bits of entropy). Serial numbers
/// and `jti`s are made this way so that the inventory's index on them grows at
/// its end instead of touching a random page per credential (which the
/// datastore would rewrite on every commit).
pub fn time_ordered_id(random: [u8; 8]) -> [u8; 16] {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&micros.to_be_bytes());
    id[8..].copy_from_slice(&random);
    id
}
