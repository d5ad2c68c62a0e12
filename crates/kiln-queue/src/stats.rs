//! Queue statistics for operators (`kiln queue stats`) and autoscaling.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::QueueError;

/// How many jobs of one team are in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StateCount {
    pub team_id: Uuid,
    pub team: String,
    pub state: String,
    pub count: i64,
}

/// A job currently leased by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RunningLease {
    pub job_id: Uuid,
    pub team: String,
    pub worker_id: Uuid,
    pub attempt: i32,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub lease_expires_at: DateTime<Utc>,
}

/// A snapshot of the queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub counts: Vec<StateCount>,
    /// Age in seconds of the oldest job waiting to run (by the database's clock).
    pub oldest_queued_age_seconds: Option<f64>,
    pub running: Vec<RunningLease>,
}

pub(crate) async fn collect(pool: &PgPool) -> Result<QueueStats, QueueError> {
    let counts = sqlx::query_as(
        "SELECT j.team_id, t.name AS team, j.state, count(*) AS count \
         FROM jobs j JOIN teams t ON t.id = j.team_id \
         GROUP BY j.team_id, t.name, j.state ORDER BY t.name, j.state",
    )
    .fetch_all(pool)
    .await?;
    let (oldest,): (Option<f64>,) = sqlx::query_as(
        "SELECT extract(epoch FROM now() - min(created_at))::float8 FROM jobs WHERE state = 'queued'",
    )
    .fetch_one(pool)
    .await?;
    let running = sqlx::query_as(
        "SELECT j.id AS job_id, t.name AS team, j.lease_owner AS worker_id, j.attempt, \
                j.heartbeat_at, j.lease_expires_at \
         FROM jobs j JOIN teams t ON t.id = j.team_id \
         WHERE j.state = 'running' ORDER BY j.lease_expires_at",
    )
    .fetch_all(pool)
    .await?;
    Ok(QueueStats { counts, oldest_queued_age_seconds: oldest, running })
}

/// How many finished jobs of one team and outcome fall at or below each bucket bound, for
/// a Prometheus histogram built from the jobs table (the API's `/metrics`).
#[derive(Debug, Clone, PartialEq)]
pub struct DurationHistogram {
    pub team: String,
    /// `succeeded`, `failed` or `cancelled`; empty for the queue wait (every started job).
    pub outcome: String,
    /// Cumulative counts, one per bound of [`JobMetrics::bounds`].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// A worker registered and heard from recently, by device.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AliveWorkers {
    pub device: String,
    pub count: i64,
}

/// What the API's `/metrics` derives from the jobs and workers tables on each scrape, so
/// every replica reports the platform's numbers (workers scale to zero; their own
/// counters go with them).
#[derive(Debug, Clone, PartialEq)]
pub struct JobMetrics {
    /// Every team's name, jobs or not.
    pub teams: Vec<String>,
    /// Upper bucket bounds in seconds, ascending.
    pub bounds: Vec<f64>,
    /// `finished_at - started_at` of finished jobs that started, by team and outcome.
    pub durations: Vec<DurationHistogram>,
    /// `started_at - created_at` (the first claim) of every job that started, by team.
    pub queue_waits: Vec<DurationHistogram>,
    /// Workers not stopped whose last heartbeat is at most `alive_seconds` old.
    pub alive_workers: Vec<AliveWorkers>,
}

#[derive(sqlx::FromRow)]
struct BucketRow {
    team: String,
    outcome: String,
    /// How many bounds lie below the value: the first bucket whose bound is >= it.
    bucket: i32,
    n: i64,
    total: f64,
}

fn histograms(rows: Vec<BucketRow>, bounds: &[f64]) -> Vec<DurationHistogram> {
    let mut out: Vec<DurationHistogram> = Vec::new();
    for row in rows {
        let index = match out.iter().position(|h| h.team == row.team && h.outcome == row.outcome) {
            Some(i) => i,
            None => {
                out.push(DurationHistogram {
                    team: row.team.clone(),
                    outcome: row.outcome.clone(),
                    cumulative: vec![0; bounds.len()],
                    count: 0,
                    sum_seconds: 0.0,
                });
                out.len() - 1
            }
        };
        let h = &mut out[index];
        let n = u64::try_from(row.n).unwrap_or(0);
        let first = usize::try_from(row.bucket).unwrap_or(0);
        for c in h.cumulative.iter_mut().skip(first) {
            *c += n;
        }
        h.count += n;
        h.sum_seconds += row.total;
    }
    out
}

pub(crate) async fn collect_job_metrics(
    pool: &PgPool,
    bounds: &[f64],
    alive_seconds: f64,
) -> Result<JobMetrics, QueueError> {
    // `bucket` = how many bounds are < d, through width_bucket over the negated bounds in
    // ascending order (it counts the thresholds <= its operand): exact at the bounds, as
    // Prometheus's `le` is.
    let negated: Vec<f64> = bounds.iter().rev().map(|b| -b).collect();
    let bucket_sql = |value: &str, outcome: &str, filter: &str| {
        format!(
            "SELECT t.name AS team, {outcome} AS outcome, \
                    ($1::int - width_bucket(-({value}), $2::float8[]))::int4 AS bucket, \
                    count(*) AS n, coalesce(sum({value}), 0)::float8 AS total \
             FROM jobs j JOIN teams t ON t.id = j.team_id WHERE {filter} \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
    };
    let duration = "greatest(extract(epoch FROM j.finished_at - j.started_at), 0)::float8";
    let wait = "greatest(extract(epoch FROM j.started_at - j.created_at), 0)::float8";
    let len = i32::try_from(bounds.len()).unwrap_or(i32::MAX);
    let durations: Vec<BucketRow> = sqlx::query_as(&bucket_sql(
        duration,
        "j.state",
        "j.state IN ('succeeded', 'failed', 'cancelled', 'pruned') AND j.started_at IS NOT NULL \
         AND j.finished_at IS NOT NULL",
    ))
    .bind(len)
    .bind(&negated)
    .fetch_all(pool)
    .await?;
    let waits: Vec<BucketRow> =
        sqlx::query_as(&bucket_sql(wait, "''::text", "j.started_at IS NOT NULL"))
            .bind(len)
            .bind(&negated)
            .fetch_all(pool)
            .await?;
    let alive_workers = sqlx::query_as(
        "SELECT device, count(*) AS count FROM workers \
         WHERE stopped_at IS NULL AND last_heartbeat_at > now() - make_interval(secs => $1) \
         GROUP BY device ORDER BY device",
    )
    .bind(alive_seconds)
    .fetch_all(pool)
    .await?;
    let teams: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM teams ORDER BY name").fetch_all(pool).await?;
    Ok(JobMetrics {
        teams: teams.into_iter().map(|(name,)| name).collect(),
        bounds: bounds.to_vec(),
        durations: histograms(durations, bounds),
        queue_waits: histograms(waits, bounds),
        alive_workers,
    })
}
