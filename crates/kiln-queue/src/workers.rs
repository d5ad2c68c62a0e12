//! The `workers` table: each worker process registers itself, keeps a heartbeat there and
//! says which job it runs, so operators can see the fleet (`kiln workers list`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::QueueError;

/// What a worker says about itself when it starts.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: Uuid,
    pub host: String,
    pub pid: i32,
    pub device: kiln_types::WorkerDevice,
    pub version: String,
}

/// A worker as listed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: Uuid,
    pub host: String,
    pub pid: Option<i32>,
    pub device: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub current_job_id: Option<Uuid>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Seconds since the last heartbeat, by the database's clock.
    pub heartbeat_age_seconds: f64,
}

pub(crate) async fn register(pool: &PgPool, info: &WorkerInfo) -> Result<(), QueueError> {
    sqlx::query(
        "INSERT INTO workers (id, host, pid, device, version) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now(), stopped_at = NULL",
    )
    .bind(info.id)
    .bind(&info.host)
    .bind(info.pid)
    .bind(info.device.as_str())
    .bind(&info.version)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn heartbeat(
    pool: &PgPool,
    id: Uuid,
    current_job: Option<Uuid>,
) -> Result<(), QueueError> {
    sqlx::query("UPDATE workers SET last_heartbeat_at = now(), current_job_id = $2 WHERE id = $1")
        .bind(id)
        .bind(current_job)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn stopped(pool: &PgPool, id: Uuid) -> Result<(), QueueError> {
    sqlx::query("UPDATE workers SET stopped_at = now(), current_job_id = NULL WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Workers that have not stopped, or stopped within the last hour; newest first.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<WorkerRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT id, host, pid, device, version, started_at, last_heartbeat_at, current_job_id, stopped_at, \
                extract(epoch FROM now() - last_heartbeat_at)::float8 AS heartbeat_age_seconds \
         FROM workers WHERE stopped_at IS NULL OR stopped_at > now() - interval '1 hour' \
         ORDER BY started_at DESC",
    )
    .fetch_all(pool)
    .await?)
}
