//! Revocation: of one credential, an entry, everything an owner has, a
//! node, a task, every task of an agent's entry, everything issued to a
//! person or to a human SPIFFE ID, each in one transaction that marks the
//! inventory, disables what must not be issued again, and appends to the
//! revocation log.
//!
//! The revocation log is read in order by every server (as the entry change
//! log is): it is what pushes revocations to agents and what CRLs are built
//! from. On PostgreSQL the log table is locked in each revoking transaction so
//! that positions become visible in commit order and a reader polling
//! `seq > last` never skips one.

use hallmark_core::{CredentialKind, RevocationKind};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Backend, Recorder, Store, StoreError};

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One credential: an X.509-SVID serial or a JWT-SVID `jti`.
    Credential(String),
    /// An entry: it is never served again, and its live credentials are revoked.
    Entry(String),
    /// Every entry an owner has, and their live credentials.
    Owner(String),
    /// A node: it is banned (its agent SVID refused from then on) and every
    /// live credential issued through it is revoked.
    Node(String),
    /// A task: it ends (nothing is issued for it again) and every live
    /// credential issued for it is revoked.
    Task(String),
    /// Every running task of an agent's entry, as [`RevokeTarget::Task`]; the
    /// entry itself stays (a new task may start).
    AgentEntry(String),
    /// Every live credential issued to a person (by person id): what a
    /// leaver loses at once. The person record itself is the SCIM
    /// provisioning's to change.
    Person(String),
    /// Every live credential of class `human` issued to this SPIFFE ID,
    /// whoever it was issued to.
    Human(String),
}

/// Which credentials [`Store::revoke_credentials_where`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialSelector {
    /// One, by serial or jti.
    Id,
    /// The live ones of an entry.
    Entry,
    /// The live ones issued through a node.
    Node,
    /// The live ones of a task.
    Task,
    /// The live ones issued to a person.
    Person,
    /// The live ones of class `human` with a SPIFFE ID.
    Human,
}

/// What a revocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RevokeOutcome {
    /// Credentials (serials and jtis) revoked now.
    pub credentials: Vec<String>,
    /// Entries revoked now.
    pub entries: Vec<String>,
    /// The node banned, if any.
    pub node: Option<String>,
    /// Tasks ended now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// Position of the last revocation-log record written (0 when none).
    pub last_seq: i64,
}

/// One record of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revocation {
    /// Position in the log.
    pub seq: i64,
    /// `x509` (a serial), `jwt` (a jti) or `node` (an agent ID).
    pub kind: RevocationKind,
    /// The serial, jti or agent ID.
    pub id: String,
    /// The authority that signed the credential (empty for nodes).
    pub authority_id: String,
    /// When the credential would have expired anyway; CRLs and agents forget it after.
    pub not_after: i64,
    /// Unix seconds.
    pub at: i64,
    /// Why.
    pub reason: String,
}

/// The `kind` column of a `revocations` row; an unknown one is a
/// [`StoreError::Corrupt`] naming the value and the record.
fn revocation_kind(r: &AnyRow) -> Result<RevocationKind, StoreError> {
    let kind: String = r.try_get("kind")?;
    kind.parse().map_err(|e: hallmark_core::RevocationKindError| {
        let seq: i64 = r.try_get("seq").unwrap_or_default();
        StoreError::Corrupt { table: "revocations", detail: format!("record {seq}: {e}") }
    })
}

fn revocation(r: &AnyRow) -> Result<Revocation, StoreError> {
    Ok(Revocation {
        seq: r.try_get("seq")?,
        kind: revocation_kind(r)?,
        id: r.try_get("id")?,
        authority_id: r.try_get("authority_id")?,
        not_after: r.try_get("not_after")?,
        at: r.try_get("at")?,
        reason: r.try_get("reason")?,
    })
}

/// `NotFound` with `missing` unless `select` (a static query on `$1`) finds `key`.
async fn known(
    tx: &mut AnyConnection,
    select: &'static str,
    key: &str,
    missing: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    match sqlx::query(select).bind(key.to_owned()).fetch_optional(&mut *tx).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(missing())),
    }
}

/// The `id` column of every row `select` (a static query on `$1`) finds for `key`.
async fn ids_of(tx: &mut AnyConnection, select: &'static str, key: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(select).bind(key.to_owned()).fetch_all(&mut *tx).await?;
    rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
}

const REVOCATION_COLUMNS: &str = "seq, kind, id, authority_id, not_after, at, reason";

