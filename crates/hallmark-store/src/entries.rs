//! Registration entries and the change log agents follow.

use std::str::FromStr;

use hallmark_core::{Bind, Class, Entry, SelectorSet, SpiffeId, Ttl, ValidEntrySpec, now_unix};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::store::{AnyQuery, duplicate_or, new_id, row_in, to_i64, values_list};
use crate::{Backend, Recorder, Store, StoreError};

/// One change in the entry log: entry `entry_id` changed for agent `parent_id`.
/// Readers load the entry's current state to learn what it now is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryChange {
    /// Position in the log; strictly increasing in commit order.
    pub seq: i64,
    /// The entry.
    pub entry_id: String,
    /// The agent it changed for.
    pub parent_id: String,
}

const ENTRY_COLUMNS: &str = "id, spiffe_id, parent_id, selectors, owner, class, x509_ttl, jwt_ttl, dns_names, hint, recovery, revision, created_at, updated_at, revoked_at, bound_to AS bind";

fn canonical_selectors(s: &SelectorSet) -> String {
    s.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table: "entries", detail: detail.to_string() }
}

/// An entry's columns as stored, in `ENTRY_COLUMNS` order.
struct EntryColumns(
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    String,
);

fn entry_from_row(r: &AnyRow) -> Result<Entry, StoreError> {
    entry_from_columns(EntryColumns(
        r.try_get("id")?,
        r.try_get("spiffe_id")?,
        r.try_get("parent_id")?,
        r.try_get("selectors")?,
        r.try_get("owner")?,
        r.try_get("class")?,
        r.try_get("x509_ttl")?,
        r.try_get("jwt_ttl")?,
        r.try_get("dns_names")?,
        r.try_get("hint")?,
        r.try_get("recovery")?,
        r.try_get("revision")?,
        r.try_get("created_at")?,
        r.try_get("updated_at")?,
        r.try_get("revoked_at")?,
        r.try_get("bind")?,
    ))
}

/// Checks every column as a stored value may have been edited by hand: a
/// bad one is a `Corrupt` error naming the entry, never a panic.
fn entry_from_columns(c: EntryColumns) -> Result<Entry, StoreError> {
    let EntryColumns(
        id,
        spiffe_id,
        parent_id,
        selectors,
        owner,
        class,
        x509_ttl,
        jwt_ttl,
        dns_names,
        hint,
        recovery,
        revision,
        created_at,
        updated_at,
        revoked_at,
        bind,
    ) = c;
    let ctx = |what: &str, e: &dyn std::fmt::Display| corrupt(format!("entry `{id}` {what}: {e}"));
    let selectors =
        selectors.lines().map(|s| s.parse().map_err(|e| ctx("selector", &e))).collect::<Result<SelectorSet, _>>()?;
    let dns_names: Vec<String> = if dns_names == "[]" {
        Vec::new()
    } else {
        serde_json::from_str(&dns_names).map_err(|e| ctx("dns_names", &e))?
    };
    let ttl = |col: &str, v: i64| Ttl::from_secs(u64::try_from(v).unwrap_or(0)).map_err(|e| ctx(col, &e));
    Ok(Entry {
        spiffe_id: SpiffeId::new(&spiffe_id).map_err(|e| ctx("spiffe_id", &e))?,
        parent_id: SpiffeId::new(&parent_id).map_err(|e| ctx("parent_id", &e))?,
        selectors,
        owner,
        class: Class::from_str(&class).map_err(|e| ctx("class", &e))?,
        x509_ttl: ttl("x509_ttl", x509_ttl)?,
        jwt_ttl: ttl("jwt_ttl", jwt_ttl)?,
        dns_names,
        hint,
        recovery: recovery != 0,
        bind: Bind::from_str(&bind).map_err(|e| ctx("bind", &e))?,
        revision: u64::try_from(revision).unwrap_or(0),
        created_at,
        updated_at,
        revoked_at,
        id,
    })
}

/// Separates the fields of one entry in a page.
const FIELD: char = '\u{1f}';
/// Separates entries in a page.
const RECORD: char = '\u{1e}';
/// Stands for NULL in a page (no valid field holds a control character).
const NULL: &str = "\u{2}";

