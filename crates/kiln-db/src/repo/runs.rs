//! Tracked runs and their metric series. A Kiln job is a run too (same id), so one
//! metrics view serves training inside and outside Kiln.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::{Deletion, Page, RepoError, parse_cursor};
use crate::entity::runs;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: Uuid,
    pub team_id: Uuid,
    pub job_id: Option<Uuid>,
    pub name: String,
    pub params: Value,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<runs::Model> for Run {
    fn from(m: runs::Model) -> Self {
        Run {
            id: m.id,
            team_id: m.team_id,
            job_id: m.job_id,
            name: m.name,
            params: m.params,
            status: m.status,
            created_at: m.created_at,
            finished_at: m.finished_at,
        }
    }
}

/// A metric point as ingested. `ts` defaults to the database's `now()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub step: i64,
    pub value: f64,
    pub ts: Option<DateTime<Utc>>,
}

/// Series by name, each a list of `[step, value]` in step order: ready to plot.
pub type Series = BTreeMap<String, Vec<(i64, f64)>>;

/// Creates a run. `id` is the job's id for a Kiln job, a new v7 id otherwise.
pub async fn create(
    db: &impl ConnectionTrait,
    id: Uuid,
    team_id: Uuid,
    job_id: Option<Uuid>,
    name: &str,
    params: Value,
    created_by: Option<Uuid>,
) -> Result<Run, RepoError> {
    let model = runs::ActiveModel {
        id: Set(id),
        team_id: Set(team_id),
        job_id: Set(job_id),
        name: Set(name.to_owned()),
        params: Set(params),
        status: Set("running".to_owned()),
        created_by: Set(created_by),
        created_at: Set(Utc::now()),
        finished_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(model.into())
}

/// A run of this team, or `None` (also when it belongs to another team).
pub async fn get(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    id: Uuid,
) -> Result<Option<Run>, RepoError> {
    Ok(runs::Entity::find_by_id(id)
        .filter(runs::Column::TeamId.eq(team_id))
        .one(db)
        .await?
        .map(Into::into))
}

pub async fn list(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<Run>, RepoError> {
    let mut query = runs::Entity::find()
        .filter(runs::Column::TeamId.eq(team_id))
        .order_by_desc(runs::Column::Id);
    if let Some(after) = parse_cursor(cursor)? {
        query = query.filter(runs::Column::Id.lt(after));
    }
    let rows = query.limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows.into_iter().map(Into::into).collect(), limit, |r: &Run| {
        r.id.to_string()
    }))
}

/// Ends a run; false when it had already ended.
pub async fn finish(db: &impl ConnectionTrait, id: Uuid, status: &str) -> Result<bool, RepoError> {
    let done = runs::Entity::update_many()
        .col_expr(runs::Column::Status, sea_orm::sea_query::Expr::value(status))
        .col_expr(runs::Column::FinishedAt, sea_orm::sea_query::Expr::current_timestamp().into())
        .filter(runs::Column::Id.eq(id))
        .filter(runs::Column::Status.eq("running"))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// What still uses a run: the Kiln job it is, while that job is queued or running (its
/// worker writes the run's metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunUsers {
    pub jobs: Vec<Uuid>,
}

impl RunUsers {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// Deletes run `id` of `team_id` and its metric points unless its job is still queued or
/// running, recording `audit` in the same transaction. A finished job keeps its row (its
/// state, result and logs); only its run and metric series go.
pub async fn delete_unless_used(
    db: &DatabaseConnection,
    team_id: Uuid,
    id: Uuid,
    audit: AuditEntry<'_>,
) -> Result<Deletion<RunUsers>, RepoError> {
    #[derive(Debug, FromQueryResult)]
    struct JobRow {
        id: Uuid,
        state: String,
    }
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let locked = txn
        .query_one(Statement::from_sql_and_values(
            backend,
            "SELECT id FROM runs WHERE id = $1 AND team_id = $2 FOR UPDATE",
            [id.into(), team_id.into()],
        ))
        .await?;
    if locked.is_none() {
        return Ok(Deletion::NotFound);
    }
    // The job's row is locked too: a retry waits for the delete instead of queueing the
    // job again half-way through it.
    let jobs = JobRow::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT j.id, j.state FROM jobs j JOIN runs r ON r.job_id = j.id WHERE r.id = $1 \
         FOR UPDATE OF j",
        [id.into()],
    ))
    .all(&txn)
    .await?;
    let active: Vec<Uuid> = jobs
        .into_iter()
        .filter(|j| matches!(j.state.as_str(), "queued" | "running"))
        .map(|j| j.id)
        .collect();
    if !active.is_empty() {
        return Ok(Deletion::InUse(RunUsers { jobs: active }));
    }
    txn.execute(Statement::from_sql_and_values(
        backend,
        "DELETE FROM metrics WHERE run_id = $1",
        [id.into()],
    ))
    .await?;
    txn.execute(Statement::from_sql_and_values(
        backend,
        "DELETE FROM runs WHERE id = $1",
        [id.into()],
    ))
    .await?;
    audit::record(&txn, audit).await?;
    txn.commit().await?;
    Ok(Deletion::Deleted)
}

