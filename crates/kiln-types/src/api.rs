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

/// A new token. `token` is shown this once and never again (and never by `Debug`).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    pub id: Uuid,
    pub token: String,
    #[schema(value_type = String)]
    pub role: Role,
    pub team_id: Option<Uuid>,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"***")
            .field("role", &self.role)
            .field("team_id", &self.team_id)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .finish()
    }
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
    /// `train`, or `batch_prediction` (`GET /v1/batch-predictions/{id}` has its details).
    pub kind: String,
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
    /// The canonical spec: the submitted one with every default spelled out.
    #[schema(value_type = crate::spec::JobSpec)]
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
    /// A Kiln job's run (its id is the job's, `job_id` names it), rather than training
    /// tracked from outside Kiln.
    #[serde(default)]
    pub is_job: bool,
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
    /// When it stopped: its clean exit, or for a lost worker its last heartbeat.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Stopped without deregistering (killed, its machine gone): silent for longer than its
    /// lease.
    #[serde(default)]
    pub lost: bool,
}

/// An uploaded dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    pub id: Uuid,
    pub name: String,
    pub version: i32,
    /// `csv`, `npz` or `torchscript`.
    pub format: String,
    pub sha256: crate::Sha256Digest,
    pub size_bytes: i64,
    /// Columns with inferred types, row count and label candidates (CSV); array shapes (NPZ).
    pub schema: crate::DatasetSchema,
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

/// One registered model (`GET /v1/models/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelDetail {
    pub name: String,
    pub description: Option<String>,
    /// How many versions it has now.
    pub versions: i64,
    /// The highest version number, if it has any.
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

/// Adaptive batching of a deployment: the requests queued for a version run as one forward
/// pass, as soon as waiting longer cannot make the batch bigger (every request submitted is
/// in it, or none arrived in the last short interval). `max_batch_size` bounds the rows of a
/// pass and `max_wait_ms` how long the first request may be held; the defaults rarely need
/// changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Rows per forward pass, 1 to 4096 (1 turns batching off). Default 64.
    #[serde(default = "Batching::default_max_batch_size")]
    pub max_batch_size: u32,
    /// The longest the first request of a batch may be held for others, 0 to 1000 ms
    /// (0: never hold). An upper bound, not a wait: a batch that cannot grow runs at once.
    /// Default 2.
    #[serde(default = "Batching::default_max_wait_ms")]
    pub max_wait_ms: u32,
}

impl Batching {
    pub const MAX_BATCH_SIZE: u32 = 4096;
    pub const MAX_WAIT_MS: u32 = 1000;

    fn default_max_batch_size() -> u32 {
        64
    }

    fn default_max_wait_ms() -> u32 {
        2
    }

    /// Field problems, as `(path, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=Self::MAX_BATCH_SIZE).contains(&self.max_batch_size) {
            out.push((
                "batching.max_batch_size".to_owned(),
                format!("must be 1 to {}", Self::MAX_BATCH_SIZE),
            ));
        }
        if self.max_wait_ms > Self::MAX_WAIT_MS {
            out.push((
                "batching.max_wait_ms".to_owned(),
                format!("must be 0 to {}", Self::MAX_WAIT_MS),
            ));
        }
        out
    }
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_batch_size: Self::default_max_batch_size(),
            max_wait_ms: Self::default_max_wait_ms(),
        }
    }
}

/// `POST /v1/deployments`: serve a model, following an alias (`production`) or pinned to a
/// version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// Lowercase letters, digits and '-', 1 to 63 characters, starting with a letter or digit.
    pub name: String,
    /// A registered model of the caller's team.
    pub model: String,
    /// Follow this alias: moving it rolls the deployment to the new version.
    #[serde(default)]
    pub alias: Option<String>,
    /// Or serve exactly this version.
    #[serde(default)]
    pub version: Option<i32>,
    #[serde(default)]
    pub batching: Option<Batching>,
    /// Ignore instance fields the model does not take (default false: such a field is
    /// refused with 422 naming it, so a misspelt feature is not silently dropped).
    #[serde(default)]
    pub allow_extra_features: bool,
}

/// One version's share of a deployment's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSplit {
    pub version: i32,
    /// Percent of the traffic, 0 to 100; the weights of a split sum to 100.
    pub weight: u32,
}

/// `PATCH /v1/deployments/{name}`: a canary split, a rollback, or new batching. An empty
/// `traffic` list sends everything to the deployment's alias or pinned version again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDeployment {
    #[serde(default)]
    pub traffic: Option<Vec<TrafficSplit>>,
    #[serde(default)]
    pub batching: Option<Batching>,
    /// Change whether instance fields the model does not take are ignored (true) or
    /// refused (false).
    #[serde(default)]
    pub allow_extra_features: Option<bool>,
}

/// A version loaded by the answering process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadedVersion {
    pub version: i32,
    pub bundle_sha256: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Requests waiting for this version's inference thread.
    pub queue_depth: u64,
    pub loaded_at: DateTime<Utc>,
}

