//! Appending: the head a batch extends found and checked, the batch linked
//! after it and its new head signed, and all of it written in one
//! transaction (one round trip on SQLite, one static statement per table on
//! PostgreSQL). The appender's batches and recorded changes
//! ([`crate::Recorder`], through [`extend_in`]) both extend the chain here.

use sqlx::Row;

use super::chain::{AuditEvent, GENESIS, Linked, link};
use super::checkpoint::{Checkpoint, HEAD_UNVERIFIED, HeadSigner, latest_checkpoint, sign_head, unvouched_head};
use crate::carried::{Credential, Denial, EvidenceSet};
use crate::store::{AnyQuery, Backend, Store, StoreError, values_list};

/// The head a batch extends: its position and hash, and what was found
/// wrong with it (a notice recorded before the batch), if anything.
struct Head {
    seq: i64,
    hash: String,
    notice: Option<(&'static str, String)>,
}

/// SQLite: the head this process remembers from its last write (it is the
/// only writer), or else the head read from the database and checked
/// against the latest checkpoint. A rewrite between writes breaks the link
/// to the remembered head instead.
async fn sqlite_head(
    conn: &mut sqlx::AnyConnection,
    known: Option<(i64, String)>,
    signer: Option<&dyn HeadSigner>,
) -> Result<Head, StoreError> {
    if let Some((seq, hash)) = known {
        return Ok(Head { seq, hash, notice: None });
    }
    let (seq, hash) = last_record(&mut *conn).await?;
    let notice = match signer {
        Some(s) => unvouched_head(seq, &hash, latest_checkpoint(&mut *conn).await?, s),
        None => None,
    };
    Ok(Head { seq, hash, notice })
}

/// PostgreSQL: several servers may append, so the chain is locked for the
/// rest of the transaction `conn` is in, and each batch checks the head it
/// extends.
async fn postgres_head(conn: &mut sqlx::AnyConnection, signer: Option<&dyn HeadSigner>) -> Result<Head, StoreError> {
    sqlx::query("LOCK TABLE audit IN EXCLUSIVE MODE").execute(&mut *conn).await?;
    let (seq, hash) = last_record(&mut *conn).await?;
    let notice = match signer {
        Some(s) => unvouched_head(seq, &hash, latest_checkpoint(&mut *conn).await?, s),
        None => None,
    };
    Ok(Head { seq, hash, notice })
}

/// A batch linked after its head and its new head signed: what one
/// transaction writes to the chain.
struct Batch<'a> {
    rows: Vec<Linked<'a>>,
    checkpoint: Option<Checkpoint>,
    /// Records put before the callers' (the head notice): 0 or 1.
    skip: usize,
}

impl<'a> Batch<'a> {
    /// `events` after `head` (and after the notice about it, kept in `buf`).
    fn new(
        events: &'a [AuditEvent],
        head: Head,
        signer: Option<&dyn HeadSigner>,
        buf: &'a mut Vec<AuditEvent>,
    ) -> Result<Self, StoreError> {
        let (events, skip) = with_head_notice(events, head.notice, buf);
        let rows = link(events, head.seq, head.hash);
        let checkpoint = match signer {
            Some(s) => sign_head(&rows, s)?,
            None => None,
        };
        Ok(Self { rows, checkpoint, skip })
    }

    /// The callers' records' positions, not the notice before them.
    fn seqs(&self) -> Vec<i64> {
        self.rows.iter().skip(self.skip).map(|r| r.seq).collect()
    }

    /// The chain's head once the batch is written.
    fn head(&self) -> Option<(i64, String)> {
        self.rows.last().map(|r| (r.seq, r.hash.clone()))
    }

