//! Changes written with their audit records, in one transaction.
//!
//! Every change to the registry and to governance (an entry, an owner, a
//! policy version, an exception, an admin identity, a join token, a
//! revocation) takes a [`Recorder`]: the audit records the change makes, built
//! from what it produced. The change's statements and the records are one
//! datastore transaction, so a crash (or a failed append) leaves either both
//! or neither: never a change with no record, never a record of a change that
//! did not happen.
//!
//! The records extend the one audit chain through the code the group-commit
//! appender uses ([`crate::audit`]): the head is found and checked the same
//! way, the records are linked after it and the new head is signed into a
//! checkpoint in the same transaction. What differs is only who opens the
//! transaction:
//!
//! - **SQLite**: this process's audit lock is taken first, then the
//!   database's write lock (`BEGIN IMMEDIATE`), in the order the appender
//!   takes them, so neither ever holds one while waiting for the other. The
//!   lock also holds the chain's head as the appender remembers it; the
//!   change updates it on commit.
//! - **PostgreSQL**: the change runs in a plain transaction, and the chain is
//!   locked (`LOCK TABLE audit`) only at its end, just before the records
//!   are linked: the appenders of this and other servers wait for the
//!   append and the commit, not for the change.
//!
//! Why this way and not as an item of the appender's batch: a change reads
//! before it writes (the owner's scopes, the entry's revision, whether an
//! exception is still pending) and may be refused halfway; inside a batch it
//! would need savepoints to keep one refusal from failing every issuance
//! record beside it, and the appender's SQLite batch (one multi-statement
//! round trip) could no longer be a single statement. Admin changes are rare
//! and issuance records are many: the issuance path keeps its batching
//! untouched, and a change pays for one transaction of its own, as it
//! already did. Records that only accompany an issuance (the inventory row
//! of a credential, the row of a denial) ride in the appender's batch
//! instead ([`crate::AuditEvent::credential`], [`crate::AuditEvent::denial`]).

use sqlx::AnyConnection;
use tokio::sync::OwnedMutexGuard;

use crate::audit::extend_in;
use crate::{AuditEvent, Backend, HeadSigner, Store, StoreError};

/// Makes a change's audit records from what the change produced.
type MakeRecords<'a, T> = Box<dyn FnOnce(&T) -> Vec<AuditEvent> + Send + 'a>;

/// The records a change makes, built from what it produced, and the key
/// that signs the chain's new head.
pub struct Recorder<'a, T: ?Sized> {
    signer: Option<&'a dyn HeadSigner>,
    records: MakeRecords<'a, T>,
}

impl<'a, T: ?Sized> Recorder<'a, T> {
    /// Records made by `records` from the change's result; each write also
    /// stores a checkpoint of the new head signed by `signer`, as the
    /// appender's batches do.
    pub fn signed(signer: &'a dyn HeadSigner, records: impl FnOnce(&T) -> Vec<AuditEvent> + Send + 'a) -> Self {
        Self { signer: Some(signer), records: Box::new(records) }
    }

    /// Records made by `records`, with no signed checkpoint (tests and
    /// benchmarks, like [`Store::append_audit`]).
    pub fn unsigned(records: impl FnOnce(&T) -> Vec<AuditEvent> + Send + 'a) -> Self {
        Self { signer: None, records: Box::new(records) }
    }
}

impl<T: ?Sized> std::fmt::Debug for Recorder<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("signed", &self.signer.is_some()).finish_non_exhaustive()
    }
}

/// A write transaction that commits only with the audit records of what it
/// changed ([`RecordedTx::commit`]). Dropped uncommitted, it rolls back and
/// releases the audit lock.
pub(crate) struct RecordedTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    /// SQLite: this process's audit lock, taken before the transaction
    /// began, and the chain's head as last written.
    head: Option<OwnedMutexGuard<Option<(i64, String)>>>,
    backend: Backend,
}

impl std::ops::Deref for RecordedTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for RecordedTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Store {
    /// Begins a change that will be committed with its records.
    pub(crate) async fn begin_recorded(&self) -> Result<RecordedTx, StoreError> {
        let (head, tx) = match self.backend() {
            Backend::Sqlite => {
                let head = self.audit_lock.clone().lock_owned().await;
                (Some(head), self.pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            Backend::Postgres => (None, self.pool.begin().await?),
        };
        Ok(RecordedTx { tx, head, backend: self.backend() })
    }

    /// Begins a change to entries: [`Store::begin_recorded`], and on
    /// PostgreSQL the change log locked so that its sequence numbers become
    /// visible in commit order and a reader polling `seq > last` never skips
    /// a change.
    pub(crate) async fn begin_entry_change(&self) -> Result<RecordedTx, StoreError> {
        let mut tx = self.begin_recorded().await?;
        if tx.backend == Backend::Postgres {
            sqlx::query("LOCK TABLE entry_events IN EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        Ok(tx)
    }
}

impl RecordedTx {
    /// For a change of `n` rows: commits it with the records `recorder`
    /// makes of `n`, or, when no row changed, drops it with no record.
    /// Returns `n`.
    pub(crate) async fn commit_count(self, n: u64, recorder: Recorder<'_, u64>) -> Result<u64, StoreError> {
        if n > 0 {
            self.commit(&n, recorder).await?;
        }
        Ok(n)
    }

    /// Appends the records `recorder` makes of `value` (what the change
    /// produced) to the chain and commits change and records together.
    pub(crate) async fn commit<T: ?Sized>(self, value: &T, recorder: Recorder<'_, T>) -> Result<(), StoreError> {
        let events = (recorder.records)(value);
        let Self { mut tx, mut head, backend } = self;
        let known = head.as_mut().and_then(|h| h.take());
        let written = if events.is_empty() {
            // Nothing changed that needs a record (the change found nothing
            // to do): the head stays where it was.
            Ok(known)
        } else {
            extend_in(&mut tx, backend, known, &events, recorder.signer).await
        };
        let committed = match written {
            Ok(new_head) => tx.commit().await.map(|()| new_head).map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match committed {
            Ok(new_head) => {
                if let Some(h) = head.as_mut() {
                    **h = new_head;
                }
                Ok(())
            }
            // The remembered head stays unknown: the next write reads and
            // checks it again.
            Err(e) => Err(e),
        }
    }
}