/// Writes points in one statement (`unnest` of parallel arrays): the ingest hot path.
/// A series holds one point per step: a point for a step already written replaces it (the
/// same call sent twice leaves one copy), and within one call the last point of a
/// (name, step) wins.
pub async fn append_metrics(
    db: &DatabaseConnection,
    run_id: Uuid,
    points: &[Point],
) -> Result<(), RepoError> {
    if points.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
    let steps: Vec<i64> = points.iter().map(|p| p.step).collect();
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    let ts: Vec<Option<DateTime<Utc>>> = points.iter().map(|p| p.ts).collect();
    sqlx::query(
        "INSERT INTO metrics (run_id, name, step, value, ts) \
         SELECT DISTINCT ON (p.name, p.step) $1, p.name, p.step, p.value, coalesce(p.ts, now()) \
         FROM unnest($2::text[], $3::bigint[], $4::float8[], $5::timestamptz[]) \
             WITH ORDINALITY AS p(name, step, value, ts, n) \
         ORDER BY p.name, p.step, p.n DESC \
         ON CONFLICT (run_id, name, step) DO UPDATE SET value = excluded.value, ts = excluded.ts",
    )
    .bind(run_id)
    .bind(&names)
    .bind(&steps)
    .bind(&values)
    .bind(&ts)
    .execute(db.get_postgres_connection_pool())
    .await
    .map_err(|err| RepoError::Db(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(err))))?;
    Ok(())
}

/// Every series of a run (optionally only `name`), in step order.
pub async fn series(
    db: &impl ConnectionTrait,
    run_id: Uuid,
    name: Option<&str>,
) -> Result<Series, RepoError> {
    let rows = db
        .query_all(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT name, step, value FROM metrics WHERE run_id = $1 AND ($2::text IS NULL OR name = $2) \
             ORDER BY name, step",
            [run_id.into(), name.map(str::to_owned).into()],
        ))
        .await?;
    let mut series = Series::new();
    for row in rows {
        let name: String = row.try_get("", "name")?;
        let step: i64 = row.try_get("", "step")?;
        let value: f64 = row.try_get("", "value")?;
        series.entry(name).or_default().push((step, value));
    }
    Ok(series)
}

/// One metric point, as charts read it; its wall time comes from [`series_times`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    pub step: i64,
    pub value: f64,
}

/// One bucket of a series' steps, reduced to four points (M4): its first and last step, its
/// smallest and largest value (ties: the smallest value's first step, the largest value's
/// last), and how many points it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesBucket {
    pub first: SeriesPoint,
    pub last: SeriesPoint,
    pub min: SeriesPoint,
    pub max: SeriesPoint,
    pub count: i64,
}

fn sqlx_err(err: sqlx::Error) -> RepoError {
    RepoError::Db(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(err)))
}

/// The names of a run's series, without reading its points (a loose index scan of
/// `(run_id, name, step)`: one probe per name, however long the series).
pub async fn series_names(db: &DatabaseConnection, run_id: Uuid) -> Result<Vec<String>, RepoError> {
    sqlx::query_scalar(
        "WITH RECURSIVE n(name) AS ( \
             (SELECT name FROM metrics WHERE run_id = $1 ORDER BY name LIMIT 1) \
             UNION ALL \
             SELECT (SELECT m.name FROM metrics m WHERE m.run_id = $1 AND m.name > n.name \
                     ORDER BY m.name LIMIT 1) FROM n WHERE n.name IS NOT NULL) \
         SELECT name FROM n WHERE name IS NOT NULL",
    )
    .bind(run_id)
    .fetch_all(db.get_postgres_connection_pool())
    .await
    .map_err(sqlx_err)
}

