//! The audit chain: append-only records, each carrying the hash of the one
//! before, so editing or deleting any record is detected by [`Store::verify_audit`].
//!
//! Appends are serialized (a process lock, and on PostgreSQL a table lock so
//! several servers sharing the database extend one chain) and batched: a
//! whole batch is one transaction, so recording does not cap issuance.
//!
//! The hashes alone do not stop someone who can write the database: they can
//! edit a record and compute every later hash again. So each batch also
//! writes a [`Checkpoint`]: the new head's position and hash, signed by a
//! [`HeadSigner`] (the server's audit key, which is never stored here), in
//! the same transaction. A chain rewritten without the key no longer matches
//! its signed head.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::{AnyQuery, values_list};
use crate::{Backend, Credential, Denial, Store, StoreError};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as given by the caller. Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Who: an admin identity, or `node:<agent id>` (with the evidence digest in details).
    pub actor: String,
    /// What: `issue_x509`, `renew`, `issue_jwt`, `deny`, `attest_node`, `entry_create`, ...
    pub action: String,
    /// On what: an entry id, SPIFFE ID, owner, policy version, exception id.
    pub subject: String,
    /// `ok`, `denied`, `refused`.
    pub outcome: String,
    /// Policy version in force.
    pub policy_version: i64,
    /// Further facts as JSON (serial, jti, evidence digest, policy ids...).
    pub details: serde_json::Value,
    /// The credential this event issued, recorded in the inventory in the
    /// same transaction as the audit record.
    #[serde(skip)]
    pub credential: Option<Credential>,
    /// The denial this event records, stored with the denial reports read
    /// in the same transaction as the audit record.
    #[serde(skip)]
    pub denial: Option<Denial>,
}

/// Signs the chain's head as each batch is appended, and checks the head a
/// batch extends.
pub trait HeadSigner: Send + Sync {
    /// The id of the key that signs (published with its public half).
    fn key_id(&self) -> String;
    /// A signature over `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
    /// Whether `c`'s signature verifies with a key the signer knows; `None`
    /// when it does not know `c.key_id` (another server's key).
    fn verifies(&self, c: &Checkpoint) -> Option<bool>;
    /// True while an audit key made at this start may adopt a chain written
    /// before checkpoints existed (the upgrade), rather than report its
    /// unsigned head as tampering.
    fn adopting(&self) -> bool;
}

/// The action of the record a signer writes when the head it is about to
/// extend is not one a valid checkpoint signs: the chain was changed without
/// the audit key. `audit verify` fails on it.
pub const HEAD_UNVERIFIED: &str = "audit_head_unverified";

/// Why the head (`seq`, `hash`) is not vouched for by `latest`, if it is not.
fn unvouched_head(
    seq: i64,
    hash: &str,
    latest: Option<Checkpoint>,
    signer: &dyn HeadSigner,
) -> Option<(&'static str, String)> {
    match latest {
        None if seq == 0 => None,
        None if signer.adopting() => {
            Some(("audit_chain_adopted", format!("a new audit key signs this chain of {seq} records from here on")))
        }
        None => Some((HEAD_UNVERIFIED, format!("the chain's head (record {seq}) has no signed checkpoint"))),
        Some(c) if c.seq != seq || c.hash != hash => Some((
            HEAD_UNVERIFIED,
            format!("the chain's head (record {seq}) is not the one the latest checkpoint signs (record {})", c.seq),
        )),
        Some(c) => match signer.verifies(&c) {
            Some(false) => {
                Some((HEAD_UNVERIFIED, format!("the checkpoint of record {} does not verify (forged)", c.seq)))
            }
            // Signed by another server's key: `audit verify` judges it with
            // the keys it is given.
            Some(true) | None => None,
        },
    }
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
    });
    buf.extend(events.iter().cloned());
    (&buf[..], 1)
}

async fn latest_checkpoint<'c, E>(conn: E) -> Result<Option<Checkpoint>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT seq, hash, at, key_id, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    row.map(|r| checkpoint_from_row(&r)).transpose()
}

fn checkpoint_from_row(r: &AnyRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: r.try_get("seq")?,
        hash: r.try_get("hash")?,
        at: r.try_get("at")?,
        key_id: r.try_get("key_id")?,
        signature: r.try_get("signature")?,
    })
}

/// A signed statement that record `seq` of the chain has hash `hash`: a
/// head of the chain at time `at`, signed with audit key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Position of the head it signs.
    pub seq: i64,
    /// That record's hash.
    pub hash: String,
    /// Unix seconds.
    pub at: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes signed: a fixed text naming the position, hash and time.
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(self.seq, &self.hash, self.at)
    }
}

