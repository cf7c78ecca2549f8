//! People and their groups, as an identity provider provisions them over
//! SCIM 2.0 (issue 19: joiners, movers, leavers).
//!
//! A person is never deleted: a leaver (`active` false, or a SCIM DELETE)
//! keeps its row with `left_at` (and `deleted_at`) set, so that an owner
//! linked to the person can still say "owner left" and a login can still be
//! refused. Groups are SCIM groups of people; their display names are what
//! policy reads at a person's next login ([`Store::person_group_names`]).
//!
//! Every write goes through a [`Recorder`]: the change and its audit records
//! (joined, left, moved, ...) are one transaction. A write reads the stored
//! row and writes from it in one transaction, locked on PostgreSQL (`FOR
//! UPDATE`; SQLite writers are serialised by `BEGIN IMMEDIATE`), so two SCIM
//! requests racing on one resource cannot lose either's change.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::store::{duplicate_or, row_in};
use crate::{Backend, Recorder, Store, StoreError};

/// A person as the identity provider last described it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Person {
    /// The SCIM `id` (server-assigned, never reused).
    pub id: String,
    /// The SCIM `userName`, as given (unique regardless of letter case).
    pub user_name: String,
    /// The identity provider's own id for the person.
    pub external_id: Option<String>,
    /// The primary email address, lowercased.
    pub email: Option<String>,
    /// The display name.
    pub display_name: Option<String>,
    /// SCIM `active`: false makes the person a leaver.
    pub active: bool,
    /// The SCIM User as last written (without `id`, `meta` and `groups`,
    /// which the server fills in).
    pub resource: Value,
    /// Bumped at each write: the SCIM `meta.version` (`W/"N"`).
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// When the person last left (set inactive or deleted); cleared when
    /// re-activated.
    pub left_at: Option<i64>,
    /// When the identity provider deleted the person (the row stays).
    pub deleted_at: Option<i64>,
}

impl Person {
    /// Whether the person has left: inactive or deleted. A leaver gets no
    /// login, and owners linked to them report "owner left".
    pub fn has_left(&self) -> bool {
        !self.active || self.deleted_at.is_some()
    }
}

/// A SCIM group of people.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScimGroup {
    /// The SCIM `id`.
    pub id: String,
    /// The SCIM `displayName` (unique regardless of letter case): the name
    /// policy sees.
    pub display_name: String,
    /// The identity provider's own id for the group.
    pub external_id: Option<String>,
    /// The SCIM Group as last written (without `id`, `meta` and `members`).
    pub resource: Value,
    /// Bumped at each write (`meta.version`).
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Its members' person ids, in the order they were added.
    pub members: Vec<String>,
}

/// What a SCIM write stores of a person: the fields the store indexes and
/// the resource they were taken from (already validated by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonWrite {
    /// `userName`.
    pub user_name: String,
    /// `externalId`.
    pub external_id: Option<String>,
    /// The primary email (lowercased here).
    pub email: Option<String>,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `active`.
    pub active: bool,
    /// The resource to keep.
    pub resource: Value,
}

/// What a SCIM write stores of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupWrite {
    /// `displayName`.
    pub display_name: String,
    /// `externalId`.
    pub external_id: Option<String>,
    /// The resource to keep.
    pub resource: Value,
    /// Person ids; ids of people unknown or deleted are left out.
    pub members: Vec<String>,
}

/// A person written: as it was (none for a creation) and as it is now, with
/// the names of the groups it is in.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonChange {
    /// Before the write.
    pub before: Option<Person>,
    /// After it.
    pub after: Person,
    /// Its groups' display names, sorted (before a deletion removed it from them).
    pub groups: Vec<String>,
}

impl PersonChange {
    /// The person left with this change (it had not before).
    pub fn left(&self) -> bool {
        self.after.has_left() && !self.before.as_ref().is_some_and(Person::has_left)
    }

    /// The person came back with this change (it had left before).
    pub fn rejoined(&self) -> bool {
        !self.after.has_left() && self.before.as_ref().is_some_and(Person::has_left)
    }
}

/// A person whose groups a write changed (a mover): policy decides on the
/// new ones at the next login.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Moved {
    /// Person id.
    pub person_id: String,
    /// Its userName.
    pub user_name: String,
    /// Group display names before, sorted.
    pub from: Vec<String>,
    /// And after.
    pub to: Vec<String>,
}