/// The latest value (highest step) of each of a run's series, one index probe per series.
pub async fn latest_values(
    db: &DatabaseConnection,
    run_id: Uuid,
) -> Result<BTreeMap<String, f64>, RepoError> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "WITH RECURSIVE n(name) AS ( \
             (SELECT name FROM metrics WHERE run_id = $1 ORDER BY name LIMIT 1) \
             UNION ALL \
             SELECT (SELECT m.name FROM metrics m WHERE m.run_id = $1 AND m.name > n.name \
                     ORDER BY m.name LIMIT 1) FROM n WHERE n.name IS NOT NULL) \
         SELECT n.name, l.value FROM n CROSS JOIN LATERAL ( \
             SELECT value FROM metrics m WHERE m.run_id = $1 AND m.name = n.name \
             ORDER BY m.step DESC LIMIT 1) l \
         WHERE n.name IS NOT NULL",
    )
    .bind(run_id)
    .fetch_all(db.get_postgres_connection_pool())
    .await
    .map_err(sqlx_err)?;
    Ok(rows.into_iter().collect())
}

/// The first and last step of a series, if it has points (two index probes).
pub async fn series_bounds(
    db: &DatabaseConnection,
    run_id: Uuid,
    name: &str,
) -> Result<Option<(i64, i64)>, RepoError> {
    let (lo, hi): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT min(step), max(step) FROM metrics WHERE run_id = $1 AND name = $2")
            .bind(run_id)
            .bind(name)
            .fetch_one(db.get_postgres_connection_pool())
            .await
            .map_err(sqlx_err)?;
    Ok(lo.zip(hi))
}

/// A series' steps `lo..=hi` in `buckets` equal-width buckets of steps (bucket
/// `floor((step - lo) * buckets / (hi - lo + 1))`), each reduced in PostgreSQL to its M4
/// points: a chart of a million points reads at most `4 × buckets` rows. Only steps and
/// values are aggregated (`[step, value]` arrays: a timestamp in them doubled the time);
/// [`series_times`] fetches the wall times of the points kept, when a chart wants them.
pub async fn series_buckets(
    db: &DatabaseConnection,
    run_id: Uuid,
    name: &str,
    (lo, hi): (i64, i64),
    buckets: u32,
) -> Result<Vec<SeriesBucket>, RepoError> {
    type Row = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT min(ARRAY[step::float8, value]), max(ARRAY[step::float8, value]), \
                min(ARRAY[value, step::float8]), max(ARRAY[value, step::float8]), count(*) \
         FROM (SELECT step, value, \
                      floor((step - $3)::float8 * $5 / ($4 - $3 + 1)::float8)::int AS b \
               FROM metrics WHERE run_id = $1 AND name = $2 AND step BETWEEN $3 AND $4) p \
         GROUP BY b ORDER BY b",
    )
    .bind(run_id)
    .bind(name)
    .bind(lo)
    .bind(hi)
    .bind(f64::from(buckets.max(1)))
    .fetch_all(db.get_postgres_connection_pool())
    .await
    .map_err(sqlx_err)?;
    let by_step = |a: &[f64]| SeriesPoint {
        step: a.first().copied().unwrap_or_default() as i64,
        value: a.get(1).copied().unwrap_or(f64::NAN),
    };
    let by_value = |a: &[f64]| SeriesPoint {
        step: a.get(1).copied().unwrap_or_default() as i64,
        value: a.first().copied().unwrap_or(f64::NAN),
    };
    Ok(rows
        .into_iter()
        .map(|(first, last, min, max, count)| SeriesBucket {
            first: by_step(&first),
            last: by_step(&last),
            min: by_value(&min),
            max: by_value(&max),
            count,
        })
        .collect())
}

/// The wall times (Unix seconds) of a series' points at `steps` (one index probe each).
pub async fn series_times(
    db: &DatabaseConnection,
    run_id: Uuid,
    name: &str,
    steps: &[i64],
) -> Result<BTreeMap<i64, f64>, RepoError> {
    let rows: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT step, extract(epoch FROM ts)::float8 FROM metrics \
         WHERE run_id = $1 AND name = $2 AND step = ANY($3)",
    )
    .bind(run_id)
    .bind(name)
    .bind(steps)
    .fetch_all(db.get_postgres_connection_pool())
    .await
    .map_err(sqlx_err)?;
    Ok(rows.into_iter().collect())
}
