//! The human track's own records (issue 19): the nonces of logins in flight,
//! help-desk recovery requests, and break-glass grants and their uses.
//! People themselves (SCIM) are in `people`; their certificates are in the
//! shared inventory, with `person_id`.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::{new_id, row_in};
use crate::{Backend, Recorder, Store, StoreError};

/// Most logins in flight at once. `POST /v1/login/start` needs no
/// credential, so anyone who can reach the admin API can ask for nonces:
/// beyond this many unexpired, unused ones the server refuses new logins
/// rather than grow the table without bound.
pub const MAX_LOGINS_IN_FLIGHT: i64 = 10_000;

/// Most logins in flight from one source address: one address cannot take
/// every slot of [`MAX_LOGINS_IN_FLIGHT`] (a person needs one at a time).
pub const MAX_LOGINS_PER_SOURCE: i64 = 20;

/// A login nonce handed out by `POST /v1/login/start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginNonce {
    /// The login's id (`lg_…`), which `POST /v1/login` names.
    pub id: String,
    /// The configured issuer's name.
    pub issuer: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
}

/// Why a login nonce could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LoginNonceError {
    /// Too many logins are in flight.
    #[error("too many logins in flight ({MAX_LOGINS_IN_FLIGHT}); try again in a few minutes")]
    Busy,
    /// Too many logins are in flight from this source.
    #[error("too many logins in flight from this address ({MAX_LOGINS_PER_SOURCE}); finish or wait for them to expire")]
    SourceBusy,
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a recovery request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryState {
    /// Filed; the subject cannot log in.
    Requested,
    /// An operator verified the person (with a note).
    Verified,
    /// A second admin approved: earlier certificates revoked, a new login allowed.
    Approved,
    /// Withdrawn; the subject may log in as before.
    Cancelled,
}

impl RecoveryState {
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "requested" => Self::Requested,
            "verified" => Self::Verified,
            "approved" => Self::Approved,
            "cancelled" => Self::Cancelled,
            other => {
                return Err(StoreError::Corrupt {
                    table: "recovery_requests",
                    detail: format!("unknown state `{other}`"),
                });
            }
        })
    }

    /// Whether the request is still open (it blocks the subject's logins).
    pub fn open(self) -> bool {
        matches!(self, Self::Requested | Self::Verified)
    }
}

/// A help-desk recovery request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryRequest {
    /// Its id.
    pub id: String,
    /// The person's SPIFFE ID.
    pub subject: String,
    /// Why (the person's account of the loss).
    pub reason: String,
    /// Where it is.
    pub state: RecoveryState,
    /// The admin identity that filed it.
    pub requested_by: String,
    /// Unix seconds.
    pub requested_at: i64,
    /// The operator who verified the person.
    pub verified_by: Option<String>,
    /// Unix seconds.
    pub verified_at: Option<i64>,
    /// How the person was verified (the help-desk note).
    pub verify_note: Option<String>,
    /// The second admin who approved.
    pub approved_by: Option<String>,
    /// Unix seconds.
    pub approved_at: Option<i64>,
    /// When it was approved or cancelled, unix seconds.
    pub closed_at: Option<i64>,
}

const RECOVERY_COLUMNS: &str = "id, subject, reason, state, requested_by, requested_at, verified_by, verified_at, \
    verify_note, approved_by, approved_at, closed_at";

fn recovery_from_row(r: &AnyRow) -> Result<RecoveryRequest, StoreError> {
    Ok(RecoveryRequest {
        id: r.try_get("id")?,
        subject: r.try_get("subject")?,
        reason: r.try_get("reason")?,
        state: RecoveryState::parse(&r.try_get::<String, _>("state")?)?,
        requested_by: r.try_get("requested_by")?,
        requested_at: r.try_get("requested_at")?,
        verified_by: r.try_get("verified_by")?,
        verified_at: r.try_get("verified_at")?,
        verify_note: r.try_get("verify_note")?,
        approved_by: r.try_get("approved_by")?,
        approved_at: r.try_get("approved_at")?,
        closed_at: r.try_get("closed_at")?,
    })
}

/// A pre-approved break-glass grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakGlassGrant {
    /// Its id.
    pub id: String,
    /// The person's SPIFFE ID.
    pub subject: String,
    /// Why the person may need it.
    pub reason: String,
    /// The admin identity that granted it.
    pub granted_by: String,
    /// Unix seconds.
    pub granted_at: i64,
    /// Unix seconds after which it cannot be used.
    pub expires_at: i64,
    /// When it was withdrawn.
    pub revoked_at: Option<i64>,
}

