//! Wire types of the REST API (API.md): request and response bodies shared by the server
//! (kiln-api) and its clients (the `kiln` CLI, tests). Each derives an OpenAPI schema.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Role;

/// Every error answer: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code (see the error-code table).
    pub code: String,
    /// A human sentence.
    pub message: String,
    /// Extra facts; for validation errors `{"fields": {"path": "message"}}`.
    #[serde(default)]
    pub details: Value,
}

/// A page of a list, newest first. Pass `next_cursor` as `?cursor=` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Slug: lowercase letters, digits, '-' and '_', 1–63 characters.
    pub name: String,
    /// Cap on the team's concurrently running jobs (default 4).
    #[serde(default)]
    pub max_running_jobs: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub max_running_jobs: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// `maintainer`, `member` or `viewer`.
    #[schema(value_type = String)]
    pub role: Role,
}

/// A new token. `token` is shown this once and never again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    pub id: Uuid,
    pub token: String,
    #[schema(value_type = String)]
    pub role: Role,
    pub team_id: Option<Uuid>,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub team_id: Option<Uuid>,
    pub name: String,
    pub role: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Training progress of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub epoch: Option<i64>,
    pub epochs: Option<i64>,
}

/// A job as `GET /v1/jobs/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub team_id: Uuid,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub priority: i32,
    pub progress: Progress,
    /// What the job asked for: `any`, `cpu` or `cuda`.
    pub device: String,
    /// The device it ran on, once known.
    pub ran_on_device: Option<String>,
    pub resumed_from_epoch: Option<i32>,
    pub checkpoint_epoch: Option<i32>,
    pub cancel_requested: bool,
    pub error: Option<String>,
    /// Storage key of the trained model bundle, once succeeded.
    pub model_bundle: Option<String>,
    /// Final metrics, once succeeded.
    pub metrics: Option<Value>,
    pub spec: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job's log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub ts: DateTime<Utc>,
    pub level: String,
    pub message: String,
    pub attempt: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub name: String,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub team_id: Uuid,
    pub job_id: Option<Uuid>,
    pub name: String,
    pub params: Value,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricPointIn {
    pub name: String,
    pub step: i64,
    pub value: f64,
    #[serde(default)]
    pub ts: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogMetrics {
    /// Up to 10,000 points per call.
    pub points: Vec<MetricPointIn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
}

/// Metric series by name, each `[[step, value], ...]` in step order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricSeries {
    #[schema(value_type = BTreeMap<String, Vec<Vec<f64>>>)]
    pub series: BTreeMap<String, Vec<(i64, f64)>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRun {
    /// `succeeded` or `failed`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub ts: DateTime<Utc>,
    pub team_id: Option<Uuid>,
    pub actor_token_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Readiness: each dependency and whether it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub checks: BTreeMap<String, String>,
}

/// Queue depth by team and state, the oldest queued job's age and the running leases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    pub counts: Vec<QueueCount>,
    pub oldest_queued_age_seconds: Option<f64>,
    pub running: Vec<RunningLease>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueCount {
    pub team: String,
    pub state: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunningLease {
    pub job_id: Uuid,
    pub team: String,
    pub worker_id: Uuid,
    pub attempt: i32,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub lease_expires_at: DateTime<Utc>,
}

/// A training worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    pub id: Uuid,
    pub host: String,
    pub pid: Option<i32>,
    pub device: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub heartbeat_age_seconds: f64,
    pub current_job_id: Option<Uuid>,
    pub stopped_at: Option<DateTime<Utc>>,
}

/// An uploaded dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    pub id: Uuid,
    pub name: String,
    pub version: i32,
    /// `csv`, `npz` or `torchscript`.
    pub format: String,
    pub sha256: String,
    pub size_bytes: i64,
    /// Columns with inferred types, row count and label candidates (CSV); array shapes (NPZ).
    pub schema: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterVersion {
    /// A succeeded job of the caller's team.
    pub job_id: Uuid,
}

/// A registered model version with its lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    pub model: String,
    pub version: i32,
    pub job_id: Option<Uuid>,
    /// The training data it was made from.
    pub dataset_sha256: Option<String>,
    pub bundle_sha256: String,
    /// Final metrics of the job that trained it.
    pub metrics: Value,
    /// The canonical job spec that trained it.
    pub spec: Value,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelSummary {
    pub name: String,
    pub latest_version: Option<i32>,
    /// Alias → version.
    pub aliases: BTreeMap<String, i32>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    pub model: String,
    pub alias: String,
    pub version: i32,
    /// The version the alias pointed at before, if any.
    pub previous_version: Option<i32>,
}