    fn credentials(&self) -> impl Iterator<Item = (i64, &'a Credential)> + '_ {
        self.rows.iter().filter_map(|r| r.event.credential.as_ref().map(|c| (r.seq, c)))
    }

    fn denials(&self) -> impl Iterator<Item = (i64, &'a Denial)> + '_ {
        self.rows.iter().filter_map(|r| r.event.denial.as_ref().map(|d| (r.event.at, d)))
    }

    /// The evidence sets the batch's records name, each once (the table
    /// keeps the first of each digest: `ON CONFLICT DO NOTHING`).
    fn evidence_sets(&self) -> Vec<&'a EvidenceSet> {
        let mut seen = std::collections::HashSet::new();
        self.rows.iter().filter_map(|r| r.event.evidence.as_ref()).filter(|e| seen.insert(e.digest.as_str())).collect()
    }

    /// SQLite: the whole batch as one multi-statement query with positional
    /// parameters, so it costs one round trip to the database thread;
    /// `BEGIN IMMEDIATE ... COMMIT` around it when `own_transaction`.
    fn sqlite_query(&self, own_transaction: bool) -> AnyQuery<'static> {
        let creds: Vec<(i64, &Credential)> = self.credentials().collect();
        let denials: Vec<(i64, &Denial)> = self.denials().collect();
        let evidence = self.evidence_sets();
        // SQLite binds at most 32 766 parameters per statement: 1 024 rows of 15.
        let mut sql = String::from(if own_transaction { "BEGIN IMMEDIATE; " } else { "" });
        for (prefix, cols, rows, suffix) in [
            (AUDIT_INSERT, 10, self.rows.len(), ""),
            (CREDENTIALS_INSERT, 17, creds.len(), ""),
            (DENIALS_INSERT, 10, denials.len(), ""),
            (EVIDENCE_INSERT, 5, evidence.len(), EVIDENCE_ONCE),
            (CHECKPOINT_INSERT, 5, usize::from(self.checkpoint.is_some()), ""),
        ] {
            let mut left = rows;
            while left > 0 {
                let n = left.min(ROWS_PER_STATEMENT);
                sql.push_str(&format!("{prefix}{}{suffix}; ", values_list(Backend::Sqlite, cols, n)));
                left -= n;
            }
        }
        if own_transaction {
            sql.push_str("COMMIT;");
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in &self.rows {
            let e = r.event;
            q = q
                .bind(r.seq)
                .bind(e.at)
                .bind(e.actor.clone())
                .bind(e.action.clone())
                .bind(e.subject.clone())
                .bind(e.outcome.clone())
                .bind(e.policy_version)
                .bind(r.details.clone())
                .bind(r.prev_hash.clone())
                .bind(r.hash.clone());
        }
        for (seq, c) in creds {
            q = q
                .bind(c.id.clone())
                .bind(c.kind.as_str())
                .bind(c.entry_id.clone())
                .bind(c.spiffe_id.clone())
                .bind(c.node_id.clone())
                .bind(c.class.clone())
                .bind(c.owner.clone())
                .bind(c.policy_version)
                .bind(c.evidence_digest.clone())
                .bind(c.issued_at)
                .bind(c.not_before)
                .bind(c.not_after)
                .bind(seq)
                .bind(c.authority_id.clone())
                .bind(c.audience.clone())
                .bind(c.task_id.clone())
                .bind(c.person_id.clone());
        }
        for (at, d) in denials {
            q = q
                .bind(at)
                .bind(d.entry_id.clone())
                .bind(d.spiffe_id.clone())
                .bind(d.action.clone())
                .bind(d.audience.clone())
                .bind(d.node_id.clone())
                .bind(d.evidence_digest.clone())
                .bind(d.policy_version)
                .bind(d.policy_ids.join(","))
                .bind(d.reason.clone());
        }
        for e in evidence {
            let [pid, start_ticks, started_at] = process_columns(e);
            q = q.bind(e.digest.clone()).bind(e.selectors_text()).bind(pid).bind(start_ticks).bind(started_at);
        }
        if let Some(c) = &self.checkpoint {
            q = q.bind(c.seq).bind(c.hash.clone()).bind(c.at).bind(c.key_id.clone()).bind(c.signature.clone());
        }
        q
    }

    /// PostgreSQL: the batch's rows as JSON arrays, which one static
    /// INSERT ... SELECT per table turns into rows: the statement text never
    /// changes with the batch size (it stays prepared), and a batch is one
    /// bound value per table however large it is.
    async fn write_postgres(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        if let Some(c) = &self.checkpoint {
            sqlx::query("INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature) VALUES ($1, $2, $3, $4, $5)")
                .bind(c.seq)
                .bind(c.hash.clone())
                .bind(c.at)
                .bind(c.key_id.clone())
                .bind(c.signature.clone())
                .execute(&mut *conn)
                .await?;
        }
        let audit: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let e = r.event;
                serde_json::json!([
                    r.seq,
                    e.at,
                    e.actor,
                    e.action,
                    e.subject,
                    e.outcome,
                    e.policy_version,
                    r.details,
                    r.prev_hash,
                    r.hash
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO audit (seq, at, actor, action, subject, outcome, policy_version, details, prev_hash, hash) \
             SELECT (v->>0)::bigint, (v->>1)::bigint, v->>2, v->>3, v->>4, v->>5, (v->>6)::bigint, v->>7, v->>8, v->>9 \
             FROM json_array_elements($1::json) AS v",
        )
        .bind(serde_json::Value::Array(audit).to_string())
        .execute(&mut *conn)
        .await?;
        let creds: Vec<serde_json::Value> = self
            .credentials()
            .map(|(seq, c)| {
                serde_json::json!([
                    c.id,
                    c.kind,
                    c.entry_id,
                    c.spiffe_id,
                    c.node_id,
                    c.class,
                    c.owner,
                    c.policy_version,
                    c.evidence_digest,
                    c.issued_at,
                    c.not_before,
                    c.not_after,
                    seq,
                    c.authority_id,
                    c.audience,
                    c.task_id,
                    c.person_id
                ])
            })
            .collect();
        if !creds.is_empty() {
            sqlx::query(
                "INSERT INTO credentials (id, kind, entry_id, spiffe_id, node_id, class, owner, policy_version, \
                 evidence_digest, issued_at, not_before, not_after, audit_seq, authority_id, audience, task_id, person_id) \
                 SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, (v->>7)::bigint, v->>8, (v->>9)::bigint, \
                 (v->>10)::bigint, (v->>11)::bigint, (v->>12)::bigint, v->>13, v->>14, v->>15, v->>16 \
                 FROM json_array_elements($1::json) AS v",
            )
            .bind(serde_json::Value::Array(creds).to_string())
            .execute(&mut *conn)
            .await?;
        }
        let denials: Vec<serde_json::Value> = self
            .denials()
            .map(|(at, d)| {
                serde_json::json!([
                    at,
                    d.entry_id,
                    d.spiffe_id,
                    d.action,
                    d.audience,
                    d.node_id,
                    d.evidence_digest,
                    d.policy_version,
                    d.policy_ids.join(","),
                    d.reason
                ])
            })
            .collect();
        if !denials.is_empty() {
            sqlx::query(
                "INSERT INTO denials (at, entry_id, spiffe_id, action, audience, node_id, evidence_digest, \
                 policy_version, policy_ids, reason) \
                 SELECT (v->>0)::bigint, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, (v->>7)::bigint, v->>8, v->>9 \
                 FROM json_array_elements($1::json) AS v",
            )
            .bind(serde_json::Value::Array(denials).to_string())
            .execute(&mut *conn)
            .await?;
        }
        let evidence: Vec<serde_json::Value> = self
            .evidence_sets()
            .into_iter()
            .map(|e| {
                let [pid, start_ticks, started_at] = process_columns(e);
                serde_json::json!([e.digest, e.selectors_text(), pid, start_ticks, started_at])
            })
            .collect();
        if !evidence.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{EVIDENCE_INSERT_SELECT} FROM json_array_elements($1::json) AS v{EVIDENCE_ONCE}"
            )))
            .bind(serde_json::Value::Array(evidence).to_string())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

type PoolConn = sqlx::pool::PoolConnection<sqlx::Any>;

/// SQLite: the whole batch in one round trip to the database thread: one
/// multi-statement query (`BEGIN IMMEDIATE; INSERT ...; INSERT ...; COMMIT`).
/// This process is the only writer, so the chain's head is remembered
/// between batches (read once).
async fn append_sqlite(
    conn: &mut PoolConn,
    head: &mut Option<(i64, String)>,
    events: &[AuditEvent],
    signer: Option<&dyn HeadSigner>,
) -> Result<Vec<i64>, StoreError> {
    let found = sqlite_head(conn, head.take(), signer).await?;
    let mut buf = Vec::new();
    let batch = Batch::new(events, found, signer, &mut buf)?;
    if let Err(e) = batch.sqlite_query(true).execute(&mut **conn).await {
        // Undo a half-done batch; the caller drops the connection either way.
        let _ = sqlx::query("ROLLBACK").execute(&mut **conn).await;
        return Err(e.into());
    }
    *head = batch.head();
    Ok(batch.seqs())
}

const ROWS_PER_STATEMENT: usize = 1024;

const CHECKPOINT_INSERT: &str = "INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature) VALUES ";

const AUDIT_INSERT: &str =
    "INSERT INTO audit (seq, at, actor, action, subject, outcome, policy_version, details, prev_hash, hash) VALUES ";
const CREDENTIALS_INSERT: &str = "INSERT INTO credentials (id, kind, entry_id, spiffe_id, node_id, class, owner, \
     policy_version, evidence_digest, issued_at, not_before, not_after, audit_seq, authority_id, audience, task_id, person_id) VALUES ";
/// Each distinct evidence set is stored once: the first record naming it
/// writes it, and the same digest is the same content.
const EVIDENCE_INSERT: &str = "INSERT INTO evidence (digest, selectors, pid, start_ticks, started_at) VALUES ";
const EVIDENCE_INSERT_SELECT: &str = "INSERT INTO evidence (digest, selectors, pid, start_ticks, started_at) \
     SELECT v->>0, v->>1, (v->>2)::bigint, (v->>3)::bigint, (v->>4)::bigint";
const EVIDENCE_ONCE: &str = " ON CONFLICT (digest) DO NOTHING";

/// The `pid`, `start_ticks` and `started_at` columns of a set: all NULL
/// when its process is not known.
fn process_columns(e: &EvidenceSet) -> [Option<i64>; 3] {
    match &e.process {
        None => [None; 3],
        Some(p) => [
            Some(i64::from(p.pid())),
            // Never beyond i64: `ProcessInstance::new` refuses it.
            Some(i64::try_from(p.start_ticks()).unwrap_or(i64::MAX)),
            Some(p.started_at()),
        ],
    }
}

const DENIALS_INSERT: &str = "INSERT INTO denials (at, entry_id, spiffe_id, action, audience, node_id, \
     evidence_digest, policy_version, policy_ids, reason) VALUES ";

/// PostgreSQL: the head is read under a table lock inside the transaction.
async fn append_postgres(
    conn: &mut PoolConn,
    events: &[AuditEvent],
    signer: Option<&dyn HeadSigner>,
) -> Result<Vec<i64>, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    let found = postgres_head(&mut tx, signer).await?;
    let mut buf = Vec::new();
    let batch = Batch::new(events, found, signer, &mut buf)?;
    batch.write_postgres(&mut tx).await?;
    tx.commit().await?;
    Ok(batch.seqs())
}

