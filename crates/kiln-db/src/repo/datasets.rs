//! Datasets: immutable, versioned per name within a team. The bytes live in the artifact
//! store under `storage_key`; the row holds what was learned while streaming them in. The
//! `schema` column is kiln-types' [`DatasetSchema`], decoded here.

use chrono::{DateTime, Utc};
use kiln_types::{DatasetSchema, Sha256Digest};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde::Serialize;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::{Deletion, Page, RepoError, VersionRef, parse_cursor};
use crate::entity::datasets;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    pub version: i32,
    pub format: String,
    pub sha256: Sha256Digest,
    pub size_bytes: i64,
    pub storage_key: String,
    pub schema: DatasetSchema,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<datasets::Model> for Dataset {
    type Error = RepoError;

    /// A row whose digest or schema does not decode is a database error (the column's
    /// contents are not what Kiln writes).
    fn try_from(m: datasets::Model) -> Result<Self, RepoError> {
        let corrupt = |what: &str, err: &dyn std::fmt::Display| {
            RepoError::Db(sea_orm::DbErr::Json(format!("datasets.{what} of {}: {err}", m.id)))
        };
        let sha256 = Sha256Digest::parse(m.sha256.clone()).map_err(|e| corrupt("sha256", &e))?;
        let schema = serde_json::from_value(m.schema.clone()).map_err(|e| corrupt("schema", &e))?;
        Ok(Dataset {
            id: m.id,
            team_id: m.team_id,
            name: m.name,
            version: m.version,
            format: m.format,
            sha256,
            size_bytes: m.size_bytes,
            storage_key: m.storage_key,
            schema,
            created_by: m.created_by,
            created_at: m.created_at,
        })
    }
}

/// What an upload learned about the bytes it stored.
#[derive(Debug, Clone)]
pub struct NewDataset<'a> {
    pub team_id: Uuid,
    pub name: &'a str,
    pub format: &'a str,
    pub sha256: &'a str,
    pub size_bytes: i64,
    pub storage_key: &'a str,
    pub schema: DatasetSchema,
    pub created_by: Option<Uuid>,
}

/// Why a dataset name is refused, or `None`.
pub fn name_problem(name: &str) -> Option<&'static str> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if name.is_empty() || name.len() > 128 {
        Some("must be 1 to 128 characters")
    } else if !name.bytes().all(ok) || name.starts_with('.') {
        Some("may use only letters, digits, '-', '_' and '.', and not start with '.'")
    } else {
        None
    }
}

/// Records a new version of the named dataset (versions count up from 1 per name).
pub async fn create(db: &impl ConnectionTrait, new: NewDataset<'_>) -> Result<Dataset, RepoError> {
    // Two concurrent uploads of the same name may pick the same next version; the unique
    // key refuses one of them, which then takes the following number.
    for _ in 0..5 {
        let result = datasets::Model::find_by_statement(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO datasets (id, team_id, name, version, format, sha256, size_bytes, storage_key, schema, created_by) \
             SELECT $1, $2, $3, coalesce(max(version), 0) + 1, $4, $5, $6, $7, $8, $9 \
             FROM datasets WHERE team_id = $2 AND name = $3 \
             RETURNING *",
            [
                Uuid::now_v7().into(),
                new.team_id.into(),
                new.name.into(),
                new.format.into(),
                new.sha256.into(),
                new.size_bytes.into(),
                new.storage_key.into(),
                serde_json::to_value(&new.schema).map_err(|e| sea_orm::DbErr::Json(e.to_string()))?.into(),
                new.created_by.into(),
            ],
        ))
        .one(db)
        .await;
        match result {
            Ok(Some(model)) => return model.try_into(),
            Ok(None) => return Err(RepoError::NotFound { resource: "dataset" }),
            Err(err)
                if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) =>
            {
                continue;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(RepoError::AlreadyExists { resource: "dataset version", name: new.name.to_owned() })
}

/// The newest version of `name` holding exactly these bytes in this format, if any: an
/// upload of the same bytes under the same name answers it instead of a new version.
pub async fn find_same(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    name: &str,
    sha256: &str,
    format: &str,
) -> Result<Option<Dataset>, RepoError> {
    datasets::Entity::find()
        .filter(datasets::Column::TeamId.eq(team_id))
        .filter(datasets::Column::Name.eq(name))
        .filter(datasets::Column::Sha256.eq(sha256))
        .filter(datasets::Column::Format.eq(format))
        .order_by_desc(datasets::Column::Version)
        .one(db)
        .await?
        .map(TryInto::try_into)
        .transpose()
}

/// [`create`], unless the name already has a version with these bytes in this format: then
/// that version, and `false`. Uploads of one name are serialised (a transaction-scoped
/// advisory lock on team and name), so two identical uploads at once make one version.
pub async fn create_unless_same(
    db: &DatabaseConnection,
    new: NewDataset<'_>,
) -> Result<(Dataset, bool), RepoError> {
    let txn = db.begin().await?;
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "SELECT pg_advisory_xact_lock(hashtextextended('kiln.datasets:' || $1::text || '/' || $2, 0))",
        [new.team_id.into(), new.name.into()],
    ))
    .await?;
    if let Some(same) = find_same(&txn, new.team_id, new.name, new.sha256, new.format).await? {
        txn.commit().await?;
        return Ok((same, false));
    }
    let dataset = create(&txn, new).await?;
    txn.commit().await?;
    Ok((dataset, true))
}

