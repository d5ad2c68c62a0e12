//! MLflow tracking on Kiln's runs: experiments, the MLflow side of a run (experiment,
//! lifecycle stage, the states Kiln's status cannot say, user, tags, inputs, model links),
//! params (in `runs.params`, immutable per key), metric history, and run / experiment
//! searches compiled from [`RunClause`] / [`ExpClause`] trees to SQL with bound
//! parameters (the grammar itself is parsed in kiln-api).
//!
//! A tracked MLflow run IS a Kiln run: the same `runs` row (MLflow's run id is its uuid as
//! 32 hex digits) and the same `metrics` series. A Kiln run that MLflow never touched (a
//! Kiln job, a run made through `/v1/runs`) reads as an active run of experiment 0.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::RepoError;

fn pool(db: &DatabaseConnection) -> &PgPool {
    db.get_postgres_connection_pool()
}

fn db_err(err: sqlx::Error) -> RepoError {
    RepoError::Db(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(err)))
}

fn unique_or_db(err: sqlx::Error, resource: &'static str, name: &str) -> RepoError {
    let unique = err.as_database_error().is_some_and(|e| e.is_unique_violation());
    if unique { RepoError::AlreadyExists { resource, name: name.to_owned() } } else { db_err(err) }
}

/// The run uuid an MLflow run id names: 32 hex digits (MLflow's form) or a dashed uuid.
pub fn parse_run_id(id: &str) -> Option<Uuid> {
    match id.len() {
        32 | 36 => Uuid::try_parse(id).ok(),
        _ => None,
    }
}

/// A run's MLflow id: its uuid as 32 lowercase hex digits.
pub fn mlflow_run_id(id: Uuid) -> String {
    id.simple().to_string()
}

/// The tag that is the run's name (never stored as a tag: it is `runs.name`).
pub const RUN_NAME_TAG: &str = "mlflow.runName";
/// Tags a Kiln job's run carries, derived from the job.
pub const JOB_ID_TAG: &str = "kiln.job_id";
pub const JOB_STATE_TAG: &str = "kiln.job_state";
pub const JOB_MODEL_TAG: &str = "kiln.model_type";

/// A Kiln run as MLflow sees it (`mlflow_run_view`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RunInfo {
    pub run_uuid: Uuid,
    /// The 32-hex MLflow id.
    pub run_id: String,
    pub team_id: Uuid,
    pub job_id: Option<Uuid>,
    pub run_name: String,
    pub params: Value,
    pub experiment_id: i64,
    pub lifecycle_stage: String,
    /// RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.
    pub status: String,
    /// Milliseconds since the epoch.
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub user_id: String,
    /// `mlflow-artifacts:/{experiment_id}/{run_id}/artifacts`.
    pub artifact_uri: String,
    pub job_state: Option<String>,
    pub job_model_type: Option<String>,
}

impl RunInfo {
    /// The run's params as MLflow's strings (a Kiln job's numbers printed as JSON).
    pub fn param_strings(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = match &self.params {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), param_string(v))).collect(),
            _ => Vec::new(),
        };
        out.sort();
        out
    }

    /// The tags derived from the run itself: its name, and a Kiln job's id, state and model.
    pub fn derived_tags(&self) -> Vec<(String, String)> {
        let mut tags = vec![(RUN_NAME_TAG.to_owned(), self.run_name.clone())];
        if let Some(job) = self.job_id {
            tags.push((JOB_ID_TAG.to_owned(), job.to_string()));
            if let Some(state) = &self.job_state {
                tags.push((JOB_STATE_TAG.to_owned(), state.clone()));
            }
            if let Some(model) = &self.job_model_type {
                tags.push((JOB_MODEL_TAG.to_owned(), model.clone()));
            }
        }
        tags
    }
}

/// A JSON param value as the string MLflow shows.
pub fn param_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const RUN_COLS: &str = "v.run_uuid, v.run_id, v.team_id, v.job_id, v.run_name, v.params, \
    v.experiment_id, v.lifecycle_stage, v.status, v.start_time, v.end_time, v.user_id, \
    v.artifact_uri, v.job_state, v.job_model_type";

/// A run of `team_id` by its MLflow run id (32 hex digits, or dashed), or `None` (also
/// when it is another team's, or the id is not a run id at all).
pub async fn run_by_mlflow_id(
    db: &DatabaseConnection,
    team_id: Uuid,
    run_id: &str,
) -> Result<Option<RunInfo>, RepoError> {
    match parse_run_id(run_id) {
        Some(id) => run_info(db, team_id, id).await,
        None => Ok(None),
    }
}

/// A run of `team_id` by its uuid, or `None`.
pub async fn run_info(
    db: &DatabaseConnection,
    team_id: Uuid,
    id: Uuid,
) -> Result<Option<RunInfo>, RepoError> {
    sqlx::query_as::<_, RunInfo>(&format!(
        "SELECT {RUN_COLS} FROM mlflow_run_view v WHERE v.run_uuid = $1 AND v.team_id = $2"
    ))
    .bind(id)
    .bind(team_id)
    .fetch_optional(pool(db))
    .await
    .map_err(db_err)
}

