//! Node onboarding and offboarding beyond attestation: listing and revoking
//! join tokens, and lifting a node ban.

use sqlx::Row;

use crate::{Node, Store, StoreError};

/// A join token as listed: never the token, which is stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinTokenRecord {
    /// The first 16 hex digits of the token's SHA-256: the last segment of
    /// the agent ID it attests as, and what `revoke` takes.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// When an agent attested with it.
    pub used_at: Option<i64>,
}

/// Why a join token was not revoked.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenRevokeError {
    /// No such token.
    #[error("join token `{0}` not found (see `hallmark token list`)")]
    NotFound(String),
    /// It was used: revoking it would change nothing.
    #[error("join token `{0}` was already used to attest a node; ban that node instead (`hallmark revoke --node`)")]
    Used(String),
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for JoinTokenRevokeError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl Store {
    /// Every join token not expired longer ago than `since` (unix seconds), oldest first.
    pub async fn join_tokens(&self, since: i64) -> Result<Vec<JoinTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT token_hash, created_at, expires_at, used_at FROM join_tokens \
             WHERE expires_at >= $1 OR used_at IS NOT NULL ORDER BY created_at, token_hash",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let hash: String = r.try_get("token_hash")?;
                Ok(JoinTokenRecord {
                    id: hash.get(..16).unwrap_or(&hash).to_owned(),
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    used_at: r.try_get("used_at")?,
                })
            })
            .collect()
    }

    /// Deletes the unused join token `id` (see [`JoinTokenRecord::id`]), so
    /// nothing can attest with it.
    pub async fn revoke_join_token(&self, id: &str) -> Result<(), JoinTokenRevokeError> {
        let done = sqlx::query("DELETE FROM join_tokens WHERE substr(token_hash, 1, 16) = $1 AND used_at IS NULL")
            .bind(id.to_owned())
            .execute(self.pool())
            .await?
            .rows_affected();
        if done > 0 {
            return Ok(());
        }
        let used = sqlx::query("SELECT 1 AS one FROM join_tokens WHERE substr(token_hash, 1, 16) = $1")
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await?
            .is_some();
        Err(if used {
            JoinTokenRevokeError::Used(id.to_owned())
        } else {
            JoinTokenRevokeError::NotFound(id.to_owned())
        })
    }

    /// Lifts the ban on node `agent_id`: its agent may connect and be served
    /// again. What the ban revoked stays revoked. Returns the node, and
    /// whether it was banned.
    pub async fn unban_node(&self, agent_id: &str, now: i64) -> Result<(Node, bool), StoreError> {
        let node = self.node(agent_id).await?.ok_or_else(|| StoreError::NotFound(format!("node `{agent_id}`")))?;
        if !node.banned {
            return Ok((node, false));
        }
        sqlx::query(
            "UPDATE nodes SET banned = 0, banned_at = NULL, ban_reason = NULL, updated_at = $1 WHERE agent_id = $2",
        )
        .bind(now)
        .bind(agent_id.to_owned())
        .execute(self.pool())
        .await?;
        let node = self.node(agent_id).await?.ok_or_else(|| StoreError::NotFound(format!("node `{agent_id}`")))?;
        Ok((node, true))
    }
}
