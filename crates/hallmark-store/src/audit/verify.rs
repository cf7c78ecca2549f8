//! Reading the chain back and verifying it: records by position and time,
//! and the checks `audit verify` runs (every link and hash, the inventory's
//! records, the evidence sets against their digests, the stored
//! checkpoints, the records of unsigned heads).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::chain::{AuditEvent, AuditRecord, GENESIS, hash_parts};
use super::checkpoint::HEAD_UNVERIFIED;
use crate::evidence::{EVIDENCE_COLUMNS, StoredEvidence};
use crate::store::{Store, StoreError};

/// The first break found by verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditBreak {
    /// The first record that does not verify (or the first missing position).
    pub seq: i64,
    /// What is wrong with it.
    pub problem: String,
}

/// Result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Records checked.
    pub records: i64,
    /// `None` when the whole chain verifies.
    pub broken: Option<AuditBreak>,
}

const COLUMNS: &str = "seq, at, actor, action, subject, outcome, policy_version, details, prev_hash, hash";

fn record_from_row(r: &AnyRow) -> Result<AuditRecord, StoreError> {
    let details: String = r.try_get("details")?;
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        event: AuditEvent {
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            subject: r.try_get("subject")?,
            outcome: r.try_get("outcome")?,
            policy_version: r.try_get("policy_version")?,
            // An unparsable details column is kept as a string so the hash check reports it.
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
            credential: None,
            denial: None,
            evidence: None,
        },
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

impl Store {
    /// Records after position `after_seq` whose time is between two instants
    /// (inclusive), in chain order, at most `limit`.
    pub async fn audit_records(
        &self,
        after_seq: i64,
        since: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > $1 AND at >= $2 AND at <= $3 ORDER BY seq LIMIT $4"
        )))
        .bind(after_seq)
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// The first record that says the head a server extended was not signed
    /// ([`HEAD_UNVERIFIED`]): (position, reason).
    pub async fn first_head_notice(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, details FROM audit WHERE action = $1 ORDER BY seq LIMIT 1")
            .bind(HEAD_UNVERIFIED)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let details: String = r.try_get("details")?;
            let reason = serde_json::from_str::<serde_json::Value>(&details)
                .ok()
                .and_then(|v| v.get("reason").and_then(serde_json::Value::as_str).map(str::to_owned))
                .unwrap_or(details);
            Ok((r.try_get("seq")?, reason))
        })
        .transpose()
    }

    /// The hash of record `seq`, if the chain has it.
    pub async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT hash FROM audit WHERE seq = $1").bind(seq).fetch_optional(&self.pool).await?;
        row.map(|r| r.try_get("hash").map_err(StoreError::from)).transpose()
    }

    /// The first stored checkpoint the chain no longer agrees with: its
    /// record is gone, or has another hash. Cheap (no signature is checked):
    /// a rewrite or truncation shows at every checkpoint after it.
    pub async fn first_disagreeing_checkpoint(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT c.seq AS seq, a.hash AS chain_hash FROM audit_checkpoints c LEFT JOIN audit a ON a.seq = c.seq \
             WHERE a.hash IS NULL OR a.hash <> c.hash ORDER BY c.seq LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let seq: i64 = r.try_get("seq")?;
            let problem = match r.try_get::<Option<String>, _>("chain_hash")? {
                None => format!("record {seq}, which a signed checkpoint covers, is missing (deleted)"),
                Some(_) => format!("record {seq} does not match its signed checkpoint (the chain was rewritten)"),
            };
            Ok((seq, problem))
        })
        .transpose()
    }

    /// Checks the whole chain, page by page, and names the first broken record:
    /// a missing position (deleted record), a hash that does not match the
    /// record (edited record), or a `prev_hash` that does not match its
    /// predecessor; then that the inventory's records exist, and that every
    /// stored evidence set still matches its digest.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_owned();
        let mut count = 0;
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM audit WHERE seq >= $1 ORDER BY seq LIMIT 10000"
            )))
            .bind(expected_seq)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                // The hash is over the stored text of the details, exactly as
                // written: even an edit that keeps the JSON's meaning shows.
                let details: String = row.try_get("details")?;
                let seq: i64 = row.try_get("seq")?;
                let event = AuditEvent {
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    subject: row.try_get("subject")?,
                    outcome: row.try_get("outcome")?,
                    policy_version: row.try_get("policy_version")?,
                    details: serde_json::Value::Null,
                    credential: None,
                    denial: None,
                    evidence: None,
                };
                let (prev_hash, hash): (String, String) = (row.try_get("prev_hash")?, row.try_get("hash")?);
                let broken = |problem: String| {
                    Ok(AuditVerification { records: count, broken: Some(AuditBreak { seq: expected_seq, problem }) })
                };
                if seq != expected_seq {
                    return broken(format!("record {expected_seq} is missing (next present is {seq})"));
                }
                if prev_hash != prev {
                    return broken("its prev_hash does not match the previous record's hash".into());
                }
                if hash_parts(seq, &event, &details, &prev_hash) != hash {
                    return broken("its content does not match its hash (edited)".into());
                }
                prev = hash;
                expected_seq += 1;
                count += 1;
            }
        }
        // The chain alone cannot show that its newest records were deleted;
        // the inventory names the record of every credential it holds.
        let orphan = sqlx::query(
            "SELECT c.id, c.audit_seq FROM credentials c LEFT JOIN audit a ON a.seq = c.audit_seq \
             WHERE a.seq IS NULL ORDER BY c.audit_seq LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = orphan {
            let (id, seq): (String, i64) = (r.try_get("id")?, r.try_get("audit_seq")?);
            return Ok(AuditVerification {
                records: count,
                broken: Some(AuditBreak {
                    seq,
                    problem: format!(
                        "record {seq}, which recorded credential `{id}`, is missing (deleted from the end)"
                    ),
                }),
            });
        }
        let broken = self.first_mismatched_evidence().await?;
        Ok(AuditVerification { records: count, broken })
    }

    /// The first stored evidence set (by digest) whose content does not hash
    /// to its digest, at the first record that names it (0 when none does).
    /// The records carry only the digest, and the chain's hashes cover it:
    /// an edited set no longer matches, and is named here.
    async fn first_mismatched_evidence(&self) -> Result<Option<AuditBreak>, StoreError> {
        let mut after = String::new();
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE digest > $1 ORDER BY digest LIMIT 10000"
            )))
            .bind(after.clone())
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else { return Ok(None) };
            after = last.try_get("digest")?;
            for row in &rows {
                let stored = StoredEvidence::from_row(row)?;
                let digest = stored.digest.clone();
                if let Err(e) = stored.check() {
                    let seq = self.first_record_naming(&digest).await?.unwrap_or(0);
                    return Ok(Some(AuditBreak { seq, problem: format!("evidence set `{digest}`: {e}") }));
                }
            }
        }
    }

    /// The first record whose details name evidence digest `digest`. A scan,
    /// run only once verification has already failed.
    async fn first_record_naming(&self, digest: &str) -> Result<Option<i64>, StoreError> {
        // Only a digest can be looked for: nothing in it may act as a pattern.
        if !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let row = sqlx::query("SELECT MIN(seq) AS seq FROM audit WHERE details LIKE $1")
            .bind(format!("%\"evidence_digest\":\"{digest}\"%"))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("seq")?)
    }
}
