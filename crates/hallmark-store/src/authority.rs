//! Signing authorities as the datastore holds them: the public halves every
//! server publishes (together they are the trust bundle), each authority's
//! lifecycle state, whether it is tainted, and the CRL its holder signs.
//!
//! Private keys never come here: each server keeps its own in its data
//! directory, and only that server changes an authority from prepared to
//! active. Tainting and revoking are recorded here, so every server (and,
//! through the bundle, every agent) learns of them.

use std::fmt;
use std::str::FromStr;

use hallmark_core::now_unix;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

/// Where an authority is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorityState {
    /// Published in the bundle, not yet signing: relying parties learn to trust it first.
    Prepared,
    /// Signing. One per kind per server.
    Active,
    /// Replaced by a newer active authority; stays in the bundle until it expires
    /// so that what it signed keeps validating.
    Old,
    /// Removed from the bundle: nothing it signed validates any more.
    Revoked,
}

impl AuthorityState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::Active => "active",
            Self::Old => "old",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for AuthorityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthorityState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "prepared" => Self::Prepared,
            "active" => Self::Active,
            "old" => Self::Old,
            "revoked" => Self::Revoked,
            other => {
                return Err(StoreError::Corrupt { table: "authorities", detail: format!("unknown state `{other}`") });
            }
        })
    }
}

/// The public half of a signing authority and its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthorityRow {
    /// Stable id: for X.509, the SHA-256 (hex) of the authority's own
    /// certificate; for JWT, the key id.
    pub id: String,
    /// `x509` (public = base64 DER trust anchor) or `jwt` (public = JWK JSON).
    pub kind: String,
    /// The public material.
    pub public: String,
    /// The server holding the private key.
    pub server_id: String,
    /// Lifecycle state.
    pub state: AuthorityState,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// When it was tainted: everything it signed is to be re-issued.
    pub tainted_at: Option<i64>,
    /// Its current CRL (base64 DER), signed by its holder. X.509 only.
    #[serde(skip)]
    pub crl: Option<String>,
}

const COLUMNS: &str = "id, kind, public, server_id, state, not_before, not_after, tainted_at, crl";

fn row(r: &AnyRow) -> Result<AuthorityRow, StoreError> {
    Ok(AuthorityRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        public: r.try_get("public")?,
        server_id: r.try_get("server_id")?,
        state: r.try_get::<String, _>("state")?.parse()?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        tainted_at: r.try_get("tainted_at")?,
        crl: r.try_get("crl")?,
    })
}

impl Store {
    async fn bump_bundle_sequence(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(), StoreError> {
        sqlx::query("UPDATE meta SET value = value + 1 WHERE name = 'bundle_sequence'").execute(&mut **tx).await?;
        Ok(())
    }

    /// Publishes an authority (idempotent) and bumps the bundle sequence when new.
    pub async fn publish_authority(&self, a: &AuthorityRow) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO authorities (id, kind, public, server_id, state, not_before, not_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(a.id.clone())
        .bind(a.kind.clone())
        .bind(a.public.clone())
        .bind(a.server_id.clone())
        .bind(a.state.as_str())
        .bind(a.not_before)
        .bind(a.not_after)
        .bind(now_unix())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            Self::bump_bundle_sequence(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Authorities not yet expired at `now` (revoked ones included), oldest
    /// first, and the bundle sequence.
    pub async fn authorities(&self, now: i64) -> Result<(Vec<AuthorityRow>, u64), StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM authorities WHERE not_after > $1 ORDER BY created_at, id"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let seq: i64 = sqlx::query("SELECT value FROM meta WHERE name = 'bundle_sequence'")
            .fetch_one(&self.pool)
            .await?
            .try_get("value")?;
        let list = rows.iter().map(row).collect::<Result<_, StoreError>>()?;
        Ok((list, u64::try_from(seq).unwrap_or(0)))
    }

    /// One authority by id.
    pub async fn authority(&self, id: &str) -> Result<Option<AuthorityRow>, StoreError> {
        self.one_by(format!("SELECT {COLUMNS} FROM authorities WHERE id = $1"), id, row).await
    }

    /// Makes the prepared authority `id` the active one of its kind on its
    /// server; the previous active one becomes old. Both in one transaction.
    pub async fn activate_authority(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("SELECT kind, server_id FROM authorities WHERE id = $1 AND state = 'prepared'")
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("prepared authority `{id}`")))?;
        let (kind, server): (String, String) = (r.try_get("kind")?, r.try_get("server_id")?);
        sqlx::query("UPDATE authorities SET state = 'old' WHERE kind = $1 AND server_id = $2 AND state = 'active'")
            .bind(kind)
            .bind(server)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE authorities SET state = 'active' WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a prepared or old authority tainted; returns false when it is not
    /// one (active, revoked, unknown, or already tainted).
    pub async fn taint_authority(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE authorities SET tainted_at = $1 WHERE id = $2 AND state IN ('prepared', 'old') AND tainted_at IS NULL",
        )
        .bind(now)
        .bind(id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a tainted, non-active authority from the bundle; returns false
    /// when it is not one.
    pub async fn revoke_authority(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE authorities SET state = 'revoked', crl = NULL WHERE id = $1 AND state IN ('prepared', 'old') \
             AND tainted_at IS NOT NULL",
        )
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            Self::bump_bundle_sequence(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores the CRL (base64 DER) its holder signed for authority `id`.
    pub async fn set_authority_crl(&self, id: &str, crl: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE authorities SET crl = $1 WHERE id = $2 AND state <> 'revoked'")
            .bind(crl.to_owned())
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