/// Extends the chain by `events` inside the open write transaction `conn`
/// (on SQLite, begun while holding the audit lock, whose remembered head is
/// `known`): the head is found and checked exactly as a batch of the
/// appender finds it, the records linked and the new head signed. Returns
/// the new head; the caller commits.
pub(crate) async fn extend_in(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    known: Option<(i64, String)>,
    events: &[AuditEvent],
    signer: Option<&dyn HeadSigner>,
) -> Result<Option<(i64, String)>, StoreError> {
    let found = match backend {
        Backend::Sqlite => sqlite_head(conn, known, signer).await?,
        Backend::Postgres => postgres_head(conn, signer).await?,
    };
    let mut buf = Vec::new();
    let batch = Batch::new(events, found, signer, &mut buf)?;
    match backend {
        Backend::Sqlite => {
            batch.sqlite_query(false).execute(&mut *conn).await?;
        }
        Backend::Postgres => batch.write_postgres(conn).await?,
    }
    Ok(batch.head())
}

/// The chain's last (seq, hash), or the genesis position.
async fn last_record<'c, E>(conn: E) -> Result<(i64, String), StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let last = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(conn).await?;
    Ok(match last {
        Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?),
        None => (0, GENESIS.to_owned()),
    })
}

/// `events`, after a record of what was found at the head when there is
/// one; and how many records were put before the callers' (0 or 1).
fn with_head_notice<'a>(
    events: &'a [AuditEvent],
    notice: Option<(&'static str, String)>,
    buf: &'a mut Vec<AuditEvent>,
) -> (&'a [AuditEvent], usize) {
    let Some((action, reason)) = notice else { return (events, 0) };
    tracing::error!(reason = %reason, "{action}");
    let outcome = if action == HEAD_UNVERIFIED { "broken" } else { "ok" };
    buf.push(AuditEvent {
        at: hallmark_core::now_unix(),
        actor: "hallmark".into(),
        action: action.into(),
        subject: "audit".into(),
        outcome: outcome.into(),
        policy_version: 0,
        details: serde_json::json!({ "reason": reason }),
        credential: None,
        denial: None,
        evidence: None,
    });
    buf.extend(events.iter().cloned());
    (&buf[..], 1)
}

impl Store {
    /// Appends events to the chain in one transaction, with no signed
    /// checkpoint (tests and benchmarks); returns their positions.
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<Vec<i64>, StoreError> {
        self.append(events, None).await
    }

    /// Appends events to the chain in one transaction with a checkpoint of
    /// the new head signed by `signer`; returns their positions.
    pub async fn append_audit_signed(
        &self,
        events: &[AuditEvent],
        signer: &dyn HeadSigner,
    ) -> Result<Vec<i64>, StoreError> {
        self.append(events, Some(signer)).await
    }

    async fn append(&self, events: &[AuditEvent], signer: Option<&dyn HeadSigner>) -> Result<Vec<i64>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut head = self.audit_lock.lock().await;
        let mut conn = self.pool.acquire().await?;
        let result = match self.backend() {
            Backend::Sqlite => append_sqlite(&mut conn, &mut head, events, signer).await,
            Backend::Postgres => append_postgres(&mut conn, events, signer).await,
        };
        if result.is_err() {
            // Whatever state the failed batch left, neither the connection
            // nor the remembered head is trusted again.
            *head = None;
            conn.close_on_drop();
        }
        result
    }
}