/// Entries from a page read by [`Store::entries_page`]: records separated by
/// U+001E, fields by U+001F, NULL written U+0002. Valid fields never hold
/// control characters; a page that does not split into 16 fields per
/// record, or whose numbers do not parse, is reported as corrupt.
pub fn parse_entries_page(page: &str) -> Result<Vec<Entry>, StoreError> {
    let bad = |detail: String| StoreError::Corrupt { table: "entries", detail };
    page.split(RECORD)
        .map(|rec| {
            let f: Vec<&str> = rec.split(FIELD).collect();
            let [
                id,
                spiffe_id,
                parent_id,
                selectors,
                owner,
                class,
                x509,
                jwt,
                dns,
                hint,
                recovery,
                revision,
                created,
                updated,
                revoked,
                bind,
            ] = f.as_slice()
            else {
                return Err(bad(format!("a record has {} fields, not 16", f.len())));
            };
            let int = |what: &str, v: &str| {
                v.parse::<i64>().map_err(|_| bad(format!("entry `{id}` {what} `{v}` is not a number")))
            };
            let opt = |v: &str| (v != NULL).then(|| v.to_owned());
            entry_from_columns(EntryColumns(
                (*id).to_owned(),
                (*spiffe_id).to_owned(),
                (*parent_id).to_owned(),
                (*selectors).to_owned(),
                (*owner).to_owned(),
                (*class).to_owned(),
                int("x509_ttl", x509)?,
                int("jwt_ttl", jwt)?,
                (*dns).to_owned(),
                opt(hint),
                int("recovery", recovery)?,
                int("revision", revision)?,
                int("created_at", created)?,
                int("updated_at", updated)?,
                opt(revoked).map(|r| int("revoked_at", &r)).transpose()?,
                (*bind).to_owned(),
            ))
        })
        .collect()
}

/// Binds an entry's content as `$1..$11`, in the column order both the insert
/// and the update use.
fn bind_spec<'q>(q: AnyQuery<'q>, spec: &ValidEntrySpec) -> AnyQuery<'q> {
    q.bind(spec.spiffe_id.to_string())
        .bind(spec.parent_id.to_string())
        .bind(canonical_selectors(&spec.selectors))
        .bind(spec.owner.clone())
        .bind(spec.class.as_str())
        .bind(to_i64(spec.x509_ttl.secs()))
        .bind(to_i64(spec.jwt_ttl.secs()))
        .bind(serde_json::to_string(&spec.dns_names).unwrap_or_else(|_| "[]".into()))
        .bind(spec.hint.clone())
        .bind(i64::from(spec.recovery))
        .bind(spec.bind.as_str())
}

fn duplicate_entry(e: sqlx::Error, spec: &ValidEntrySpec) -> StoreError {
    duplicate_or(e, || format!("an entry for `{}` with the same parent and selectors already exists", spec.spiffe_id))
}

