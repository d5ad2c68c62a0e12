//! Batch predictions: `POST /v1/batch-predictions` scores a dataset with a registered
//! model version as a queued job (kind `batch_prediction`, the team's queue, fairness,
//! retries); `GET` answers its state, progress and bad rows; `.../output` streams the
//! predictions as one CSV (or one part with `?part=N`) from the artifact store.
//!
//! The request is checked field by field before anything is queued (one 422 lists every
//! bad field); the model version and its alias are resolved here, so a later alias move
//! does not change what a queued job scores with, and a version registered without a Kiln
//! bundle (through MLflow, artifacts only) is refused with 409 and the reason. The dataset
//! is checked against the bundle's input schema (its feature columns, or its array shape)
//! from the schemas alone, so a file that cannot fit the model is a 422 naming
//! `dataset_id`, not a job that fails.

use actix_web::{HttpResponse, web};
use futures::StreamExt as _;
use kiln_db::repo::{datasets, models};
use kiln_queue::{BatchPredictionJob, NewBatchPrediction, NewJob};
use kiln_types::api::{ErrorBody, Page};
use kiln_types::batch::{
    BatchOutput, BatchPrediction, BatchProgress, MAX_ROWS_PER_PART, MIN_ROWS_PER_PART,
};
use kiln_types::spec::ValidationErrors;
use kiln_types::{
    BatchPredictionSpec, ErrorCode, JobInputs, JobState, ModelInput, Role, UploadFormat,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::routes::submit::input_of;
use crate::state::AppState;

/// The fields a request may carry.
const FIELDS: &[&str] = &["model", "version", "alias", "dataset_id", "id_column", "rows_per_part"];

/// The wire view of a batch prediction.
pub fn view(b: BatchPredictionJob) -> BatchPrediction {
    let BatchPredictionJob { job, record } = b;
    let spec: Option<BatchPredictionSpec> = serde_json::from_value(job.spec.clone()).ok();
    let output = (job.state == JobState::Succeeded).then(|| BatchOutput {
        download: format!("/v1/batch-predictions/{}/output", record.id),
        predictions: record.parts.iter().map(|p| p.predictions).sum(),
        size_bytes: record.parts.iter().map(|p| p.size_bytes).sum(),
        header: record.header.clone().unwrap_or_default(),
        parts: record.parts.clone(),
    });
    BatchPrediction {
        id: record.id,
        state: job.state.as_str().to_owned(),
        model: record.model_name,
        version: record.version,
        alias: record.alias,
        dataset_id: record.dataset_id,
        id_column: spec.as_ref().and_then(|s| s.id_column.clone()),
        rows_per_part: spec
            .as_ref()
            .map_or(kiln_types::batch::DEFAULT_ROWS_PER_PART, |s| s.rows_per_part()),
        progress: BatchProgress { rows_done: record.rows_done, rows: record.rows_total },
        bad_rows: record.bad_rows,
        bad_row_samples: record.bad_row_samples,
        output,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        error: job.error,
        ran_on_device: job.ran_on_device,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
    }
}

/// The request as a spec: unknown fields and wrongly typed ones each named (422).
fn parse_spec(body: &Value) -> Result<BatchPredictionSpec, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::validation([(
            "body".to_owned(),
            "must be a JSON object".to_owned(),
        )]));
    };
    let mut problems = ValidationErrors::default();
    for key in object.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.add(key.clone(), format!("unknown field; expected one of: {}", FIELDS.join(", ")));
    }
    let expect =
        |field: &str, ok: fn(&Value) -> bool, what: &str, problems: &mut ValidationErrors| {
            if let Some(v) = object.get(field)
                && !v.is_null()
                && !ok(v)
            {
                problems.add(field, format!("must be {what}"));
            }
        };
    expect("model", Value::is_string, "a string", &mut problems);
    expect("alias", Value::is_string, "a string", &mut problems);
    expect("id_column", Value::is_string, "a string", &mut problems);
    expect(
        "version",
        |v| v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "an integer",
        &mut problems,
    );
    expect("rows_per_part", |v| v.as_u64().is_some(), "a positive integer", &mut problems);
    match object.get("dataset_id") {
        None | Some(Value::Null) => problems.add("dataset_id", "is required"),
        Some(v) => {
            if v.as_str().and_then(|s| s.parse::<Uuid>().ok()).is_none() {
                problems.add("dataset_id", "must be a dataset id (a UUID)");
            }
        }
    }
    if object.get("model").is_none_or(Value::is_null) {
        problems.add("model", "is required");
    }
    // The spec's own rules on the fields that are well typed, so one answer lists them all.
    if let Some(n) = object.get("rows_per_part").and_then(Value::as_u64)
        && !(MIN_ROWS_PER_PART..=MAX_ROWS_PER_PART).contains(&n)
    {
        problems.add(
            "rows_per_part",
            format!("must be between {MIN_ROWS_PER_PART} and {MAX_ROWS_PER_PART}"),
        );
    }
    let given = |field: &str| object.get(field).is_some_and(|v| !v.is_null());
    match (given("version"), given("alias")) {
        (true, true) => problems.add("alias", "give either `version` or `alias`, not both"),
        (false, false) => problems.add("version", "give `version` or `alias`"),
        _ => {}
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    let spec: BatchPredictionSpec = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::validation([("body".to_owned(), e.to_string())]))?;
    spec.validate().map_err(|e| ApiError::invalid(&e))?;
    Ok(spec)
}

