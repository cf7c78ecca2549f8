//! The inventory: every credential issued, with the entry, node, policy
//! version and evidence it was issued under, its expiry, revocation state
//! and where its holder delivered it. Rows are written by the audit
//! appender, in the transaction of their issuance record
//! ([`crate::AuditEvent::credential`]); this module reads them, records
//! deliveries and prunes the long expired.

use hallmark_core::CredentialKind;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Credential, Recorder, Store, StoreError};

/// Inventory filters.
#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    /// Only this serial or jti.
    pub id: Option<String>,
    /// Only this entry.
    pub entry_id: Option<String>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only issued through this agent.
    pub node_id: Option<String>,
    /// Only those with not_after at or before this instant.
    pub expiring_before: Option<i64>,
    /// Only unexpired, unrevoked ones at this instant.
    pub live_at: Option<i64>,
    /// Only those issued for this task.
    pub task_id: Option<String>,
}

impl Store {
    /// Credentials in the inventory matching `f`, soonest expiry first, at most `limit`.
    pub async fn credentials(&self, f: &CredentialFilter, limit: i64) -> Result<Vec<Credential>, StoreError> {
        // One static statement: each filter is either bound or disabled by a NULL.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials \
             WHERE ($1 = '' OR entry_id = $1) AND ($2 = '' OR owner = $2) AND ($3 = '' OR node_id = $3) \
             AND ($4 < 0 OR not_after <= $4) AND ($5 < 0 OR (not_after > $5 AND revoked_at IS NULL)) \
             AND ($7 = '' OR id = $7) AND ($8 = '' OR task_id = $8) ORDER BY not_after, id LIMIT $6"
        )))
        .bind(f.entry_id.clone().unwrap_or_default())
        .bind(f.owner.clone().unwrap_or_default())
        .bind(f.node_id.clone().unwrap_or_default())
        .bind(f.expiring_before.unwrap_or(-1))
        .bind(f.live_at.unwrap_or(-1))
        .bind(limit)
        .bind(f.id.clone().unwrap_or_default())
        .bind(f.task_id.clone().unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    /// One credential from the inventory, by serial (X.509) or jti (JWT).
    pub async fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError> {
        self.one_by(format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1"), id, credential_from_row)
            .await
    }

    /// Which of `ids` (serials or jtis) the inventory holds.
    pub async fn credentials_present(&self, ids: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        let id = |r: &AnyRow| r.try_get::<String, _>("id").map_err(StoreError::from);
        Ok(self.rows_in("SELECT id FROM credentials WHERE id IN", ids, id).await?.into_iter().collect())
    }

    /// Records that the holder of credential `id` delivered it to `target`
    /// at `at` (a later report replaces an earlier one). Returns false when
    /// the inventory has no such credential.
    pub async fn record_delivery(&self, id: &str, target: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE credentials SET delivered_to = $1, delivered_at = $2 WHERE id = $3")
            .bind(target.to_owned())
            .bind(at)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes inventory rows of credentials that expired before `before`,
    /// recorded by `rec` (given how many); returns how many (0, with no
    /// record, when none). The audit records of their issuance stay, so the
    /// chain is untouched and still verifies.
    pub async fn prune_credentials(&self, before: i64, rec: Recorder<'_, u64>) -> Result<u64, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let n = sqlx::query("DELETE FROM credentials WHERE not_after < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit_count(n, rec).await
    }
}

const CREDENTIAL_COLUMNS: &str = "id, kind, entry_id, spiffe_id, node_id, class, owner, policy_version, \
    evidence_digest, issued_at, not_before, not_after, revoked_at, revoke_reason, authority_id, audit_seq, \
    delivered_to, delivered_at, audience, task_id, person_id";

/// The `kind` column of a `credentials` row; an unknown one is a
/// [`StoreError::Corrupt`] naming the value and the credential.
pub(crate) fn credential_kind(r: &AnyRow) -> Result<CredentialKind, StoreError> {
    let kind: String = r.try_get("kind")?;
    kind.parse().map_err(|e: hallmark_core::CredentialKindError| {
        let id: String = r.try_get("id").unwrap_or_default();
        StoreError::Corrupt { table: "credentials", detail: format!("credential `{id}`: {e}") }
    })
}

fn credential_from_row(r: &AnyRow) -> Result<Credential, StoreError> {
    Ok(Credential {
        id: r.try_get("id")?,
        kind: credential_kind(r)?,
        entry_id: r.try_get("entry_id")?,
        spiffe_id: r.try_get("spiffe_id")?,
        node_id: r.try_get("node_id")?,
        class: r.try_get("class")?,
        owner: r.try_get("owner")?,
        policy_version: r.try_get("policy_version")?,
        evidence_digest: r.try_get("evidence_digest")?,
        issued_at: r.try_get("issued_at")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        revoked_at: r.try_get("revoked_at")?,
        revoke_reason: r.try_get("revoke_reason")?,
        authority_id: r.try_get("authority_id")?,
        audit_seq: r.try_get("audit_seq")?,
        delivered_to: r.try_get("delivered_to")?,
        delivered_at: r.try_get("delivered_at")?,
        audience: r.try_get("audience")?,
        task_id: r.try_get("task_id")?,
        person_id: r.try_get("person_id")?,
    })
}