/// A deployment, with what the answering process has loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: Uuid,
    pub name: String,
    pub model: String,
    /// The alias it follows, if any.
    pub alias: Option<String>,
    /// The version it is pinned to, if any.
    pub version: Option<i32>,
    /// `ready` (serving), `loading`, or `unavailable` (the alias points nowhere, or the
    /// bundle failed to load; `error` says why).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The effective split: the explicit one, or 100% to the alias's or pinned version.
    pub traffic: Vec<TrafficSplit>,
    pub batching: Batching,
    /// Instance fields the model does not take are ignored (true) or refused with 422.
    pub allow_extra_features: bool,
    pub versions_loaded: Vec<LoadedVersion>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/deployments/{name}/predict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Raw rows, feature name → value (tensor models: `{"x": [[...]]}`); the bundle's own
    /// preprocessing is applied.
    pub instances: Vec<serde_json::Map<String, Value>>,
}

/// One prediction: a label with class probabilities, or a value.
///
/// Its OpenAPI schema is a `oneOf` of two named components, [`ClassPrediction`] and
/// [`ValuePrediction`] (the same JSON as the variants), rather than of two inline objects:
/// client generators make one model per component instead of duplicate inline ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prediction {
    Class { label: String, probabilities: BTreeMap<String, f64> },
    Value { value: f64 },
}

/// A classification's prediction: the most likely label and every class's probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassPrediction {
    pub label: String,
    /// Label → probability; they sum to 1.
    pub probabilities: BTreeMap<String, f64>,
}

/// A regression's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValuePrediction {
    pub value: f64,
}

impl utoipa::PartialSchema for Prediction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::OneOfBuilder;
        OneOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name(ClassPrediction::name()))
            .item(utoipa::openapi::Ref::from_schema_name(ValuePrediction::name()))
            .description(Some("One prediction: a label with class probabilities, or a value."))
            .into()
    }
}

impl ToSchema for Prediction {
    fn schemas(
        schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>,
    ) {
        use utoipa::PartialSchema as _;
        schemas.push((ClassPrediction::name().into_owned(), ClassPrediction::schema()));
        schemas.push((ValuePrediction::name().into_owned(), ValuePrediction::schema()));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PredictResponse {
    pub predictions: Vec<Prediction>,
    /// The version that answered.
    pub model_version: i32,
    pub deployment: String,
}

/// One feature's drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureDriftReport {
    pub feature: String,
    /// Population stability index of recent inputs against the training split.
    pub psi: f64,
    /// `psi > threshold`.
    pub drifted: bool,
    /// Recent rows with a usable value for the feature.
    pub rows: u64,
    /// Recent rows where a numeric feature was missing.
    pub missing: u64,
    /// Fewer than the report's `min_samples` rows had a value: the PSI is shown but not
    /// judged (`drifted` is false).
    #[serde(default)]
    pub insufficient_samples: bool,
}

/// `GET /v1/deployments/{name}/drift`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DriftReport {
    pub deployment: String,
    /// The version whose training statistics the inputs were compared with.
    pub model_version: i32,
    /// Recent sampled rows compared.
    pub window: u64,
    pub threshold: f64,
    pub drifted: bool,
    pub features: Vec<FeatureDriftReport>,
    /// Fewer than `min_samples` sampled rows: no feature is flagged, whatever its PSI (a
    /// handful of rows gives a large PSI by chance alone).
    #[serde(default)]
    pub insufficient_samples: bool,
    /// Sampled rows a feature needs before its drift is judged.
    #[serde(default)]
    pub min_samples: u64,
}

/// `POST /v1/admin/artifacts/gc`: reference-counted garbage collection of the artifact store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Delete the candidates; without it, a dry run that only reports them.
    #[serde(default)]
    pub apply: bool,
    /// Objects younger than this are never collected (an upload whose row is not written
    /// yet looks unreferenced). Default 86,400 (a day); at least 60.
    #[serde(default = "GcRequest::default_grace")]
    pub grace_seconds: u64,
}

impl GcRequest {
    fn default_grace() -> u64 {
        86_400
    }
}

/// What a garbage collection found (and deleted, when applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub applied: bool,
    pub grace_seconds: u64,
    /// Objects listed in the store.
    pub scanned: u64,
    /// Of those, still referenced by a dataset, job or model version.
    pub referenced: u64,
    /// Unreferenced but younger than the grace period.
    pub too_young: u64,
    /// Unreferenced and older than the grace period.
    pub candidates: u64,
    pub candidate_bytes: u64,
    /// Candidates deleted (0 on a dry run).
    pub deleted: u64,
    /// Up to 100 candidate keys, for review.
    pub sample: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's named components are the variants' JSON, both ways.
    #[test]
    fn prediction_components_are_the_variants_json() {
        let class = Prediction::Class {
            label: "setosa".to_owned(),
            probabilities: BTreeMap::from([("setosa".to_owned(), 1.0)]),
        };
        let json = serde_json::to_value(&class).unwrap();
        let component: ClassPrediction = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&component).unwrap(), json);
        assert_eq!(serde_json::from_value::<Prediction>(json).unwrap(), class);
        let value = Prediction::Value { value: 2.5 };
        let json = serde_json::to_value(&value).unwrap();
        let component: ValuePrediction = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&component).unwrap(), json);
        assert_eq!(serde_json::from_value::<Prediction>(json).unwrap(), value);
    }
}
