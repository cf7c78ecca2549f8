//! The audit chain: append-only records, each carrying the hash of the one
//! before, so editing or deleting any record is detected by
//! [`crate::Store::verify_audit`].
//!
//! Appends are serialized (a process lock, and on PostgreSQL a table lock so
//! several servers sharing the database extend one chain) and batched: a
//! whole batch is one transaction, so recording does not cap issuance.
//!
//! The hashes alone do not stop someone who can write the database: they can
//! edit a record and compute every later hash again. So each batch also
//! writes a [`Checkpoint`]: the new head's position and hash, signed by a
//! [`HeadSigner`] (the server's audit key, which is never stored here), in
//! the same transaction. A chain rewritten without the key no longer matches
//! its signed head.
//!
//! One concept a file:
//!
//! - `chain`: events, records, their hashing and linking.
//! - `checkpoint`: signed heads; whether a head is vouched for.
//! - `append`: batches found, linked, signed and written.
//! - `verify`: reading the chain back and checking it.
//!
//! Who imports whom (an arrow is a `use`; none points back):
//!
//! ```text
//! audit (mod.rs) -> append, verify, checkpoint, chain   (re-exports only)
//! append         -> checkpoint, chain, crate::store, crate::carried
//! verify         -> checkpoint, chain, crate::store, crate::evidence
//! checkpoint     -> chain, crate::store
//! chain          -> crate::carried
//! crate::recorded -> audit (append's `extend_in`)
//! ```
//!
//! `store` and `carried` import nothing from here, and nothing here imports
//! `recorded` or `audit` itself.

mod append;
mod chain;
mod checkpoint;
mod verify;

pub(crate) use append::extend_in;
pub use chain::{AuditEvent, AuditRecord, GENESIS, record_hash};
pub use checkpoint::{Checkpoint, HEAD_UNVERIFIED, HeadSigner};
pub use verify::{AuditBreak, AuditVerification};