/// A metric's latest point (MLflow's `data.metrics`: the highest step, then the latest).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub step: i64,
}

/// A dataset a run used, as log-inputs sent it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetInput {
    pub dataset: Value,
    pub tags: Value,
}

/// A run with everything `runs/get` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullRun {
    pub info: RunInfo,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub metrics: Vec<MetricPoint>,
    pub inputs: Vec<DatasetInput>,
    pub model_inputs: Vec<String>,
    pub model_outputs: Vec<(String, i64)>,
}

/// A run's logged-model links: the models it took in, and those it put out (with a step).
type ModelLinks = (Vec<String>, Vec<(String, i64)>);

/// Loads params, tags, latest metrics and inputs of `infos`, in their order.
pub async fn load_runs(
    db: &DatabaseConnection,
    infos: Vec<RunInfo>,
) -> Result<Vec<FullRun>, RepoError> {
    if infos.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = infos.iter().map(|i| i.run_uuid).collect();
    let mut tags: HashMap<Uuid, Vec<(String, String)>> = HashMap::new();
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT run_id, key, value FROM mlflow_run_tags WHERE run_id = ANY($1) ORDER BY key",
    )
    .bind(&ids)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    for (id, k, v) in rows {
        tags.entry(id).or_default().push((k, v));
    }
    let mut metrics: HashMap<Uuid, Vec<MetricPoint>> = HashMap::new();
    let rows: Vec<(Uuid, String, f64, i64, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (run_id, name) run_id, name, value, step, \
             (extract(epoch FROM ts) * 1000)::bigint \
         FROM metrics WHERE run_id = ANY($1) ORDER BY run_id, name, step DESC, ts DESC",
    )
    .bind(&ids)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    for (id, key, value, step, timestamp) in rows {
        metrics.entry(id).or_default().push(MetricPoint { key, value, timestamp, step });
    }
    let mut inputs: HashMap<Uuid, Vec<DatasetInput>> = HashMap::new();
    let rows: Vec<(Uuid, Value, Value)> = sqlx::query_as(
        "SELECT run_id, dataset, tags FROM mlflow_run_inputs WHERE run_id = ANY($1) \
         ORDER BY created_at, name, digest, context",
    )
    .bind(&ids)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    for (id, dataset, t) in rows {
        inputs.entry(id).or_default().push(DatasetInput { dataset, tags: t });
    }
    let mut models: HashMap<Uuid, ModelLinks> = HashMap::new();
    let rows: Vec<(Uuid, String, String, i64)> = sqlx::query_as(
        "SELECT run_id, direction, model_id, step FROM mlflow_run_models WHERE run_id = ANY($1) \
         ORDER BY model_id",
    )
    .bind(&ids)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    for (id, direction, model, step) in rows {
        let entry = models.entry(id).or_default();
        if direction == "input" {
            entry.0.push(model);
        } else {
            entry.1.push((model, step));
        }
    }
    Ok(infos
        .into_iter()
        .map(|info| {
            let id = info.run_uuid;
            let mut all_tags = info.derived_tags();
            all_tags.extend(tags.remove(&id).unwrap_or_default());
            let (model_inputs, model_outputs) = models.remove(&id).unwrap_or_default();
            FullRun {
                params: info.param_strings(),
                tags: all_tags,
                metrics: metrics.remove(&id).unwrap_or_default(),
                inputs: inputs.remove(&id).unwrap_or_default(),
                model_inputs,
                model_outputs,
                info,
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Experiments
// ---------------------------------------------------------------------------------------

/// An experiment with its tags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub id: i64,
    pub name: String,
    pub lifecycle_stage: String,
    /// Milliseconds since the epoch.
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: Vec<(String, String)>,
}

#[derive(sqlx::FromRow)]
struct ExperimentRow {
    id: i64,
    name: String,
    lifecycle_stage: String,
    creation_time: i64,
    last_update_time: i64,
}

const EXP_COLS: &str = "e.id, e.name, e.lifecycle_stage, \
    (extract(epoch FROM e.created_at) * 1000)::bigint AS creation_time, \
    (extract(epoch FROM e.updated_at) * 1000)::bigint AS last_update_time";

async fn with_tags(
    db: &DatabaseConnection,
    team_id: Uuid,
    rows: Vec<ExperimentRow>,
) -> Result<Vec<Experiment>, RepoError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let tag_rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT experiment_id, key, value FROM mlflow_experiment_tags \
         WHERE team_id = $1 AND experiment_id = ANY($2) ORDER BY key",
    )
    .bind(team_id)
    .bind(&ids)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    let mut tags: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    for (id, k, v) in tag_rows {
        tags.entry(id).or_default().push((k, v));
    }
    Ok(rows
        .into_iter()
        .map(|r| Experiment {
            tags: tags.remove(&r.id).unwrap_or_default(),
            id: r.id,
            name: r.name,
            lifecycle_stage: r.lifecycle_stage,
            creation_time: r.creation_time,
            last_update_time: r.last_update_time,
        })
        .collect())
}

/// Creates an experiment; `AlreadyExists` when the team has one of that name.
pub async fn create_experiment(
    db: &DatabaseConnection,
    team_id: Uuid,
    name: &str,
    tags: &[(String, String)],
) -> Result<i64, RepoError> {
    let mut txn = pool(db).begin().await.map_err(db_err)?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO mlflow_experiments (team_id, id, name) \
         VALUES ($1, nextval('mlflow_experiment_ids'), $2) RETURNING id",
    )
    .bind(team_id)
    .bind(name)
    .fetch_one(&mut *txn)
    .await
    .map_err(|e| unique_or_db(e, "experiment", name))?;
    let (keys, values): (Vec<&str>, Vec<&str>) =
        dedup_last(tags).into_iter().map(|(k, v)| (k.as_str(), v.as_str())).unzip();
    sqlx::query(
        "INSERT INTO mlflow_experiment_tags (team_id, experiment_id, key, value) \
         SELECT $1, $2, k, v FROM unnest($3::text[], $4::text[]) AS t(k, v)",
    )
    .bind(team_id)
    .bind(id)
    .bind(&keys)
    .bind(&values)
    .execute(&mut *txn)
    .await
    .map_err(db_err)?;
    txn.commit().await.map_err(db_err)?;
    Ok(id)
}

