//! Owners, policy versions and exceptions.

use hallmark_core::now_unix;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::store::row_in;
use crate::{Recorder, Store, StoreError};

/// A stored policy version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyVersion {
    /// Version number, from 1.
    pub version: i64,
    /// Cedar text.
    pub text: String,
    /// SHA-256 of the text.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Admin identity that set it.
    pub created_by: String,
}

/// An accountable owner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    /// Unique name (a team).
    pub name: String,
    /// Accountable contact, e.g. an email address.
    pub contact: String,
    /// Free text.
    pub description: String,
    /// Deactivated owners' entries are orphans.
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// SPIFFE-ID path scopes its entries lie under (empty: none given).
    pub paths: Vec<String>,
    /// Nodes its entries may name as parent (empty: none given).
    pub nodes: Vec<String>,
}

const OWNER_COLUMNS: &str = "name, contact, description, active, created_at, updated_at, paths, nodes";

fn lines(text: &str) -> Vec<String> {
    text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn owner_from_row(r: &AnyRow) -> Result<Owner, StoreError> {
    Ok(Owner {
        name: r.try_get("name")?,
        contact: r.try_get("contact")?,
        description: r.try_get("description")?,
        active: r.try_get::<i64, _>("active")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        paths: lines(&r.try_get::<String, _>("paths")?),
        nodes: lines(&r.try_get::<String, _>("nodes")?),
    })
}

/// A stored exception.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExceptionRecord {
    /// Id.
    pub id: String,
    /// The entry it applies to.
    pub entry_id: String,
    /// Rule name.
    pub rule: String,
    /// Rule value.
    pub value: String,
    /// Why.
    pub justification: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: i64,
    /// Who approved, if anyone.
    pub approved_by: Option<String>,
    /// When.
    pub approved_at: Option<i64>,
    /// Who revoked, if anyone.
    pub revoked_by: Option<String>,
    /// When.
    pub revoked_at: Option<i64>,
    /// When the server recorded its expiry.
    pub expiry_recorded_at: Option<i64>,
}

impl ExceptionRecord {
    /// `pending`, `active`, `expired` or `revoked` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else if self.approved_at.is_some() {
            "active"
        } else {
            "pending"
        }
    }
}

/// Why an exception change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExceptionError {
    /// The approver asked for it themselves.
    #[error("an exception cannot be approved by the identity that requested it (`{0}`)")]
    SelfApproval(String),
    /// Already approved, revoked or expired.
    #[error("exception `{id}` is {state}")]
    State {
        /// Id.
        id: String,
        /// Its state.
        state: &'static str,
    },
}

const EXC_COLUMNS: &str = "id, entry_id, rule, value, justification, expires_at, requested_by, requested_at, approved_by, approved_at, revoked_by, revoked_at, expiry_recorded_at";

fn exception_from_row(r: &AnyRow) -> Result<ExceptionRecord, StoreError> {
    Ok(ExceptionRecord {
        id: r.try_get("id")?,
        entry_id: r.try_get("entry_id")?,
        rule: r.try_get("rule")?,
        value: r.try_get("value")?,
        justification: r.try_get("justification")?,
        expires_at: r.try_get("expires_at")?,
        requested_by: r.try_get("requested_by")?,
        requested_at: r.try_get("requested_at")?,
        approved_by: r.try_get("approved_by")?,
        approved_at: r.try_get("approved_at")?,
        revoked_by: r.try_get("revoked_by")?,
        revoked_at: r.try_get("revoked_at")?,
        expiry_recorded_at: r.try_get("expiry_recorded_at")?,
    })
}

fn policy_from_row(r: &AnyRow) -> Result<PolicyVersion, StoreError> {
    Ok(PolicyVersion {
        version: r.try_get("version")?,
        text: r.try_get("text")?,
        sha256: r.try_get("sha256")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
    })
}