fn checkpoint_message(seq: i64, hash: &str, at: i64) -> Vec<u8> {
    format!("hallmark-audit-checkpoint-v1 seq={seq} hash={hash} at={at}").into_bytes()
}

/// The checkpoint of the last of `rows`, signed.
fn sign_head(rows: &[Linked<'_>], signer: &dyn HeadSigner) -> Result<Option<Checkpoint>, StoreError> {
    let Some(last) = rows.last() else { return Ok(None) };
    let at = hallmark_core::now_unix();
    let signature = signer.sign(&checkpoint_message(last.seq, &last.hash, at)).map_err(StoreError::Signing)?;
    Ok(Some(Checkpoint {
        seq: last.seq,
        hash: last.hash.clone(),
        at,
        key_id: signer.key_id(),
        signature: hex::encode(signature),
    }))
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this record's canonical form.
    pub hash: String,
}

/// The first break found by verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditBreak {
    /// The first record that does not verify (or the first missing position).
    pub seq: i64,
    /// What is wrong with it.
    pub problem: String,
}

/// Result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Records checked.
    pub records: i64,
    /// `None` when the whole chain verifies.
    pub broken: Option<AuditBreak>,
}

/// The hash of a record: SHA-256 over the previous hash and a canonical,
/// length-prefixed encoding of every field.
pub fn record_hash(seq: i64, e: &AuditEvent, prev_hash: &str) -> String {
    hash_parts(seq, e, &e.details.to_string(), prev_hash)
}

/// Links `events` after (`seq`, `prev`).
fn link<'a>(events: &'a [AuditEvent], mut seq: i64, mut prev: String) -> Vec<Linked<'a>> {
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let details = e.details.to_string();
        let hash = hash_parts(seq, e, &details, &prev);
        rows.push(Linked { seq, event: e, details, prev_hash: std::mem::replace(&mut prev, hash.clone()), hash });
    }
    rows
}

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

    /// SQLite: the whole batch as one multi-statement query with positional
    /// parameters, so it costs one round trip to the database thread;
    /// `BEGIN IMMEDIATE ... COMMIT` around it when `own_transaction`.
    fn sqlite_query(&self, own_transaction: bool) -> AnyQuery<'static> {
        let creds: Vec<(i64, &Credential)> = self.credentials().collect();
        let denials: Vec<(i64, &Denial)> = self.denials().collect();
        // SQLite binds at most 32 766 parameters per statement: 1 024 rows of 15.
        let mut sql = String::from(if own_transaction { "BEGIN IMMEDIATE; " } else { "" });
        for (prefix, cols, rows) in [
            (AUDIT_INSERT, 10, self.rows.len()),
            (CREDENTIALS_INSERT, 15, creds.len()),
            (DENIALS_INSERT, 10, denials.len()),
            (CHECKPOINT_INSERT, 5, usize::from(self.checkpoint.is_some())),
        ] {
            let mut left = rows;
            while left > 0 {
                let n = left.min(ROWS_PER_STATEMENT);
                sql.push_str(&format!("{prefix}{}; ", values_list(Backend::Sqlite, cols, n)));
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
                .bind(c.kind.clone())
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
                .bind(c.audience.clone());
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
                    c.audience
                ])
            })
            .collect();
        if !creds.is_empty() {
            sqlx::query(
                "INSERT INTO credentials (id, kind, entry_id, spiffe_id, node_id, class, owner, policy_version, \
                 evidence_digest, issued_at, not_before, not_after, audit_seq, authority_id, audience) \
                 SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, (v->>7)::bigint, v->>8, (v->>9)::bigint, \
                 (v->>10)::bigint, (v->>11)::bigint, (v->>12)::bigint, v->>13, v->>14 \
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
     policy_version, evidence_digest, issued_at, not_before, not_after, audit_seq, authority_id, audience) VALUES ";
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

/// A record placed in the chain, ready to write.
struct Linked<'a> {
    seq: i64,
    event: &'a AuditEvent,
    details: String,
    prev_hash: String,
    hash: String,
}