/// The last value of each key, in first-seen order.
fn dedup_last(pairs: &[(String, String)]) -> Vec<&(String, String)> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (k, _)) in pairs.iter().enumerate() {
        last.insert(k.as_str(), i);
    }
    pairs.iter().enumerate().filter(|(i, (k, _))| last[k.as_str()] == *i).map(|(_, p)| p).collect()
}

/// An experiment of the team, or `None`.
pub async fn get_experiment(
    db: &DatabaseConnection,
    team_id: Uuid,
    id: i64,
) -> Result<Option<Experiment>, RepoError> {
    let rows: Vec<ExperimentRow> = sqlx::query_as(&format!(
        "SELECT {EXP_COLS} FROM mlflow_experiments e WHERE e.team_id = $1 AND e.id = $2"
    ))
    .bind(team_id)
    .bind(id)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    Ok(with_tags(db, team_id, rows).await?.pop())
}

/// An experiment of the team by name, or `None`.
pub async fn get_experiment_by_name(
    db: &DatabaseConnection,
    team_id: Uuid,
    name: &str,
) -> Result<Option<Experiment>, RepoError> {
    let rows: Vec<ExperimentRow> = sqlx::query_as(&format!(
        "SELECT {EXP_COLS} FROM mlflow_experiments e WHERE e.team_id = $1 AND e.name = $2"
    ))
    .bind(team_id)
    .bind(name)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    Ok(with_tags(db, team_id, rows).await?.pop())
}

/// Renames an experiment; false when the team has no such experiment.
pub async fn rename_experiment(
    db: &DatabaseConnection,
    team_id: Uuid,
    id: i64,
    name: &str,
) -> Result<bool, RepoError> {
    let done = sqlx::query(
        "UPDATE mlflow_experiments SET name = $3, updated_at = now() WHERE team_id = $1 AND id = $2",
    )
    .bind(team_id)
    .bind(id)
    .bind(name)
    .execute(pool(db))
    .await
    .map_err(|e| unique_or_db(e, "experiment", name))?;
    Ok(done.rows_affected() == 1)
}

/// Deletes (`deleted`) or restores (`active`) an experiment and the runs in it; false when
/// the team has no such experiment.
pub async fn set_experiment_lifecycle(
    db: &DatabaseConnection,
    team_id: Uuid,
    id: i64,
    stage: &str,
) -> Result<bool, RepoError> {
    let mut txn = pool(db).begin().await.map_err(db_err)?;
    let done = sqlx::query(
        "UPDATE mlflow_experiments SET lifecycle_stage = $3, updated_at = now() \
         WHERE team_id = $1 AND id = $2",
    )
    .bind(team_id)
    .bind(id)
    .bind(stage)
    .execute(&mut *txn)
    .await
    .map_err(db_err)?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE mlflow_runs SET lifecycle_stage = $3 WHERE team_id = $1 AND experiment_id = $2",
    )
    .bind(team_id)
    .bind(id)
    .bind(stage)
    .execute(&mut *txn)
    .await
    .map_err(db_err)?;
    txn.commit().await.map_err(db_err)?;
    Ok(true)
}