impl Store {
    /// Tells agent `parent_id` through the change log that entry `entry_id`
    /// changed.
    pub(crate) async fn log_change(
        conn: &mut AnyConnection,
        entry_id: &str,
        parent_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO entry_events (entry_id, parent_id, at) VALUES ($1, $2, $3)")
            .bind(entry_id.to_owned())
            .bind(parent_id.to_owned())
            .bind(now)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Reads an entry inside a transaction; a missing one is `NotFound`.
    async fn entry_in(conn: &mut AnyConnection, id: &str) -> Result<Entry, StoreError> {
        row_in(conn, format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1"), id, "entry", entry_from_row).await
    }

    /// Refuses SPIFFE IDs that entries of another owner hold (entry
    /// `except` aside, when updating it). Runs inside the entry transaction,
    /// which serializes every entry write, so two owners cannot race for one ID.
    async fn check_id_owners(
        conn: &mut AnyConnection,
        specs: &[ValidEntrySpec],
        except: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut wanted: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for s in specs {
            match wanted.insert(s.spiffe_id.as_str(), s.owner.as_str()) {
                Some(other) if other != s.owner => {
                    return Err(StoreError::HeldByOtherOwner {
                        spiffe_id: s.spiffe_id.to_string(),
                        owner: other.to_owned(),
                    });
                }
                _ => {}
            }
        }
        let ids: Vec<&str> = wanted.keys().copied().collect();
        for chunk in ids.chunks(500) {
            let marks = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT spiffe_id, owner FROM entries WHERE spiffe_id IN ({marks}) AND id <> ${}",
                chunk.len() + 1
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind((*id).to_owned());
            }
            for row in q.bind(except.unwrap_or_default().to_owned()).fetch_all(&mut *conn).await? {
                let (id, owner): (String, String) = (row.try_get("spiffe_id")?, row.try_get("owner")?);
                if wanted.get(id.as_str()).is_some_and(|want| *want != owner) {
                    return Err(StoreError::HeldByOtherOwner { spiffe_id: id, owner });
                }
            }
        }
        Ok(())
    }

    /// Creates an entry, recorded by `rec`. The same SPIFFE ID, parent and
    /// selectors twice is refused, and so is an ID another owner's entries hold.
    pub async fn create_entry(&self, spec: &ValidEntrySpec, rec: Recorder<'_, Entry>) -> Result<Entry, StoreError> {
        let now = now_unix();
        let id = new_id();
        let mut tx = self.begin_entry_change().await?;
        refuse_people(std::slice::from_ref(spec))?;
        Self::check_id_owners(&mut tx, std::slice::from_ref(spec), None).await?;
        bind_spec(sqlx::query(
            "INSERT INTO entries (spiffe_id, parent_id, selectors, owner, class, x509_ttl, jwt_ttl, dns_names, hint, recovery, bound_to, id, revision, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13)",
            ),
            spec,
        )
        .bind(id.clone())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_entry(e, spec))?;
        Self::log_change(&mut tx, &id, spec.parent_id.as_str(), now).await?;
        let entry = Self::entry_in(&mut tx, &id).await?;
        tx.commit(&entry, rec).await?;
        Ok(entry)
    }

