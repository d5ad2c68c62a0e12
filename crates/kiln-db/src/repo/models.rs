//! The model registry: models by name within a team, numbered versions made from
//! succeeded jobs (with their lineage), and aliases such as `production` that point at a
//! version and move.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Page, RepoError, parse_cursor};
use crate::entity::{model_aliases, model_versions, models};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<models::Model> for Model {
    fn from(m: models::Model) -> Self {
        Model {
            id: m.id,
            team_id: m.team_id,
            name: m.name,
            description: m.description,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVersion {
    pub id: Uuid,
    pub model_id: Uuid,
    pub version: i32,
    pub job_id: Option<Uuid>,
    pub bundle_key: String,
    pub bundle_sha256: String,
    pub dataset_sha256: Option<String>,
    pub spec: Value,
    pub metrics: Value,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<model_versions::Model> for ModelVersion {
    fn from(m: model_versions::Model) -> Self {
        ModelVersion {
            id: m.id,
            model_id: m.model_id,
            version: m.version,
            job_id: m.job_id,
            bundle_key: m.bundle_key,
            bundle_sha256: m.bundle_sha256,
            dataset_sha256: m.dataset_sha256,
            spec: m.spec,
            metrics: m.metrics,
            created_by: m.created_by,
            created_at: m.created_at,
        }
    }
}

/// A version to register.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub job_id: Uuid,
    pub bundle_key: &'a str,
    pub bundle_sha256: &'a str,
    pub dataset_sha256: Option<&'a str>,
    pub spec: Value,
    pub metrics: Value,
    pub created_by: Option<Uuid>,
}

/// Why a model or alias name is refused, or `None`.
pub fn name_problem(name: &str, max: usize) -> Option<String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let starts_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > max {
        Some(format!("must be 1 to {max} characters"))
    } else if !starts_ok || !name.bytes().all(ok) {
        Some(
            "must start with a letter or digit and use only letters, digits, '-', '_' and '.'"
                .to_owned(),
        )
    } else {
        None
    }
}

pub async fn find(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    name: &str,
) -> Result<Option<Model>, RepoError> {
    Ok(models::Entity::find()
        .filter(models::Column::TeamId.eq(team_id))
        .filter(models::Column::Name.eq(name))
        .one(db)
        .await?
        .map(Into::into))
}

/// Registers a new version of `name` (creating the model on first use), numbered one
/// past the highest so far.
pub async fn register_version(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    name: &str,
    new: NewVersion<'_>,
) -> Result<ModelVersion, RepoError> {
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO models (id, team_id, name) VALUES ($1, $2, $3) ON CONFLICT (team_id, name) DO NOTHING",
        [Uuid::now_v7().into(), team_id.into(), name.into()],
    ))
    .await?;
    let model = find(db, team_id, name).await?.ok_or(RepoError::NotFound { resource: "model" })?;
    for _ in 0..5 {
        let result = model_versions::Model::find_by_statement(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO model_versions (id, model_id, version, job_id, bundle_key, bundle_sha256, \
                 dataset_sha256, spec, metrics, created_by) \
             SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7, $8, $9 \
             FROM model_versions WHERE model_id = $2 RETURNING *",
            [
                Uuid::now_v7().into(),
                model.id.into(),
                new.job_id.into(),
                new.bundle_key.into(),
                new.bundle_sha256.into(),
                new.dataset_sha256.map(str::to_owned).into(),
                new.spec.clone().into(),
                new.metrics.clone().into(),
                new.created_by.into(),
            ],
        ))
        .one(db)
        .await;
        match result {
            Ok(Some(v)) => return Ok(v.into()),
            Ok(None) => return Err(RepoError::NotFound { resource: "model" }),
            Err(err)
                if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) =>
            {
                continue;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(RepoError::AlreadyExists { resource: "model version", name: name.to_owned() })
}

/// A team's models, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<Model>, RepoError> {
    let mut query = models::Entity::find()
        .filter(models::Column::TeamId.eq(team_id))
        .order_by_desc(models::Column::Id);
    if let Some(after) = parse_cursor(cursor)? {
        query = query.filter(models::Column::Id.lt(after));
    }
    let rows = query.limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows.into_iter().map(Into::into).collect(), limit, |m: &Model| {
        m.id.to_string()
    }))
}

/// A model's versions, newest first; `cursor` is a version number.
pub async fn versions(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<ModelVersion>, RepoError> {
    let mut query = model_versions::Entity::find()
        .filter(model_versions::Column::ModelId.eq(model_id))
        .order_by_desc(model_versions::Column::Version);
    if let Some(cursor) = cursor {
        let before: i32 = cursor.parse().map_err(|_| RepoError::BadCursor)?;
        query = query.filter(model_versions::Column::Version.lt(before));
    }
    let rows = query.limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows.into_iter().map(Into::into).collect(), limit, |v: &ModelVersion| {
        v.version.to_string()
    }))
}

pub async fn version(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    version: i32,
) -> Result<Option<ModelVersion>, RepoError> {
    Ok(model_versions::Entity::find()
        .filter(model_versions::Column::ModelId.eq(model_id))
        .filter(model_versions::Column::Version.eq(version))
        .one(db)
        .await?
        .map(Into::into))
}

/// A version by its id.
pub async fn version_by_id(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<ModelVersion>, RepoError> {
    Ok(model_versions::Entity::find_by_id(id).one(db).await?.map(Into::into))
}

/// Points `alias` at `version_id`; returns the version it pointed at before, if any.
pub async fn set_alias(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    alias: &str,
    version_id: Uuid,
    updated_by: Option<Uuid>,
) -> Result<Option<Uuid>, RepoError> {
    let previous = model_aliases::Entity::find_by_id((model_id, alias.to_owned()))
        .one(db)
        .await?
        .map(|a| a.version_id);
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO model_aliases (model_id, alias, version_id, updated_by, updated_at) \
         VALUES ($1, $2, $3, $4, now()) \
         ON CONFLICT (model_id, alias) DO UPDATE SET version_id = EXCLUDED.version_id, \
             updated_by = EXCLUDED.updated_by, updated_at = now()",
        [model_id.into(), alias.into(), version_id.into(), updated_by.into()],
    ))
    .await?;
    Ok(previous)
}

/// The version an alias points at.
pub async fn resolve_alias(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    alias: &str,
) -> Result<Option<ModelVersion>, RepoError> {
    let Some(alias) =
        model_aliases::Entity::find_by_id((model_id, alias.to_owned())).one(db).await?
    else {
        return Ok(None);
    };
    Ok(model_versions::Entity::find_by_id(alias.version_id).one(db).await?.map(Into::into))
}

/// Every alias of a model: `(alias, version number)`.
pub async fn aliases(
    db: &impl ConnectionTrait,
    model_id: Uuid,
) -> Result<Vec<(String, i32)>, RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct Row {
        alias: String,
        version: i32,
    }
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT a.alias, v.version FROM model_aliases a JOIN model_versions v ON v.id = a.version_id \
         WHERE a.model_id = $1 ORDER BY a.alias",
        [model_id.into()],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.alias, r.version)).collect())
}

/// Every bundle key a model version refers to (for garbage collection).
pub async fn bundle_keys(db: &impl ConnectionTrait) -> Result<Vec<String>, RepoError> {
    Ok(model_versions::Entity::find()
        .select_only()
        .column(model_versions::Column::BundleKey)
        .into_tuple::<String>()
        .all(db)
        .await?)
}