/// A group written: as it was, as it is (none once deleted), and the
/// people it moved.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupChange {
    /// Before the write (none for a creation).
    pub before: Option<ScimGroup>,
    /// After it (none for a deletion).
    pub after: Option<ScimGroup>,
    /// Every person whose group names changed.
    pub moved: Vec<Moved>,
}

/// An owner's link to the person accountable for it, as reports and the
/// owner API show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OwnerPerson {
    /// The owner.
    pub owner: String,
    /// The linked person's id.
    pub person_id: String,
    /// Its userName (empty when the row is missing: a link written by hand).
    pub user_name: String,
    /// Whether that person has left (a missing person counts as left).
    pub left: bool,
    /// When, if known.
    pub left_at: Option<i64>,
}

const PERSON_COLUMNS: &str = "id, user_name, external_id, email, display_name, active, resource, version, \
    created_at, updated_at, left_at, deleted_at";
const GROUP_COLUMNS: &str = "id, display_name, external_id, resource, version, created_at, updated_at";

fn resource_of(r: &AnyRow, table: &'static str) -> Result<Value, StoreError> {
    let text: String = r.try_get("resource")?;
    serde_json::from_str(&text).map_err(|e| {
        let id: String = r.try_get("id").unwrap_or_default();
        StoreError::Corrupt { table, detail: format!("`{id}` resource: {e}") }
    })
}

fn person_from_row(r: &AnyRow) -> Result<Person, StoreError> {
    Ok(Person {
        id: r.try_get("id")?,
        user_name: r.try_get("user_name")?,
        external_id: r.try_get("external_id")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        active: r.try_get::<i64, _>("active")? != 0,
        resource: resource_of(r, "people")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        left_at: r.try_get("left_at")?,
        deleted_at: r.try_get("deleted_at")?,
    })
}

/// A group row without its members (read separately).
fn group_from_row(r: &AnyRow) -> Result<ScimGroup, StoreError> {
    Ok(ScimGroup {
        id: r.try_get("id")?,
        display_name: r.try_get("display_name")?,
        external_id: r.try_get("external_id")?,
        resource: resource_of(r, "person_groups")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        members: Vec::new(),
    })
}

fn json_text(v: &Value) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Schema(format!("SCIM resource: {e}")))
}

/// ` FOR UPDATE` on PostgreSQL: a row read to be rewritten is locked until
/// the transaction ends (READ COMMITTED would let two writers read the same
/// row and the later overwrite the earlier).
fn lock(backend: Backend) -> &'static str {
    if backend == Backend::Postgres { " FOR UPDATE" } else { "" }
}

fn duplicate_user(e: sqlx::Error, user_name: &str) -> StoreError {
    duplicate_or(e, || format!("userName `{user_name}` is already taken (userName is unique regardless of case)"))
}

fn duplicate_group(e: sqlx::Error, name: &str) -> StoreError {
    duplicate_or(e, || format!("group displayName `{name}` is already taken"))
}

async fn person_in(conn: &mut AnyConnection, backend: Backend, id: &str) -> Result<Person, StoreError> {
    let sql = format!("SELECT {PERSON_COLUMNS} FROM people WHERE id = $1 AND deleted_at IS NULL{}", lock(backend));
    row_in(conn, sql, id, "person", person_from_row).await
}

async fn group_in(conn: &mut AnyConnection, backend: Backend, id: &str) -> Result<ScimGroup, StoreError> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM person_groups WHERE id = $1{}", lock(backend));
    let mut g = row_in(conn, sql, id, "group", group_from_row).await?;
    g.members = members_in(conn, id).await?;
    Ok(g)
}

/// A group's members. `group_members` has no position column: members are
/// listed by person id, which keeps the answer stable across reads.
async fn members_in(conn: &mut AnyConnection, group_id: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT person_id FROM group_members WHERE group_id = $1 ORDER BY person_id")
        .bind(group_id.to_owned())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| r.try_get("person_id").map_err(StoreError::from)).collect()
}

/// The display names of the groups of each of `people`, sorted.
async fn group_names_in(
    conn: &mut AnyConnection,
    people: &BTreeSet<String>,
) -> Result<HashMap<String, Vec<String>>, StoreError> {
    let mut out: HashMap<String, Vec<String>> = people.iter().map(|p| (p.clone(), Vec::new())).collect();
    for p in people {
        let rows = sqlx::query(
            "SELECT g.display_name AS name FROM group_members m JOIN person_groups g ON g.id = m.group_id \
             WHERE m.person_id = $1 ORDER BY g.display_name",
        )
        .bind(p.clone())
        .fetch_all(&mut *conn)
        .await?;
        let names = rows.iter().map(|r| r.try_get("name").map_err(StoreError::from)).collect::<Result<_, _>>()?;
        out.insert(p.clone(), names);
    }
    Ok(out)
}

