//! What MLflow's model registry and MLflow 3's logged models keep, on Kiln's registry:
//! registered models are `models` rows (with MLflow tags), model versions are
//! `model_versions` rows (with an MLflow source, run, description and tags, and a Kiln
//! bundle only when they come from a Kiln job), aliases are `model_aliases` rows. Logged
//! models and runs' outputs have their own tables. Every read takes the team id.

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, FromQueryResult, Statement, TransactionTrait, Value,
};
use serde_json::Value as Json;
use uuid::Uuid;

use super::RepoError;

/// A registered model as MLflow sees it.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct RegisteredModel {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// `{key: value}`.
    pub mlflow_tags: Json,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A model version as MLflow sees it.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct MlVersion {
    pub id: Uuid,
    pub model_id: Uuid,
    pub model_name: String,
    pub version: i32,
    pub job_id: Option<Uuid>,
    /// Empty for a version that has only MLflow artifacts.
    pub bundle_key: String,
    pub source: Option<String>,
    pub mlflow_run_id: Option<Uuid>,
    pub run_link: Option<String>,
    pub description: Option<String>,
    pub mlflow_tags: Json,
    pub logged_model_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MlVersion {
    /// Whether a Kiln bundle backs this version (only then can it be served).
    pub fn has_bundle(&self) -> bool {
        !self.bundle_key.is_empty()
    }
}

/// A string comparison of MLflow's search filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Like,
    ILike,
}

impl Op {
    /// For a value that may be missing (a tag): `!=` keeps the rows without it, as MLflow's
    /// own stores do (the client appends `tag.mlflow.prompt.is_prompt != 'true'`).
    fn null_safe_sql(self) -> &'static str {
        match self {
            Op::Ne => "IS DISTINCT FROM",
            other => other.sql(),
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
        }
    }
}

/// One clause of a search filter (clauses are joined by AND).
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    Name(Op, String),
    Tag(String, Op, String),
    /// Versions only.
    RunId(Op, Uuid),
    /// Versions only.
    Source(Op, String),
    /// Versions only.
    Version(Op, i32),
}

/// A sort key of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Created,
    Updated,
    /// Versions only.
    Version,
}

struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(text: &str, values: Vec<Value>) -> Self {
        Sql { text: text.to_owned(), values }
    }

    fn bind(&mut self, v: impl Into<Value>) -> String {
        self.values.push(v.into());
        format!("${}", self.values.len())
    }

    fn clauses(&mut self, clauses: &[Clause], table: &str, name_col: &str) {
        for c in clauses {
            let cond = match c {
                Clause::Name(op, v) => {
                    let p = self.bind(v.clone());
                    format!("{name_col} {} {p}", op.sql())
                }
                Clause::Tag(key, op, v) => {
                    let k = self.bind(key.clone());
                    let p = self.bind(v.clone());
                    format!("{table}.mlflow_tags ->> {k} {} {p}", op.null_safe_sql())
                }
                Clause::RunId(op, id) => {
                    let p = self.bind(*id);
                    let op = if *op == Op::Ne { "IS DISTINCT FROM" } else { "=" };
                    format!("{table}.mlflow_run_id {op} {p}")
                }
                Clause::Source(op, v) => {
                    let p = self.bind(v.clone());
                    format!("{table}.source {} {p}", op.null_safe_sql())
                }
                Clause::Version(op, n) => {
                    let p = self.bind(*n);
                    let op = if *op == Op::Ne { "<>" } else { "=" };
                    format!("{table}.version {op} {p}")
                }
            };
            self.text.push_str(" AND ");
            self.text.push_str(&cond);
        }
    }

    fn statement(self, db: &impl ConnectionTrait) -> Statement {
        Statement::from_sql_and_values(db.get_database_backend(), self.text, self.values)
    }
}

fn order_sql(order: &[(SortKey, bool)], table: &str, name_col: &str, tiebreak: &str) -> String {
    let mut parts: Vec<String> = order
        .iter()
        .map(|(key, asc)| {
            let col = match key {
                SortKey::Name => name_col.to_owned(),
                SortKey::Created => format!("{table}.created_at"),
                SortKey::Updated => format!("{table}.updated_at"),
                SortKey::Version => format!("{table}.version"),
            };
            format!("{col} {}", if *asc { "ASC" } else { "DESC" })
        })
        .collect();
    parts.push(tiebreak.to_owned());
    parts.join(", ")
}

