//! Admin identities: named bearer tokens, stored only as hashes.

use hallmark_core::now_unix;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::duplicate_or;
use crate::{Recorder, Store, StoreError};

/// An admin API credential, as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdminToken {
    /// A label for audit and display.
    pub name: String,
    /// The role it grants.
    pub role: String,
    /// The admin identity that created it (`None` for the bootstrap token
    /// and tokens created before this was recorded).
    pub created_by: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which it is refused; `None`: no expiry.
    pub expires_at: Option<i64>,
    /// When it was revoked (or replaced by rotation).
    pub revoked_at: Option<i64>,
}

impl AdminToken {
    /// Why it is refused at `now`, if it is.
    pub fn refusal(&self, now: i64) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if self.expires_at.is_some_and(|t| t <= now) {
            Some("expired")
        } else {
            None
        }
    }
}

/// An admin token to store: [`Store::insert_admin_token`].
#[derive(Debug, Clone, Copy)]
pub struct NewAdminToken<'a> {
    /// SHA-256 of the token ([`crate::hash_secret`]).
    pub token_hash: &'a str,
    /// The identity's name.
    pub name: &'a str,
    /// Its role.
    pub role: &'a str,
    /// Who created it.
    pub created_by: Option<&'a str>,
    /// When it expires, unix seconds.
    pub expires_at: Option<i64>,
}

const ADMIN_COLUMNS: &str = "name, role, created_by, created_at, expires_at, revoked_at";

fn admin_from_row(r: &AnyRow) -> Result<AdminToken, StoreError> {
    Ok(AdminToken {
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Stores an admin token by hash, with no creator and no expiry (the
    /// bootstrap token, and tests), recorded by `rec`.
    pub async fn add_admin_token(
        &self,
        token_hash: &str,
        name: &str,
        role: &str,
        rec: Recorder<'_, AdminToken>,
    ) -> Result<AdminToken, StoreError> {
        self.insert_admin_token(&NewAdminToken { token_hash, name, role, created_by: None, expires_at: None }, rec)
            .await
    }

    /// Stores an admin token by hash, recorded by `rec`; returns it as stored.
    pub async fn insert_admin_token(
        &self,
        t: &NewAdminToken<'_>,
        rec: Recorder<'_, AdminToken>,
    ) -> Result<AdminToken, StoreError> {
        let mut tx = self.begin_recorded().await?;
        sqlx::query(
            "INSERT INTO admin_tokens (token_hash, name, role, created_at, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(t.token_hash.to_owned())
        .bind(t.name.to_owned())
        .bind(t.role.to_owned())
        .bind(now_unix())
        .bind(t.created_by.map(str::to_owned))
        .bind(t.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_or(e, || "admin token already exists".into()))?;
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ADMIN_COLUMNS} FROM admin_tokens WHERE token_hash = $1")))
                .bind(t.token_hash.to_owned())
                .fetch_one(&mut *tx)
                .await?;
        let stored = admin_from_row(&row)?;
        tx.commit(&stored, rec).await?;
        Ok(stored)
    }

    /// Every admin identity, one row per name: its newest token (a rotated
    /// identity keeps its name; its older tokens are revoked).
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ADMIN_COLUMNS} FROM admin_tokens a WHERE created_at = \
             (SELECT MAX(created_at) FROM admin_tokens b WHERE b.name = a.name) \
             ORDER BY name, CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut list: Vec<AdminToken> = rows.iter().map(admin_from_row).collect::<Result<_, _>>()?;
        // Two tokens of one name created in the same second: the live one.
        list.dedup_by(|later, earlier| later.name == earlier.name);
        Ok(list)
    }

    /// The newest token of an admin identity, by name.
    pub async fn admin_by_name(&self, name: &str) -> Result<Option<AdminToken>, StoreError> {
        Ok(self.admin_tokens().await?.into_iter().find(|t| t.name == name))
    }

    /// Revokes every live token of admin identity `name`, recorded by `rec`
    /// (given how many); returns how many (0, with no record, when it has none).
    pub async fn revoke_admin_tokens(&self, name: &str, now: i64, rec: Recorder<'_, u64>) -> Result<u64, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let n = sqlx::query("UPDATE admin_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit_count(n, rec).await
    }

    /// Replaces the live tokens of identity `name` with one new token (same
    /// role, creator and expiry), in one transaction recorded by `rec`: the
    /// old ones are refused from the commit on.
    pub async fn rotate_admin_token(
        &self,
        name: &str,
        new_hash: &str,
        now: i64,
        rec: Recorder<'_, AdminToken>,
    ) -> Result<AdminToken, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ADMIN_COLUMNS} FROM admin_tokens WHERE name = $1 AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1"
        )))
        .bind(name.to_owned())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("live admin identity `{name}`")))?;
        let old = admin_from_row(&row)?;
        sqlx::query("UPDATE admin_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO admin_tokens (token_hash, name, role, created_at, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new_hash.to_owned())
        .bind(old.name.clone())
        .bind(old.role.clone())
        .bind(now)
        .bind(old.created_by.clone())
        .bind(old.expires_at)
        .execute(&mut *tx)
        .await?;
        let new = AdminToken { created_at: now, revoked_at: None, ..old };
        tx.commit(&new, rec).await?;
        Ok(new)
    }

    /// Whether an admin identity with this name exists.
    pub async fn admin_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 AS one FROM admin_tokens WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Looks up an admin token by hash, revoked and expired ones included
    /// (see [`AdminToken::refusal`]).
    pub async fn admin_token(&self, token_hash: &str) -> Result<Option<AdminToken>, StoreError> {
        self.one_by(
            format!("SELECT {ADMIN_COLUMNS} FROM admin_tokens WHERE token_hash = $1"),
            token_hash,
            admin_from_row,
        )
        .await
    }
}
