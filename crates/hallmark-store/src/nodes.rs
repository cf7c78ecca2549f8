//! Nodes (attested agents) and the join tokens they attest with: issuing,
//! consuming, listing and revoking tokens, recording each node's agent SVID,
//! and lifting a node ban.

use hallmark_core::now_unix;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::store::row_in;
use crate::{Recorder, Store, StoreError};

/// Why a join token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    /// Never issued.
    #[error("join token is not valid")]
    Unknown,
    /// Already used by an agent.
    #[error("join token has already been used")]
    Used,
    /// Past its expiry.
    #[error("join token has expired")]
    Expired,
}

/// An attested node (agent).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// The agent's SPIFFE ID.
    pub agent_id: String,
    /// How it attested: `join_token`, `x509pop`, `tpm`, `k8s_psat`, `local`.
    pub attestation_type: String,
    /// What its attestor proved (`type:key:value`, sorted), from its last
    /// attestation; `node:attestation:TYPE` always among them.
    pub selectors: Vec<String>,
    /// When it last attested with evidence (not a renewal), unix seconds;
    /// none for nodes attested before this was recorded.
    pub attested_at: Option<i64>,
    /// Serial of its current agent SVID.
    pub serial: String,
    /// Serial of the agent SVID it renewed last, accepted until it switches
    /// (or when the renewal's answer never reached it).
    pub previous_serial: Option<String>,
    /// Expiry of its current agent SVID.
    pub not_after: i64,
    /// Banned nodes are refused.
    pub banned: bool,
    /// Why it was banned.
    pub ban_reason: Option<String>,
    /// The authority that signed its current agent SVID.
    pub authority_id: String,
}

/// An agent SVID just issued to a node: what [`Store::upsert_node`] records.
#[derive(Debug, Clone, Copy)]
pub struct NodeSvid<'a> {
    /// The agent's SPIFFE ID.
    pub agent_id: &'a str,
    /// How its node attested (`join_token`, `local`, `x509pop`, `tpm`, `k8s_psat`).
    pub attestation_type: &'a str,
    /// On attestation (not renewal): the node's selectors, which replace
    /// those recorded, and the attestation time.
    pub attested: Option<(&'a [String], i64)>,
    /// The new agent SVID's serial.
    pub serial: &'a str,
    /// On renewal, the serial of the SVID the agent renewed with; it stays
    /// accepted until the agent presents the new one.
    pub previous_serial: Option<&'a str>,
    /// The authority that signed it.
    pub authority_id: &'a str,
    /// Its expiry, unix seconds.
    pub not_after: i64,
}

const NODE_COLUMNS: &str = "agent_id, attestation_type, serial, previous_serial, authority_id, not_after, banned, \
     ban_reason, selectors, attested_at";

fn node_from_row(r: &AnyRow) -> Result<Node, StoreError> {
    Ok(Node {
        agent_id: r.try_get("agent_id")?,
        attestation_type: r.try_get("attestation_type")?,
        selectors: r.try_get::<String, _>("selectors")?.lines().map(str::to_owned).collect(),
        attested_at: r.try_get("attested_at")?,
        serial: r.try_get("serial")?,
        previous_serial: r.try_get("previous_serial")?,
        not_after: r.try_get("not_after")?,
        banned: r.try_get::<i64, _>("banned")? != 0,
        ban_reason: r.try_get("ban_reason")?,
        authority_id: r.try_get("authority_id")?,
    })
}

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

/// Reads a node inside a transaction; a missing one is `NotFound`.
async fn node_in(conn: &mut AnyConnection, agent_id: &str) -> Result<Node, StoreError> {
    row_in(conn, format!("SELECT {NODE_COLUMNS} FROM nodes WHERE agent_id = $1"), agent_id, "node", node_from_row).await
}

/// A join token's id: the first 16 hex digits of its hash. The one home of
/// that format: agents attested by the token are named after it.
pub fn join_token_id(token_hash: &str) -> &str {
    token_hash.get(..16).unwrap_or(token_hash)
}