const GRANT_COLUMNS: &str = "id, subject, reason, granted_by, granted_at, expires_at, revoked_at";

fn grant_from_row(r: &AnyRow) -> Result<BreakGlassGrant, StoreError> {
    Ok(BreakGlassGrant {
        id: r.try_get("id")?,
        subject: r.try_get("subject")?,
        reason: r.try_get("reason")?,
        granted_by: r.try_get("granted_by")?,
        granted_at: r.try_get("granted_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// One use of a break-glass grant: the certificate it issued, and its review.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakGlassUse {
    /// Its id.
    pub id: String,
    /// The grant used.
    pub grant_id: String,
    /// The person's SPIFFE ID.
    pub subject: String,
    /// The certificate's serial.
    pub credential: String,
    /// Unix seconds.
    pub used_at: i64,
    /// Who reviewed it; `None` while it is a finding.
    pub reviewed_by: Option<String>,
    /// Unix seconds.
    pub reviewed_at: Option<i64>,
    /// What the review found.
    pub review_note: Option<String>,
}

const USE_COLUMNS: &str = "id, grant_id, subject, credential, used_at, reviewed_by, reviewed_at, review_note";

fn use_from_row(r: &AnyRow) -> Result<BreakGlassUse, StoreError> {
    Ok(BreakGlassUse {
        id: r.try_get("id")?,
        grant_id: r.try_get("grant_id")?,
        subject: r.try_get("subject")?,
        credential: r.try_get("credential")?,
        used_at: r.try_get("used_at")?,
        reviewed_by: r.try_get("reviewed_by")?,
        reviewed_at: r.try_get("reviewed_at")?,
        review_note: r.try_get("review_note")?,
    })
}

/// The row of `table` with `id`, locked for a change (see `tasks`).
fn lock(backend: Backend) -> &'static str {
    if backend == Backend::Postgres { " FOR UPDATE" } else { "" }
}

impl Store {
    /// Hands out a nonce for a login with `issuer` asked from `source` (an
    /// address), valid `ttl_secs`. Expired nonces are deleted on the way;
    /// more than [`MAX_LOGINS_PER_SOURCE`] live ones from `source`, or
    /// [`MAX_LOGINS_IN_FLIGHT`] in all, refuses.
    pub async fn create_login_nonce(
        &self,
        issuer: &str,
        nonce: &str,
        source: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<LoginNonce, LoginNonceError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        sqlx::query("DELETE FROM login_nonces WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM login_nonces WHERE used_at IS NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        if live >= MAX_LOGINS_IN_FLIGHT {
            return Err(LoginNonceError::Busy);
        }
        let mine: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM login_nonces WHERE used_at IS NULL AND source = $1")
            .bind(source.to_owned())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        if mine >= MAX_LOGINS_PER_SOURCE {
            return Err(LoginNonceError::SourceBusy);
        }
        let n = LoginNonce {
            id: format!("lg_{}", new_id()),
            issuer: issuer.to_owned(),
            nonce: nonce.to_owned(),
            expires_at: now.saturating_add(ttl_secs),
        };
        sqlx::query(
            "INSERT INTO login_nonces (id, issuer, nonce, created_at, expires_at, source) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(n.id.clone())
        .bind(n.issuer.clone())
        .bind(n.nonce.clone())
        .bind(now)
        .bind(n.expires_at)
        .bind(source.to_owned())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(n)
    }

    /// Uses login `id`'s nonce, once: `None` when it is unknown, expired or
    /// already used (a replayed login). The update is the check, so two
    /// concurrent uses cannot both succeed.
    pub async fn take_login_nonce(&self, id: &str, now: i64) -> Result<Option<LoginNonce>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let taken =
            sqlx::query("UPDATE login_nonces SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1")
                .bind(now)
                .bind(id.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if taken != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT id, issuer, nonce, expires_at FROM login_nonces WHERE id = $1")
            .bind(id.to_owned())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(LoginNonce {
            id: row.try_get("id")?,
            issuer: row.try_get("issuer")?,
            nonce: row.try_get("nonce")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Files a recovery request for `subject`, recorded by `rec`. Refused
    /// while another is open for the same subject.
    pub async fn create_recovery(
        &self,
        subject: &str,
        reason: &str,
        by: &str,
        now: i64,
        rec: Recorder<'_, RecoveryRequest>,
    ) -> Result<RecoveryRequest, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let open =
            sqlx::query("SELECT id FROM recovery_requests WHERE subject = $1 AND state IN ('requested', 'verified')")
                .bind(subject.to_owned())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = open {
            let other: String = row.try_get("id")?;
            return Err(StoreError::Duplicate(format!("recovery request `{other}` is already open for `{subject}`")));
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO recovery_requests (id, subject, reason, state, requested_by, requested_at) \
             VALUES ($1, $2, $3, 'requested', $4, $5)",
        )
        .bind(id.clone())
        .bind(subject.to_owned())
        .bind(reason.to_owned())
        .bind(by.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| crate::store::duplicate_or(e, || format!("a recovery request is already open for `{subject}`")))?;
        let r = recovery_in(&mut tx, self.backend(), &id, false).await?;
        tx.commit(&r, rec).await?;
        Ok(r)
    }

    /// Moves request `id` on, recorded by `rec`: `check` sees it as it is
    /// (locked) and says what to set, or why not.
    pub async fn advance_recovery(
        &self,
        id: &str,
        check: impl FnOnce(&RecoveryRequest) -> Result<RecoveryStep, StoreError>,
        now: i64,
        rec: Recorder<'_, RecoveryRequest>,
    ) -> Result<RecoveryRequest, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let r = recovery_in(&mut tx, self.backend(), id, true).await?;
        let q = match check(&r)? {
            RecoveryStep::Verify { by, note } => sqlx::query(
                "UPDATE recovery_requests SET state = 'verified', verified_by = $1, verify_note = $2, verified_at = $3 \
                 WHERE id = $4",
            )
            .bind(by)
            .bind(note)
            .bind(now),
            RecoveryStep::Approve { by } => sqlx::query(
                "UPDATE recovery_requests SET state = 'approved', approved_by = $1, approved_at = $2, closed_at = $2 \
                 WHERE id = $3",
            )
            .bind(by)
            .bind(now),
            RecoveryStep::Cancel => {
                sqlx::query("UPDATE recovery_requests SET state = 'cancelled', closed_at = $1 WHERE id = $2").bind(now)
            }
        };
        q.bind(id.to_owned()).execute(&mut *tx).await?;
        let r = recovery_in(&mut tx, self.backend(), id, false).await?;
        tx.commit(&r, rec).await?;
        Ok(r)
    }

    /// One recovery request.
    pub async fn recovery(&self, id: &str) -> Result<Option<RecoveryRequest>, StoreError> {
        self.one_by(format!("SELECT {RECOVERY_COLUMNS} FROM recovery_requests WHERE id = $1"), id, recovery_from_row)
            .await
    }

    /// Recovery requests, newest first: of one subject, or all; open ones only when `open_only`.
    pub async fn recoveries(&self, subject: Option<&str>, open_only: bool) -> Result<Vec<RecoveryRequest>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECOVERY_COLUMNS} FROM recovery_requests WHERE ($1 = '' OR subject = $1) \
             AND ($2 = 0 OR state IN ('requested', 'verified')) ORDER BY requested_at DESC, id DESC LIMIT 10000"
        )))
        .bind(subject.unwrap_or_default().to_owned())
        .bind(i64::from(open_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recovery_from_row).collect()
    }

    /// Grants `subject` break-glass logins until `expires_at`, recorded by `rec`.
    pub async fn grant_break_glass(
        &self,
        subject: &str,
        reason: &str,
        by: &str,
        now: i64,
        expires_at: i64,
        rec: Recorder<'_, BreakGlassGrant>,
    ) -> Result<BreakGlassGrant, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO break_glass_grants (id, subject, reason, granted_by, granted_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.clone())
        .bind(subject.to_owned())
        .bind(reason.to_owned())
        .bind(by.to_owned())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let g = row_in(
            &mut tx,
            format!("SELECT {GRANT_COLUMNS} FROM break_glass_grants WHERE id = $1"),
            &id,
            "break-glass grant",
            grant_from_row,
        )
        .await?;
        tx.commit(&g, rec).await?;
        Ok(g)
    }

    /// Withdraws grant `id`, recorded by `rec`.
    pub async fn revoke_break_glass(
        &self,
        id: &str,
        now: i64,
        rec: Recorder<'_, BreakGlassGrant>,
    ) -> Result<BreakGlassGrant, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let done = sqlx::query("UPDATE break_glass_grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let g = row_in(
            &mut tx,
            format!("SELECT {GRANT_COLUMNS} FROM break_glass_grants WHERE id = $1"),
            id,
            "break-glass grant",
            grant_from_row,
        )
        .await?;
        if done != 1 {
            return Err(StoreError::Duplicate(format!("break-glass grant `{id}` is already revoked")));
        }
        tx.commit(&g, rec).await?;
        Ok(g)
    }

    /// The usable grant of `subject` at `now` (latest expiry), if any.
    pub async fn break_glass_grant_for(&self, subject: &str, now: i64) -> Result<Option<BreakGlassGrant>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM break_glass_grants WHERE subject = $1 AND revoked_at IS NULL \
             AND expires_at > $2 ORDER BY expires_at DESC LIMIT 1"
        )))
        .bind(subject.to_owned())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// Every grant, newest first.
    pub async fn break_glass_grants(&self) -> Result<Vec<BreakGlassGrant>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM break_glass_grants ORDER BY granted_at DESC, id DESC LIMIT 10000"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(grant_from_row).collect()
    }

    /// Records a use of `grant` that issued certificate `credential`, by `rec`.
    pub async fn record_break_glass_use(
        &self,
        grant: &BreakGlassGrant,
        credential: &str,
        now: i64,
        rec: Recorder<'_, BreakGlassUse>,
    ) -> Result<BreakGlassUse, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO break_glass_uses (id, grant_id, subject, credential, used_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.clone())
        .bind(grant.id.clone())
        .bind(grant.subject.clone())
        .bind(credential.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let u = use_in(&mut tx, &id).await?;
        tx.commit(&u, rec).await?;
        Ok(u)
    }

    /// Marks use `id` reviewed, recorded by `rec`; a use already reviewed is refused.
    pub async fn review_break_glass_use(
        &self,
        id: &str,
        by: &str,
        note: &str,
        now: i64,
        rec: Recorder<'_, BreakGlassUse>,
    ) -> Result<BreakGlassUse, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let done = sqlx::query(
            "UPDATE break_glass_uses SET reviewed_by = $1, reviewed_at = $2, review_note = $3 \
             WHERE id = $4 AND reviewed_at IS NULL",
        )
        .bind(by.to_owned())
        .bind(now)
        .bind(note.to_owned())
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let u = use_in(&mut tx, id).await?;
        if done != 1 {
            return Err(StoreError::Duplicate(format!("break-glass use `{id}` is already reviewed")));
        }
        tx.commit(&u, rec).await?;
        Ok(u)
    }

    /// Break-glass uses, newest first; only those not yet reviewed when `unreviewed_only`.
    pub async fn break_glass_uses(&self, unreviewed_only: bool) -> Result<Vec<BreakGlassUse>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USE_COLUMNS} FROM break_glass_uses WHERE ($1 = 0 OR reviewed_at IS NULL) \
             ORDER BY used_at DESC, id DESC LIMIT 10000"
        )))
        .bind(i64::from(unreviewed_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(use_from_row).collect()
    }
}

/// What [`Store::advance_recovery`] sets.
#[derive(Debug, Clone)]
pub enum RecoveryStep {
    /// The help desk verified the person.
    Verify {
        /// Who.
        by: String,
        /// How.
        note: String,
    },
    /// A second admin approved.
    Approve {
        /// Who.
        by: String,
    },
    /// Withdrawn (the record names who, in the audit chain).
    Cancel,
}

async fn recovery_in(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    id: &str,
    for_change: bool,
) -> Result<RecoveryRequest, StoreError> {
    let lock = if for_change { lock(backend) } else { "" };
    row_in(
        conn,
        format!("SELECT {RECOVERY_COLUMNS} FROM recovery_requests WHERE id = $1{lock}"),
        id,
        "recovery request",
        recovery_from_row,
    )
    .await
}

async fn use_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<BreakGlassUse, StoreError> {
    row_in(
        conn,
        format!("SELECT {USE_COLUMNS} FROM break_glass_uses WHERE id = $1"),
        id,
        "break-glass use",
        use_from_row,
    )
    .await
}