const MODEL_COLUMNS: &str =
    "m.id, m.team_id, m.name, m.description, m.mlflow_tags, m.created_at, m.updated_at";

/// Creates a registered model; [`RepoError::AlreadyExists`] when the team has one by that
/// name (made through MLflow or by a native registration).
pub async fn create_model(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    name: &str,
    description: Option<&str>,
    tags: Json,
) -> Result<RegisteredModel, RepoError> {
    RegisteredModel::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO models AS m (id, team_id, name, description, mlflow_tags) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING m.id, m.team_id, m.name, m.description, m.mlflow_tags, m.created_at, m.updated_at",
        [
            Uuid::now_v7().into(),
            team_id.into(),
            name.into(),
            description.map(str::to_owned).into(),
            tags.into(),
        ],
    ))
    .one(db)
    .await
    .map_err(|e| RepoError::unique(e, "registered model", name))?
    .ok_or(RepoError::NotFound { resource: "registered model" })
}

/// A team's registered model by name.
pub async fn get_model(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    name: &str,
) -> Result<Option<RegisteredModel>, RepoError> {
    Ok(RegisteredModel::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("SELECT {MODEL_COLUMNS} FROM models m WHERE m.team_id = $1 AND m.name = $2"),
        [team_id.into(), name.into()],
    ))
    .one(db)
    .await?)
}

/// Renames a registered model (its versions, aliases and deployments follow: they refer to
/// its id). [`RepoError::AlreadyExists`] when the new name is taken.
pub async fn rename_model(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    new_name: &str,
) -> Result<Option<RegisteredModel>, RepoError> {
    RegisteredModel::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "UPDATE models m SET name = $2, updated_at = now() WHERE m.id = $1 RETURNING {MODEL_COLUMNS}"
        ),
        [model_id.into(), new_name.into()],
    ))
    .one(db)
    .await
    .map_err(|e| RepoError::unique(e, "registered model", new_name))
}

/// Sets a registered model's description (`None` clears it).
pub async fn update_model_description(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    description: Option<&str>,
) -> Result<Option<RegisteredModel>, RepoError> {
    Ok(RegisteredModel::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "UPDATE models m SET description = $2, updated_at = now() WHERE m.id = $1 RETURNING {MODEL_COLUMNS}"
        ),
        [model_id.into(), description.map(str::to_owned).into()],
    ))
    .one(db)
    .await?)
}

/// Sets (`Some`) or deletes (`None`) one tag of a registered model; false when no such model.
pub async fn set_model_tag(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    key: &str,
    value: Option<&str>,
) -> Result<bool, RepoError> {
    let sql = match value {
        Some(_) => {
            "UPDATE models SET mlflow_tags = mlflow_tags || jsonb_build_object($2::text, $3::text), \
             updated_at = now() WHERE id = $1"
        }
        None => {
            "UPDATE models SET mlflow_tags = mlflow_tags - $2::text, updated_at = now() WHERE id = $1"
        }
    };
    let mut values: Vec<Value> = vec![model_id.into(), key.into()];
    if let Some(v) = value {
        values.push(v.into());
    }
    let done =
        db.execute(Statement::from_sql_and_values(db.get_database_backend(), sql, values)).await?;
    Ok(done.rows_affected() > 0)
}

/// What keeps a registered model from being deleted: the deployments that serve it.
pub async fn model_deployments(
    db: &impl ConnectionTrait,
    model_id: Uuid,
) -> Result<Vec<String>, RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct Name {
        name: String,
    }
    Ok(Name::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT name FROM deployments WHERE model_id = $1 ORDER BY name",
        [model_id.into()],
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|n| n.name)
    .collect())
}

/// Deletes a registered model with its versions and aliases, unless a deployment (even a
/// deleted one, which keeps its history) refers to it: then those deployments' names.
pub async fn delete_model(
    db: &DatabaseConnection,
    model_id: Uuid,
    audit: super::audit::AuditEntry<'_>,
) -> Result<Result<(), Vec<String>>, RepoError> {
    let txn = db.begin().await?;
    let users = model_deployments(&txn, model_id).await?;
    if !users.is_empty() {
        return Ok(Err(users));
    }
    let deleted = txn
        .execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "DELETE FROM models WHERE id = $1",
            [model_id.into()],
        ))
        .await;
    match deleted {
        Ok(_) => {}
        Err(err)
            if matches!(err.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))) =>
        {
            drop(txn);
            return Ok(Err(model_deployments(db, model_id).await?));
        }
        Err(err) => return Err(err.into()),
    }
    super::audit::record(&txn, audit).await?;
    txn.commit().await?;
    Ok(Ok(()))
}