/// Score a dataset with a model version.
#[utoipa::path(post, path = "/v1/batch-predictions", operation_id = "create_batch_prediction", tag = "batch-predictions",
    request_body = BatchPredictionSpec,
    responses((status = 201, body = BatchPrediction),
              (status = 404, body = ErrorBody, description = "No such model, version or alias"),
              (status = 409, body = ErrorBody, description = "The version has no Kiln model bundle"),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Member)?;
    let team = caller.team()?;
    crate::validate::no_nul_chars(&body, "")?;
    let spec = parse_spec(&body)?;
    let mut problems = ValidationErrors::default();
    let dataset = match datasets::get(&state.db, team, spec.dataset_id).await? {
        None => {
            problems.add("dataset_id", "no dataset with this id in your team");
            None
        }
        Some(d) if d.format == UploadFormat::TorchScript.as_str() => {
            problems.add("dataset_id", "is a TorchScript upload, not data to score (CSV or NPZ)");
            None
        }
        Some(d) => Some(d),
    };
    let model = models::find(&state.db, team, &spec.model).await?;
    if model.is_none() {
        problems.add("model", format!("no model named `{}` in your team", spec.model));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    let (model, dataset) = (model.expect("checked"), dataset.expect("checked"));
    let version = match (&spec.alias, spec.version) {
        (Some(alias), _) => {
            models::resolve_alias(&state.db, model.id, alias).await?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("model `{}` has no alias `{alias}`", model.name),
                )
            })?
        }
        (None, Some(number)) => {
            models::version(&state.db, model.id, number).await?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("model `{}` has no version {number}", model.name),
                )
            })?
        }
        (None, None) => unreachable!("validated: a version or an alias"),
    };
    if version.bundle_key.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            crate::mlflow::registry::no_bundle_reason(&model.name, version.version),
        ));
    }
    let bundle_sha256 = kiln_types::Sha256Digest::parse(version.bundle_sha256.clone())
        .map_err(ApiError::internal)?;
    // The dataset must fit the model (its feature columns, or its array shape) before a
    // job is queued: the bundle's own input schema against the dataset's, read at upload.
    let (bundle, _) =
        state.serving.bundles().get(&version.bundle_key, &version.bundle_sha256).await.map_err(
            |e| match e {
                kiln_serving::LoadError::Download(_)
                | kiln_serving::LoadError::CacheDir { .. }
                | kiln_serving::LoadError::ParseTask(_) => {
                    ApiError::unavailable("the model bundle", e.to_string())
                }
                other => ApiError::new(
                    ErrorCode::InvalidState,
                    format!("version {} cannot be loaded: {other}", version.version),
                ),
            },
        )?;
    if let Some((field, message)) =
        kiln_ml::schema_problem(&bundle.meta, &dataset.schema, spec.id_column.as_deref())
    {
        return Err(ApiError::validation([(field.to_owned(), message)]));
    }
    drop(bundle);
    let inputs = JobInputs {
        dataset: Some(input_of(&dataset)?),
        script: None,
        model: Some(ModelInput {
            model_id: model.id,
            name: model.name.clone(),
            version: version.version,
            alias: spec.alias.clone(),
            bundle_key: version.bundle_key.clone(),
            bundle_sha256,
        }),
        trial: None,
    };
    let mut new = NewJob::new(team, serde_json::to_value(&spec).map_err(ApiError::internal)?);
    new.inputs = inputs;
    new.created_by = Some(caller.token_id());
    let span = tracing::info_span!("kiln.batch_prediction.create", team.id = %team);
    new.trace_context = kiln_telemetry::traceparent(&span);
    let record = NewBatchPrediction {
        model_id: model.id,
        version_id: version.id,
        model_name: model.name.clone(),
        version: version.version,
        alias: spec.alias.clone(),
        dataset_id: dataset.id,
    };
    let created = state.queue.enqueue_batch_prediction(new, &record).await?;
    caller
        .audit(
            &state.db,
            Some(team),
            "batch_prediction.create",
            "batch_prediction",
            created.record.id.to_string(),
            json!({"model": model.name, "version": version.version, "alias": spec.alias,
                   "dataset_id": dataset.id}),
        )
        .await?;
    Ok(HttpResponse::Created().json(view(created)))
}