/// Sets (or with `None`, deletes) an experiment tag; false when the team has no such
/// experiment (or, deleting, no such tag).
pub async fn set_experiment_tag(
    db: &DatabaseConnection,
    team_id: Uuid,
    id: i64,
    key: &str,
    value: Option<&str>,
) -> Result<bool, RepoError> {
    let done = match value {
        Some(value) => sqlx::query(
            "WITH e AS (UPDATE mlflow_experiments SET updated_at = now() \
                 WHERE team_id = $1 AND id = $2 RETURNING team_id, id) \
             INSERT INTO mlflow_experiment_tags (team_id, experiment_id, key, value) \
             SELECT team_id, id, $3, $4 FROM e \
             ON CONFLICT (team_id, experiment_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(team_id)
        .bind(id)
        .bind(key)
        .bind(value)
        .execute(pool(db))
        .await
        .map_err(db_err)?,
        None => sqlx::query(
            "DELETE FROM mlflow_experiment_tags WHERE team_id = $1 AND experiment_id = $2 AND key = $3",
        )
        .bind(team_id)
        .bind(id)
        .bind(key)
        .execute(pool(db))
        .await
        .map_err(db_err)?,
    };
    Ok(done.rows_affected() == 1)
}

/// What an experiment search filters and sorts on.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpKey {
    Name,
    ExperimentId,
    CreationTime,
    LastUpdateTime,
    Tag(String),
}

/// One `key op value` of an experiment search.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpClause {
    pub key: ExpKey,
    pub cmp: Cmp,
    pub value: Operand,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpOrder {
    pub key: ExpKey,
    pub ascending: bool,
}

/// A comparison of the filter grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Cmp {
    fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Like => "LIKE",
            Cmp::ILike => "ILIKE",
            Cmp::In | Cmp::NotIn | Cmp::IsNull | Cmp::IsNotNull => "=",
        }
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Text(String),
    Number(f64),
    List(Vec<String>),
    /// `IS NULL` / `IS NOT NULL`.
    Nothing,
}

enum Bind {
    Text(String),
    F64(f64),
    I64(i64),
    Uuid(Uuid),
    TextArr(Vec<String>),
    I64Arr(Vec<i64>),
}

#[derive(Default)]
struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// `expr op value` for a comparison whose operand the grammar already checked; a
    /// combination the grammar never produces matches nothing.
    fn compare(&mut self, expr: &str, cmp: Cmp, value: &Operand) -> String {
        match (cmp, value) {
            (Cmp::IsNull, _) => format!("{expr} IS NULL"),
            (Cmp::IsNotNull, _) => format!("{expr} IS NOT NULL"),
            (Cmp::In, Operand::List(items)) => {
                let p = self.bind(Bind::TextArr(items.clone()));
                format!("{expr} = ANY({p}::text[])")
            }
            (Cmp::NotIn, Operand::List(items)) => {
                let p = self.bind(Bind::TextArr(items.clone()));
                format!("NOT ({expr} = ANY({p}::text[]))")
            }
            (Cmp::In | Cmp::NotIn, _) | (_, Operand::List(_) | Operand::Nothing) => {
                "FALSE".to_owned()
            }
            (cmp, Operand::Text(s)) => {
                let p = self.bind(Bind::Text(s.clone()));
                format!("{expr} {} {p}::text", cmp.sql())
            }
            (cmp, Operand::Number(n)) => {
                let p = self.bind(Bind::F64(*n));
                format!("{expr} {} {p}::float8", cmp.sql())
            }
        }
    }

    fn query_as<'q, T>(
        &'q self,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let mut q = sqlx::query_as::<_, T>(&self.text);
        for b in &self.binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::F64(f) => q.bind(f),
                Bind::I64(i) => q.bind(i),
                Bind::Uuid(u) => q.bind(u),
                Bind::TextArr(a) => q.bind(a),
                Bind::I64Arr(a) => q.bind(a),
            };
        }
        q
    }
}

fn exp_expr(sql: &mut Sql, key: &ExpKey) -> String {
    match key {
        ExpKey::Name => "e.name".to_owned(),
        ExpKey::ExperimentId => "e.id".to_owned(),
        ExpKey::CreationTime => "(extract(epoch FROM e.created_at) * 1000)::bigint".to_owned(),
        ExpKey::LastUpdateTime => "(extract(epoch FROM e.updated_at) * 1000)::bigint".to_owned(),
        ExpKey::Tag(k) => {
            let p = sql.bind(Bind::Text(k.clone()));
            format!(
                "(SELECT t.value FROM mlflow_experiment_tags t WHERE t.team_id = e.team_id \
                 AND t.experiment_id = e.id AND t.key = {p}::text)"
            )
        }
    }
}