/// A page of a team's registered models matching every clause, in `order` (then by name).
pub async fn search_models(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    clauses: &[Clause],
    order: &[(SortKey, bool)],
    limit: u64,
    offset: u64,
) -> Result<Vec<RegisteredModel>, RepoError> {
    let mut sql = Sql::new(
        &format!("SELECT {MODEL_COLUMNS} FROM models m WHERE m.team_id = $1"),
        vec![team_id.into()],
    );
    sql.clauses(clauses, "m", "m.name");
    let order = order_sql(order, "m", "m.name", "m.name ASC");
    let l = sql.bind(limit as i64);
    let o = sql.bind(offset as i64);
    sql.text.push_str(&format!(" ORDER BY {order} LIMIT {l} OFFSET {o}"));
    Ok(RegisteredModel::find_by_statement(sql.statement(db)).all(db).await?)
}

const VERSION_COLUMNS: &str = "v.id, v.model_id, m.name AS model_name, v.version, v.job_id, \
    v.bundle_key, v.source, v.mlflow_run_id, v.run_link, v.description, v.mlflow_tags, \
    v.logged_model_id, v.created_by, v.created_at, v.updated_at";

/// The Kiln bundle a version made from a Kiln job's run refers to, as the native register
/// records it.
#[derive(Debug, Clone)]
pub struct JobBundle<'a> {
    pub job_id: Uuid,
    pub bundle_key: &'a str,
    pub bundle_sha256: &'a str,
    pub dataset_sha256: Option<&'a str>,
    pub spec: Json,
    pub metrics: Json,
}

/// A version to create through MLflow.
#[derive(Debug, Clone)]
pub struct NewMlVersion<'a> {
    pub source: &'a str,
    pub run_id: Option<Uuid>,
    pub run_link: Option<&'a str>,
    pub description: Option<&'a str>,
    pub tags: Json,
    pub logged_model_id: Option<Uuid>,
    /// `Some` for a Kiln job's run: the version is servable.
    pub bundle: Option<JobBundle<'a>>,
    pub created_by: Option<Uuid>,
}

/// Creates the next version of `model_id` (its row locked while the number is taken, as
/// the native register does).
pub async fn create_version(
    db: &DatabaseConnection,
    model_id: Uuid,
    new: NewMlVersion<'_>,
) -> Result<MlVersion, RepoError> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    txn.execute(Statement::from_sql_and_values(
        backend,
        "SELECT id FROM models WHERE id = $1 FOR UPDATE",
        [model_id.into()],
    ))
    .await?;
    let (job_id, key, sha, dataset, spec, metrics) = match &new.bundle {
        Some(b) => (
            Some(b.job_id),
            b.bundle_key,
            b.bundle_sha256,
            b.dataset_sha256.map(str::to_owned),
            b.spec.clone(),
            b.metrics.clone(),
        ),
        None => {
            (None, "", "", None, Json::Object(Default::default()), Json::Object(Default::default()))
        }
    };
    let id = Uuid::now_v7();
    txn.execute(Statement::from_sql_and_values(
        backend,
        "INSERT INTO model_versions (id, model_id, version, job_id, bundle_key, bundle_sha256, \
             dataset_sha256, spec, metrics, created_by, source, mlflow_run_id, run_link, \
             description, mlflow_tags, logged_model_id) \
         SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
             $12, $13, $14, $15 \
         FROM model_versions WHERE model_id = $2",
        [
            id.into(),
            model_id.into(),
            job_id.into(),
            key.into(),
            sha.into(),
            dataset.into(),
            spec.into(),
            metrics.into(),
            new.created_by.into(),
            new.source.into(),
            new.run_id.into(),
            new.run_link.map(str::to_owned).into(),
            new.description.map(str::to_owned).into(),
            new.tags.into(),
            new.logged_model_id.into(),
        ],
    ))
    .await?;
    txn.execute(Statement::from_sql_and_values(
        backend,
        "UPDATE models SET updated_at = now() WHERE id = $1",
        [model_id.into()],
    ))
    .await?;
    let version =
        version_by_id(&txn, id).await?.ok_or(RepoError::NotFound { resource: "model version" })?;
    txn.commit().await?;
    Ok(version)
}

async fn version_by_id(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<MlVersion>, RepoError> {
    Ok(MlVersion::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id \
             WHERE v.id = $1"
        ),
        [id.into()],
    ))
    .one(db)
    .await?)
}