    /// Creates many entries in one transaction (all or none), each pushed to
    /// its agent through the change log and recorded by `rec`. A duplicate of
    /// an existing entry or of another in the batch refuses the whole batch.
    pub async fn create_entries(
        &self,
        specs: &[ValidEntrySpec],
        rec: Recorder<'_, [Entry]>,
    ) -> Result<Vec<Entry>, StoreError> {
        const ROWS: usize = 500;
        let now = now_unix();
        let entries: Vec<Entry> = specs.iter().map(|s| s.clone().into_entry(new_id(), now)).collect();
        let mut tx = self.begin_entry_change().await?;
        refuse_people(specs)?;
        Self::check_id_owners(&mut tx, specs, None).await?;
        for (chunk, specs) in entries.chunks(ROWS).zip(specs.chunks(ROWS)) {
            let sql = format!(
                "INSERT INTO entries (spiffe_id, parent_id, selectors, owner, class, x509_ttl, jwt_ttl, dns_names, hint, \
                 recovery, bound_to, id, revision, created_at, updated_at) VALUES {}",
                values_list(self.backend(), 15, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (e, spec) in chunk.iter().zip(specs) {
                q = bind_spec(q, spec).bind(e.id.clone()).bind(1i64).bind(now).bind(now);
            }
            q.execute(&mut *tx).await.map_err(|e| {
                duplicate_or(e, || {
                    "an entry in the batch has the same SPIFFE ID, parent and selectors as another".into()
                })
            })?;
            let sql = format!(
                "INSERT INTO entry_events (entry_id, parent_id, at) VALUES {}",
                values_list(self.backend(), 3, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q.bind(e.id.clone()).bind(e.parent_id.to_string()).bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit(entries.as_slice(), rec).await?;
        Ok(entries)
    }

    /// Up to `limit` entries after the position `after` (start with `""`),
    /// as one delimited text value the database builds (parse it with
    /// [`parse_entries_page`]), and the position to continue from; `None`
    /// past the end. One value per page instead of one row per entry: reading
    /// a million entries this way is a few hundred round trips rather than a
    /// million hand-offs between threads. On SQLite pages follow the table's
    /// storage order (rowid), a sequential read; on PostgreSQL the id.
    pub async fn entries_page(&self, after: &str, limit: i64) -> Result<Option<(String, String)>, StoreError> {
        let (page, last): (Option<String>, Option<String>) = match self.backend() {
            Backend::Sqlite => {
                let after: i64 = if after.is_empty() {
                    0
                } else {
                    after.parse().map_err(|_| StoreError::Schema(format!("bad entries page position `{after}`")))?
                };
                let r = sqlx::query(
                    "SELECT group_concat(id || char(31) || spiffe_id || char(31) || parent_id || char(31) || selectors \
                     || char(31) || owner || char(31) || class || char(31) || x509_ttl || char(31) || jwt_ttl || char(31) \
                     || dns_names || char(31) || ifnull(hint, char(2)) || char(31) || recovery || char(31) || revision \
                     || char(31) || created_at || char(31) || updated_at || char(31) || ifnull(revoked_at, char(2)) \
                     || char(31) || bound_to, \
                     char(30)) AS page, MAX(rid) AS last \
                     FROM (SELECT rowid AS rid, * FROM entries WHERE rowid > $1 ORDER BY rowid LIMIT $2)",
                )
                .bind(after)
                .bind(limit)
                .fetch_one(&self.pool)
                .await?;
                (r.try_get("page")?, r.try_get::<Option<i64>, _>("last")?.map(|l| l.to_string()))
            }
            Backend::Postgres => {
                let r = sqlx::query(
                    "SELECT string_agg(concat(id, chr(31), spiffe_id, chr(31), parent_id, chr(31), selectors, chr(31), \
                     owner, chr(31), class, chr(31), x509_ttl, chr(31), jwt_ttl, chr(31), dns_names, chr(31), \
                     coalesce(hint, chr(2)), chr(31), recovery, chr(31), revision, chr(31), created_at, chr(31), \
                     updated_at, chr(31), coalesce(revoked_at::text, chr(2)), chr(31), bound_to), chr(30)) AS page, \
                     MAX(id) AS last \
                     FROM (SELECT * FROM entries WHERE id > $1 ORDER BY id LIMIT $2) AS p",
                )
                .bind(after.to_owned())
                .bind(limit)
                .fetch_one(&self.pool)
                .await?;
                (r.try_get("page")?, r.try_get("last")?)
            }
        };
        Ok(match (page, last) {
            (Some(page), Some(last)) => Some((page, last)),
            _ => None,
        })
    }

    /// Entries by id (those that exist), in no particular order.
    pub async fn entries_by_id(&self, ids: &[String]) -> Result<Vec<Entry>, StoreError> {
        self.rows_in(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id IN"), ids, entry_from_row).await
    }

    /// Replaces an entry's content, recorded by `rec`; `expected_revision`,
    /// when given, must match.
    pub async fn update_entry(
        &self,
        id: &str,
        spec: &ValidEntrySpec,
        expected_revision: Option<u64>,
        rec: Recorder<'_, Entry>,
    ) -> Result<Entry, StoreError> {
        let now = now_unix();
        let mut tx = self.begin_entry_change().await?;
        let old = Self::entry_in(&mut tx, id).await?;
        if let Some(expected) = expected_revision
            && expected != old.revision
        {
            return Err(StoreError::Conflict { id: id.to_owned(), expected, actual: old.revision });
        }
        refuse_people(std::slice::from_ref(spec))?;
        Self::check_id_owners(&mut tx, std::slice::from_ref(spec), Some(id)).await?;
        bind_spec(sqlx::query(
            "UPDATE entries SET spiffe_id = $1, parent_id = $2, selectors = $3, owner = $4, class = $5, x509_ttl = $6, \
             jwt_ttl = $7, dns_names = $8, hint = $9, recovery = $10, bound_to = $11, revision = revision + 1, updated_at = $12 \
             WHERE id = $13",
            ),
            spec,
        )
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_entry(e, spec))?;
        Self::log_change(&mut tx, id, spec.parent_id.as_str(), now).await?;
        if old.parent_id != spec.parent_id {
            Self::log_change(&mut tx, id, old.parent_id.as_str(), now).await?;
        }
        let entry = Self::entry_in(&mut tx, id).await?;
        tx.commit(&entry, rec).await?;
        Ok(entry)
    }

    /// Deletes an entry, recorded by `rec`, and returns what it was.
    pub async fn delete_entry(&self, id: &str, rec: Recorder<'_, Entry>) -> Result<Entry, StoreError> {
        let now = now_unix();
        let mut tx = self.begin_entry_change().await?;
        let old = Self::entry_in(&mut tx, id).await?;
        sqlx::query("DELETE FROM entries WHERE id = $1").bind(id.to_owned()).execute(&mut *tx).await?;
        Self::log_change(&mut tx, id, old.parent_id.as_str(), now).await?;
        tx.commit(&old, rec).await?;
        Ok(old)
    }

    /// One entry by id.
    pub async fn entry(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        self.one_by(format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1"), id, entry_from_row).await
    }

    /// Every entry, optionally only those under one parent, ordered by SPIFFE ID.
    pub async fn entries(&self, parent: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        let rows = match parent {
            Some(p) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = $1 ORDER BY spiffe_id, id"
                )))
                .bind(p.to_owned())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY spiffe_id, id")))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(entry_from_row).collect()
    }

    /// Entries a given parent may serve (revoked ones excluded), with the
    /// change-log position they reflect. Reading both in one transaction means
    /// no change is missed or seen twice.
    pub async fn entries_snapshot(&self, parent: &str) -> Result<(Vec<Entry>, i64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM entry_events")
            .fetch_one(&mut *tx)
            .await?
            .try_get("s")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = $1 AND revoked_at IS NULL ORDER BY spiffe_id, id"
        )))
        .bind(parent.to_owned())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((rows.iter().map(entry_from_row).collect::<Result<_, _>>()?, seq))
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    pub async fn changes_since(&self, seq: i64, limit: i64) -> Result<Vec<EntryChange>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, entry_id, parent_id FROM entry_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(EntryChange {
                    seq: r.try_get("seq")?,
                    entry_id: r.try_get("entry_id")?,
                    parent_id: r.try_get("parent_id")?,
                })
            })
            .collect()
    }

    /// The newest change-log position.
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM entry_events")
            .fetch_one(&self.pool)
            .await?
            .try_get("s")?)
    }
}