/// An experiment search: the team's experiments in `stages` matching every clause, sorted
/// by `order` (then by id), `limit` from `offset`.
pub async fn search_experiments(
    db: &DatabaseConnection,
    team_id: Uuid,
    stages: &[&str],
    clauses: &[ExpClause],
    order: &[ExpOrder],
    offset: i64,
    limit: i64,
) -> Result<Vec<Experiment>, RepoError> {
    let mut sql = Sql::default();
    let team = sql.bind(Bind::Uuid(team_id));
    let st = sql.bind(Bind::TextArr(stages.iter().map(|s| (*s).to_owned()).collect()));
    let mut text = format!(
        "SELECT {EXP_COLS} FROM mlflow_experiments e WHERE e.team_id = {team} AND e.lifecycle_stage = ANY({st}::text[])"
    );
    for c in clauses {
        let expr = exp_expr(&mut sql, &c.key);
        let cond = sql.compare(&expr, c.cmp, &c.value);
        text.push_str(" AND ");
        text.push_str(&cond);
    }
    let mut orders = Vec::new();
    for o in order {
        let expr = exp_expr(&mut sql, &o.key);
        orders.push(format!("{expr} {} NULLS LAST", if o.ascending { "ASC" } else { "DESC" }));
    }
    if orders.is_empty() {
        orders.push("e.created_at DESC".to_owned());
    }
    orders.push("e.id ASC".to_owned());
    let lim = sql.bind(Bind::I64(limit));
    let off = sql.bind(Bind::I64(offset));
    text.push_str(&format!(" ORDER BY {} LIMIT {lim} OFFSET {off}", orders.join(", ")));
    sql.text = text;
    let rows: Vec<ExperimentRow> = sql.query_as().fetch_all(pool(db)).await.map_err(db_err)?;
    with_tags(db, team_id, rows).await
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

/// A run MLflow's `runs/create` makes.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub team_id: Uuid,
    pub experiment_id: i64,
    pub name: &'a str,
    pub start_time: DateTime<Utc>,
    pub user_id: &'a str,
    /// Tags other than `mlflow.runName` (that one is the name).
    pub tags: &'a [(String, String)],
    pub created_by: Option<Uuid>,
}

/// What `create_run` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreatedRun {
    Created(Uuid),
    NoExperiment,
    ExperimentDeleted,
}