/// Version `number` of model `model_id`.
pub async fn get_version(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    number: i32,
) -> Result<Option<MlVersion>, RepoError> {
    Ok(MlVersion::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id \
             WHERE v.model_id = $1 AND v.version = $2"
        ),
        [model_id.into(), number.into()],
    ))
    .one(db)
    .await?)
}

/// The newest `limit` versions of a model.
pub async fn latest_versions(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    limit: u64,
) -> Result<Vec<MlVersion>, RepoError> {
    Ok(MlVersion::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id \
             WHERE v.model_id = $1 ORDER BY v.version DESC LIMIT $2"
        ),
        [model_id.into(), (limit as i64).into()],
    ))
    .all(db)
    .await?)
}

/// A page of a team's model versions matching every clause, in `order` (then newest
/// first).
pub async fn search_versions(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    clauses: &[Clause],
    order: &[(SortKey, bool)],
    limit: u64,
    offset: u64,
) -> Result<Vec<MlVersion>, RepoError> {
    let mut sql = Sql::new(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id \
             WHERE m.team_id = $1"
        ),
        vec![team_id.into()],
    );
    sql.clauses(clauses, "v", "m.name");
    let order = order_sql(order, "v", "m.name", "m.name ASC, v.version DESC");
    let l = sql.bind(limit as i64);
    let o = sql.bind(offset as i64);
    sql.text.push_str(&format!(" ORDER BY {order} LIMIT {l} OFFSET {o}"));
    Ok(MlVersion::find_by_statement(sql.statement(db)).all(db).await?)
}

/// Sets a version's description.
pub async fn update_version_description(
    db: &impl ConnectionTrait,
    version_id: Uuid,
    description: Option<&str>,
) -> Result<(), RepoError> {
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE model_versions SET description = $2, updated_at = now() WHERE id = $1",
        [version_id.into(), description.map(str::to_owned).into()],
    ))
    .await?;
    Ok(())
}

/// Sets (`Some`) or deletes (`None`) one tag of a version.
pub async fn set_version_tag(
    db: &impl ConnectionTrait,
    version_id: Uuid,
    key: &str,
    value: Option<&str>,
) -> Result<(), RepoError> {
    let sql = match value {
        Some(_) => {
            "UPDATE model_versions SET mlflow_tags = mlflow_tags || jsonb_build_object($2::text, $3::text), \
             updated_at = now() WHERE id = $1"
        }
        None => {
            "UPDATE model_versions SET mlflow_tags = mlflow_tags - $2::text, updated_at = now() WHERE id = $1"
        }
    };
    let mut values: Vec<Value> = vec![version_id.into(), key.into()];
    if let Some(v) = value {
        values.push(v.into());
    }
    db.execute(Statement::from_sql_and_values(db.get_database_backend(), sql, values)).await?;
    Ok(())
}

/// The active deployments that follow `alias` of `model_id`.
pub async fn alias_followers(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    alias: &str,
) -> Result<Vec<String>, RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct Name {
        name: String,
    }
    Ok(Name::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT name FROM deployments WHERE model_id = $1 AND alias = $2 AND state = 'active' \
         ORDER BY name",
        [model_id.into(), alias.into()],
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|n| n.name)
    .collect())
}

/// Deletes an alias; returns the version number it pointed at, or `None` when there was no
/// such alias.
pub async fn delete_alias(
    db: &impl ConnectionTrait,
    model_id: Uuid,
    alias: &str,
) -> Result<Option<i32>, RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct Row {
        version: i32,
    }
    Ok(Row::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "WITH gone AS (DELETE FROM model_aliases WHERE model_id = $1 AND alias = $2 RETURNING version_id) \
         SELECT v.version FROM gone JOIN model_versions v ON v.id = gone.version_id",
        [model_id.into(), alias.into()],
    ))
    .one(db)
    .await?
    .map(|r| r.version))
}

/// An MLflow 3 logged model.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct LoggedModel {
    pub id: Uuid,
    pub team_id: Uuid,
    pub experiment_id: String,
    pub name: String,
    pub model_type: Option<String>,
    pub source_run_id: Option<Uuid>,
    pub status: String,
    pub status_message: Option<String>,
    pub tags: Json,
    pub params: Json,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A logged model to create.
#[derive(Debug, Clone)]
pub struct NewLoggedModel<'a> {
    pub team_id: Uuid,
    pub experiment_id: &'a str,
    pub name: &'a str,
    pub model_type: Option<&'a str>,
    pub source_run_id: Option<Uuid>,
    pub tags: Json,
    pub params: Json,
    pub created_by: Option<Uuid>,
}

