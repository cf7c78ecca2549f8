//! Workload evidence sets: each distinct one stored once under its digest,
//! by the appender in the transaction of the first record that names it
//! (`audit::append`, `ON CONFLICT DO NOTHING` after that); read here for
//! `credential show` and `audit export`, and checked against its digest,
//! here too, for those reads and for `audit verify`.
//!
//! A set is shown only once its content hashes to its digest: the digest is
//! what the inventory row and the audit record carry (and the chain's hashes
//! cover), so a set that still matches it is the one recorded.

use std::collections::HashMap;

use hallmark_core::{ProcessInstance, canonical_selectors, evidence_digest_of};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::carried::EvidenceSet;
use crate::store::{Store, StoreError};

/// Why a stored evidence set is not the one its digest names: it was edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceMismatch {
    /// A selector line is empty (which would let selectors spell process facts).
    #[error("its selector line {0} is empty")]
    EmptySelector(usize),
    /// Some process facts are missing or out of range.
    #[error("its process facts are incomplete or out of range")]
    Process,
    /// The content hashes to another digest.
    #[error("its content does not match its digest (edited)")]
    Digest,
}

/// A stored set once checked: the set, or why it does not match its digest.
pub type CheckedEvidence = Result<EvidenceSet, EvidenceMismatch>;

pub(crate) const EVIDENCE_COLUMNS: &str = "digest, selectors, pid, start_ticks, started_at";

/// A row of the `evidence` table, as stored.
pub(crate) struct StoredEvidence {
    /// The digest it is stored under.
    pub(crate) digest: String,
    /// The selectors' text.
    selectors: String,
    pid: Option<i64>,
    start_ticks: Option<i64>,
    started_at: Option<i64>,
}

impl StoredEvidence {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            digest: r.try_get("digest")?,
            selectors: r.try_get("selectors")?,
            pid: r.try_get("pid")?,
            start_ticks: r.try_get("start_ticks")?,
            started_at: r.try_get("started_at")?,
        })
    }

    /// The set, when its content (as shown: one selector a line, then the
    /// process facts) hashes to the digest it is stored under.
    pub(crate) fn check(self) -> CheckedEvidence {
        let selectors: Vec<String> = self.selectors.lines().map(str::to_owned).collect();
        if let Some(at) = selectors.iter().position(String::is_empty) {
            return Err(EvidenceMismatch::EmptySelector(at + 1));
        }
        let process = match (self.pid, self.start_ticks, self.started_at) {
            (None, None, None) => None,
            (Some(pid), Some(ticks), Some(at)) => {
                let pid = u32::try_from(pid).map_err(|_| EvidenceMismatch::Process)?;
                let ticks = u64::try_from(ticks).map_err(|_| EvidenceMismatch::Process)?;
                Some(ProcessInstance::new(pid, ticks, at).map_err(|_| EvidenceMismatch::Process)?)
            }
            _ => return Err(EvidenceMismatch::Process),
        };
        if evidence_digest_of(&canonical_selectors(&selectors), process.as_ref()) != self.digest {
            return Err(EvidenceMismatch::Digest);
        }
        Ok(EvidenceSet { digest: self.digest, selectors, process })
    }
}

impl Store {
    /// The evidence set stored under `digest`, checked against it; `None`
    /// when none is (credentials issued before sets were stored).
    pub async fn evidence_set(&self, digest: &str) -> Result<Option<CheckedEvidence>, StoreError> {
        let row = self
            .one_by(
                format!("SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE digest = $1"),
                digest,
                StoredEvidence::from_row,
            )
            .await?;
        Ok(row.map(StoredEvidence::check))
    }

    /// The evidence sets stored under any of `digests`, each checked, by digest.
    pub async fn evidence_sets(&self, digests: &[String]) -> Result<HashMap<String, CheckedEvidence>, StoreError> {
        let select = format!("SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE digest IN");
        let rows = self.rows_in(&select, digests, StoredEvidence::from_row).await?;
        Ok(rows.into_iter().map(|stored| (stored.digest.clone(), stored.check())).collect())
    }
}
