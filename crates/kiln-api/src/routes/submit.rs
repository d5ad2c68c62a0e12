//! `POST /v1/jobs`: a job spec validated field by field, checked against its dataset,
//! then queued (with an optional `Idempotency-Key`).
//!
//! Every problem is collected before answering, so one 422 lists every bad field: the
//! spec's own (unknown model type, negative learning rate, unknown fields) and those only
//! the dataset can reveal (a target column it lacks, a dataset of another team, a CNN on
//! tabular data). What the spec's ids resolve to (artifact keys, digests) is recorded on
//! the job as its `inputs`, so the worker needs nothing but the job row and the store.
//!
//! Last, the model's training memory is estimated from the dataset's schema (kiln-types'
//! `memory`) and a model needing more than `KILN_MAX_MODEL_MEMORY_MIB` is refused with a
//! 422 naming the field to change (`model.hidden`, `model.channels`,
//! `hyperparameters.batch_size`) and quoting the estimate.

use actix_web::{HttpRequest, HttpResponse, web};
use kiln_db::repo::{datasets, runs};
use kiln_queue::{Enqueued, NewJob};
use kiln_types::memory::format_bytes;
use kiln_types::spec::{JobSpec, ModelSpec, ValidationErrors};
use kiln_types::{DataShape, InputBlob, JobInputs, Role};
use serde_json::{Value, json};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::jobs::job_view;
use crate::state::AppState;

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;

pub(crate) fn input_of(d: &datasets::Dataset) -> Result<InputBlob, ApiError> {
    Ok(InputBlob {
        id: d.id,
        key: d.storage_key.clone(),
        sha256: d.sha256.clone(),
        format: d.format.parse().map_err(ApiError::internal)?,
        size_bytes: u64::try_from(d.size_bytes).ok(),
    })
}

/// Checks the spec against its dataset (and script) with `JobSpec::check_against`, the
/// rules kiln-ml applies again before training; returns the job's inputs and the dataset's
/// shape as the model sees it, or records the offending fields.
pub(crate) async fn resolve_inputs(
    state: &AppState,
    team: Uuid,
    spec: &JobSpec,
    problems: &mut ValidationErrors,
) -> Result<(JobInputs, Option<DataShape>), ApiError> {
    let mut inputs = JobInputs::default();
    let mut shape = None;
    match datasets::get(&state.db, team, spec.dataset_id).await? {
        None => problems.add("dataset_id", "no dataset with this id in your team"),
        Some(d) => {
            if let Err(errors) = spec.check_against(&d.schema) {
                problems.merge_under("", &errors);
            }
            shape = spec.data_shape(&d.schema);
            inputs.dataset = Some(input_of(&d)?);
        }
    }
    if let ModelSpec::TorchScript { dataset_id } = &spec.model {
        match datasets::get(&state.db, team, *dataset_id).await? {
            Some(d) => match spec.check_script(&d.schema) {
                Ok(()) => inputs.script = Some(input_of(&d)?),
                Err(errors) => problems.merge_under("", &errors),
            },
            None => problems.add("model.dataset_id", "no upload with this id in your team"),
        }
    }
    Ok((inputs, shape))
}

/// Refuses a model whose estimated training memory exceeds the limit: a 422 naming the
/// field to change, with the estimate in the message and in `details.memory_estimate`.
pub(crate) fn check_model_memory(
    spec: &JobSpec,
    shape: &DataShape,
    limit: u64,
) -> Result<(), ApiError> {
    let Some(estimate) = spec.memory_estimate(shape) else { return Ok(()) };
    if estimate.total_bytes <= limit {
        return Ok(());
    }
    let field = estimate.field(spec);
    let advice = if field == "hyperparameters.batch_size" {
        "use a smaller batch_size"
    } else {
        "use fewer or narrower layers"
    };
    let message = format!(
        "training this model needs {}, more than the limit of {} per job; {advice}",
        estimate.describe(spec.hyperparameters.batch_size),
        format_bytes(limit),
    );
    let mut err = ApiError::validation([(field.to_owned(), message)]);
    err.details["memory_estimate"] = json!(estimate);
    err.details["memory_limit_bytes"] = json!(limit);
    Err(err)
}

/// The request's own W3C `traceparent`, when well formed (`00-<32 hex>-<16 hex>-<2 hex>`):
/// what the job keeps when this process traces nothing (no OpenTelemetry layer, as in
/// tests that run the app in process).
fn incoming_traceparent(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("traceparent")?.to_str().ok()?.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2))
    .then(|| value.to_owned())
}

/// Submit a training job.
#[utoipa::path(post, path = "/v1/jobs", operation_id = "submit_job", tag = "jobs", request_body = kiln_types::spec::JobSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body again answer the same job")),
    responses((status = 201, body = kiln_types::api::Job), (status = 200, body = kiln_types::api::Job, description = "Repeated idempotent submission"),
              (status = 409, body = kiln_types::api::ErrorBody), (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Member)?;
    let team = caller.team()?;
    let idempotency_key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be text"))?
                .trim();
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::validation([(
                    "Idempotency-Key".to_owned(),
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                )]));
            }
            Some(key.to_owned())
        }
    };
    crate::validate::no_nul_chars(&body, "")?;
    let spec = JobSpec::parse(&body).map_err(|errors| ApiError::invalid(&errors))?;
    let mut problems = ValidationErrors::default();
    let (inputs, shape) = resolve_inputs(&state, team, &spec, &mut problems).await?;
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    if let Some(shape) = &shape {
        check_model_memory(&spec, shape, state.limits.model_memory_bytes)?;
    }
    let canonical = spec.to_json();
    // The job row keeps this span's context: the worker continues the trace from here,
    // whether or not the request carried a `traceparent` of its own.
    let submit_span = tracing::info_span!(
        "kiln.job.submit",
        team.id = %team,
        model.type = spec.model.type_name(),
        job.id = tracing::field::Empty,
    );
    let new = NewJob {
        team_id: team,
        kind: "train".to_owned(),
        spec: canonical.clone(),
        inputs,
        priority: spec.priority,
        max_attempts: i32::try_from(spec.max_attempts).unwrap_or(i32::MAX),
        device: spec.device,
        idempotency_key,
        trace_context: kiln_telemetry::traceparent(&submit_span)
            .or_else(|| incoming_traceparent(&req)),
        created_by: Some(caller.token_id()),
    };
    let enqueued = state.queue.enqueue(new).instrument(submit_span.clone()).await?;
    match enqueued {
        Enqueued::Existing(job) => Ok(HttpResponse::Ok().json(job_view(job))),
        Enqueued::Created(job) => {
            submit_span.record("job.id", tracing::field::display(job.id));
            // A job is a run too: its metrics live in the same series as tracked runs'.
            let params = canonical.get("hyperparameters").cloned().unwrap_or_else(|| json!({}));
            runs::create(
                &state.db,
                job.id,
                team,
                Some(job.id),
                &format!("job {}", job.id),
                params,
                Some(caller.token_id()),
            )
            .await?;
            caller
                .audit(
                    &state.db,
                    Some(team),
                    "job.submit",
                    "job",
                    job.id.to_string(),
                    json!({"model": spec.model.type_name(), "dataset_id": spec.dataset_id}),
                )
                .await?;
            Ok(HttpResponse::Created().json(job_view(job)))
        }
    }
}