impl Store {
    async fn log_revocation(
        tx: &mut AnyConnection,
        kind: RevocationKind,
        id: &str,
        authority_id: &str,
        not_after: i64,
        now: i64,
        reason: &str,
    ) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "INSERT INTO revocations (kind, id, authority_id, not_after, at, reason) VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(kind.as_str())
        .bind(id.to_owned())
        .bind(authority_id.to_owned())
        .bind(not_after)
        .bind(now)
        .bind(reason.to_owned())
        .fetch_one(&mut *tx)
        .await?;
        Ok(r.try_get("seq")?)
    }

    /// Revokes the unrevoked credentials `condition` selects by `value`,
    /// recording each in the log.
    pub(crate) async fn revoke_credentials_where(
        tx: &mut AnyConnection,
        condition: CredentialSelector,
        value: &str,
        now: i64,
        reason: &str,
        out: &mut RevokeOutcome,
    ) -> Result<(), StoreError> {
        let select = match condition {
            CredentialSelector::Id => {
                "SELECT id, kind, authority_id, not_after FROM credentials WHERE id = $1 AND revoked_at IS NULL"
            }
            CredentialSelector::Entry => {
                "SELECT id, kind, authority_id, not_after FROM credentials WHERE entry_id = $1 AND revoked_at IS NULL AND not_after > $2"
            }
            CredentialSelector::Node => {
                "SELECT id, kind, authority_id, not_after FROM credentials WHERE node_id = $1 AND revoked_at IS NULL AND not_after > $2"
            }
            CredentialSelector::Task => {
                "SELECT id, kind, authority_id, not_after FROM credentials WHERE task_id = $1 AND revoked_at IS NULL AND not_after > $2"
            }
            CredentialSelector::Person => {
                "SELECT id, kind, authority_id, not_after FROM credentials WHERE person_id = $1 AND revoked_at IS NULL AND not_after > $2"
            }
            // No index on the SPIFFE ID: every index is paid for on each
            // issuance (see 0005_inventory.sql), and revoking a human's
            // certificates by ID is rare; this scans the inventory.
            CredentialSelector::Human => {
                "SELECT id, kind, authority_id, not_after FROM credentials WHERE spiffe_id = $1 AND class = 'human' AND revoked_at IS NULL AND not_after > $2"
            }
        };
        let mut q = sqlx::query(select).bind(value.to_owned());
        if condition != CredentialSelector::Id {
            q = q.bind(now);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        for r in &rows {
            let kind: CredentialKind = crate::inventory::credential_kind(r)?;
            let (id, authority, not_after): (String, String, i64) =
                (r.try_get("id")?, r.try_get("authority_id")?, r.try_get("not_after")?);
            sqlx::query("UPDATE credentials SET revoked_at = $1, revoke_reason = $2 WHERE id = $3")
                .bind(now)
                .bind(reason.to_owned())
                .bind(id.clone())
                .execute(&mut *tx)
                .await?;
            out.last_seq = Self::log_revocation(tx, kind.into(), &id, &authority, not_after, now, reason).await?;
            out.credentials.push(id);
        }
        Ok(())
    }

    /// Revokes one entry (already-revoked entries are left as they are) and
    /// its live credentials, and tells its agent through the change log. The
    /// live credentials of a deleted entry are revoked too.
    async fn revoke_entry_in(
        tx: &mut AnyConnection,
        id: &str,
        now: i64,
        reason: &str,
        out: &mut RevokeOutcome,
    ) -> Result<(), StoreError> {
        let Some(r) = sqlx::query("SELECT parent_id, revoked_at FROM entries WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
        else {
            // A deleted entry whose credentials outlive it (an issuance in
            // flight as it was deleted): those are still revoked.
            let issued = sqlx::query("SELECT 1 AS one FROM credentials WHERE entry_id = $1 LIMIT 1")
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !issued {
                return Err(StoreError::NotFound(format!("entry `{id}`")));
            }
            return Self::revoke_credentials_where(tx, CredentialSelector::Entry, id, now, reason, out).await;
        };
        let parent: String = r.try_get("parent_id")?;
        if r.try_get::<Option<i64>, _>("revoked_at")?.is_none() {
            sqlx::query(
                "UPDATE entries SET revoked_at = $1, revoke_reason = $2, revision = revision + 1, updated_at = $1 WHERE id = $3",
            )
            .bind(now)
            .bind(reason.to_owned())
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
            Self::log_change(tx, id, &parent, now).await?;
            out.entries.push(id.to_owned());
        }
        Self::revoke_credentials_where(tx, CredentialSelector::Entry, id, now, reason, out).await
    }

    /// Ends one task (an ended one stays as it ended) and revokes its live
    /// credentials.
    async fn end_task_in(
        tx: &mut AnyConnection,
        id: &str,
        now: i64,
        reason: &str,
        out: &mut RevokeOutcome,
    ) -> Result<(), StoreError> {
        let ended = sqlx::query("UPDATE tasks SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL")
            .bind(now)
            .bind(reason.to_owned())
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if ended > 0 {
            out.tasks.push(id.to_owned());
        }
        Self::revoke_credentials_where(tx, CredentialSelector::Task, id, now, reason, out).await
    }

    /// Revokes `target` in one transaction, recorded by `rec`, and returns
    /// what was revoked. Revoking something already revoked changes nothing
    /// and is not an error; an unknown target is `NotFound`.
    pub async fn revoke(
        &self,
        target: &RevokeTarget,
        reason: &str,
        now: i64,
        rec: Recorder<'_, RevokeOutcome>,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tx = self.begin_entry_change().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("LOCK TABLE revocations IN EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        let mut out = RevokeOutcome::default();
        match target {
            RevokeTarget::Credential(id) => {
                known(&mut tx, "SELECT 1 AS one FROM credentials WHERE id = $1", id, || {
                    format!("credential `{id}` in the inventory")
                })
                .await?;
                Self::revoke_credentials_where(&mut tx, CredentialSelector::Id, id, now, reason, &mut out).await?;
            }
            RevokeTarget::Entry(id) => Self::revoke_entry_in(&mut tx, id, now, reason, &mut out).await?,
            RevokeTarget::Owner(name) => {
                known(&mut tx, "SELECT 1 AS one FROM owners WHERE name = $1", name, || format!("owner `{name}`"))
                    .await?;
                for id in ids_of(&mut tx, "SELECT id FROM entries WHERE owner = $1 ORDER BY id", name).await? {
                    Self::revoke_entry_in(&mut tx, &id, now, reason, &mut out).await?;
                }
            }
            RevokeTarget::Node(agent) => {
                let node = sqlx::query("SELECT serial, authority_id, not_after, banned FROM nodes WHERE agent_id = $1")
                    .bind(agent.clone())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("node `{agent}`")))?;
                if node.try_get::<i64, _>("banned")? == 0 {
                    sqlx::query("UPDATE nodes SET banned = 1, banned_at = $1, ban_reason = $2, updated_at = $1 WHERE agent_id = $3")
                        .bind(now)
                        .bind(reason.to_owned())
                        .bind(agent.clone())
                        .execute(&mut *tx)
                        .await?;
                    Self::revoke_credentials_where(&mut tx, CredentialSelector::Node, agent, now, reason, &mut out)
                        .await?;
                    // The agent's own SVID goes on its authority's CRL; the
                    // node record, last, is what ends the agent's sessions.
                    let (serial, authority, not_after): (String, String, i64) =
                        (node.try_get("serial")?, node.try_get("authority_id")?, node.try_get("not_after")?);
                    Self::log_revocation(&mut tx, RevocationKind::X509, &serial, &authority, not_after, now, reason)
                        .await?;
                    out.last_seq =
                        Self::log_revocation(&mut tx, RevocationKind::Node, agent, "", i64::MAX, now, reason).await?;
                    out.node = Some(agent.clone());
                }
            }
            RevokeTarget::Task(id) => {
                known(&mut tx, "SELECT 1 AS one FROM tasks WHERE id = $1", id, || format!("task `{id}`")).await?;
                Self::end_task_in(&mut tx, id, now, reason, &mut out).await?;
            }
            RevokeTarget::AgentEntry(entry) => {
                known(&mut tx, "SELECT 1 AS one FROM entries WHERE id = $1", entry, || format!("entry `{entry}`"))
                    .await?;
                let running = "SELECT id FROM tasks WHERE entry_id = $1 AND ended_at IS NULL ORDER BY id";
                for id in ids_of(&mut tx, running, entry).await? {
                    Self::end_task_in(&mut tx, &id, now, reason, &mut out).await?;
                }
            }
            RevokeTarget::Person(id) => {
                known(&mut tx, "SELECT 1 AS one FROM people WHERE id = $1", id, || format!("person `{id}`")).await?;
                Self::revoke_credentials_where(&mut tx, CredentialSelector::Person, id, now, reason, &mut out).await?;
            }
            RevokeTarget::Human(spiffe_id) => {
                let issued = "SELECT 1 AS one FROM credentials WHERE spiffe_id = $1 AND class = 'human' LIMIT 1";
                known(&mut tx, issued, spiffe_id, || format!("human credential of `{spiffe_id}` in the inventory"))
                    .await?;
                Self::revoke_credentials_where(&mut tx, CredentialSelector::Human, spiffe_id, now, reason, &mut out)
                    .await?;
            }
        }
        tx.commit(&out, rec).await?;
        Ok(out)
    }

    /// Revocation-log records after `seq`, oldest first, at most `limit`.
    pub async fn revocations_since(&self, seq: i64, limit: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REVOCATION_COLUMNS} FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revocation).collect()
    }

    /// The newest revocation-log position.
    pub async fn last_revocation(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM revocations")
            .fetch_one(&self.pool)
            .await?
            .try_get("s")?)
    }

    /// Revoked credentials that would still be valid at `now` (what agents
    /// must refuse and CRLs must list), with the log position they reflect.
    pub async fn live_revocations(&self, now: i64) -> Result<(Vec<Revocation>, i64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM revocations")
            .fetch_one(&mut *tx)
            .await?
            .try_get("s")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REVOCATION_COLUMNS} FROM revocations WHERE not_after > $1 AND kind <> 'node' ORDER BY seq"
        )))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((rows.iter().map(revocation).collect::<Result<_, _>>()?, seq))
    }
}