/// The team's batch predictions, newest first.
#[utoipa::path(get, path = "/v1/batch-predictions", operation_id = "list_batch_predictions", tag = "batch-predictions",
    params(ListQuery), responses((status = 200, body = Page<BatchPrediction>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<BatchPrediction>>, ApiError> {
    caller.require(Role::Viewer)?;
    let team = caller.team()?;
    let limit = query.limit()?;
    let before = kiln_db::repo::parse_cursor(query.cursor())?;
    let mut rows = state.queue.batch_predictions(team, before, limit as i64 + 1).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|b| b.record.id.to_string()) } else { None };
    Ok(web::Json(Page { items: rows.into_iter().map(view).collect(), next_cursor }))
}

async fn team_batch(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<BatchPredictionJob, ApiError> {
    state
        .queue
        .batch_prediction_for_team(caller.team()?, id)
        .await?
        .ok_or_else(|| ApiError::not_found("batch prediction"))
}

/// One batch prediction: state, progress, bad rows and, once succeeded, its output.
#[utoipa::path(get, path = "/v1/batch-predictions/{id}", operation_id = "get_batch_prediction", tag = "batch-predictions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = BatchPrediction), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<BatchPrediction>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(web::Json(view(team_batch(&state, &caller, path.into_inner()).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Only this part (0-based), with its own header line.
    pub part: Option<u32>,
}

/// Download the predictions as CSV: every part joined under one header line, or one part.
#[utoipa::path(get, path = "/v1/batch-predictions/{id}/output", operation_id = "download_batch_prediction_output",
    tag = "batch-predictions", params(("id" = Uuid, Path), OutputQuery),
    responses((status = 200, description = "The predictions as CSV", content_type = "text/csv", body = String),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not succeeded yet"),
              (status = 422, body = ErrorBody, description = "No such part")),
    security(("bearer" = [])))]
pub async fn output(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    query: web::Query<OutputQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let batch = team_batch(&state, &caller, path.into_inner()).await?;
    if batch.job.state != JobState::Succeeded {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "batch prediction {} is {}; its output is ready once it has succeeded",
                batch.record.id, batch.job.state
            ),
        ));
    }
    let parts = match query.part {
        None => batch.record.parts.clone(),
        Some(n) => match batch.record.parts.iter().find(|p| p.index == n) {
            Some(p) => vec![p.clone()],
            None => {
                return Err(ApiError::validation([(
                    "part".to_owned(),
                    format!(
                        "this output has parts 0 to {}",
                        batch.record.parts.len().saturating_sub(1)
                    ),
                )]));
            }
        },
    };
    let header = batch.record.header.clone().unwrap_or_default();
    // Every part starts with the header line: the joined output keeps the first one only.
    let skip = header.len() as u64 + 1;
    let mut keys = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        // A later part of header only (every row bad) adds nothing to the joined output.
        if i > 0 && p.predictions == 0 {
            continue;
        }
        keys.push(kiln_store::Key::parse(p.key.clone()).map_err(ApiError::internal)?);
    }
    let store = state.store.clone();
    // Open the first part now so that a store outage answers 503 rather than a cut body.
    let mut streams = Vec::new();
    if let Some(first) = keys.first() {
        streams.push(store.get(first, None).await?);
    }
    let rest: Vec<kiln_store::Key> = keys.into_iter().skip(1).collect();
    let first = futures::stream::iter(streams).flatten();
    let later = futures::stream::iter(rest)
        .then(move |key| {
            let store = store.clone();
            async move {
                match store.get(&key, Some(kiln_store::ByteRange::from(skip))).await {
                    Ok(s) => s.boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                }
            }
        })
        .flatten();
    let name = match query.part {
        Some(n) => format!("{}-part-{n:05}.csv", batch.record.id),
        None => format!("{}.csv", batch.record.id),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{name}\"")))
        .streaming(first.chain(later).map(|chunk| chunk.map_err(std::io::Error::other))))
}