/// Makes the Kiln run (status `running`) and its MLflow side in one transaction.
pub async fn create_run(db: &DatabaseConnection, new: NewRun<'_>) -> Result<CreatedRun, RepoError> {
    let mut txn = pool(db).begin().await.map_err(db_err)?;
    let stage: Option<(String,)> = sqlx::query_as(
        "SELECT lifecycle_stage FROM mlflow_experiments WHERE team_id = $1 AND id = $2 FOR SHARE",
    )
    .bind(new.team_id)
    .bind(new.experiment_id)
    .fetch_optional(&mut *txn)
    .await
    .map_err(db_err)?;
    match stage.as_ref().map(|s| s.0.as_str()) {
        None => return Ok(CreatedRun::NoExperiment),
        Some("active") => {}
        Some(_) => return Ok(CreatedRun::ExperimentDeleted),
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO runs (id, team_id, job_id, name, params, status, created_by, created_at) \
         VALUES ($1, $2, NULL, $3, '{}'::jsonb, 'running', $4, $5)",
    )
    .bind(id)
    .bind(new.team_id)
    .bind(new.name)
    .bind(new.created_by)
    .bind(new.start_time)
    .execute(&mut *txn)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO mlflow_runs (run_id, team_id, experiment_id, user_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(new.team_id)
    .bind(new.experiment_id)
    .bind(new.user_id)
    .execute(&mut *txn)
    .await
    .map_err(db_err)?;
    upsert_tags(&mut txn, id, new.tags).await?;
    txn.commit().await.map_err(db_err)?;
    Ok(CreatedRun::Created(id))
}

async fn upsert_tags(
    conn: &mut sqlx::PgConnection,
    run: Uuid,
    tags: &[(String, String)],
) -> Result<(), RepoError> {
    if tags.is_empty() {
        return Ok(());
    }
    let (keys, values): (Vec<&str>, Vec<&str>) =
        dedup_last(tags).into_iter().map(|(k, v)| (k.as_str(), v.as_str())).unzip();
    sqlx::query(
        "INSERT INTO mlflow_run_tags (run_id, key, value) \
         SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v) \
         ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(run)
    .bind(&keys)
    .bind(&values)
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Sets tags (overwriting); `mlflow.runName` renames the run instead.
pub async fn set_tags(
    db: &DatabaseConnection,
    run: Uuid,
    tags: &[(String, String)],
) -> Result<(), RepoError> {
    let mut conn = pool(db).acquire().await.map_err(db_err)?;
    let (names, others): (Vec<_>, Vec<_>) =
        tags.iter().cloned().partition(|(k, _)| k == RUN_NAME_TAG);
    if let Some((_, name)) = names.last() {
        sqlx::query("UPDATE runs SET name = $2 WHERE id = $1")
            .bind(run)
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    upsert_tags(&mut conn, run, &others).await
}

/// Deletes a tag; false when the run has no such tag.
pub async fn delete_tag(db: &DatabaseConnection, run: Uuid, key: &str) -> Result<bool, RepoError> {
    let done = sqlx::query("DELETE FROM mlflow_run_tags WHERE run_id = $1 AND key = $2")
        .bind(run)
        .bind(key)
        .execute(pool(db))
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
}

/// A param that is already logged with another value.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamConflict {
    pub key: String,
    pub old: String,
    pub new: String,
}

/// Adds params to the run's `params`. A key already there keeps its value: the same value
/// again is fine, another one is a [`ParamConflict`] and nothing is written.
pub async fn log_params(
    db: &DatabaseConnection,
    run: Uuid,
    params: &[(String, String)],
) -> Result<Result<(), ParamConflict>, RepoError> {
    if params.is_empty() {
        return Ok(Ok(()));
    }
    let object: serde_json::Map<String, Value> =
        params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let object = Value::Object(object);
    for _ in 0..3 {
        // `new || old`: a key already there keeps its value (a job's number stays one).
        let done = sqlx::query(
            "UPDATE runs r SET params = $2::jsonb || r.params WHERE r.id = $1 AND NOT EXISTS ( \
                 SELECT 1 FROM jsonb_each($2::jsonb) n \
                 WHERE jsonb_exists(r.params, n.key) AND (r.params ->> n.key) <> (n.value #>> '{}'))",
        )
        .bind(run)
        .bind(&object)
        .execute(pool(db))
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let conflict: Option<(String, String, String)> = sqlx::query_as(
            "SELECT n.key, r.params ->> n.key, n.value #>> '{}' FROM runs r, jsonb_each($2::jsonb) n \
             WHERE r.id = $1 AND jsonb_exists(r.params, n.key) \
               AND (r.params ->> n.key) <> (n.value #>> '{}') ORDER BY n.key LIMIT 1",
        )
        .bind(run)
        .bind(&object)
        .fetch_optional(pool(db))
        .await
        .map_err(db_err)?;
        if let Some((key, old, new)) = conflict {
            return Ok(Err(ParamConflict { key, old, new }));
        }
        // The run is gone, or a concurrent write raced us: look again.
    }
    Err(RepoError::NotFound { resource: "run" })
}

/// MLflow's `runs/update`: status (MLflow's), end time and name, each when given.
pub async fn update_run(
    db: &DatabaseConnection,
    run: &RunInfo,
    status: Option<&str>,
    end_time: Option<DateTime<Utc>>,
    name: Option<&str>,
) -> Result<(), RepoError> {
    let mut txn = pool(db).begin().await.map_err(db_err)?;
    if let Some(name) = name {
        sqlx::query("UPDATE runs SET name = $2 WHERE id = $1")
            .bind(run.run_uuid)
            .bind(name)
            .execute(&mut *txn)
            .await
            .map_err(db_err)?;
    }
    if let Some(status) = status {
        let (native, extra, terminal) = match status {
            "FINISHED" => ("succeeded", None, true),
            "FAILED" => ("failed", None, true),
            "KILLED" => ("failed", Some("KILLED"), true),
            "SCHEDULED" => ("running", Some("SCHEDULED"), false),
            _ => ("running", None, false),
        };
        sqlx::query(
            "UPDATE runs SET status = $2, finished_at = CASE WHEN $3 THEN coalesce($4, finished_at, now()) \
                 ELSE $4 END WHERE id = $1",
        )
        .bind(run.run_uuid)
        .bind(native)
        .bind(terminal)
        .bind(end_time)
        .execute(&mut *txn)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO mlflow_runs (run_id, team_id, experiment_id, status) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run_id) DO UPDATE SET status = excluded.status",
        )
        .bind(run.run_uuid)
        .bind(run.team_id)
        .bind(run.experiment_id)
        .bind(extra)
        .execute(&mut *txn)
        .await
        .map_err(db_err)?;
    } else if let Some(end) = end_time {
        sqlx::query("UPDATE runs SET finished_at = $2 WHERE id = $1")
            .bind(run.run_uuid)
            .bind(end)
            .execute(&mut *txn)
            .await
            .map_err(db_err)?;
    }
    txn.commit().await.map_err(db_err)?;
    Ok(())
}

/// Deletes (`deleted`) or restores (`active`) a run, MLflow's soft delete.
pub async fn set_run_lifecycle(
    db: &DatabaseConnection,
    run: &RunInfo,
    stage: &str,
) -> Result<(), RepoError> {
    sqlx::query(
        "INSERT INTO mlflow_runs (run_id, team_id, experiment_id, lifecycle_stage) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (run_id) DO UPDATE SET lifecycle_stage = excluded.lifecycle_stage",
    )
    .bind(run.run_uuid)
    .bind(run.team_id)
    .bind(run.experiment_id)
    .bind(stage)
    .execute(pool(db))
    .await
    .map_err(db_err)?;
    Ok(())
}

/// A dataset input to store: its key and the bodies `runs/get` answers.
#[derive(Debug, Clone)]
pub struct NewInput {
    pub name: String,
    pub digest: String,
    pub context: String,
    pub dataset: Value,
    pub tags: Value,
}

/// Stores dataset inputs (a dataset logged again with the same context is kept once) and
/// logged-model links.
pub async fn log_inputs(
    db: &DatabaseConnection,
    run: Uuid,
    datasets: &[NewInput],
    models: &[(&str, String, i64)],
) -> Result<(), RepoError> {
    let mut txn = pool(db).begin().await.map_err(db_err)?;
    for d in datasets {
        sqlx::query(
            "INSERT INTO mlflow_run_inputs (run_id, name, digest, context, dataset, tags) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, name, digest, context) \
             DO UPDATE SET dataset = excluded.dataset, tags = excluded.tags",
        )
        .bind(run)
        .bind(&d.name)
        .bind(&d.digest)
        .bind(&d.context)
        .bind(&d.dataset)
        .bind(&d.tags)
        .execute(&mut *txn)
        .await
        .map_err(db_err)?;
    }
    for (direction, model, step) in models {
        sqlx::query(
            "INSERT INTO mlflow_run_models (run_id, direction, model_id, step) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run_id, direction, model_id) DO UPDATE SET step = excluded.step",
        )
        .bind(run)
        .bind(direction)
        .bind(model)
        .bind(step)
        .execute(&mut *txn)
        .await
        .map_err(db_err)?;
    }
    txn.commit().await.map_err(db_err)?;
    Ok(())
}

/// Points of one metric of a run in step order (then time), `limit` from `offset`.
pub async fn metric_history(
    db: &DatabaseConnection,
    run: Uuid,
    key: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<MetricPoint>, RepoError> {
    let rows: Vec<(f64, i64, i64)> = sqlx::query_as(
        "SELECT value, step, (extract(epoch FROM ts) * 1000)::bigint FROM metrics \
         WHERE run_id = $1 AND name = $2 ORDER BY step, ts LIMIT $3 OFFSET $4",
    )
    .bind(run)
    .bind(key)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(|(value, step, timestamp)| MetricPoint { key: key.to_owned(), value, timestamp, step })
        .collect())
}

/// Every point of one metric of the runs, within `[start, end]` steps when given, by run
/// then step.
pub async fn metric_points(
    db: &DatabaseConnection,
    runs: &[Uuid],
    key: &str,
    steps: Option<(i64, i64)>,
) -> Result<Vec<(Uuid, MetricPoint)>, RepoError> {
    let (start, end) = steps.unwrap_or((i64::MIN, i64::MAX));
    let rows: Vec<(Uuid, f64, i64, i64)> = sqlx::query_as(
        "SELECT run_id, value, step, (extract(epoch FROM ts) * 1000)::bigint FROM metrics \
         WHERE run_id = ANY($1) AND name = $2 AND step BETWEEN $3 AND $4 ORDER BY run_id, step, ts",
    )
    .bind(runs)
    .bind(key)
    .bind(start)
    .bind(end)
    .fetch_all(pool(db))
    .await
    .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(|(run, value, step, timestamp)| {
            (run, MetricPoint { key: key.to_owned(), value, timestamp, step })
        })
        .collect())
}

