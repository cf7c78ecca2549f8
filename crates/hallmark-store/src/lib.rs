//! Hallmark's datastore: one code path over SQLite (the embedded default) and
//! PostgreSQL (several servers sharing one database).
//!
//! Everything goes through sqlx's `Any` driver with `$N` placeholders, integer
//! unix-second timestamps and text identifiers, so the same statements run on
//! both. Only the DDL differs, by a template variable in the migrations.

mod audit;
mod governance;
mod migrate;
mod store;

pub use audit::{
    AuditBreak, AuditEvent, AuditRecord, AuditVerification, Credential, CredentialFilter, GENESIS, record_hash,
};
pub use governance::{Denial, ExceptionError, ExceptionRecord, Owner, PolicyVersion};
pub use store::{AdminToken, AuthorityRow, Backend, EntryChange, JoinTokenError, Node, Store, StoreError, hash_secret};
