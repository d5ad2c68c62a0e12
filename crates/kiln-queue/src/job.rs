//! The job row as the queue reads it: its jsonb columns decoded into kiln-types' contract
//! ([`JobInputs`], [`JobProgress`], [`JobResult`]) here, at the boundary, so no crate above
//! reads them by string index.

use chrono::{DateTime, Utc};
use kiln_types::{DeviceRequirement, JobInputs, JobProgress, JobResult, JobState};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

/// A job as stored, with its state and device parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub team_id: Uuid,
    pub kind: String,
    /// The canonical job spec (`JobSpec::to_json`); `JobSpec::parse` reads it.
    pub spec: Value,
    /// What the spec's ids resolved to at submission (artifact keys and digests).
    pub inputs: JobInputs,
    pub priority: i32,
    pub state: JobState,
    pub device: DeviceRequirement,
    pub run_after: DateTime<Utc>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub lease_epoch: i64,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub checkpoint_key: Option<String>,
    pub checkpoint_epoch: Option<i32>,
    pub resumed_from_epoch: Option<i32>,
    pub progress: Option<JobProgress>,
    pub error: Option<String>,
    pub result: Option<JobResult>,
    pub ran_on_device: Option<String>,
    pub idempotency_key: Option<String>,
    pub trace_context: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn decode_err(column: &str, err: kiln_types::ParseEnumError) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_owned(), source: Box::new(err) }
}

impl<'r> sqlx::FromRow<'r, PgRow> for Job {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let state: String = row.try_get("state")?;
        let device: String = row.try_get("device")?;
        Ok(Job {
            id: row.try_get("id")?,
            team_id: row.try_get("team_id")?,
            kind: row.try_get("kind")?,
            spec: row.try_get("spec")?,
            inputs: row.try_get::<Json<JobInputs>, _>("inputs")?.0,
            priority: row.try_get("priority")?,
            state: state.parse().map_err(|e| decode_err("state", e))?,
            device: device.parse().map_err(|e| decode_err("device", e))?,
            run_after: row.try_get("run_after")?,
            attempt: row.try_get("attempt")?,
            max_attempts: row.try_get("max_attempts")?,
            lease_epoch: row.try_get("lease_epoch")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            heartbeat_at: row.try_get("heartbeat_at")?,
            cancel_requested_at: row.try_get("cancel_requested_at")?,
            checkpoint_key: row.try_get("checkpoint_key")?,
            checkpoint_epoch: row.try_get("checkpoint_epoch")?,
            resumed_from_epoch: row.try_get("resumed_from_epoch")?,
            progress: row.try_get::<Option<Json<JobProgress>>, _>("progress")?.map(|j| j.0),
            error: row.try_get("error")?,
            result: row.try_get::<Option<Json<JobResult>>, _>("result")?.map(|j| j.0),
            ran_on_device: row.try_get("ran_on_device")?,
            idempotency_key: row.try_get("idempotency_key")?,
            trace_context: row.try_get("trace_context")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// One claim of a job, from `job_attempts`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobAttempt {
    pub job_id: Uuid,
    pub lease_epoch: i64,
    pub attempt: i32,
    pub worker_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `retrying`, `lease_expired`, `released`, `cancelled`, or
    /// `None` while the attempt runs.
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// One log line of a job, from `job_events`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobEvent {
    /// Increasing; the cursor for following a job's logs.
    pub id: i64,
    pub ts: DateTime<Utc>,
    pub level: String,
    pub message: String,
    pub attempt: Option<i32>,
}
