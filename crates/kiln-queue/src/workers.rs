//! The `workers` table: each worker process registers itself, keeps a heartbeat there and
//! says which job it runs, so operators can see the fleet (`kiln workers list`).
//!
//! A worker that stops cleanly records `stopped_at`. One that is killed (`kill -9`, its
//! machine gone) cannot: it is *lost* once it has been silent for longer than its lease
//! (recorded at registration), and the listing shows it stopped at its last heartbeat. This
//! is decided when reading, by the database's clock, so it holds even when no worker is
//! left alive to notice, and a frozen worker that wakes up and heartbeats again is live
//! again.

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
    /// How long its leases last: silent for longer, it is lost.
    pub lease: std::time::Duration,
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
    /// When it stopped: its clean exit, or for a lost worker its last heartbeat.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Stopped without saying so: silent for longer than its lease.
    pub lost: bool,
    /// Seconds since the last heartbeat, by the database's clock.
    pub heartbeat_age_seconds: f64,
}

pub(crate) async fn register(pool: &PgPool, info: &WorkerInfo) -> Result<(), QueueError> {
    sqlx::query(
        "INSERT INTO workers (id, host, pid, device, version, lease_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now(), stopped_at = NULL, \
             lease_seconds = excluded.lease_seconds",
    )
    .bind(info.id)
    .bind(&info.host)
    .bind(info.pid)
    .bind(info.device.as_str())
    .bind(&info.version)
    .bind(info.lease.as_secs_f64())
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

/// Workers that have not stopped, or stopped (or were lost) within the last hour; newest
/// first.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<WorkerRow>, QueueError> {
    Ok(sqlx::query_as(
        "WITH w AS ( \
             SELECT *, stopped_at IS NULL \
                       AND last_heartbeat_at < now() - make_interval(secs => lease_seconds) AS lost \
             FROM workers) \
         SELECT id, host, pid, device, version, started_at, last_heartbeat_at, \
                CASE WHEN lost THEN NULL ELSE current_job_id END AS current_job_id, \
                CASE WHEN lost THEN last_heartbeat_at ELSE stopped_at END AS stopped_at, lost, \
                extract(epoch FROM now() - last_heartbeat_at)::float8 AS heartbeat_age_seconds \
         FROM w \
         WHERE coalesce(CASE WHEN lost THEN last_heartbeat_at ELSE stopped_at END, 'infinity') \
               > now() - interval '1 hour' \
         ORDER BY started_at DESC",
    )
    .fetch_all(pool)
    .await?)
}
