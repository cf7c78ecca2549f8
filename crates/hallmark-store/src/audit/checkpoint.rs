//! Signed checkpoints: the head of the chain signed by the server's audit
//! key as each batch is written, stored and read back, and the judgement of
//! whether a head a batch is about to extend is one a checkpoint vouches for.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::chain::Linked;
use crate::store::{Store, StoreError};

/// A signed statement that record `seq` of the chain has hash `hash`: a
/// head of the chain at time `at`, signed with audit key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Position of the head it signs.
    pub seq: i64,
    /// That record's hash.
    pub hash: String,
    /// Unix seconds.
    pub at: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes signed: a fixed text naming the position, hash and time.
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(self.seq, &self.hash, self.at)
    }
}

fn checkpoint_message(seq: i64, hash: &str, at: i64) -> Vec<u8> {
    format!("hallmark-audit-checkpoint-v1 seq={seq} hash={hash} at={at}").into_bytes()
}

/// Signs the chain's head as each batch is appended, and checks the head a
/// batch extends.
pub trait HeadSigner: Send + Sync {
    /// The id of the key that signs (published with its public half).
    fn key_id(&self) -> String;
    /// A signature over `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
    /// Whether `c`'s signature verifies with a key the signer knows; `None`
    /// when it does not know `c.key_id` (another server's key).
    fn verifies(&self, c: &Checkpoint) -> Option<bool>;
    /// True while an audit key made at this start may adopt a chain written
    /// before checkpoints existed (the upgrade), rather than report its
    /// unsigned head as tampering.
    fn adopting(&self) -> bool;
}

/// The checkpoint of the last of `rows`, signed.
pub(super) fn sign_head(rows: &[Linked<'_>], signer: &dyn HeadSigner) -> Result<Option<Checkpoint>, StoreError> {
    let Some(last) = rows.last() else { return Ok(None) };
    let at = hallmark_core::now_unix();
    let signature = signer.sign(&checkpoint_message(last.seq, &last.hash, at)).map_err(StoreError::Signing)?;
    Ok(Some(Checkpoint {
        seq: last.seq,
        hash: last.hash.clone(),
        at,
        key_id: signer.key_id(),
        signature: hex::encode(signature),
    }))
}

/// The action of the record a signer writes when the head it is about to
/// extend is not one a valid checkpoint signs: the chain was changed without
/// the audit key. `audit verify` fails on it.
pub const HEAD_UNVERIFIED: &str = "audit_head_unverified";

/// Why the head (`seq`, `hash`) is not vouched for by `latest`, if it is not.
pub(super) fn unvouched_head(
    seq: i64,
    hash: &str,
    latest: Option<Checkpoint>,
    signer: &dyn HeadSigner,
) -> Option<(&'static str, String)> {
    match latest {
        None if seq == 0 => None,
        None if signer.adopting() => {
            Some(("audit_chain_adopted", format!("a new audit key signs this chain of {seq} records from here on")))
        }
        None => Some((HEAD_UNVERIFIED, format!("the chain's head (record {seq}) has no signed checkpoint"))),
        Some(c) if c.seq != seq || c.hash != hash => Some((
            HEAD_UNVERIFIED,
            format!("the chain's head (record {seq}) is not the one the latest checkpoint signs (record {})", c.seq),
        )),
        Some(c) => match signer.verifies(&c) {
            Some(false) => {
                Some((HEAD_UNVERIFIED, format!("the checkpoint of record {} does not verify (forged)", c.seq)))
            }
            // Signed by another server's key: `audit verify` judges it with
            // the keys it is given.
            Some(true) | None => None,
        },
    }
}

pub(super) async fn latest_checkpoint<'c, E>(conn: E) -> Result<Option<Checkpoint>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT seq, hash, at, key_id, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    row.map(|r| checkpoint_from_row(&r)).transpose()
}

fn checkpoint_from_row(r: &AnyRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: r.try_get("seq")?,
        hash: r.try_get("hash")?,
        at: r.try_get("at")?,
        key_id: r.try_get("key_id")?,
        signature: r.try_get("signature")?,
    })
}

impl Store {
    /// The newest signed checkpoint, if any.
    pub async fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        latest_checkpoint(&self.pool).await
    }

    /// The newest signed checkpoint at or before record `seq`: the one that
    /// covers a chain read up to `seq` while others may be appending.
    pub async fn audit_checkpoint_upto(&self, seq: i64) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash, at, key_id, signature FROM audit_checkpoints WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| checkpoint_from_row(&r)).transpose()
    }
}