impl Store {
    /// Records a join token (by hash) valid until `expires_at`, recorded by
    /// `rec` (given the token's id, [`JoinTokenRecord::id`]).
    pub async fn create_join_token(
        &self,
        token_hash: &str,
        expires_at: i64,
        rec: Recorder<'_, str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_recorded().await?;
        sqlx::query("INSERT INTO join_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(token_hash.to_owned())
            .bind(now_unix())
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit(join_token_id(token_hash), rec).await
    }

    /// Marks a join token used by `agent_id`, atomically: of two agents racing
    /// with one token, exactly one succeeds.
    pub async fn consume_join_token(
        &self,
        token_hash: &str,
        agent_id: &str,
        now: i64,
    ) -> Result<Result<(), JoinTokenError>, StoreError> {
        let done = sqlx::query(
            "UPDATE join_tokens SET used_at = $1, agent_id = $2 WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(agent_id.to_owned())
        .bind(token_hash.to_owned())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let row = sqlx::query("SELECT used_at, expires_at FROM join_tokens WHERE token_hash = $1")
            .bind(token_hash.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(Err(match row {
            None => JoinTokenError::Unknown,
            Some(r) if r.try_get::<Option<i64>, _>("used_at")?.is_some() => JoinTokenError::Used,
            Some(_) => JoinTokenError::Expired,
        }))
    }

    /// Records a node's current agent SVID, creating the node on first
    /// attestation; an attestation also replaces its selectors. A banned node
    /// stays banned.
    pub async fn upsert_node(&self, n: &NodeSvid<'_>) -> Result<(), StoreError> {
        let now = now_unix();
        let attested = n.attested.map(|(selectors, at)| (selectors.join("\n"), at));
        sqlx::query(
            "INSERT INTO nodes (agent_id, attestation_type, serial, previous_serial, authority_id, not_after, banned, \
             created_at, updated_at, selectors, attested_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7, $8, $9) \
             ON CONFLICT (agent_id) DO UPDATE SET serial = excluded.serial, previous_serial = excluded.previous_serial, \
             authority_id = excluded.authority_id, not_after = excluded.not_after, updated_at = excluded.updated_at, \
             selectors = CASE WHEN $10 = 1 THEN excluded.selectors ELSE nodes.selectors END, \
             attested_at = CASE WHEN $10 = 1 THEN excluded.attested_at ELSE nodes.attested_at END",
        )
        .bind(n.agent_id.to_owned())
        .bind(n.attestation_type.to_owned())
        .bind(n.serial.to_owned())
        .bind(n.previous_serial.map(str::to_owned))
        .bind(n.authority_id.to_owned())
        .bind(n.not_after)
        .bind(now)
        .bind(attested.as_ref().map(|(s, _)| s.clone()).unwrap_or_default())
        .bind(attested.as_ref().map(|(_, at)| *at))
        .bind(i64::from(attested.is_some()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A node by agent ID.
    pub async fn node(&self, agent_id: &str) -> Result<Option<Node>, StoreError> {
        self.one_by(format!("SELECT {NODE_COLUMNS} FROM nodes WHERE agent_id = $1"), agent_id, node_from_row).await
    }

    /// Every attested node, by agent ID.
    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.all_rows(format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY agent_id"), node_from_row).await
    }

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
                    id: join_token_id(&hash).to_owned(),
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    used_at: r.try_get("used_at")?,
                })
            })
            .collect()
    }

    /// Deletes the unused join token `id` (see [`JoinTokenRecord::id`]), so
    /// nothing can attest with it; recorded by `rec`.
    pub async fn revoke_join_token(&self, id: &str, rec: Recorder<'_, str>) -> Result<(), JoinTokenRevokeError> {
        let mut tx = self.begin_recorded().await?;
        let done = sqlx::query("DELETE FROM join_tokens WHERE substr(token_hash, 1, 16) = $1 AND used_at IS NULL")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done > 0 {
            tx.commit(id, rec).await?;
            return Ok(());
        }
        let used = sqlx::query("SELECT 1 AS one FROM join_tokens WHERE substr(token_hash, 1, 16) = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        Err(if used {
            JoinTokenRevokeError::Used(id.to_owned())
        } else {
            JoinTokenRevokeError::NotFound(id.to_owned())
        })
    }

    /// Lifts the ban on node `agent_id`, recorded by `rec`: its agent may
    /// connect and be served again. What the ban revoked stays revoked.
    /// Returns the node, and whether it was banned (an unbanned node is left
    /// as it is, with no record).
    pub async fn unban_node(
        &self,
        agent_id: &str,
        now: i64,
        rec: Recorder<'_, Node>,
    ) -> Result<(Node, bool), StoreError> {
        let mut tx = self.begin_recorded().await?;
        let node = node_in(&mut tx, agent_id).await?;
        if !node.banned {
            return Ok((node, false));
        }
        sqlx::query(
            "UPDATE nodes SET banned = 0, banned_at = NULL, ban_reason = NULL, updated_at = $1 WHERE agent_id = $2",
        )
        .bind(now)
        .bind(agent_id.to_owned())
        .execute(&mut *tx)
        .await?;
        let node = node_in(&mut tx, agent_id).await?;
        tx.commit(&node, rec).await?;
        Ok((node, true))
    }
}