/// An exception to request: [`Store::request_exception`].
#[derive(Debug, Clone, Copy)]
pub struct NewException<'a> {
    /// The entry it applies to.
    pub entry_id: &'a str,
    /// Rule name.
    pub rule: &'a str,
    /// Rule value.
    pub value: &'a str,
    /// Why.
    pub justification: &'a str,
    /// Unix seconds.
    pub expires_at: i64,
    /// Who asks.
    pub requested_by: &'a str,
}

/// Reads an owner inside a transaction; a missing one is `NotFound`.
async fn owner_in(conn: &mut AnyConnection, name: &str) -> Result<Owner, StoreError> {
    row_in(conn, format!("SELECT {OWNER_COLUMNS} FROM owners WHERE name = $1"), name, "owner", owner_from_row).await
}

/// Reads an exception inside a transaction; a missing one is `NotFound`.
async fn exception_in(conn: &mut AnyConnection, id: &str) -> Result<ExceptionRecord, StoreError> {
    row_in(conn, format!("SELECT {EXC_COLUMNS} FROM exceptions WHERE id = $1"), id, "exception", exception_from_row)
        .await
}

impl Store {
    /// Creates an owner with its scopes (already validated), recorded by
    /// `rec`; a duplicate name is refused.
    pub async fn create_owner(
        &self,
        name: &str,
        contact: &str,
        description: &str,
        scopes: &hallmark_core::ScopeLists,
        rec: Recorder<'_, Owner>,
    ) -> Result<Owner, StoreError> {
        let now = now_unix();
        let mut tx = self.begin_recorded().await?;
        sqlx::query(
            "INSERT INTO owners (name, contact, description, active, created_at, updated_at, paths, nodes) \
             VALUES ($1, $2, $3, 1, $4, $4, $5, $6)",
        )
        .bind(name.to_owned())
        .bind(contact.to_owned())
        .bind(description.to_owned())
        .bind(now)
        .bind(scopes.paths.join("\n"))
        .bind(scopes.nodes.join("\n"))
        .execute(&mut *tx)
        .await
        .map_err(|e| crate::store::duplicate_or(e, || format!("owner `{name}` already exists")))?;
        let owner = owner_in(&mut tx, name).await?;
        tx.commit(&owner, rec).await?;
        Ok(owner)
    }

    /// Replaces an owner's scopes (already validated), recorded by `rec`.
    pub async fn set_owner_scopes(
        &self,
        name: &str,
        scopes: &hallmark_core::ScopeLists,
        rec: Recorder<'_, Owner>,
    ) -> Result<Owner, StoreError> {
        let mut tx = self.begin_recorded().await?;
        sqlx::query("UPDATE owners SET paths = $1, nodes = $2, updated_at = $3 WHERE name = $4")
            .bind(scopes.paths.join("\n"))
            .bind(scopes.nodes.join("\n"))
            .bind(now_unix())
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        let owner = owner_in(&mut tx, name).await?;
        tx.commit(&owner, rec).await?;
        Ok(owner)
    }

    /// One owner.
    pub async fn owner(&self, name: &str) -> Result<Option<Owner>, StoreError> {
        self.one_by(format!("SELECT {OWNER_COLUMNS} FROM owners WHERE name = $1"), name, owner_from_row).await
    }

    /// Every owner, by name.
    pub async fn owners(&self) -> Result<Vec<Owner>, StoreError> {
        self.all_rows(format!("SELECT {OWNER_COLUMNS} FROM owners ORDER BY name"), owner_from_row).await
    }

    /// Deactivates an owner, recorded by `rec`; its entries become orphans
    /// until transferred.
    pub async fn deactivate_owner(&self, name: &str, rec: Recorder<'_, Owner>) -> Result<Owner, StoreError> {
        let mut tx = self.begin_recorded().await?;
        sqlx::query("UPDATE owners SET active = 0, updated_at = $1 WHERE name = $2")
            .bind(now_unix())
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        let owner = owner_in(&mut tx, name).await?;
        tx.commit(&owner, rec).await?;
        Ok(owner)
    }