pub async fn create_logged_model(
    db: &impl ConnectionTrait,
    new: NewLoggedModel<'_>,
) -> Result<LoggedModel, RepoError> {
    LoggedModel::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO mlflow_logged_models (id, team_id, experiment_id, name, model_type, \
             source_run_id, tags, params, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
        [
            Uuid::now_v7().into(),
            new.team_id.into(),
            new.experiment_id.into(),
            new.name.into(),
            new.model_type.map(str::to_owned).into(),
            new.source_run_id.into(),
            new.tags.into(),
            new.params.into(),
            new.created_by.into(),
        ],
    ))
    .one(db)
    .await?
    .ok_or(RepoError::NotFound { resource: "logged model" })
}

/// A team's logged model.
pub async fn get_logged_model(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    id: Uuid,
) -> Result<Option<LoggedModel>, RepoError> {
    Ok(LoggedModel::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT * FROM mlflow_logged_models WHERE id = $1 AND team_id = $2",
        [id.into(), team_id.into()],
    ))
    .one(db)
    .await?)
}

/// Changes a logged model: a new status, tags merged in (`Some(v)`) or removed (`None`),
/// params merged in. Answers the model after the change, or `None` when it is not the
/// team's.
pub async fn update_logged_model(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    id: Uuid,
    status: Option<&str>,
    tags: &[(String, Option<String>)],
    params: Json,
) -> Result<Option<LoggedModel>, RepoError> {
    let set: Json = tags
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), Json::String(v.clone()))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let mut sql = Sql::new(
        "UPDATE mlflow_logged_models SET status = coalesce($3, status), \
             params = params || $4::jsonb, updated_at = now(), tags = (tags || $5::jsonb)",
        vec![
            id.into(),
            team_id.into(),
            status.map(str::to_owned).into(),
            params.into(),
            set.into(),
        ],
    );
    for (k, v) in tags {
        if v.is_none() {
            let p = sql.bind(k.clone());
            sql.text.push_str(&format!(" - {p}::text"));
        }
    }
    sql.text.push_str(" WHERE id = $1 AND team_id = $2 RETURNING *");
    Ok(LoggedModel::find_by_statement(sql.statement(db)).one(db).await?)
}

/// Deletes a logged model; false when it is not the team's. Its artifacts stay in the
/// store; versions registered from it keep their source.
pub async fn delete_logged_model(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    id: Uuid,
) -> Result<bool, RepoError> {
    let done = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM mlflow_logged_models WHERE id = $1 AND team_id = $2",
            [id.into(), team_id.into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A page of a team's logged models in these experiments (all when empty), optionally of
/// one name and/or source run, newest first.
pub async fn search_logged_models(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    experiment_ids: &[String],
    clauses: &[Clause],
    limit: u64,
    offset: u64,
) -> Result<Vec<LoggedModel>, RepoError> {
    let mut sql =
        Sql::new("SELECT * FROM mlflow_logged_models l WHERE l.team_id = $1", vec![team_id.into()]);
    if !experiment_ids.is_empty() {
        let ps: Vec<String> = experiment_ids.iter().map(|e| sql.bind(e.clone())).collect();
        sql.text.push_str(&format!(" AND l.experiment_id IN ({})", ps.join(", ")));
    }
    for c in clauses {
        match c {
            Clause::Name(op, v) => {
                let p = sql.bind(v.clone());
                sql.text.push_str(&format!(" AND l.name {} {p}", op.sql()));
            }
            Clause::RunId(op, id) => {
                let p = sql.bind(*id);
                let op = if *op == Op::Ne { "IS DISTINCT FROM" } else { "=" };
                sql.text.push_str(&format!(" AND l.source_run_id {op} {p}"));
            }
            Clause::Tag(k, op, v) => {
                let k = sql.bind(k.clone());
                let p = sql.bind(v.clone());
                sql.text.push_str(&format!(" AND l.tags ->> {k} {} {p}", op.null_safe_sql()));
            }
            Clause::Source(..) | Clause::Version(..) => {}
        }
    }
    let l = sql.bind(limit as i64);
    let o = sql.bind(offset as i64);
    sql.text.push_str(&format!(" ORDER BY l.created_at DESC, l.id DESC LIMIT {l} OFFSET {o}"));
    Ok(LoggedModel::find_by_statement(sql.statement(db)).all(db).await?)
}