/// What still uses a dataset: jobs that are queued or running on it (as training data or
/// as their TorchScript module), and registered model versions trained on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DatasetUsers {
    pub jobs: Vec<Uuid>,
    pub model_versions: Vec<VersionRef>,
}

impl DatasetUsers {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.model_versions.is_empty()
    }
}

/// What uses dataset `id` of `team_id` now.
pub async fn users(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    id: Uuid,
) -> Result<DatasetUsers, RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct JobRow {
        id: Uuid,
    }
    let backend = db.get_database_backend();
    let id_text = id.to_string();
    let jobs = JobRow::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT id FROM jobs WHERE team_id = $1 AND state IN ('queued', 'running') \
             AND (spec->>'dataset_id' = $2 OR spec->'model'->>'dataset_id' = $2) ORDER BY id",
        [team_id.into(), id_text.clone().into()],
    ))
    .all(db)
    .await?;
    // Lineage: the version's own copy of the spec, or its job's.
    let model_versions = VersionRef::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT m.name AS model, v.version FROM model_versions v \
             JOIN models m ON m.id = v.model_id LEFT JOIN jobs j ON j.id = v.job_id \
         WHERE m.team_id = $1 AND ($2 IN (v.spec->>'dataset_id', v.spec->'model'->>'dataset_id', \
             j.spec->>'dataset_id', j.spec->'model'->>'dataset_id')) \
         ORDER BY m.name, v.version",
        [team_id.into(), id_text.into()],
    ))
    .all(db)
    .await?;
    Ok(DatasetUsers { jobs: jobs.into_iter().map(|j| j.id).collect(), model_versions })
}

/// Deletes dataset `id` of `team_id` unless something uses it, recording `audit` in the
/// same transaction. The row is locked first, so two deletes do not both succeed. Its bytes
/// stay in the artifact store (another dataset may hold the same content) until the
/// artifacts garbage collection finds them unreferenced.
pub async fn delete_unless_used(
    db: &DatabaseConnection,
    team_id: Uuid,
    id: Uuid,
    audit: AuditEntry<'_>,
) -> Result<Deletion<DatasetUsers>, RepoError> {
    let txn = db.begin().await?;
    let locked = txn
        .query_one(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT id FROM datasets WHERE id = $1 AND team_id = $2 FOR UPDATE",
            [id.into(), team_id.into()],
        ))
        .await?;
    if locked.is_none() {
        return Ok(Deletion::NotFound);
    }
    let users = users(&txn, team_id, id).await?;
    if !users.is_empty() {
        return Ok(Deletion::InUse(users));
    }
    txn.execute(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "DELETE FROM datasets WHERE id = $1",
        [id.into()],
    ))
    .await?;
    audit::record(&txn, audit).await?;
    txn.commit().await?;
    Ok(Deletion::Deleted)
}

/// A dataset of this team (another team's answers `None`).
pub async fn get(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    id: Uuid,
) -> Result<Option<Dataset>, RepoError> {
    datasets::Entity::find_by_id(id)
        .filter(datasets::Column::TeamId.eq(team_id))
        .one(db)
        .await?
        .map(Dataset::try_from)
        .transpose()
}

/// A team's datasets, newest first, optionally only one name.
pub async fn list(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    name: Option<&str>,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<Dataset>, RepoError> {
    let mut query = datasets::Entity::find()
        .filter(datasets::Column::TeamId.eq(team_id))
        .order_by_desc(datasets::Column::Id);
    if let Some(name) = name {
        query = query.filter(datasets::Column::Name.eq(name));
    }
    if let Some(after) = parse_cursor(cursor)? {
        query = query.filter(datasets::Column::Id.lt(after));
    }
    let rows = query.limit(limit + 1).all(db).await?;
    let rows = rows.into_iter().map(Dataset::try_from).collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(rows, limit, |d: &Dataset| d.id.to_string()))
}

/// Every storage key a dataset refers to (for garbage collection).
pub async fn storage_keys(db: &impl ConnectionTrait) -> Result<Vec<String>, RepoError> {
    Ok(datasets::Entity::find()
        .select_only()
        .column(datasets::Column::StorageKey)
        .into_tuple::<String>()
        .all(db)
        .await?)
}