/// The userNames of `people` (for the mover records).
async fn user_names_in(
    conn: &mut AnyConnection,
    people: &BTreeSet<String>,
) -> Result<HashMap<String, String>, StoreError> {
    let mut out = HashMap::new();
    for p in people {
        if let Some(r) =
            sqlx::query("SELECT user_name FROM people WHERE id = $1").bind(p.clone()).fetch_optional(&mut *conn).await?
        {
            out.insert(p.clone(), r.try_get("user_name")?);
        }
    }
    Ok(out)
}

/// Makes `group_id`'s members exactly `members` (people unknown or deleted
/// are left out), and returns the ids of people added or removed.
async fn set_members(
    conn: &mut AnyConnection,
    group_id: &str,
    members: &[String],
) -> Result<BTreeSet<String>, StoreError> {
    let old: BTreeSet<String> = members_in(conn, group_id).await?.into_iter().collect();
    let wanted: BTreeSet<String> = members.iter().cloned().collect();
    for gone in old.difference(&wanted) {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND person_id = $2")
            .bind(group_id.to_owned())
            .bind(gone.clone())
            .execute(&mut *conn)
            .await?;
    }
    for new in wanted.difference(&old) {
        // Only a provisioned person still there: a member id that names
        // nobody is dropped here rather than stored dangling.
        sqlx::query(
            "INSERT INTO group_members (group_id, person_id) \
             SELECT $1, id FROM people WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(group_id.to_owned())
        .bind(new.clone())
        .execute(&mut *conn)
        .await?;
    }
    Ok(old.symmetric_difference(&wanted).cloned().collect())
}

/// The movers among `people`, given their group names before a change:
/// those whose names differ after it.
async fn movers(
    conn: &mut AnyConnection,
    people: &BTreeSet<String>,
    before: &HashMap<String, Vec<String>>,
) -> Result<Vec<Moved>, StoreError> {
    let after = group_names_in(conn, people).await?;
    let names = user_names_in(conn, people).await?;
    let mut out = Vec::new();
    for p in people {
        let (from, to) = (before.get(p).cloned().unwrap_or_default(), after.get(p).cloned().unwrap_or_default());
        if from != to {
            out.push(Moved { person_id: p.clone(), user_name: names.get(p).cloned().unwrap_or_default(), from, to });
        }
    }
    Ok(out)
}

impl Store {
    /// Provisions a person (a joiner, or someone provisioned inactive),
    /// recorded by `rec`. A userName taken by anyone, deleted people
    /// included, is refused: it still names them for logins and owner links.
    pub async fn create_person(
        &self,
        w: &PersonWrite,
        now: i64,
        rec: Recorder<'_, PersonChange>,
    ) -> Result<PersonChange, StoreError> {
        let id = crate::store::new_id();
        let mut tx = self.begin_recorded().await?;
        sqlx::query(
            "INSERT INTO people (id, user_name, user_name_key, external_id, email, display_name, active, resource, \
             version, created_at, updated_at, left_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9, $10)",
        )
        .bind(id.clone())
        .bind(w.user_name.clone())
        .bind(w.user_name.to_lowercase())
        .bind(w.external_id.clone())
        .bind(w.email.as_deref().map(str::to_lowercase))
        .bind(w.display_name.clone())
        .bind(i64::from(w.active))
        .bind(json_text(&w.resource)?)
        .bind(now)
        .bind((!w.active).then_some(now))
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_user(e, &w.user_name))?;
        let after = person_in(&mut tx, self.backend(), &id).await?;
        let change = PersonChange { before: None, after, groups: Vec::new() };
        tx.commit(&change, rec).await?;
        Ok(change)
    }

    /// Rewrites person `id` (not deleted) with what `f` makes of it as
    /// stored (a SCIM PUT or PATCH), recorded by `rec`. Leaving (`active`
    /// becoming false) sets `left_at`; coming back clears it. `f` may refuse
    /// with its own error, and nothing is written.
    pub async fn update_person<E: From<StoreError>>(
        &self,
        id: &str,
        now: i64,
        f: impl FnOnce(&Person) -> Result<PersonWrite, E>,
        rec: Recorder<'_, PersonChange>,
    ) -> Result<PersonChange, E> {
        let mut tx = self.begin_recorded().await?;
        let before = person_in(&mut tx, self.backend(), id).await?;
        let w = f(&before)?;
        let left_at = match (before.has_left(), w.active) {
            (false, false) => Some(now),
            (true, false) => before.left_at.or(Some(now)),
            (_, true) => None,
        };
        sqlx::query(
            "UPDATE people SET user_name = $1, user_name_key = $2, external_id = $3, email = $4, display_name = $5, \
             active = $6, resource = $7, version = version + 1, updated_at = $8, left_at = $9 WHERE id = $10",
        )
        .bind(w.user_name.clone())
        .bind(w.user_name.to_lowercase())
        .bind(w.external_id.clone())
        .bind(w.email.as_deref().map(str::to_lowercase))
        .bind(w.display_name.clone())
        .bind(i64::from(w.active))
        .bind(json_text(&w.resource)?)
        .bind(now)
        .bind(left_at)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_user(e, &w.user_name))?;
        let after = person_in(&mut tx, self.backend(), id).await?;
        let groups = group_names_in(&mut tx, &BTreeSet::from([id.to_owned()])).await?.remove(id).unwrap_or_default();
        let change = PersonChange { before: Some(before), after, groups };
        tx.commit(&change, rec).await?;
        Ok(change)
    }

    /// Deletes person `id` as SCIM does, recorded by `rec`: the row stays
    /// with `deleted_at` (and `left_at`, if not already) set, and the
    /// person leaves every group. `f` sees the person first and may refuse
    /// (a stale `If-Match`).
    pub async fn delete_person<E: From<StoreError>>(
        &self,
        id: &str,
        now: i64,
        f: impl FnOnce(&Person) -> Result<(), E>,
        rec: Recorder<'_, PersonChange>,
    ) -> Result<PersonChange, E> {
        let mut tx = self.begin_recorded().await?;
        let before = person_in(&mut tx, self.backend(), id).await?;
        f(&before)?;
        let groups = group_names_in(&mut tx, &BTreeSet::from([id.to_owned()])).await?.remove(id).unwrap_or_default();
        sqlx::query(
            "UPDATE people SET deleted_at = $1, left_at = COALESCE(left_at, $1), version = version + 1, \
             updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        sqlx::query("DELETE FROM group_members WHERE person_id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let after = row_in(
            &mut tx,
            format!("SELECT {PERSON_COLUMNS} FROM people WHERE id = $1"),
            id,
            "person",
            person_from_row,
        )
        .await?;
        let change = PersonChange { before: Some(before), after, groups };
        tx.commit(&change, rec).await?;
        Ok(change)
    }

    /// One person by id, deleted or not.
    pub async fn person(&self, id: &str) -> Result<Option<Person>, StoreError> {
        self.one_by(format!("SELECT {PERSON_COLUMNS} FROM people WHERE id = $1"), id, person_from_row).await
    }

    /// One person by userName (any letter case), deleted or not.
    pub async fn person_by_user_name(&self, user_name: &str) -> Result<Option<Person>, StoreError> {
        let sql = format!("SELECT {PERSON_COLUMNS} FROM people WHERE user_name_key = $1");
        self.one_by(sql, &user_name.to_lowercase(), person_from_row).await
    }

    /// The person a login names, deleted or not: the first of
    /// `user_name_or_email` that is someone's userName (compared
    /// lowercased), or else the first that is someone's email. When several
    /// people share an email, one still there wins over a leaver, then the
    /// most recently provisioned: the address names whoever holds it now.
    pub async fn person_for_login(&self, user_name_or_email: &[&str]) -> Result<Option<Person>, StoreError> {
        for name in user_name_or_email {
            if let Some(p) = self.person_by_user_name(name).await? {
                return Ok(Some(p));
            }
        }
        let sql = format!(
            "SELECT {PERSON_COLUMNS} FROM people WHERE email = $1 \
             ORDER BY CASE WHEN deleted_at IS NULL AND active <> 0 THEN 0 ELSE 1 END, created_at DESC, id LIMIT 1"
        );
        for email in user_name_or_email {
            if let Some(p) = self.one_by(sql.as_str(), &email.to_lowercase(), person_from_row).await? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The display names of the groups person `person_id` is in, sorted:
    /// what policy decides a login on.
    pub async fn person_group_names(&self, person_id: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut names = group_names_in(&mut conn, &BTreeSet::from([person_id.to_owned()])).await?;
        Ok(names.remove(person_id).unwrap_or_default())
    }

    /// Every person not deleted, oldest first (at most 100 000): the SCIM
    /// list filters and pages them.
    pub async fn people(&self) -> Result<Vec<Person>, StoreError> {
        self.all_rows(
            format!(
                "SELECT {PERSON_COLUMNS} FROM people WHERE deleted_at IS NULL ORDER BY created_at, id LIMIT 100000"
            ),
            person_from_row,
        )
        .await
    }

    /// The groups person `person_id` is in, as (group id, display name)
    /// pairs by display name: a user's read-only `groups`.
    pub async fn groups_of(&self, person_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.id AS id, g.display_name AS name FROM group_members m JOIN person_groups g ON g.id = m.group_id \
             WHERE m.person_id = $1 ORDER BY g.display_name",
        )
        .bind(person_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("name")?))).collect()
    }

    /// Every membership, as (person id, group id, group display name): the
    /// `groups` of many users at once.
    pub async fn memberships(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.person_id AS person_id, g.id AS id, g.display_name AS name FROM group_members m \
             JOIN person_groups g ON g.id = m.group_id ORDER BY g.display_name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("person_id")?, r.try_get("id")?, r.try_get("name")?))).collect()
    }

    /// Creates a group with its members, recorded by `rec` (the members are
    /// movers: they gain a group).
    pub async fn create_group(
        &self,
        w: &GroupWrite,
        now: i64,
        rec: Recorder<'_, GroupChange>,
    ) -> Result<GroupChange, StoreError> {
        let id = crate::store::new_id();
        let mut tx = self.begin_recorded().await?;
        sqlx::query(
            "INSERT INTO person_groups (id, display_name, display_name_key, external_id, resource, version, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(id.clone())
        .bind(w.display_name.clone())
        .bind(w.display_name.to_lowercase())
        .bind(w.external_id.clone())
        .bind(json_text(&w.resource)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_group(e, &w.display_name))?;
        let touched: BTreeSet<String> = w.members.iter().cloned().collect();
        let before = group_names_in(&mut tx, &touched).await?;
        set_members(&mut tx, &id, &w.members).await?;
        let moved = movers(&mut tx, &touched, &before).await?;
        let after = group_in(&mut tx, self.backend(), &id).await?;
        let change = GroupChange { before: None, after: Some(after), moved };
        tx.commit(&change, rec).await?;
        Ok(change)
    }

    /// Rewrites group `id` with what `f` makes of it as stored (a PUT or
    /// PATCH), recorded by `rec`. Everyone added, removed, or (on a rename)
    /// still in it has moved.
    pub async fn update_group<E: From<StoreError>>(
        &self,
        id: &str,
        now: i64,
        f: impl FnOnce(&ScimGroup) -> Result<GroupWrite, E>,
        rec: Recorder<'_, GroupChange>,
    ) -> Result<GroupChange, E> {
        let mut tx = self.begin_recorded().await?;
        let old = group_in(&mut tx, self.backend(), id).await?;
        let w = f(&old)?;
        let touched: BTreeSet<String> = old.members.iter().chain(&w.members).cloned().collect();
        let before = group_names_in(&mut tx, &touched).await?;
        sqlx::query(
            "UPDATE person_groups SET display_name = $1, display_name_key = $2, external_id = $3, resource = $4, \
             version = version + 1, updated_at = $5 WHERE id = $6",
        )
        .bind(w.display_name.clone())
        .bind(w.display_name.to_lowercase())
        .bind(w.external_id.clone())
        .bind(json_text(&w.resource)?)
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_group(e, &w.display_name))?;
        set_members(&mut tx, id, &w.members).await?;
        let moved = movers(&mut tx, &touched, &before).await?;
        let after = group_in(&mut tx, self.backend(), id).await?;
        let change = GroupChange { before: Some(old), after: Some(after), moved };
        tx.commit(&change, rec).await?;
        Ok(change)
    }

    /// Deletes group `id` and its memberships, recorded by `rec` (its
    /// members move out of it). `f` sees it first and may refuse.
    pub async fn delete_group<E: From<StoreError>>(
        &self,
        id: &str,
        f: impl FnOnce(&ScimGroup) -> Result<(), E>,
        rec: Recorder<'_, GroupChange>,
    ) -> Result<GroupChange, E> {
        let mut tx = self.begin_recorded().await?;
        let old = group_in(&mut tx, self.backend(), id).await?;
        f(&old)?;
        let touched: BTreeSet<String> = old.members.iter().cloned().collect();
        let before = group_names_in(&mut tx, &touched).await?;
        for sql in ["DELETE FROM group_members WHERE group_id = $1", "DELETE FROM person_groups WHERE id = $1"] {
            sqlx::query(sql).bind(id.to_owned()).execute(&mut *tx).await.map_err(StoreError::from)?;
        }
        let moved = movers(&mut tx, &touched, &before).await?;
        let change = GroupChange { before: Some(old), after: None, moved };
        tx.commit(&change, rec).await?;
        Ok(change)
    }

    /// One group, with its members.
    pub async fn scim_group(&self, id: &str) -> Result<Option<ScimGroup>, StoreError> {
        let Some(mut g) =
            self.one_by(format!("SELECT {GROUP_COLUMNS} FROM person_groups WHERE id = $1"), id, group_from_row).await?
        else {
            return Ok(None);
        };
        let mut conn = self.pool.acquire().await?;
        g.members = members_in(&mut conn, id).await?;
        Ok(Some(g))
    }

    /// Every group with its members, oldest first (at most 100 000).
    pub async fn scim_groups(&self) -> Result<Vec<ScimGroup>, StoreError> {
        let mut groups = self
            .all_rows(
                format!("SELECT {GROUP_COLUMNS} FROM person_groups ORDER BY created_at, id LIMIT 100000"),
                group_from_row,
            )
            .await?;
        let rows = sqlx::query("SELECT group_id, person_id FROM group_members ORDER BY group_id, person_id")
            .fetch_all(&self.pool)
            .await?;
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for r in &rows {
            members.entry(r.try_get("group_id")?).or_default().push(r.try_get("person_id")?);
        }
        for g in &mut groups {
            g.members = members.remove(&g.id).unwrap_or_default();
        }
        Ok(groups)
    }

    /// Links owner `owner` to the person accountable for it (`None`
    /// unlinks), recorded by `rec`; returns the link as it is now. An
    /// unknown owner or person is `NotFound`; a person who has left may be
    /// linked (the owner then reports "owner left" at once).
    pub async fn link_owner_person(
        &self,
        owner: &str,
        person_id: Option<&str>,
        rec: Recorder<'_, Option<OwnerPerson>>,
    ) -> Result<Option<OwnerPerson>, StoreError> {
        let mut tx = self.begin_recorded().await?;
        if let Some(p) = person_id {
            row_in(&mut tx, format!("SELECT {PERSON_COLUMNS} FROM people WHERE id = $1"), p, "person", person_from_row)
                .await?;
        }
        let done = sqlx::query("UPDATE owners SET person_id = $1, updated_at = $2 WHERE name = $3")
            .bind(person_id.map(str::to_owned))
            .bind(hallmark_core::now_unix())
            .bind(owner.to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("owner `{owner}`")));
        }
        let link = owner_people_in(&mut tx, Some(owner)).await?.pop();
        tx.commit(&link, rec).await?;
        Ok(link)
    }

    /// Every owner linked to a person, with whether that person has left.
    pub async fn owner_people(&self) -> Result<Vec<OwnerPerson>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        owner_people_in(&mut conn, None).await
    }
}

async fn owner_people_in(conn: &mut AnyConnection, owner: Option<&str>) -> Result<Vec<OwnerPerson>, StoreError> {
    let rows = sqlx::query(
        "SELECT o.name AS owner, o.person_id AS person_id, p.user_name AS user_name, p.active AS active, \
         p.deleted_at AS deleted_at, p.left_at AS left_at FROM owners o LEFT JOIN people p ON p.id = o.person_id \
         WHERE o.person_id IS NOT NULL AND ($1 = '' OR o.name = $1) ORDER BY o.name",
    )
    .bind(owner.unwrap_or_default().to_owned())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let user_name: Option<String> = r.try_get("user_name")?;
            let active: Option<i64> = r.try_get("active")?;
            let deleted_at: Option<i64> = r.try_get("deleted_at")?;
            Ok(OwnerPerson {
                owner: r.try_get("owner")?,
                person_id: r.try_get("person_id")?,
                // A link to a row that is not there (written by hand) is
                // treated as a leaver: nobody answers for the owner.
                left: user_name.is_none() || active == Some(0) || deleted_at.is_some(),
                user_name: user_name.unwrap_or_default(),
                left_at: r.try_get("left_at")?,
            })
        })
        .collect()
}
