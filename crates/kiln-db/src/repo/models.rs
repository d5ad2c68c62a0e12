//! The model registry: models by name within a team, numbered versions made from
//! succeeded jobs (with their lineage), and aliases such as `production` that point at a
//! version and move.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::{Deletion, Page, RepoError, parse_cursor};
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
    db: &DatabaseConnection,
    team_id: Uuid,
    name: &str,
    new: NewVersion<'_>,
) -> Result<ModelVersion, RepoError> {
    Ok(register_version_once(db, team_id, name, new).await?.0)
}

/// [`register_version`], unless `new.job_id` is already a version of this model: then that
/// version, and `false` (registering the same job twice makes one version). The model's
/// row is locked while its next number is taken, so registrations of one model are
/// serialised and two of the same job at once make one version.
pub async fn register_version_once(
    db: &DatabaseConnection,
    team_id: Uuid,
    name: &str,
    new: NewVersion<'_>,
) -> Result<(ModelVersion, bool), RepoError> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    txn.execute(Statement::from_sql_and_values(
        backend,
        "INSERT INTO models (id, team_id, name) VALUES ($1, $2, $3) ON CONFLICT (team_id, name) DO NOTHING",
        [Uuid::now_v7().into(), team_id.into(), name.into()],
    ))
    .await?;
    let model = models::Model::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT * FROM models WHERE team_id = $1 AND name = $2 FOR UPDATE",
        [team_id.into(), name.into()],
    ))
    .one(&txn)
    .await?
    .ok_or(RepoError::NotFound { resource: "model" })?;
    let existing = model_versions::Entity::find()
        .filter(model_versions::Column::ModelId.eq(model.id))
        .filter(model_versions::Column::JobId.eq(new.job_id))
        .order_by_asc(model_versions::Column::Version)
        .one(&txn)
        .await?;
    if let Some(existing) = existing {
        txn.commit().await?;
        return Ok((existing.into(), false));
    }
    let version = model_versions::Model::find_by_statement(Statement::from_sql_and_values(
        backend,
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
    .one(&txn)
    .await?
    .ok_or(RepoError::NotFound { resource: "model" })?;
    txn.commit().await?;
    Ok((version.into(), true))
}

/// How many versions a model has, and the highest number.
pub async fn version_stats(
    db: &impl ConnectionTrait,
    model_id: Uuid,
) -> Result<(i64, Option<i32>), RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct Row {
        count: i64,
        latest: Option<i32>,
    }
    let row = Row::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT count(*) AS count, max(version) AS latest FROM model_versions WHERE model_id = $1",
        [model_id.into()],
    ))
    .one(db)
    .await?;
    Ok(row.map_or((0, None), |r| (r.count, r.latest)))
}

/// What still uses a model version: aliases pointing at it, deployments serving it
/// (pinned to it, following one of those aliases, or giving it a share of their traffic),
/// and batch predictions queued or running with it (their job ids).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VersionUsers {
    pub aliases: Vec<String>,
    pub deployments: Vec<String>,
    pub jobs: Vec<Uuid>,
}

impl VersionUsers {
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.deployments.is_empty() && self.jobs.is_empty()
    }
}

/// What uses version `version_id` (number `number`) of model `model_id` now.
pub async fn version_users(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    version_id: Uuid,
    number: i32,
) -> Result<VersionUsers, RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct Name {
        name: String,
    }
    let backend = db.get_database_backend();
    let aliases = Name::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT alias AS name FROM model_aliases WHERE version_id = $1 ORDER BY alias",
        [version_id.into()],
    ))
    .all(db)
    .await?;
    let deployments = Name::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT d.name FROM deployments d \
             LEFT JOIN model_aliases a ON a.model_id = d.model_id AND a.alias = d.alias \
         WHERE d.model_id = $1 AND (d.version_id = $2 OR a.version_id = $2 \
             OR d.traffic @> jsonb_build_array(jsonb_build_object('version', $3::int))) \
         ORDER BY d.name",
        [model_id.into(), version_id.into(), number.into()],
    ))
    .all(db)
    .await?;
    #[derive(Debug, FromQueryResult)]
    struct JobId {
        id: Uuid,
    }
    let jobs = JobId::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT b.id FROM batch_predictions b JOIN jobs j ON j.id = b.id \
         WHERE b.version_id = $1 AND j.state IN ('queued', 'running') ORDER BY b.id",
        [version_id.into()],
    ))
    .all(db)
    .await?;
    Ok(VersionUsers {
        aliases: aliases.into_iter().map(|a| a.name).collect(),
        deployments: deployments.into_iter().map(|d| d.name).collect(),
        jobs: jobs.into_iter().map(|j| j.id).collect(),
    })
}

/// Deletes version `number` of model `model_id` unless something uses it, recording `audit`
/// in the same transaction (the version's row is locked first). Its bundle stays in the
/// artifact store while its job's result names it; the artifacts garbage collection takes
/// it once nothing does. The model itself stays, with its other versions (or none).
pub async fn delete_version_unless_used(
    db: &DatabaseConnection,
    model_id: Uuid,
    number: i32,
    audit: AuditEntry<'_>,
) -> Result<Deletion<VersionUsers>, RepoError> {
    let txn = db.begin().await?;
    let locked = model_versions::Model::find_by_statement(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "SELECT * FROM model_versions WHERE model_id = $1 AND version = $2 FOR UPDATE",
        [model_id.into(), number.into()],
    ))
    .one(&txn)
    .await?;
    let Some(version) = locked else { return Ok(Deletion::NotFound) };
    let users = version_users(&txn, model_id, version.id, number).await?;
    if !users.is_empty() {
        return Ok(Deletion::InUse(users));
    }
    let deleted = txn
        .execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "DELETE FROM model_versions WHERE id = $1",
            [version.id.into()],
        ))
        .await;
    match deleted {
        Ok(_) => {}
        // An alias or deployment that took it up after the check (the keys refuse the
        // delete): report what uses it now.
        Err(err)
            if matches!(err.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))) =>
        {
            drop(txn);
            let users = version_users(db, model_id, version.id, number).await?;
            return Ok(Deletion::InUse(users));
        }
        Err(err) => return Err(err.into()),
    }
    audit::record(&txn, audit).await?;
    txn.commit().await?;
    Ok(Deletion::Deleted)
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
