//! Reading recorded policy denials across entries, for the reports that ask
//! whether a credential can still be renewed.

use sqlx::Row;

use crate::{Store, StoreError};

/// A recorded denial, as the reports read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRecord {
    /// The entry denied.
    pub entry_id: String,
    /// Unix seconds.
    pub at: i64,
    /// `issue_x509`, `renew` or `issue_jwt`.
    pub action: String,
    /// The audience, for `issue_jwt`.
    pub audience: Option<String>,
    /// Determining policy ids, comma-joined.
    pub policy_ids: String,
    /// The recorded reason.
    pub reason: String,
}

impl Store {
    /// Denials recorded at or after `since` (unix seconds), oldest first.
    pub async fn denials_since(&self, since: i64) -> Result<Vec<DenialRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT entry_id, at, action, audience, policy_ids, reason FROM denials WHERE at >= $1 ORDER BY id",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DenialRecord {
                    entry_id: r.try_get("entry_id")?,
                    at: r.try_get("at")?,
                    action: r.try_get("action")?,
                    audience: r.try_get("audience")?,
                    policy_ids: r.try_get("policy_ids")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}