    /// Moves every entry of `from` to `to`, each a new revision pushed to its
    /// agent, recorded by `rec`; returns how many moved.
    pub async fn transfer_entries(&self, from: &str, to: &str, rec: Recorder<'_, u64>) -> Result<u64, StoreError> {
        let now = now_unix();
        let mut tx = self.begin_entry_change().await?;
        let rows = sqlx::query("SELECT id, parent_id FROM entries WHERE owner = $1")
            .bind(from.to_owned())
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("UPDATE entries SET owner = $1, revision = revision + 1, updated_at = $2 WHERE owner = $3")
            .bind(to.to_owned())
            .bind(now)
            .bind(from.to_owned())
            .execute(&mut *tx)
            .await?;
        for r in &rows {
            let (id, parent): (String, String) = (r.try_get("id")?, r.try_get("parent_id")?);
            Self::log_change(&mut tx, &id, &parent, now).await?;
        }
        let moved = rows.len() as u64;
        tx.commit(&moved, rec).await?;
        Ok(moved)
    }

    /// Stores a new policy version (the next number), recorded by `rec`, and
    /// returns it.
    pub async fn add_policy(
        &self,
        text: &str,
        sha256: &str,
        by: &str,
        rec: Recorder<'_, i64>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 AS v FROM policies")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        sqlx::query("INSERT INTO policies (version, text, sha256, created_at, created_by) VALUES ($1, $2, $3, $4, $5)")
            .bind(next)
            .bind(text.to_owned())
            .bind(sha256.to_owned())
            .bind(now_unix())
            .bind(by.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                crate::store::duplicate_or(e, || "another policy version was stored at the same moment; retry".into())
            })?;
        tx.commit(&next, rec).await?;
        Ok(next)
    }

    /// The policy in force (the highest version), if any was ever set.
    pub async fn current_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        let r = sqlx::query(
            "SELECT version, text, sha256, created_at, created_by FROM policies ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(policy_from_row).transpose()
    }

    /// The highest policy version number, or 0.
    pub async fn policy_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM policies")
            .fetch_one(&self.pool)
            .await?
            .try_get("v")?)
    }

    /// One policy version.
    pub async fn policy(&self, version: i64) -> Result<Option<PolicyVersion>, StoreError> {
        let r = sqlx::query("SELECT version, text, sha256, created_at, created_by FROM policies WHERE version = $1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(policy_from_row).transpose()
    }

    /// Every policy version, newest first.
    pub async fn policy_history(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        self.all_rows(
            "SELECT version, text, sha256, created_at, created_by FROM policies ORDER BY version DESC",
            policy_from_row,
        )
        .await
    }

    /// Records a requested (not yet approved) exception, recorded by `rec`.
    pub async fn request_exception(
        &self,
        x: &NewException<'_>,
        rec: Recorder<'_, ExceptionRecord>,
    ) -> Result<ExceptionRecord, StoreError> {
        let id = format!("exc-{}", crate::random_hex::<8>());
        let mut tx = self.begin_recorded().await?;
        sqlx::query(
            "INSERT INTO exceptions (id, entry_id, rule, value, justification, expires_at, requested_by, requested_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.clone())
        .bind(x.entry_id.to_owned())
        .bind(x.rule.to_owned())
        .bind(x.value.to_owned())
        .bind(x.justification.to_owned())
        .bind(x.expires_at)
        .bind(x.requested_by.to_owned())
        .bind(now_unix())
        .execute(&mut *tx)
        .await?;
        let record = exception_in(&mut tx, &id).await?;
        tx.commit(&record, rec).await?;
        Ok(record)
    }

    /// One exception.
    pub async fn exception(&self, id: &str) -> Result<Option<ExceptionRecord>, StoreError> {
        self.one_by(format!("SELECT {EXC_COLUMNS} FROM exceptions WHERE id = $1"), id, exception_from_row).await
    }

    /// Every exception, newest first.
    pub async fn exceptions(&self) -> Result<Vec<ExceptionRecord>, StoreError> {
        self.all_rows(
            format!("SELECT {EXC_COLUMNS} FROM exceptions ORDER BY requested_at DESC, id"),
            exception_from_row,
        )
        .await
    }

    /// Approves a pending exception, recorded by `rec`; the approver must
    /// not be the requester. The check and the write are one statement, so
    /// two approvers racing cannot both succeed and a self-approval can never
    /// slip through.
    pub async fn approve_exception(
        &self,
        id: &str,
        by: &str,
        now: i64,
        rec: Recorder<'_, ExceptionRecord>,
    ) -> Result<Result<ExceptionRecord, ExceptionError>, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let done = sqlx::query(
            "UPDATE exceptions SET approved_by = $1, approved_at = $2 \
             WHERE id = $3 AND approved_at IS NULL AND revoked_at IS NULL AND expires_at > $2 AND requested_by <> $1",
        )
        .bind(by.to_owned())
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        let record = exception_in(&mut tx, id).await?;
        if done.rows_affected() == 1 {
            tx.commit(&record, rec).await?;
            return Ok(Ok(record));
        }
        // Nothing changed: the transaction is dropped, not committed.
        let state = record.state(now);
        if state == "pending" && record.requested_by == by {
            return Ok(Err(ExceptionError::SelfApproval(by.to_owned())));
        }
        Ok(Err(ExceptionError::State { id: id.to_owned(), state }))
    }

    /// Revokes an exception that is pending or active, recorded by `rec`.
    pub async fn revoke_exception(
        &self,
        id: &str,
        by: &str,
        now: i64,
        rec: Recorder<'_, ExceptionRecord>,
    ) -> Result<Result<ExceptionRecord, ExceptionError>, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let done = sqlx::query(
            "UPDATE exceptions SET revoked_by = $1, revoked_at = $2 WHERE id = $3 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(by.to_owned())
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        let record = exception_in(&mut tx, id).await?;
        if done.rows_affected() == 1 {
            tx.commit(&record, rec).await?;
            Ok(Ok(record))
        } else {
            Ok(Err(ExceptionError::State { id: id.to_owned(), state: record.state(now) }))
        }
    }

    /// Approved, unrevoked, unexpired exceptions on an entry.
    pub async fn active_exceptions(&self, entry_id: &str, now: i64) -> Result<Vec<ExceptionRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EXC_COLUMNS} FROM exceptions WHERE entry_id = $1 AND approved_at IS NOT NULL AND revoked_at IS NULL AND expires_at > $2 ORDER BY id"
        )))
        .bind(entry_id.to_owned())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(exception_from_row).collect()
    }

    /// Every approved, unrevoked exception not yet expired at `now`.
    pub async fn approved_exceptions(&self, now: i64) -> Result<Vec<ExceptionRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EXC_COLUMNS} FROM exceptions WHERE approved_at IS NOT NULL AND revoked_at IS NULL AND expires_at > $1 ORDER BY id"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(exception_from_row).collect()
    }

    /// Marks approved exceptions that have expired as recorded, with the
    /// records `rec` makes of them; returns them (once each).
    pub async fn record_expired_exceptions(
        &self,
        now: i64,
        rec: Recorder<'_, [ExceptionRecord]>,
    ) -> Result<Vec<ExceptionRecord>, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE exceptions SET expiry_recorded_at = $1 WHERE expires_at <= $1 AND approved_at IS NOT NULL AND revoked_at IS NULL AND expiry_recorded_at IS NULL RETURNING {EXC_COLUMNS}"
        )))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let expired = rows.iter().map(exception_from_row).collect::<Result<Vec<_>, _>>()?;
        tx.commit(expired.as_slice(), rec).await?;
        Ok(expired)
    }
}
