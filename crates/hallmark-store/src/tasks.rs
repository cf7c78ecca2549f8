//! AI-agent tasks ([`hallmark_core::ScopeItem`] and friends hold the input
//! rules): created by `hallmark task run`/`start`, bound once to a process
//! instance, approved item by item, re-aimed by a new objective (which
//! revokes what was issued under the old one) and ended by
//! [`crate::RevokeTarget::Task`].

use hallmark_core::ScopeItem;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::revocation::CredentialSelector;
use crate::store::row_in;
use crate::{Backend, Recorder, RevokeOutcome, Store, StoreError};

/// The process a task is bound to: the root of the task's process tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskProcess {
    /// The agent (node) it runs under: the entry's parent.
    pub node_id: String,
    /// Its PID, as the agent's host sees it.
    pub pid: i64,
    /// Its start time, clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: i64,
    /// When it was bound, unix seconds.
    pub bound_at: i64,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    /// Its id.
    pub id: String,
    /// The agent's entry (`bind: task`).
    pub entry_id: String,
    /// The objective, as given.
    pub objective: String,
    /// SHA-256 (hex) of the objective.
    pub objective_sha256: String,
    /// What it may get tokens for.
    pub scope: Vec<ScopeItem>,
    /// The subject it acts for.
    pub on_behalf_of: Option<String>,
    /// Whether a scope breach ends it.
    pub revoke_on_breach: bool,
    /// The admin identity that started it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When its lifetime runs out, unix seconds.
    pub expires_at: i64,
    /// When the objective last changed, unix seconds.
    pub objective_changed_at: Option<i64>,
    /// The process it is bound to, once bound.
    pub process: Option<TaskProcess>,
    /// Requests outside its scope so far.
    pub breaches: i64,
    /// When it ended, unix seconds.
    pub ended_at: Option<i64>,
    /// Why.
    pub end_reason: Option<String>,
}

impl Task {
    /// `waiting` (no process yet), `active`, `expired` (lifetime over, not
    /// yet ended by the sweep) or `ended`.
    pub fn state(&self, now: i64) -> &'static str {
        match (self.ended_at, &self.process) {
            (Some(_), _) => "ended",
            (None, _) if self.expires_at <= now => "expired",
            (None, None) => "waiting",
            (None, Some(_)) => "active",
        }
    }

    /// Whether credentials may be issued for it at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.state(now) == "active"
    }

    /// Its scope item for `audience`.
    pub fn scope_item(&self, audience: &str) -> Option<&ScopeItem> {
        self.scope.iter().find(|i| i.audience == audience)
    }
}

/// A task to create.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// The entry (checked by the caller: exists, `bind: task`).
    pub entry_id: &'a str,
    /// The objective (checked).
    pub objective: &'a str,
    /// The scope (checked).
    pub scope: &'a [ScopeItem],
    /// The subject it acts for (checked).
    pub on_behalf_of: Option<&'a str>,
    /// Whether a breach ends it.
    pub revoke_on_breach: bool,
    /// Who starts it.
    pub created_by: &'a str,
    /// Its lifetime, seconds.
    pub ttl_secs: i64,
}

const TASK_COLUMNS: &str = "id, entry_id, objective, objective_sha256, scope, on_behalf_of, revoke_on_breach, \
    created_by, created_at, expires_at, objective_changed_at, node_id, pid, start_ticks, bound_at, breaches, \
    ended_at, end_reason";

fn task_from_row(r: &AnyRow) -> Result<Task, StoreError> {
    let id: String = r.try_get("id")?;
    let scope: String = r.try_get("scope")?;
    let scope = serde_json::from_str(&scope)
        .map_err(|e| StoreError::Corrupt { table: "tasks", detail: format!("task `{id}` scope: {e}") })?;
    let node_id: Option<String> = r.try_get("node_id")?;
    let (pid, start_ticks, bound_at): (Option<i64>, Option<i64>, Option<i64>) =
        (r.try_get("pid")?, r.try_get("start_ticks")?, r.try_get("bound_at")?);
    let process = match (node_id, pid, start_ticks, bound_at) {
        (Some(node_id), Some(pid), Some(start_ticks), Some(bound_at)) => {
            Some(TaskProcess { node_id, pid, start_ticks, bound_at })
        }
        _ => None,
    };
    Ok(Task {
        entry_id: r.try_get("entry_id")?,
        objective: r.try_get("objective")?,
        objective_sha256: r.try_get("objective_sha256")?,
        scope,
        on_behalf_of: r.try_get("on_behalf_of")?,
        revoke_on_breach: r.try_get::<i64, _>("revoke_on_breach")? != 0,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        objective_changed_at: r.try_get("objective_changed_at")?,
        process,
        breaches: r.try_get("breaches")?,
        ended_at: r.try_get("ended_at")?,
        end_reason: r.try_get("end_reason")?,
        id,
    })
}