/// What a run search filters and sorts on.
#[derive(Debug, Clone, PartialEq)]
pub enum RunKey {
    Metric(String),
    Param(String),
    Tag(String),
    RunId,
    RunName,
    Status,
    UserId,
    ArtifactUri,
    LifecycleStage,
    StartTime,
    EndTime,
    DatasetName,
    DatasetDigest,
    DatasetContext,
}

/// One `key op value` of a run search.
#[derive(Debug, Clone, PartialEq)]
pub struct RunClause {
    pub key: RunKey,
    pub cmp: Cmp,
    pub value: Operand,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunOrder {
    pub key: RunKey,
    pub ascending: bool,
}

/// A run search.
#[derive(Debug, Clone)]
pub struct RunSearch<'a> {
    pub team_id: Uuid,
    pub experiment_ids: &'a [i64],
    pub stages: &'a [&'a str],
    pub clauses: &'a [RunClause],
    pub order: &'a [RunOrder],
    pub offset: i64,
    pub limit: i64,
}

fn run_expr(sql: &mut Sql, key: &RunKey) -> String {
    match key {
        RunKey::Metric(k) => {
            let p = sql.bind(Bind::Text(k.clone()));
            format!(
                "(SELECT mt.value FROM metrics mt WHERE mt.run_id = v.run_uuid AND mt.name = {p}::text \
                 ORDER BY mt.step DESC, mt.ts DESC LIMIT 1)"
            )
        }
        RunKey::Param(k) => {
            let p = sql.bind(Bind::Text(k.clone()));
            format!("(v.params ->> {p}::text)")
        }
        RunKey::Tag(k) if k == RUN_NAME_TAG => "v.run_name".to_owned(),
        RunKey::Tag(k) if k == JOB_ID_TAG => "(v.job_id::text)".to_owned(),
        RunKey::Tag(k) if k == JOB_STATE_TAG => "v.job_state".to_owned(),
        RunKey::Tag(k) if k == JOB_MODEL_TAG => "v.job_model_type".to_owned(),
        RunKey::Tag(k) => {
            let p = sql.bind(Bind::Text(k.clone()));
            format!(
                "(SELECT t.value FROM mlflow_run_tags t WHERE t.run_id = v.run_uuid AND t.key = {p}::text)"
            )
        }
        RunKey::RunId => "v.run_id".to_owned(),
        RunKey::RunName => "v.run_name".to_owned(),
        RunKey::Status => "v.status".to_owned(),
        RunKey::UserId => "v.user_id".to_owned(),
        RunKey::ArtifactUri => "v.artifact_uri".to_owned(),
        RunKey::LifecycleStage => "v.lifecycle_stage".to_owned(),
        RunKey::StartTime => "v.start_time".to_owned(),
        RunKey::EndTime => "v.end_time".to_owned(),
        RunKey::DatasetName => "i.name".to_owned(),
        RunKey::DatasetDigest => "i.digest".to_owned(),
        RunKey::DatasetContext => "i.context".to_owned(),
    }
}

