//! People: the profiles kept from token claims (see `Tenant::remember_user`), `ListUsers`,
//! and the display names queries put on members, assignees and activity.

use std::collections::{BTreeSet, HashMap};

use pm_core::rules::page;
use pm_proto::v1;
use sqlx::{QueryBuilder, Row};

use super::dialect::{Conn, Db};
use super::pages::{bad_token, decode_token, encode_token, Key};
use super::queries::Reader;
use crate::engine::UserProfile;
use crate::error::Result;

use v1::query_result::Result as R;

/// The display names of `ids` that have a profile (see `Tenant::remember_user`), in one
/// statement.
pub(crate) async fn names<'i>(
    conn: &mut Conn,
    ids: impl Iterator<Item = &'i str>,
) -> Result<HashMap<String, String>> {
    let ids: BTreeSet<&str> = ids.filter(|id| !id.is_empty()).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut b = QueryBuilder::<Db>::new("SELECT id, name FROM users WHERE name <> '' AND id IN (");
    let mut list = b.separated(", ");
    for id in ids {
        list.push_bind(id.to_owned());
    }
    b.push(")");
    let rows = b.build().fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("name")?)))
        .collect()
}

/// Fills in `assignee_name` of `items`.
pub(crate) async fn assignee_names(conn: &mut Conn, items: &mut [v1::WorkItem]) -> Result<()> {
    let names = names(conn, items.iter().filter_map(|w| w.assignee_id.as_deref())).await?;
    for item in items {
        if let Some(name) = item.assignee_id.as_ref().and_then(|a| names.get(a)) {
            item.assignee_name = name.clone();
        }
    }
    Ok(())
}

/// The fingerprints of up to `limit` stored profiles.
pub(crate) async fn known_users(
    conn: &mut Conn,
    limit: usize,
) -> Result<crate::engine::KnownUsers> {
    let rows = sqlx::query("SELECT id, name, email FROM users LIMIT $1")
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            let name: String = row.try_get("name")?;
            let email: Option<String> = row.try_get("email")?;
            Ok(crate::engine::fingerprint(&id, &name, email.as_deref()))
        })
        .collect()
}

/// Inserts or updates a user's profile in one autocommit statement; a profile that did not
/// change writes nothing.
pub(crate) async fn remember_user(conn: &mut Conn, profile: &UserProfile, now: i64) -> Result<()> {
    sqlx::query(
        r#"
        INSERT INTO users (id, name, email, first_seen_at, updated_at)
        VALUES ($1, $2, $3, $4, $4)
        ON CONFLICT (id) DO UPDATE SET
            name = excluded.name,
            email = excluded.email,
            updated_at = excluded.updated_at
        WHERE users.name IS DISTINCT FROM excluded.name
           OR users.email IS DISTINCT FROM excluded.email
        "#,
    )
    .bind(profile.id.as_str())
    .bind(&profile.name)
    .bind(profile.email.as_deref())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Reader<'_> {
    /// The people who share a live project with the caller, by id, with their profiles.
    pub(crate) async fn list_users(&mut self, q: v1::ListUsers) -> Result<R> {
        let size = page::size(q.page.as_ref().map_or(0, |p| p.page_size))?;
        let cursor = match decode_token(q.page.as_ref().map_or("", |p| p.page_token.as_str()), 1)?
            .as_deref()
        {
            None => None,
            Some([Key::Text(id)]) => Some(id.clone()),
            Some(_) => return Err(bad_token()),
        };
        let mut b = QueryBuilder::<Db>::new(
            "SELECT m.user_id AS id, u.name, u.email, u.first_seen_at, u.updated_at \
             FROM (SELECT DISTINCT o.user_id FROM project_members AS o \
                   JOIN project_members AS mine ON mine.project_id = o.project_id \
                   JOIN projects AS p ON p.id = o.project_id \
                   WHERE p.deleted_at IS NULL AND mine.user_id = ",
        );
        b.push_bind(self.actor.as_str().to_owned());
        if !q.project_id.is_empty() {
            let (project_id, _) = self.project("project_id", &q.project_id).await?;
            b.push(" AND o.project_id = ").push_bind(project_id);
        }
        b.push(") AS m LEFT JOIN users AS u ON u.id = m.user_id");
        if let Some(after) = cursor {
            b.push(" WHERE m.user_id > ").push_bind(after);
        }
        b.push(" ORDER BY m.user_id LIMIT ")
            .push_bind(i64::from(size) + 1);
        let mut rows = b.build().fetch_all(&mut *self.conn).await?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            let last = rows.last().expect("a full page has a last row");
            encode_token(&[Key::Text(last.try_get("id")?)])
        } else {
            String::new()
        };
        let items = rows
            .iter()
            .map(|row| {
                Ok(v1::User {
                    id: row.try_get("id")?,
                    name: row
                        .try_get::<Option<String>, _>("name")?
                        .unwrap_or_default(),
                    email: row
                        .try_get::<Option<String>, _>("email")?
                        .unwrap_or_default(),
                    first_seen_at: row
                        .try_get::<Option<i64>, _>("first_seen_at")?
                        .unwrap_or_default(),
                    updated_at: row
                        .try_get::<Option<i64>, _>("updated_at")?
                        .unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(R::ListUsersResult(v1::ListUsersResult {
            items,
            next_page_token,
            as_of_seq: self.as_of_seq,
        }))
    }
}
