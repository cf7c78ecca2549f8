//! Versioned schema migrations, embedded in the binary and run at start.
//!
//! Each migration is applied once, inside a transaction, and recorded in
//! `schema_migrations`. A database newer than this binary is refused rather
//! than used with a schema it does not understand.

use sqlx::{AnyPool, Row};

use crate::{Backend, StoreError};

/// (version, SQL). Append only: never edit a migration that has shipped.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_identity.sql")),
    (2, include_str!("../migrations/0002_policy.sql")),
    (3, include_str!("../migrations/0003_owners.sql")),
    (4, include_str!("../migrations/0004_audit.sql")),
    (5, include_str!("../migrations/0005_inventory.sql")),
    (6, include_str!("../migrations/0006_revocation.sql")),
    (7, include_str!("../migrations/0007_hardening.sql")),
    (8, include_str!("../migrations/0008_delivery.sql")),
    (9, include_str!("../migrations/0009_credential_audience.sql")),
    (10, include_str!("../migrations/0010_evidence.sql")),
    (11, include_str!("../migrations/0011_bind_process.sql")),
    (12, include_str!("../migrations/0012_node_provenance.sql")),
    (13, include_str!("../migrations/0013_tasks.sql")),
    (14, include_str!("../migrations/0014_people.sql")),
    (15, include_str!("../migrations/0015_people_limits.sql")),
];

fn render(sql: &str, backend: Backend) -> String {
    let auto_pk = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    // SQLite keys a table by its rowid; `INTEGER PRIMARY KEY` makes the column
    // that rowid instead of a second index beside it.
    let seq_pk = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY",
        Backend::Postgres => "BIGINT PRIMARY KEY",
    };
    sql.replace("{{AUTO_PK}}", auto_pk).replace("{{SEQ_PK}}", seq_pk)
}

/// Applies every migration this database has not seen yet.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let mut tx = match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    };
    if backend == Backend::Postgres {
        // Several servers may start at once against one fresh database: one
        // migrates while the others wait, then find nothing left to do.
        sqlx::query("SELECT pg_advisory_xact_lock(7316151)").execute(&mut *tx).await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: std::collections::HashSet<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("version"))
        .collect::<Result<_, _>>()?;
    let current = applied.iter().copied().max().unwrap_or(0);
    let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Schema(format!(
            "database schema version {current} is newer than this binary understands ({latest}); upgrade hallmark"
        )));
    }
    // Every version not yet recorded, not only those above the highest: two
    // changes developed side by side may land in either order.
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        // Comment lines go first: a `;` inside a comment must not split a statement.
        let sql: String =
            render(sql, backend).lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
        for stmt in sql.split(';') {
            if stmt.trim().is_empty() {
                continue;
            }
            sqlx::query(sqlx::AssertSqlSafe(stmt.to_owned())).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(hallmark_core::now_unix())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