fn hash_parts(seq: i64, e: &AuditEvent, details: &str, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        &seq.to_string(),
        &e.at.to_string(),
        &e.actor,
        &e.action,
        &e.subject,
        &e.outcome,
        &e.policy_version.to_string(),
        details,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

fn record_from_row(r: &AnyRow) -> Result<AuditRecord, StoreError> {
    let details: String = r.try_get("details")?;
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        event: AuditEvent {
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            subject: r.try_get("subject")?,
            outcome: r.try_get("outcome")?,
            policy_version: r.try_get("policy_version")?,
            // An unparsable details column is kept as a string so the hash check reports it.
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
            credential: None,
            denial: None,
        },
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

const COLUMNS: &str = "seq, at, actor, action, subject, outcome, policy_version, details, prev_hash, hash";

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

    /// Records after position `after_seq` whose time is between two instants
    /// (inclusive), in chain order, at most `limit`.
    pub async fn audit_records(
        &self,
        after_seq: i64,
        since: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > $1 AND at >= $2 AND at <= $3 ORDER BY seq LIMIT $4"
        )))
        .bind(after_seq)
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// The newest signed checkpoint, if any.
    pub async fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        latest_checkpoint(&self.pool).await
    }

    /// The newest signed checkpoint at or before record `seq`: the one that
    /// covers a chain read up to `seq` while others may be appending.
    pub async fn audit_checkpoint_upto(&self, seq: i64) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash, at, key_id, signature FROM audit_checkpoints WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| checkpoint_from_row(&r)).transpose()
    }

    /// The first record that says the head a server extended was not signed
    /// ([`HEAD_UNVERIFIED`]): (position, reason).
    pub async fn first_head_notice(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, details FROM audit WHERE action = $1 ORDER BY seq LIMIT 1")
            .bind(HEAD_UNVERIFIED)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let details: String = r.try_get("details")?;
            let reason = serde_json::from_str::<serde_json::Value>(&details)
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
                .unwrap_or(details);
            Ok((r.try_get("seq")?, reason))
        })
        .transpose()
    }

    /// The hash of record `seq`, if the chain has it.
    pub async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT hash FROM audit WHERE seq = $1").bind(seq).fetch_optional(&self.pool).await?;
        row.map(|r| r.try_get("hash").map_err(StoreError::from)).transpose()
    }

    /// The first stored checkpoint the chain no longer agrees with: its
    /// record is gone, or has another hash. Cheap (no signature is checked):
    /// a rewrite or truncation shows at every checkpoint after it.
    pub async fn first_disagreeing_checkpoint(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT c.seq AS seq, a.hash AS chain_hash FROM audit_checkpoints c LEFT JOIN audit a ON a.seq = c.seq \
             WHERE a.hash IS NULL OR a.hash <> c.hash ORDER BY c.seq LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let seq: i64 = r.try_get("seq")?;
            let problem = match r.try_get::<Option<String>, _>("chain_hash")? {
                None => format!("record {seq}, which a signed checkpoint covers, is missing (deleted)"),
                Some(_) => format!("record {seq} does not match its signed checkpoint (the chain was rewritten)"),
            };
            Ok((seq, problem))
        })
        .transpose()
    }

    /// Checks the whole chain, page by page, and names the first broken record:
    /// a missing position (deleted record), a hash that does not match the
    /// record (edited record), or a `prev_hash` that does not match its
    /// predecessor.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_owned();
        let mut count = 0;
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM audit WHERE seq >= $1 ORDER BY seq LIMIT 10000"
            )))
            .bind(expected_seq)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                // The hash is over the stored text of the details, exactly as
                // written: even an edit that keeps the JSON's meaning shows.
                let details: String = row.try_get("details")?;
                let seq: i64 = row.try_get("seq")?;
                let event = AuditEvent {
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    subject: row.try_get("subject")?,
                    outcome: row.try_get("outcome")?,
                    policy_version: row.try_get("policy_version")?,
                    details: serde_json::Value::Null,
                    credential: None,
                    denial: None,
                };
                let (prev_hash, hash): (String, String) = (row.try_get("prev_hash")?, row.try_get("hash")?);
                let broken = |problem: String| {
                    Ok(AuditVerification { records: count, broken: Some(AuditBreak { seq: expected_seq, problem }) })
                };
                if seq != expected_seq {
                    return broken(format!("record {expected_seq} is missing (next present is {seq})"));
                }
                if prev_hash != prev {
                    return broken("its prev_hash does not match the previous record's hash".into());
                }
                if hash_parts(seq, &event, &details, &prev_hash) != hash {
                    return broken("its content does not match its hash (edited)".into());
                }
                prev = hash;
                expected_seq += 1;
                count += 1;
            }
        }
        // The chain alone cannot show that its newest records were deleted;
        // the inventory names the record of every credential it holds.
        let orphan = sqlx::query(
            "SELECT c.id, c.audit_seq FROM credentials c LEFT JOIN audit a ON a.seq = c.audit_seq \
             WHERE a.seq IS NULL ORDER BY c.audit_seq LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = orphan {
            let (id, seq): (String, i64) = (r.try_get("id")?, r.try_get("audit_seq")?);
            return Ok(AuditVerification {
                records: count,
                broken: Some(AuditBreak {
                    seq,
                    problem: format!(
                        "record {seq}, which recorded credential `{id}`, is missing (deleted from the end)"
                    ),
                }),
            });
        }
        Ok(AuditVerification { records: count, broken: None })
    }
}
