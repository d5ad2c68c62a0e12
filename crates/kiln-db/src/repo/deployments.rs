//! Deployments: a model served behind a prediction endpoint, following an alias or pinned to
//! a version, with an optional weighted traffic split (canary) and batching settings; and
//! the sample of predictions kept for drift monitoring.
//!
//! Every read resolves the deployment's versions in the same query (the pinned version's
//! number, the alias's current one), so serving never acts on a half-read state.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult, Statement};
use serde_json::Value;
use uuid::Uuid;

use super::{Page, RepoError, parse_cursor};

/// A deployment with its model and versions resolved.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct Deployment {
    pub id: Uuid,
    pub team_id: Uuid,
    pub team_name: String,
    pub name: String,
    pub model_id: Uuid,
    pub model: String,
    /// The alias it follows, if any.
    pub alias: Option<String>,
    /// The version it is pinned to, if any (its number).
    pub pinned_version: Option<i32>,
    /// The version the alias points at now, if it follows one that exists.
    pub alias_version: Option<i32>,
    /// `{"max_batch_size", "max_wait_ms"}`.
    pub batching: Value,
    /// `[{"version", "weight"}]`; empty: everything to the alias's or pinned version.
    pub traffic: Value,
    /// Instances may carry fields the model does not take (they are ignored); otherwise
    /// such a field is refused (422).
    pub allow_extra_features: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Deployment {
    /// The version that takes the traffic when no explicit split is set.
    pub fn primary_version(&self) -> Option<i32> {
        self.pinned_version.or(self.alias_version)
    }
}

const SELECT: &str = "SELECT d.id, d.team_id, t.name AS team_name, d.name, d.model_id, \
        m.name AS model, d.alias, pv.version AS pinned_version, av.version AS alias_version, \
        d.batching, d.traffic, d.allow_extra_features, d.created_at, d.updated_at \
    FROM deployments d \
    JOIN teams t ON t.id = d.team_id \
    JOIN models m ON m.id = d.model_id \
    LEFT JOIN model_versions pv ON pv.id = d.version_id \
    LEFT JOIN model_aliases a ON a.model_id = d.model_id AND a.alias = d.alias \
    LEFT JOIN model_versions av ON av.id = a.version_id";

/// Why a deployment name is refused, or `None`.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let starts_ok =
        name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 63 {
        Some("must be 1 to 63 characters".to_owned())
    } else if !starts_ok || !name.bytes().all(ok) {
        Some(
            "must start with a lowercase letter or digit and use only lowercase letters, digits and '-'"
                .to_owned(),
        )
    } else {
        None
    }
}

/// A deployment to create: exactly one of `alias` and `version_id`.
#[derive(Debug, Clone)]
pub struct NewDeployment<'a> {
    pub team_id: Uuid,
    pub name: &'a str,
    pub model_id: Uuid,
    pub alias: Option<&'a str>,
    pub version_id: Option<Uuid>,
    pub batching: Value,
    pub allow_extra_features: bool,
    pub created_by: Option<Uuid>,
}

pub async fn create(
    db: &impl ConnectionTrait,
    new: NewDeployment<'_>,
) -> Result<Deployment, RepoError> {
    let id = Uuid::now_v7();
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO deployments (id, team_id, name, model_id, alias, version_id, batching, \
             created_by, allow_extra_features) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            id.into(),
            new.team_id.into(),
            new.name.into(),
            new.model_id.into(),
            new.alias.map(str::to_owned).into(),
            new.version_id.into(),
            new.batching.into(),
            new.created_by.into(),
            new.allow_extra_features.into(),
        ],
    ))
    .await
    .map_err(|e| RepoError::unique(e, "deployment", new.name))?;
    by_id(db, id).await?.ok_or(RepoError::NotFound { resource: "deployment" })
}

pub async fn by_id(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Deployment>, RepoError> {
    Ok(Deployment::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("{SELECT} WHERE d.id = $1"),
        [id.into()],
    ))
    .one(db)
    .await?)
}

/// A team's deployment by name.
pub async fn get(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    name: &str,
) -> Result<Option<Deployment>, RepoError> {
    Ok(Deployment::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("{SELECT} WHERE d.team_id = $1 AND d.name = $2"),
        [team_id.into(), name.into()],
    ))
    .one(db)
    .await?)
}

/// A team's deployments, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<Deployment>, RepoError> {
    let after = parse_cursor(cursor)?;
    let rows = Deployment::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "{SELECT} WHERE d.team_id = $1 AND ($2::uuid IS NULL OR d.id < $2) \
             ORDER BY d.id DESC LIMIT $3"
        ),
        [team_id.into(), after.into(), ((limit + 1) as i64).into()],
    ))
    .all(db)
    .await?;
    Ok(Page::from_rows(rows, limit, |d: &Deployment| d.id.to_string()))
}

/// Every deployment of every team: what serving must load.
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<Deployment>, RepoError> {
    Ok(Deployment::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        format!("{SELECT} WHERE d.state = 'active' ORDER BY d.id"),
    ))
    .all(db)
    .await?)
}