fn scope_json(scope: &[ScopeItem]) -> Result<String, StoreError> {
    serde_json::to_string(scope).map_err(|e| StoreError::Schema(format!("task scope: {e}")))
}

/// A change that needs a task still running.
fn refuse_ended(t: &Task) -> Result<(), StoreError> {
    match t.ended_at {
        Some(_) => Err(StoreError::Duplicate(format!(
            "task `{}` has ended ({})",
            t.id,
            t.end_reason.as_deref().unwrap_or("no reason")
        ))),
        None => Ok(()),
    }
}

async fn task_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Task, StoreError> {
    row_in(conn, format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"), id, "task", task_from_row).await
}

/// The task, locked until the transaction ends, for a change made from
/// what it holds now: on PostgreSQL a row lock (READ COMMITTED would let two
/// changes read the same row and the later overwrite the earlier); SQLite
/// writers are serialised by `BEGIN IMMEDIATE` already.
async fn task_for_change(conn: &mut sqlx::AnyConnection, backend: Backend, id: &str) -> Result<Task, StoreError> {
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    row_in(conn, format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1{lock}"), id, "task", task_from_row).await
}

impl Store {
    /// Creates a task, recorded by `rec`. It waits for its process
    /// ([`Store::bind_task_process`]).
    pub async fn create_task(&self, t: &NewTask<'_>, now: i64, rec: Recorder<'_, Task>) -> Result<Task, StoreError> {
        let id = crate::store::new_id();
        let mut tx = self.begin_recorded().await?;
        sqlx::query(
            "INSERT INTO tasks (id, entry_id, objective, objective_sha256, scope, on_behalf_of, revoke_on_breach, \
             created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id.clone())
        .bind(t.entry_id.to_owned())
        .bind(t.objective.to_owned())
        .bind(hallmark_core::objective_sha256(t.objective))
        .bind(scope_json(t.scope)?)
        .bind(t.on_behalf_of.map(str::to_owned))
        .bind(i64::from(t.revoke_on_breach))
        .bind(t.created_by.to_owned())
        .bind(now)
        .bind(now.saturating_add(t.ttl_secs))
        .execute(&mut *tx)
        .await?;
        let task = task_in(&mut tx, &id).await?;
        tx.commit(&task, rec).await?;
        Ok(task)
    }

    /// Binds a waiting task to its process, once: a task already bound or
    /// ended is refused.
    pub async fn bind_task_process(
        &self,
        id: &str,
        node_id: &str,
        pid: i64,
        start_ticks: i64,
        now: i64,
        rec: Recorder<'_, Task>,
    ) -> Result<Task, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let t = task_for_change(&mut tx, self.backend(), id).await?;
        refuse_ended(&t)?;
        if t.process.is_some() {
            return Err(StoreError::Duplicate(format!("task `{id}` is already bound to a process")));
        }
        // One process, one running task of an entry: which task a credential
        // is for must never be a choice.
        let held = sqlx::query(
            "SELECT id FROM tasks WHERE entry_id = $1 AND node_id = $2 AND pid = $3 AND start_ticks = $4 \
             AND ended_at IS NULL",
        )
        .bind(t.entry_id.clone())
        .bind(node_id.to_owned())
        .bind(pid)
        .bind(start_ticks)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(other) = held {
            let other: String = other.try_get("id")?;
            return Err(StoreError::Duplicate(format!("process {pid} is already bound to running task `{other}`")));
        }
        sqlx::query(
            "UPDATE tasks SET node_id = $1, pid = $2, start_ticks = $3, bound_at = $4 WHERE id = $5 AND node_id IS NULL",
        )
        .bind(node_id.to_owned())
        .bind(pid)
        .bind(start_ticks)
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        let task = task_in(&mut tx, id).await?;
        tx.commit(&task, rec).await?;
        Ok(task)
    }

    /// One task.
    pub async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.one_by(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"), id, task_from_row).await
    }

    /// Tasks, newest first: of one entry, or all; only those not ended when
    /// `running_only`.
    pub async fn tasks(&self, entry_id: Option<&str>, running_only: bool) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1 = '' OR entry_id = $1) AND ($2 = 0 OR ended_at IS NULL) \
             ORDER BY created_at DESC, id DESC LIMIT 10000"
        )))
        .bind(entry_id.unwrap_or_default().to_owned())
        .bind(i64::from(running_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The running task of `entry_id` bound, on node `node_id`, to one of
    /// `instances` (a process and its ancestors, as `(pid, start_ticks)`,
    /// nearest first): the nearest wins.
    pub async fn task_of_process(
        &self,
        entry_id: &str,
        node_id: &str,
        instances: &[(i64, i64)],
    ) -> Result<Option<Task>, StoreError> {
        if instances.is_empty() {
            return Ok(None);
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE entry_id = $1 AND node_id = $2 AND ended_at IS NULL \
             ORDER BY created_at DESC, id DESC"
        )))
        .bind(entry_id.to_owned())
        .bind(node_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        let tasks: Vec<Task> = rows.iter().map(task_from_row).collect::<Result<_, _>>()?;
        Ok(instances.iter().find_map(|(pid, start)| {
            tasks.iter().find(|t| t.process.as_ref().is_some_and(|p| p.pid == *pid && p.start_ticks == *start)).cloned()
        }))
    }

    /// Records approval of the scope item `audience` by `by`.
    pub async fn approve_task_scope(
        &self,
        id: &str,
        audience: &str,
        by: &str,
        now: i64,
        rec: Recorder<'_, Task>,
    ) -> Result<Task, StoreError> {
        let mut tx = self.begin_recorded().await?;
        let mut t = task_for_change(&mut tx, self.backend(), id).await?;
        refuse_ended(&t)?;
        let item = t
            .scope
            .iter_mut()
            .find(|i| i.audience == audience)
            .ok_or_else(|| StoreError::NotFound(format!("scope item `{audience}` of task `{id}`")))?;
        if !item.approval {
            return Err(StoreError::Duplicate(format!("scope item `{audience}` of task `{id}` needs no approval")));
        }
        item.approved_by = Some(by.to_owned());
        item.approved_at = Some(now);
        sqlx::query("UPDATE tasks SET scope = $1 WHERE id = $2")
            .bind(scope_json(&t.scope)?)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit(&t, rec).await?;
        Ok(t)
    }

    /// Gives a running task a new objective: approvals are withdrawn (they
    /// were given under the old one) and every live credential of the task
    /// is revoked, in one transaction. Returns the task and the revocation.
    pub async fn change_task_objective(
        &self,
        id: &str,
        objective: &str,
        now: i64,
        rec: Recorder<'_, (Task, RevokeOutcome)>,
    ) -> Result<(Task, RevokeOutcome), StoreError> {
        let mut tx = self.begin_recorded().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("LOCK TABLE revocations IN EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        let mut t = task_for_change(&mut tx, self.backend(), id).await?;
        refuse_ended(&t)?;
        for item in &mut t.scope {
            item.approved_by = None;
            item.approved_at = None;
        }
        t.objective = objective.to_owned();
        t.objective_sha256 = hallmark_core::objective_sha256(objective);
        t.objective_changed_at = Some(now);
        sqlx::query(
            "UPDATE tasks SET objective = $1, objective_sha256 = $2, scope = $3, objective_changed_at = $4 WHERE id = $5",
        )
        .bind(t.objective.clone())
        .bind(t.objective_sha256.clone())
        .bind(scope_json(&t.scope)?)
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        let mut out = RevokeOutcome::default();
        Self::revoke_credentials_where(&mut tx, CredentialSelector::Task, id, now, "task objective changed", &mut out)
            .await?;
        let done = (t, out);
        tx.commit(&done, rec).await?;
        Ok(done)
    }

    /// Counts one request outside a task's scope.
    pub async fn record_task_breach(&self, id: &str, rec: Recorder<'_, Task>) -> Result<Task, StoreError> {
        let mut tx = self.begin_recorded().await?;
        sqlx::query("UPDATE tasks SET breaches = breaches + 1 WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        let task = task_in(&mut tx, id).await?;
        tx.commit(&task, rec).await?;
        Ok(task)
    }

    /// Ids of tasks not ended whose lifetime ran out by `now`.
    pub async fn expired_tasks(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT id FROM tasks WHERE ended_at IS NULL AND expires_at <= $1 ORDER BY id LIMIT 1000")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
    }
}