/// Refuses entries for people: class `human`, a SPIFFE ID under `/human/`, or
/// a recovery path. [`ValidEntrySpec`]'s parser refuses them too; the store
/// checks again so that no caller of it (a batch, an import, a future API)
/// can put a person's identity on the Workload API.
fn refuse_people(specs: &[ValidEntrySpec]) -> Result<(), StoreError> {
    for s in specs {
        if s.class == hallmark_core::Class::Human || s.spiffe_id.is_human() || s.recovery {
            return Err(StoreError::PersonOnWorkloadPath(format!(
                "entry for `{}` refused: registration entries are for workloads; people (class `human`, IDs under /human/, recovery) sign in with `hallmark login`",
                s.spiffe_id
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&str]) -> String {
        fields.join("\u{1f}")
    }

    const GOOD: [&str; 16] = [
        "e1",
        "spiffe://example.org/a",
        "spiffe://example.org/hallmark/agent/x",
        "unix:uid:1\nunix:path:/bin/a",
        "team",
        "machine",
        "3600",
        "300",
        "[\"a.internal\"]",
        "\u{2}",
        "0",
        "2",
        "10",
        "11",
        "\u{2}",
        "process",
    ];

    #[test]
    fn pages_parse_and_refuse_what_does_not_fit() {
        let mut second = GOOD;
        second[0] = "e2";
        second[9] = "primary";
        second[14] = "99";
        let page = format!("{}\u{1e}{}", record(&GOOD), record(&second));
        let entries = parse_entries_page(&page).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].hint.as_deref(), entries[0].revoked_at), (None, None));
        assert_eq!((entries[1].hint.as_deref(), entries[1].revoked_at), (Some("primary"), Some(99)));
        assert_eq!(entries[0].dns_names, vec!["a.internal".to_owned()]);
        assert_eq!(entries[0].selectors.len(), 2);
        assert_eq!(entries[0].bind, Bind::Process);
        for broken in [
            record(&GOOD[..15]),
            record(&{
                let mut f = GOOD;
                f[15] = "thread";
                f
            }),
            format!("{}\u{1f}extra", record(&GOOD)),
            record(&{
                let mut f = GOOD;
                f[6] = "an hour";
                f
            }),
            record(&{
                let mut f = GOOD;
                f[1] = "spiffe://Example.org/a";
                f
            }),
            String::new(),
        ] {
            let err = parse_entries_page(&broken).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        }
    }
}
