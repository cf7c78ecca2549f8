//! Hallmark's datastore: one code path over SQLite (the embedded default) and
//! PostgreSQL (several servers sharing one database).
//!
//! Everything goes through sqlx's `Any` driver with `$N` placeholders, integer
//! unix-second timestamps and text identifiers, so the same statements run on
//! both. Only the DDL differs, by a template variable in the migrations.

mod audit;
mod authority;
mod denials;
mod governance;
mod migrate;
mod node_admin;
mod revocation;
mod store;

pub use audit::{
    AuditBreak, AuditEvent, AuditRecord, AuditVerification, Checkpoint, Credential, CredentialFilter, GENESIS,
    HEAD_UNVERIFIED, HeadSigner, record_hash,
};
pub use authority::{AuthorityRow, AuthorityState};
pub use denials::DenialRecord;
pub use governance::{Denial, ExceptionError, ExceptionRecord, Owner, PolicyVersion};
pub use node_admin::{JoinTokenRecord, JoinTokenRevokeError};
pub use revocation::{Revocation, RevokeOutcome, RevokeTarget};
pub use store::{
    AdminToken, Backend, EntryChange, JoinTokenError, NewAdminToken, Node, NodeSvid, Store, StoreError, hash_secret,
    parse_entries_page,
};