/// The runs a search finds, each with its params, tags and latest metrics.
pub async fn search_runs(
    db: &DatabaseConnection,
    search: RunSearch<'_>,
) -> Result<Vec<FullRun>, RepoError> {
    let mut sql = Sql::default();
    let team = sql.bind(Bind::Uuid(search.team_id));
    let exps = sql.bind(Bind::I64Arr(search.experiment_ids.to_vec()));
    let st = sql.bind(Bind::TextArr(search.stages.iter().map(|s| (*s).to_owned()).collect()));
    let mut text = format!(
        "SELECT {RUN_COLS} FROM mlflow_run_view v WHERE v.team_id = {team} \
         AND v.experiment_id = ANY({exps}::bigint[]) AND v.lifecycle_stage = ANY({st}::text[])"
    );
    for c in search.clauses {
        let value = match (&c.key, &c.value) {
            // Run ids compare in MLflow's form whichever form the filter wrote.
            (RunKey::RunId, Operand::Text(s)) => Operand::Text(s.replace('-', "").to_lowercase()),
            (RunKey::RunId, Operand::List(items)) => {
                Operand::List(items.iter().map(|s| s.replace('-', "").to_lowercase()).collect())
            }
            (_, other) => other.clone(),
        };
        let expr = run_expr(&mut sql, &c.key);
        let cond = sql.compare(&expr, c.cmp, &value);
        let cond = match c.key {
            RunKey::DatasetName | RunKey::DatasetDigest | RunKey::DatasetContext => format!(
                "EXISTS (SELECT 1 FROM mlflow_run_inputs i WHERE i.run_id = v.run_uuid AND {cond})"
            ),
            _ => cond,
        };
        text.push_str(" AND ");
        text.push_str(&cond);
    }
    let mut orders = Vec::new();
    for o in search.order {
        let expr = match o.key {
            RunKey::DatasetName | RunKey::DatasetDigest | RunKey::DatasetContext => continue,
            _ => run_expr(&mut sql, &o.key),
        };
        orders.push(format!("{expr} {} NULLS LAST", if o.ascending { "ASC" } else { "DESC" }));
    }
    orders.push("v.start_time DESC".to_owned());
    orders.push("v.run_uuid ASC".to_owned());
    let lim = sql.bind(Bind::I64(search.limit));
    let off = sql.bind(Bind::I64(search.offset));
    text.push_str(&format!(" ORDER BY {} LIMIT {lim} OFFSET {off}", orders.join(", ")));
    sql.text = text;
    let infos: Vec<RunInfo> = sql.query_as().fetch_all(pool(db)).await.map_err(db_err)?;
    load_runs(db, infos).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_read_in_both_forms() {
        let id = Uuid::now_v7();
        assert_eq!(parse_run_id(&mlflow_run_id(id)), Some(id));
        assert_eq!(parse_run_id(&id.to_string()), Some(id));
        assert_eq!(mlflow_run_id(id).len(), 32);
        assert_eq!(parse_run_id("0"), None);
        assert_eq!(parse_run_id("{00000000-0000-0000-0000-000000000000}"), None);
    }

    #[test]
    fn values_are_bound_never_interpolated() {
        let mut sql = Sql::default();
        let cond =
            sql.compare("v.run_name", Cmp::Eq, &Operand::Text("x'; DROP TABLE runs; --".into()));
        assert_eq!(cond, "v.run_name = $1::text");
        let cond = sql.compare("v.run_id", Cmp::NotIn, &Operand::List(vec!["a".into()]));
        assert_eq!(cond, "NOT (v.run_id = ANY($2::text[]))");
        assert_eq!(sql.compare("x", Cmp::In, &Operand::Text("a".into())), "FALSE");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let pairs = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ];
        let kept: Vec<_> = dedup_last(&pairs).into_iter().cloned().collect();
        assert_eq!(kept, vec![("b".to_owned(), "2".to_owned()), ("a".to_owned(), "3".to_owned())]);
    }
}
