//! Recorded policy denials. Each is written with its audit record, in the
//! same transaction ([`crate::AuditEvent::denial`]); the reports read them
//! to ask whether a credential can still be renewed.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

/// A recorded denial, as the reports read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRecord {
    /// The entry denied.
    pub entry_id: String,
    /// Unix seconds.
    pub at: i64,
    /// `issue_x509`, `renew`, `issue_jwt` or `issue_wit`.
    pub action: String,
    /// The audience, for `issue_jwt`.
    pub audience: Option<String>,
    /// Determining policy ids, comma-joined.
    pub policy_ids: String,
    /// The recorded reason.
    pub reason: String,
}

fn denial_from_row(r: &AnyRow) -> Result<DenialRecord, StoreError> {
    Ok(DenialRecord {
        entry_id: r.try_get("entry_id")?,
        at: r.try_get("at")?,
        action: r.try_get("action")?,
        audience: r.try_get("audience")?,
        policy_ids: r.try_get("policy_ids")?,
        reason: r.try_get("reason")?,
    })
}

const DENIAL_COLUMNS: &str = "entry_id, at, action, audience, policy_ids, reason";

impl Store {
    /// Denials recorded at or after `since` (unix seconds), oldest first.
    pub async fn denials_since(&self, since: i64) -> Result<Vec<DenialRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DENIAL_COLUMNS} FROM denials WHERE at >= $1 ORDER BY id"
        )))
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(denial_from_row).collect()
    }

    /// Recorded denials for an entry, newest first.
    pub async fn denials(&self, entry_id: &str) -> Result<Vec<DenialRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DENIAL_COLUMNS} FROM denials WHERE entry_id = $1 ORDER BY id DESC"
        )))
        .bind(entry_id.to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(denial_from_row).collect()
    }
}
