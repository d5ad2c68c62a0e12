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
