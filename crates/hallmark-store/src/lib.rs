//! Hallmark's datastore: one code path over SQLite (the embedded default) and
//! PostgreSQL (several servers sharing one database).
//!
//! Everything goes through sqlx's `Any` driver with `$N` placeholders, integer
//! unix-second timestamps and text identifiers, so the same statements run on
//! both. Only the DDL differs, by a template variable in the migrations.

mod admin_tokens;
mod audit;
mod authority;
mod carried;
mod denials;
mod entries;
mod evidence;
mod governance;
mod human_track;
mod inventory;
mod migrate;
mod nodes;
mod people;
mod recorded;
mod revocation;
mod store;
mod tasks;

pub use admin_tokens::{AdminToken, NewAdminToken};
pub use audit::{
    AuditBreak, AuditEvent, AuditRecord, AuditVerification, Checkpoint, GENESIS, HEAD_UNVERIFIED, HeadSigner,
    record_hash,
};
pub use authority::{AuthorityRow, AuthorityState};
pub use carried::{Credential, Denial, EvidenceSet};
pub use denials::DenialRecord;
pub use entries::{EntryChange, parse_entries_page};
pub use evidence::{CheckedEvidence, EvidenceMismatch};
pub use governance::{ExceptionError, ExceptionRecord, NewException, Owner, PolicyVersion};
pub use human_track::{
    BreakGlassGrant, BreakGlassUse, LoginNonce, LoginNonceError, MAX_LOGINS_IN_FLIGHT, MAX_LOGINS_PER_SOURCE,
    RecoveryRequest, RecoveryState, RecoveryStep,
};
pub use inventory::CredentialFilter;
pub use nodes::{JoinTokenError, JoinTokenRecord, JoinTokenRevokeError, Node, NodeSvid, join_token_id};
pub use people::{GroupChange, GroupWrite, Moved, OwnerPerson, Person, PersonChange, PersonWrite, ScimGroup};
pub use recorded::Recorder;
pub use revocation::{Revocation, RevokeOutcome, RevokeTarget};
pub use store::{Backend, Store, StoreError, hash_secret, new_secret, random_hex};
pub use tasks::{NewTask, Task, TaskProcess};
