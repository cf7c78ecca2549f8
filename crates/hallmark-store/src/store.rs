//! The [`Store`] handle: opening the database, its errors, and the helpers
//! every table's module shares. Each table's reads and writes live beside
//! it: [`crate::entries`], [`crate::nodes`], [`crate::admin_tokens`],
//! [`crate::governance`], [`crate::inventory`], [`crate::audit`], ...

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool};

/// Errors from the datastore. Each is one line and names what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not `sqlite://...` or `postgres://...`.
    #[error("unsupported datastore URL `{0}`: use sqlite://PATH or postgres://...")]
    Url(String),
    /// The database failed.
    #[error("datastore: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema is not one this binary understands.
    #[error("{0}")]
    Schema(String),
    /// No such record.
    #[error("{0} not found")]
    NotFound(String),
    /// A record with the same identity already exists.
    #[error("{0}")]
    Duplicate(String),
    /// The record changed since the caller read it.
    #[error("entry `{id}` is at revision {actual}, not {expected}; re-read and retry")]
    Conflict {
        /// Entry id.
        id: String,
        /// The revision the caller expected.
        expected: u64,
        /// The revision stored.
        actual: u64,
    },
    /// Entries of another owner hold this SPIFFE ID: one ID belongs to one owner.
    #[error(
        "SPIFFE ID `{spiffe_id}` is held by entries of owner `{owner}`: one SPIFFE ID belongs to one owner (transfer those entries, or choose another ID)"
    )]
    HeldByOtherOwner {
        /// The ID.
        spiffe_id: String,
        /// The owner whose entries hold it.
        owner: String,
    },
    /// A registration entry for a person: class `human` or a SPIFFE ID under
    /// `/human/`. The store refuses it whoever asks, so the Workload API can
    /// never serve a person's identity.
    #[error("{0}")]
    PersonOnWorkloadPath(String),
    /// The database file could not be created or its mode set.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The audit chain's head could not be signed: nothing was appended.
    #[error("cannot sign the audit chain's head: {0}")]
    Signing(String),
    /// A stored row does not decode: the database was edited by hand or is damaged.
    #[error("corrupt row in `{table}`: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Which database engine is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Creates the SQLite file of `url` with mode 0600 before SQLite opens it
/// (its WAL and shared-memory files take the same mode), and takes group and
/// other access away from an existing one: the database holds the registry,
/// the inventory and token hashes.
fn private_sqlite_file(url: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Ok(()); // in memory
    }
    let io = |source| StoreError::File { path: path.to_owned(), source };
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map_err(io)?;
    // And its companions, which an older version may have left 0644.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{path}{suffix}");
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StoreError::File { path: file, source }),
        };
        if mode & 0o077 != 0 {
            tracing::warn!(
                file,
                mode = format!("{:o}", mode & 0o777),
                "database file was open to group or others; now 0600"
            );
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| StoreError::File { path: file.clone(), source })?;
        }
    }
    Ok(())
}

/// SHA-256 hex of a secret (join tokens, admin tokens): only the hash is stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The datastore handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// Serializes audit appends within this process. On SQLite, where this
    /// process is the only writer, it also holds the chain's head (seq, hash)
    /// once known, so an append need not read it back.
    pub(crate) audit_lock: std::sync::Arc<tokio::sync::Mutex<Option<(i64, String)>>>,
}

pub(crate) fn new_id() -> String {
    random_hex::<16>()
}

/// `N` random bytes as hex: the one source of Hallmark's random secrets and ids.
pub fn random_hex<const N: usize>() -> String {
    let mut b = [0u8; N];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    hex::encode(b)
}

/// A new secret (a join token, the body of an admin token): 256 random bits
/// as hex. Only its [`hash_secret`] is stored.
pub fn new_secret() -> String {
    random_hex::<32>()
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn duplicate_or(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::Duplicate(what()),
        _ => StoreError::Db(e),
    }
}

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// `rows` groups of `cols` placeholders for a multi-row `VALUES` list:
/// positional (`?`) on SQLite, whose lookup of numbered parameters is
/// quadratic in their count, numbered (`$1`) on PostgreSQL.
pub(crate) fn values_list(backend: Backend, cols: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(r * cols + c + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs migrations.
    ///
    /// `sqlite://PATH` opens or creates a file; `postgres://...` connects to a server.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        if backend == Backend::Sqlite {
            private_sqlite_file(url)?;
        }
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            Backend::Sqlite => {
                // A SQLite connection cannot go stale: no ping before each use
                // (it would be a round trip to the connection's thread).
                opts.max_connections(4)
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers proceed during writes; FULL makes each commit durable.
                            sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                            sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                            sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                            sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => opts.max_connections(16).connect(&url).await?,
        };
        crate::migrate::run(&pool, backend).await?;
        Ok(Self { pool, backend, audit_lock: Default::default() })
    }

    /// Which engine this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for checks that need raw SQL (tests, health).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock
    /// at once (`BEGIN IMMEDIATE`): a deferred transaction that read first
    /// could not upgrade after another write committed meanwhile (the WAL
    /// "busy snapshot" error) and would fail instead of waiting its turn.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

impl Store {
    /// The row `select` (a static query on `$1`) finds for `key`, as
    /// `decode` reads it; none is `None`.
    pub(crate) async fn one_by<T>(
        &self,
        select: impl Into<String>,
        key: &str,
        decode: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(select.into())).bind(key.to_owned()).fetch_optional(&self.pool).await?;
        row.as_ref().map(decode).transpose()
    }

    /// Every row `select` finds for any of `keys`, as `decode` reads them:
    /// `select` is a static query ending in `IN`, completed here with a list
    /// of up to 500 keys a query.
    pub(crate) async fn rows_in<T>(
        &self,
        select: &str,
        keys: &[String],
        decode: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let sql = format!("{select} {}", values_list(self.backend, chunk.len(), 1));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for key in chunk {
                q = q.bind(key.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(decode(&r)?);
            }
        }
        Ok(out)
    }

    /// Every row `select` (a static query without parameters) returns, as
    /// `decode` reads them.
    pub(crate) async fn all_rows<T>(
        &self,
        select: impl Into<String>,
        decode: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(select.into())).fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }
}

/// Inside a transaction, the one row `select` (a static query on `$1`)
/// finds for `value`, as `decode` reads it; none is `NotFound`, naming
/// `what`.
pub(crate) async fn row_in<T>(
    conn: &mut AnyConnection,
    select: String,
    value: &str,
    what: &str,
    decode: fn(&AnyRow) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(select))
        .bind(value.to_owned())
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("{what} `{value}`")))?;
    decode(&row)
}
