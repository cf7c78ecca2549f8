//! People as SCIM provisions them (placeholder read side; the SCIM provider
//! replaces this module with the full one).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

/// A person, as far as a login needs to know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Person {
    /// SCIM id.
    pub id: String,
    /// SCIM userName.
    pub user_name: String,
    /// Primary email, lowercased.
    pub email: Option<String>,
    /// Whether active.
    pub active: bool,
    /// When they left.
    pub left_at: Option<i64>,
    /// When deleted.
    pub deleted_at: Option<i64>,
}

impl Person {
    /// Inactive or deleted.
    pub fn has_left(&self) -> bool {
        !self.active || self.deleted_at.is_some()
    }
}

fn person_from_row(r: &AnyRow) -> Result<Person, StoreError> {
    Ok(Person {
        id: r.try_get("id")?,
        user_name: r.try_get("user_name")?,
        email: r.try_get("email")?,
        active: r.try_get::<i64, _>("active")? != 0,
        left_at: r.try_get("left_at")?,
        deleted_at: r.try_get("deleted_at")?,
    })
}

impl Store {
    /// The person whose userName (case-insensitively), or else email, is one of `keys`.
    pub async fn person_for_login(&self, keys: &[&str]) -> Result<Option<Person>, StoreError> {
        for k in keys {
            let k = k.to_lowercase();
            let row = sqlx::query(
                "SELECT id, user_name, email, active, left_at, deleted_at FROM people WHERE user_name_key = $1 \
                 UNION ALL SELECT id, user_name, email, active, left_at, deleted_at FROM people WHERE email = $1 LIMIT 1",
            )
            .bind(k)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = row {
                return Ok(Some(person_from_row(&r)?));
            }
        }
        Ok(None)
    }

    /// The display names of `person_id`'s groups, sorted.
    pub async fn person_group_names(&self, person_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.display_name FROM person_groups g JOIN group_members m ON m.group_id = g.id \
             WHERE m.person_id = $1 ORDER BY g.display_name",
        )
        .bind(person_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>("display_name").map_err(StoreError::from)).collect()
    }
}