/// What a PATCH changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DeploymentChange {
    pub traffic: Option<Value>,
    pub batching: Option<Value>,
    pub allow_extra_features: Option<bool>,
}

/// Changes the traffic split, batching and/or the extra-features rule.
pub async fn update(
    db: &impl ConnectionTrait,
    id: Uuid,
    change: DeploymentChange,
) -> Result<Deployment, RepoError> {
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE deployments SET traffic = coalesce($2, traffic), batching = coalesce($3, batching), \
             allow_extra_features = coalesce($4, allow_extra_features), updated_at = now() \
         WHERE id = $1",
        [
            id.into(),
            change.traffic.into(),
            change.batching.into(),
            change.allow_extra_features.into(),
        ],
    ))
    .await?;
    by_id(db, id).await?.ok_or(RepoError::NotFound { resource: "deployment" })
}

/// Deletes a deployment and its samples; true when it existed.
pub async fn delete(db: &impl ConnectionTrait, id: Uuid) -> Result<bool, RepoError> {
    let done = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM deployments WHERE id = $1",
            [id.into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Where a model version's bundle is.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct VersionBundle {
    pub model_id: Uuid,
    pub version: i32,
    pub bundle_key: String,
    pub bundle_sha256: String,
}

/// The bundles of the given `(model_id, version)` pairs (missing ones are left out).
pub async fn bundles(
    db: &impl ConnectionTrait,
    wanted: &[(Uuid, i32)],
) -> Result<Vec<VersionBundle>, RepoError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let pairs: Vec<Value> =
        wanted.iter().map(|(m, v)| serde_json::json!({"m": m, "v": v})).collect();
    Ok(VersionBundle::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT mv.model_id, mv.version, mv.bundle_key, mv.bundle_sha256 FROM model_versions mv \
         JOIN jsonb_array_elements($1) w ON mv.model_id = (w->>'m')::uuid AND mv.version = (w->>'v')::int",
        [Value::Array(pairs).into()],
    ))
    .all(db)
    .await?)
}

/// One sampled prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub deployment_id: Uuid,
    pub version: i32,
    pub input: Value,
    pub output: Value,
}

/// Stores samples in one statement. Samples of a deployment deleted meanwhile are dropped.
pub async fn insert_samples(
    db: &impl ConnectionTrait,
    samples: &[Sample],
) -> Result<u64, RepoError> {
    if samples.is_empty() {
        return Ok(0);
    }
    let rows: Vec<Value> = samples
        .iter()
        .map(|s| {
            serde_json::json!({"d": s.deployment_id, "v": s.version, "i": s.input, "o": s.output})
        })
        .collect();
    let done = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO prediction_samples (deployment_id, version, input, output) \
             SELECT (e->>'d')::uuid, (e->>'v')::int, e->'i', e->'o' \
             FROM jsonb_array_elements($1) e JOIN deployments d ON d.id = (e->>'d')::uuid",
            [Value::Array(rows).into()],
        ))
        .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, FromQueryResult)]
struct InputRow {
    input: Value,
}

/// The inputs of a deployment's most recent samples (of one version, when given).
pub async fn recent_inputs(
    db: &impl ConnectionTrait,
    deployment_id: Uuid,
    version: Option<i32>,
    limit: u64,
) -> Result<Vec<Value>, RepoError> {
    let rows = InputRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT input FROM prediction_samples WHERE deployment_id = $1 \
             AND ($2::int IS NULL OR version = $2) ORDER BY id DESC LIMIT $3",
        [deployment_id.into(), version.into(), (limit as i64).into()],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.input).collect())
}

/// Keeps only the newest `keep` samples of each deployment; returns how many were deleted.
pub async fn prune_samples(db: &impl ConnectionTrait, keep: u64) -> Result<u64, RepoError> {
    let done = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM prediction_samples s USING ( \
                 SELECT d.id AS deployment_id, (SELECT id FROM prediction_samples p \
                     WHERE p.deployment_id = d.id ORDER BY id DESC OFFSET $1 LIMIT 1) AS cutoff \
                 FROM deployments d) c \
             WHERE s.deployment_id = c.deployment_id AND s.id <= c.cutoff",
            [(keep as i64).into()],
        ))
        .await?;
    Ok(done.rows_affected())
}

/// One stored prediction sample, as the web UI lists it.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct SampleRecord {
    pub ts: DateTime<Utc>,
    pub version: i32,
    pub input: Value,
    pub output: Value,
}

/// A deployment's newest samples, newest first.
pub async fn recent_samples(
    db: &impl ConnectionTrait,
    deployment_id: Uuid,
    limit: u64,
) -> Result<Vec<SampleRecord>, RepoError> {
    Ok(SampleRecord::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT ts, version, input, output FROM prediction_samples WHERE deployment_id = $1 \
         ORDER BY id DESC LIMIT $2",
        [deployment_id.into(), (limit as i64).into()],
    ))
    .all(db)
    .await?)
}
