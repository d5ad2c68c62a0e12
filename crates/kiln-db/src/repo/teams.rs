//! Teams: the unit of isolation. Every team resource carries its team's id.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::Serialize;
use uuid::Uuid;

use super::{Page, RepoError, parse_cursor};
use crate::entity::teams;

/// Default cap on a new team's concurrently running jobs.
pub const DEFAULT_MAX_RUNNING_JOBS: i32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub max_running_jobs: i32,
    pub created_at: DateTime<Utc>,
}

impl From<teams::Model> for Team {
    fn from(m: teams::Model) -> Self {
        Team {
            id: m.id,
            name: m.name,
            max_running_jobs: m.max_running_jobs,
            created_at: m.created_at,
        }
    }
}

/// Why a team name is refused, or `None` when it is a valid slug.
pub fn name_problem(name: &str) -> Option<&'static str> {
    let valid_start =
        name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid_rest = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > 63 {
        Some("must be 1 to 63 characters")
    } else if !valid_start || !valid_rest {
        Some("must start with a lowercase letter or digit and use only a-z, 0-9, '-' and '_'")
    } else {
        None
    }
}

pub async fn create(
    db: &impl ConnectionTrait,
    name: &str,
    max_running_jobs: i32,
) -> Result<Team, RepoError> {
    let model = teams::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.to_owned()),
        max_running_jobs: Set(max_running_jobs),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .map_err(|err| RepoError::unique(err, "team", name))?;
    Ok(model.into())
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Team>, RepoError> {
    Ok(teams::Entity::find_by_id(id).one(db).await?.map(Into::into))
}

pub async fn find_by_name(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<Team>, RepoError> {
    Ok(teams::Entity::find().filter(teams::Column::Name.eq(name)).one(db).await?.map(Into::into))
}

/// Every team, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<Team>, RepoError> {
    let mut query = teams::Entity::find().order_by_desc(teams::Column::Id);
    if let Some(after) = parse_cursor(cursor)? {
        query = query.filter(teams::Column::Id.lt(after));
    }
    let rows = query.limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows.into_iter().map(Into::into).collect(), limit, |t: &Team| {
        t.id.to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::name_problem;

    #[test]
    fn team_names_are_slugs() {
        for good in ["vision", "nlp-2", "a", "team_x"] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in ["", "Vision", "-x", "has space", "é", &"x".repeat(64)] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
    }
}
