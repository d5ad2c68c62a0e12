//! MLflow tracking: experiments, runs, params, tags, metrics, inputs and searches, as
//! `mlflow/protos/service.proto` has them, on Kiln's runs (a tracked MLflow run IS a Kiln
//! run: same row, same metric series; see [`kiln_db::repo::mlflow`]).
//!
//! Reads need the `viewer` role, writes `member`; another team's experiment or run is
//! `RESOURCE_DOES_NOT_EXIST` whatever the role. Limits are MLflow's own (log-batch: 1,000
//! metrics, 100 params, 100 tags, 1,000 items, 1 MB; keys 250 characters; param values
//! 6,000, tag values 8,000).

// MlflowError (the scaffold's, in mod.rs) carries its ApiError cause inline; every handler
// here answers one, on a cold path.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use kiln_db::repo::mlflow::{self as repo, CreatedRun, RunInfo};
use kiln_db::repo::runs::{self, Point};
use kiln_types::Role;
use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::search;
use super::{MlCaller, MlflowCode, MlflowError};
use crate::state::AppState;

type Res = Result<HttpResponse, MlflowError>;

pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
pub const MAX_BATCH_REQUEST_BYTES: usize = 1_000_000;
pub const MAX_KEY_LENGTH: usize = 250;
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
pub const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;
pub const MAX_EXPERIMENT_TAG_VALUE_LENGTH: usize = 20_000;
/// runs/search and experiments/search: MLflow's default and largest page.
pub const SEARCH_DEFAULT_RESULTS: i64 = 1000;
pub const SEARCH_MAX_RESULTS: i64 = 50_000;
/// get-history-bulk-interval: MLflow's limits.
pub const BULK_MAX_RUNS: usize = 100;
pub const BULK_MAX_RESULTS_PER_RUN: usize = 2500;

/// Mounts the tracking routes inside an MLflow scope (paths relative to `/api/2.0/mlflow`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/experiments/create", web::post().to(create_experiment))
        .route("/experiments/get", web::get().to(get_experiment))
        .route("/experiments/get-by-name", web::get().to(get_experiment_by_name))
        .route("/experiments/search", web::post().to(search_experiments))
        .route("/experiments/update", web::post().to(update_experiment))
        .route("/experiments/delete", web::post().to(delete_experiment))
        .route("/experiments/restore", web::post().to(restore_experiment))
        .route("/experiments/set-experiment-tag", web::post().to(set_experiment_tag))
        .route("/experiments/delete-experiment-tag", web::post().to(delete_experiment_tag))
        .route("/runs/create", web::post().to(create_run))
        .route("/runs/get", web::get().to(get_run))
        .route("/runs/update", web::post().to(update_run))
        .route("/runs/delete", web::post().to(delete_run))
        .route("/runs/restore", web::post().to(restore_run))
        .route("/runs/search", web::post().to(search_runs))
        .route("/runs/log-metric", web::post().to(log_metric))
        .route("/runs/log-parameter", web::post().to(log_param))
        .route("/runs/set-tag", web::post().to(set_tag))
        .route("/runs/delete-tag", web::post().to(delete_tag))
        .route("/runs/log-inputs", web::post().to(log_inputs))
        .route("/runs/outputs", web::post().to(log_outputs))
        .route("/runs/log-model", web::post().to(log_model))
        .service(
            web::resource("/runs/log-batch")
                // The body is read raw (MLflow's 1 MB limit is checked, and the hot path
                // parses once); the payload limit only has to let that through.
                .app_data(web::PayloadConfig::new(4 * MAX_BATCH_REQUEST_BYTES))
                .route(web::post().to(log_batch)),
        )
        .route("/metrics/get-history", web::get().to(get_metric_history))
        .route(
            "/metrics/get-history-bulk-interval",
            web::get().to(get_metric_history_bulk_interval),
        );
}

// ---------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------

/// An int64 field: MLflow's client sends numbers, proto JSON allows strings.
fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("{n} is not a 64-bit integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("`{s}` is not an integer"))),
        Some(other) => Err(D::Error::custom(format!("{other} is not an integer"))),
    }
}

/// A double: a number, or proto JSON's "NaN", "Infinity", "-Infinity".
fn parse_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            other => other.trim().parse().ok(),
        },
        _ => None,
    }
}

fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            parse_f64(&v).map(Some).ok_or_else(|| D::Error::custom(format!("{v} is not a number")))
        }
    }
}

/// A double on the wire: proto JSON writes the non-finite ones as strings.
#[derive(Debug, Clone, Copy)]
struct WireF64(f64);

impl Serialize for WireF64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v == f64::INFINITY {
            s.serialize_str("Infinity")
        } else if v == f64::NEG_INFINITY {
            s.serialize_str("-Infinity")
        } else {
            s.serialize_f64(v)
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct KeyValue {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Serialize)]
struct MetricOut {
    key: String,
    value: WireF64,
    timestamp: i64,
    step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
}

impl MetricOut {
    fn of(p: repo::MetricPoint, run_id: Option<String>) -> Self {
        MetricOut {
            key: p.key,
            value: WireF64(p.value),
            timestamp: p.timestamp,
            step: p.step,
            run_id,
        }
    }
}

#[derive(Debug, Serialize)]
struct ExperimentOut {
    experiment_id: String,
    name: String,
    artifact_location: String,
    lifecycle_stage: String,
    creation_time: i64,
    last_update_time: i64,
    tags: Vec<KeyValue>,
}

fn experiment_view(e: repo::Experiment) -> ExperimentOut {
    ExperimentOut {
        artifact_location: format!("mlflow-artifacts:/{}", e.id),
        experiment_id: e.id.to_string(),
        name: e.name,
        lifecycle_stage: e.lifecycle_stage,
        creation_time: e.creation_time,
        last_update_time: e.last_update_time,
        tags: e.tags.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
    }
}

#[derive(Debug, Serialize)]
struct RunInfoOut {
    run_id: String,
    run_uuid: String,
    run_name: String,
    experiment_id: String,
    user_id: String,
    status: String,
    start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    artifact_uri: String,
    lifecycle_stage: String,
}

fn info_view(i: &RunInfo) -> RunInfoOut {
    RunInfoOut {
        run_id: i.run_id.clone(),
        run_uuid: i.run_id.clone(),
        run_name: i.run_name.clone(),
        experiment_id: i.experiment_id.to_string(),
        user_id: i.user_id.clone(),
        status: i.status.clone(),
        start_time: i.start_time,
        end_time: i.end_time,
        artifact_uri: i.artifact_uri.clone(),
        lifecycle_stage: i.lifecycle_stage.clone(),
    }
}

#[derive(Debug, Serialize)]
struct RunDataOut {
    metrics: Vec<MetricOut>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
struct DatasetInputOut {
    tags: Value,
    dataset: Value,
}

#[derive(Debug, Serialize)]
struct ModelInputOut {
    model_id: String,
}

#[derive(Debug, Serialize)]
struct ModelOutputOut {
    model_id: String,
    step: i64,
}

#[derive(Debug, Serialize)]
struct RunInputsOut {
    dataset_inputs: Vec<DatasetInputOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    model_inputs: Vec<ModelInputOut>,
}

#[derive(Debug, Serialize)]
struct RunOutputsOut {
    model_outputs: Vec<ModelOutputOut>,
}

#[derive(Debug, Serialize)]
struct RunOut {
    info: RunInfoOut,
    data: RunDataOut,
    inputs: RunInputsOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<RunOutputsOut>,
}

fn kv(pairs: Vec<(String, String)>) -> Vec<KeyValue> {
    pairs.into_iter().map(|(key, value)| KeyValue { key, value }).collect()
}

fn run_view(r: repo::FullRun) -> RunOut {
    RunOut {
        info: info_view(&r.info),
        data: RunDataOut {
            metrics: r.metrics.into_iter().map(|m| MetricOut::of(m, None)).collect(),
            params: kv(r.params),
            tags: kv(r.tags),
        },
        inputs: RunInputsOut {
            dataset_inputs: r
                .inputs
                .into_iter()
                .map(|d| DatasetInputOut { tags: d.tags, dataset: d.dataset })
                .collect(),
            model_inputs: r
                .model_inputs
                .into_iter()
                .map(|model_id| ModelInputOut { model_id })
                .collect(),
        },
        outputs: (!r.model_outputs.is_empty()).then(|| RunOutputsOut {
            model_outputs: r
                .model_outputs
                .into_iter()
                .map(|(model_id, step)| ModelOutputOut { model_id, step })
                .collect(),
        }),
    }
}

fn ok<T: Serialize>(body: T) -> Res {
    Ok(HttpResponse::Ok().json(body))
}

fn empty() -> Res {
    Ok(HttpResponse::Ok().json(json!({})))
}

// ---------------------------------------------------------------------------------------
// Checks shared by the handlers
// ---------------------------------------------------------------------------------------

fn team(caller: &MlCaller) -> Result<Uuid, MlflowError> {
    Ok(caller.team()?)
}

fn require(caller: &MlCaller, role: Role) -> Result<(), MlflowError> {
    Ok(caller.require(role)?)
}

fn missing(param: &str) -> MlflowError {
    MlflowError::invalid(format!("Missing value for required parameter '{param}'."))
}

fn need<'a>(v: &'a Option<String>, param: &str) -> Result<&'a str, MlflowError> {
    match v.as_deref() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(missing(param)),
    }
}

/// MLflow's rule for metric, param and tag names.
fn check_key(kind: &str, key: &str) -> Result<(), MlflowError> {
    if key.is_empty() {
        return Err(MlflowError::invalid(format!(
            "Missing value for required parameter 'key' ({kind} name)."
        )));
    }
    if key.chars().count() > MAX_KEY_LENGTH {
        return Err(MlflowError::invalid(format!(
            "{kind} name '{}...' had length {}, which exceeded length limit of {MAX_KEY_LENGTH}",
            key.chars().take(40).collect::<String>(),
            key.chars().count()
        )));
    }
    let fine =
        key.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | ':' | '/'));
    if !fine || key.starts_with('/') || key.split('/').any(|part| part == "..") {
        return Err(MlflowError::invalid(format!(
            "Invalid {kind} name: '{key}'. Names may only contain alphanumerics, underscores (_), \
             dashes (-), periods (.), spaces ( ), colons (:) and slashes (/), and may not be an \
             absolute path or climb with '..'."
        )));
    }
    Ok(())
}

fn check_value(kind: &str, key: &str, value: &str, limit: usize) -> Result<(), MlflowError> {
    let len = value.chars().count();
    if len > limit {
        return Err(MlflowError::invalid(format!(
            "{kind} value for '{key}' had length {len}, which exceeded length limit of {limit}"
        )));
    }
    if value.contains('\0') {
        return Err(MlflowError::invalid(format!("{kind} value for '{key}' contains U+0000")));
    }
    Ok(())
}

fn check_tag(key: &str, value: &str) -> Result<(), MlflowError> {
    check_key("Tag", key)?;
    check_value("Tag", key, value, MAX_TAG_VALUE_LENGTH)
}

fn check_param(key: &str, value: &str) -> Result<(), MlflowError> {
    check_key("Param", key)?;
    check_value("Param", key, value, MAX_PARAM_VALUE_LENGTH)
}

fn millis(ms: i64, what: &str) -> Result<DateTime<Utc>, MlflowError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        MlflowError::invalid(format!("{what} {ms} is not a valid time in milliseconds"))
    })
}

fn parse_experiment_id(id: &str) -> Option<i64> {
    id.trim().parse::<i64>().ok().filter(|i| *i >= 0)
}

async fn team_experiment(
    state: &AppState,
    team: Uuid,
    id: &str,
) -> Result<repo::Experiment, MlflowError> {
    let not_found = || MlflowError::not_found(format!("No Experiment with id={id} exists"));
    let Some(n) = parse_experiment_id(id) else { return Err(not_found()) };
    repo::get_experiment(&state.db, team, n).await?.ok_or_else(not_found)
}

/// The run a request names by `run_id` (or the older `run_uuid`), of the caller's team.
async fn team_run(
    state: &AppState,
    caller: &MlCaller,
    run_id: &Option<String>,
    run_uuid: &Option<String>,
) -> Result<RunInfo, MlflowError> {
    let id = match (run_id.as_deref(), run_uuid.as_deref()) {
        (Some(id), _) if !id.is_empty() => id,
        (_, Some(id)) if !id.is_empty() => id,
        _ => return Err(missing("run_id")),
    };
    repo::run_by_mlflow_id(&state.db, team(caller)?, id)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("Run with id={id} not found")))
}

/// A run a write may touch: the caller is a member, the run is active.
async fn writable_run(
    state: &AppState,
    caller: &MlCaller,
    run_id: &Option<String>,
    run_uuid: &Option<String>,
) -> Result<RunInfo, MlflowError> {
    let run = team_run(state, caller, run_id, run_uuid).await?;
    require(caller, Role::Member)?;
    if run.lifecycle_stage != "active" {
        return Err(MlflowError::invalid(format!(
            "The run {} must be in the 'active' state. Current state is {}.",
            run.run_id, run.lifecycle_stage
        )));
    }
    Ok(run)
}

async fn full_run(state: &AppState, info: RunInfo) -> Result<RunOut, MlflowError> {
    let mut runs = repo::load_runs(&state.db, vec![info]).await?;
    Ok(run_view(runs.pop().expect("one run in, one out")))
}

/// A query string's values of `key` (repeated keys allowed, as `requests` sends lists).
fn query_all<'a>(q: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    q.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

fn query_one<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn query_i64(q: &[(String, String)], key: &str) -> Result<Option<i64>, MlflowError> {
    query_one(q, key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| MlflowError::invalid(format!("'{key}' must be an integer, got '{v}'")))
        })
        .transpose()
}

fn page_offset(token: Option<&str>) -> Result<i64, MlflowError> {
    match token {
        None | Some("") => Ok(0),
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| MlflowError::invalid(format!("Invalid page token '{t}'"))),
    }
}

fn page_size(max_results: Option<i64>, what: &str) -> Result<i64, MlflowError> {
    match max_results {
        None => Ok(SEARCH_DEFAULT_RESULTS),
        Some(n) if (1..=SEARCH_MAX_RESULTS).contains(&n) => Ok(n),
        Some(n) => Err(MlflowError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied: {what} takes 1 to {SEARCH_MAX_RESULTS}"
        ))),
    }
}

/// A `view_type` / `run_view_type`: the lifecycle stages it shows.
fn view_stages(v: &Option<Value>) -> Result<&'static [&'static str], MlflowError> {
    match v {
        None | Some(Value::Null) => Ok(&["active"]),
        Some(Value::String(s)) => match s.as_str() {
            "ACTIVE_ONLY" => Ok(&["active"]),
            "DELETED_ONLY" => Ok(&["deleted"]),
            "ALL" => Ok(&["active", "deleted"]),
            other => Err(MlflowError::invalid(format!(
                "Invalid view type '{other}': use ACTIVE_ONLY, DELETED_ONLY or ALL"
            ))),
        },
        Some(Value::Number(n)) => match n.as_i64() {
            Some(1) => Ok(&["active"]),
            Some(2) => Ok(&["deleted"]),
            Some(3) => Ok(&["active", "deleted"]),
            _ => Err(MlflowError::invalid(format!("Invalid view type {n}"))),
        },
        Some(other) => Err(MlflowError::invalid(format!("Invalid view type {other}"))),
    }
}

// ---------------------------------------------------------------------------------------
// Experiments
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct CreateExperimentReq {
    name: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

fn check_experiment_name(name: &str) -> Result<(), MlflowError> {
    if name.trim().is_empty() {
        return Err(MlflowError::invalid(
            "Invalid experiment name: ''. An experiment name must be a non-empty string.",
        ));
    }
    if name.chars().count() > MAX_EXPERIMENT_NAME_LENGTH {
        return Err(MlflowError::invalid(format!(
            "Experiment name exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters"
        )));
    }
    if name.contains('\0') {
        return Err(MlflowError::invalid("Experiment name contains U+0000"));
    }
    Ok(())
}

fn check_experiment_tag(key: &str, value: &str) -> Result<(), MlflowError> {
    check_key("Tag", key)?;
    check_value("Tag", key, value, MAX_EXPERIMENT_TAG_VALUE_LENGTH)
}

fn already_exists(name: &str) -> MlflowError {
    MlflowError::new(
        MlflowCode::ResourceAlreadyExists,
        format!("Experiment(name={name}) already exists."),
    )
}

async fn create_experiment(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<CreateExperimentReq>,
) -> Res {
    require(&caller, Role::Member)?;
    let team = team(&caller)?;
    let name = need(&body.name, "name")?;
    check_experiment_name(name)?;
    let tags: Vec<(String, String)> =
        body.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    for (k, v) in &tags {
        check_experiment_tag(k, v)?;
    }
    match repo::create_experiment(&state.db, team, name, &tags).await {
        Ok(id) => ok(json!({"experiment_id": id.to_string()})),
        Err(kiln_db::repo::RepoError::AlreadyExists { .. }) => Err(already_exists(name)),
        Err(e) => Err(e.into()),
    }
}

async fn get_experiment(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Res {
    require(&caller, Role::Viewer)?;
    let id = query_one(&query, "experiment_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("experiment_id"))?;
    let e = team_experiment(&state, team(&caller)?, id).await?;
    ok(json!({"experiment": experiment_view(e)}))
}

async fn get_experiment_by_name(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Res {
    require(&caller, Role::Viewer)?;
    let name = query_one(&query, "experiment_name")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("experiment_name"))?;
    let e =
        repo::get_experiment_by_name(&state.db, team(&caller)?, name).await?.ok_or_else(|| {
            MlflowError::not_found(format!("Could not find experiment with name '{name}'"))
        })?;
    ok(json!({"experiment": experiment_view(e)}))
}

#[derive(Debug, Deserialize)]
struct SearchExperimentsReq {
    #[serde(default, deserialize_with = "opt_i64")]
    max_results: Option<i64>,
    page_token: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    order_by: Vec<String>,
    view_type: Option<Value>,
}

async fn search_experiments(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<SearchExperimentsReq>,
) -> Res {
    require(&caller, Role::Viewer)?;
    let team = team(&caller)?;
    let limit = page_size(body.max_results, "experiments/search")?;
    let offset = page_offset(body.page_token.as_deref())?;
    let stages = view_stages(&body.view_type)?;
    let clauses = search::parse_experiment_filter(body.filter.as_deref().unwrap_or_default())
        .map_err(MlflowError::invalid)?;
    let order = search::parse_experiment_order(&body.order_by).map_err(MlflowError::invalid)?;
    let mut found =
        repo::search_experiments(&state.db, team, stages, &clauses, &order, offset, limit + 1)
            .await?;
    let next = (found.len() as i64 > limit).then(|| (offset + limit).to_string());
    found.truncate(limit as usize);
    let experiments: Vec<ExperimentOut> = found.into_iter().map(experiment_view).collect();
    match next {
        Some(token) => ok(json!({"experiments": experiments, "next_page_token": token})),
        None => ok(json!({"experiments": experiments})),
    }
}

#[derive(Debug, Deserialize)]
struct ExperimentIdReq {
    experiment_id: Option<Value>,
    new_name: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

impl ExperimentIdReq {
    fn id(&self) -> Result<String, MlflowError> {
        match &self.experiment_id {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(missing("experiment_id")),
        }
    }
}

async fn update_experiment(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<ExperimentIdReq>,
) -> Res {
    let team = team(&caller)?;
    let e = team_experiment(&state, team, &body.id()?).await?;
    require(&caller, Role::Member)?;
    if let Some(name) = body.new_name.as_deref() {
        check_experiment_name(name)?;
        if e.lifecycle_stage != "active" {
            return Err(MlflowError::invalid(format!(
                "Cannot rename a non-active experiment {} (lifecycle stage {})",
                e.id, e.lifecycle_stage
            )));
        }
        match repo::rename_experiment(&state.db, team, e.id, name).await {
            Ok(_) => {}
            Err(kiln_db::repo::RepoError::AlreadyExists { .. }) => {
                return Err(already_exists(name));
            }
            Err(err) => return Err(err.into()),
        }
    }
    empty()
}

async fn set_experiment_stage(
    state: &AppState,
    caller: &MlCaller,
    body: &ExperimentIdReq,
    stage: &str,
) -> Res {
    let team = team(caller)?;
    let e = team_experiment(state, team, &body.id()?).await?;
    require(caller, Role::Member)?;
    if e.id == 0 && stage == "deleted" {
        return Err(MlflowError::invalid(
            "The Default experiment (0) cannot be deleted: Kiln jobs' runs live in it",
        ));
    }
    repo::set_experiment_lifecycle(&state.db, team, e.id, stage).await?;
    empty()
}

async fn delete_experiment(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<ExperimentIdReq>,
) -> Res {
    set_experiment_stage(&state, &caller, &body, "deleted").await
}

async fn restore_experiment(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<ExperimentIdReq>,
) -> Res {
    set_experiment_stage(&state, &caller, &body, "active").await
}

async fn set_experiment_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<ExperimentIdReq>,
) -> Res {
    let team = team(&caller)?;
    let e = team_experiment(&state, team, &body.id()?).await?;
    require(&caller, Role::Member)?;
    let key = need(&body.key, "key")?;
    let value = body.value.as_deref().unwrap_or_default();
    check_experiment_tag(key, value)?;
    repo::set_experiment_tag(&state.db, team, e.id, key, Some(value)).await?;
    empty()
}

async fn delete_experiment_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<ExperimentIdReq>,
) -> Res {
    let team = team(&caller)?;
    let e = team_experiment(&state, team, &body.id()?).await?;
    require(&caller, Role::Member)?;
    let key = need(&body.key, "key")?;
    if !repo::set_experiment_tag(&state.db, team, e.id, key, None).await? {
        return Err(MlflowError::not_found(format!(
            "No tag with name: {key} in experiment with id {}",
            e.id
        )));
    }
    empty()
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct CreateRunReq {
    experiment_id: Option<Value>,
    user_id: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    start_time: Option<i64>,
    #[serde(default)]
    tags: Vec<KeyValue>,
    run_name: Option<String>,
}

/// A run name like MLflow's generated ones (`adjective-animal-123`).
fn generated_run_name() -> String {
    const ADJECTIVES: [&str; 16] = [
        "bold", "calm", "eager", "gentle", "brave", "clever", "swift", "bright", "quiet", "merry",
        "noble", "keen", "lucky", "proud", "vivid", "witty",
    ];
    const ANIMALS: [&str; 16] = [
        "fox", "owl", "otter", "lynx", "heron", "panda", "whale", "finch", "hare", "seal", "wolf",
        "crane", "bison", "moth", "newt", "yak",
    ];
    let bytes = Uuid::new_v4().into_bytes();
    format!(
        "{}-{}-{}",
        ADJECTIVES[(bytes[0] & 15) as usize],
        ANIMALS[(bytes[1] & 15) as usize],
        u16::from_le_bytes([bytes[2], bytes[3]]) % 1000
    )
}

async fn create_run(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<CreateRunReq>,
) -> Res {
    let team = team(&caller)?;
    let experiment = match &body.experiment_id {
        None | Some(Value::Null) => "0".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "0".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(MlflowError::invalid(format!("Invalid experiment_id {other}"))),
    };
    let e = team_experiment(&state, team, &experiment).await?;
    require(&caller, Role::Member)?;
    let mut name_tag = None;
    let mut tags = Vec::new();
    for t in &body.tags {
        check_tag(&t.key, &t.value)?;
        if t.key == repo::RUN_NAME_TAG {
            name_tag = Some(t.value.clone());
        } else {
            tags.push((t.key.clone(), t.value.clone()));
        }
    }
    let run_name = body.run_name.clone().filter(|n| !n.is_empty());
    if let (Some(a), Some(b)) = (&run_name, &name_tag)
        && a != b
    {
        return Err(MlflowError::invalid(format!(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with \
             different values (run_name='{a}', mlflow.runName='{b}')."
        )));
    }
    let name = run_name.or(name_tag).filter(|n| !n.is_empty()).unwrap_or_else(generated_run_name);
    check_value("Run name", "run_name", &name, MAX_KEY_LENGTH)?;
    let start = match body.start_time {
        Some(ms) => millis(ms, "start_time")?,
        None => Utc::now(),
    };
    let user = body.user_id.clone().unwrap_or_default();
    check_value("User id", "user_id", &user, MAX_KEY_LENGTH)?;
    let created = repo::create_run(
        &state.db,
        repo::NewRun {
            team_id: team,
            experiment_id: e.id,
            name: &name,
            start_time: start,
            user_id: &user,
            tags: &tags,
            created_by: Some(caller.token_id()),
        },
    )
    .await?;
    let id = match created {
        CreatedRun::Created(id) => id,
        CreatedRun::NoExperiment => {
            return Err(MlflowError::not_found(format!(
                "No Experiment with id={experiment} exists"
            )));
        }
        CreatedRun::ExperimentDeleted => {
            return Err(MlflowError::invalid(format!(
                "The experiment {experiment} must be in the 'active' state. Current state is deleted."
            )));
        }
    };
    let info = repo::run_info(&state.db, team, id)
        .await?
        .ok_or_else(|| MlflowError::not_found("the run was deleted meanwhile"))?;
    ok(json!({"run": full_run(&state, info).await?}))
}

#[derive(Debug, Deserialize)]
struct RunIdQuery {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

async fn get_run(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<RunIdQuery>,
) -> Res {
    require(&caller, Role::Viewer)?;
    let info = team_run(&state, &caller, &query.run_id, &query.run_uuid).await?;
    ok(json!({"run": full_run(&state, info).await?}))
}

#[derive(Debug, Deserialize)]
struct UpdateRunReq {
    run_id: Option<String>,
    run_uuid: Option<String>,
    status: Option<Value>,
    #[serde(default, deserialize_with = "opt_i64")]
    end_time: Option<i64>,
    run_name: Option<String>,
}

fn run_status(v: &Option<Value>) -> Result<Option<&'static str>, MlflowError> {
    let name = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(1) => "RUNNING".into(),
            Some(2) => "SCHEDULED".into(),
            Some(3) => "FINISHED".into(),
            Some(4) => "FAILED".into(),
            Some(5) => "KILLED".into(),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    };
    match name.as_str() {
        "RUNNING" => Ok(Some("RUNNING")),
        "SCHEDULED" => Ok(Some("SCHEDULED")),
        "FINISHED" => Ok(Some("FINISHED")),
        "FAILED" => Ok(Some("FAILED")),
        "KILLED" => Ok(Some("KILLED")),
        other => Err(MlflowError::invalid(format!(
            "Invalid run status '{other}': use RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"
        ))),
    }
}

async fn update_run(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<UpdateRunReq>,
) -> Res {
    let run = team_run(&state, &caller, &body.run_id, &body.run_uuid).await?;
    require(&caller, Role::Member)?;
    let status = run_status(&body.status)?;
    let end = body.end_time.map(|ms| millis(ms, "end_time")).transpose()?;
    let name = body.run_name.as_deref().filter(|n| !n.is_empty());
    if let Some(name) = name {
        check_value("Run name", "run_name", name, MAX_KEY_LENGTH)?;
    }
    if run.job_id.is_some() && (status.is_some() || end.is_some()) {
        return Err(MlflowError::new(
            MlflowCode::InvalidState,
            format!("run {} is a Kiln job's run: it ends with its job", run.run_id),
        ));
    }
    repo::update_run(&state.db, &run, status, end, name).await?;
    let info = repo::run_info(&state.db, run.team_id, run.run_uuid)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("Run with id={} not found", run.run_id)))?;
    ok(json!({"run_info": info_view(&info)}))
}

#[derive(Debug, Deserialize)]
struct RunWriteReq {
    run_id: Option<String>,
    run_uuid: Option<String>,
    key: Option<String>,
    value: Option<Value>,
    #[serde(default, deserialize_with = "opt_i64")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    step: Option<i64>,
}

async fn set_run_stage(
    state: &AppState,
    caller: &MlCaller,
    body: &RunWriteReq,
    stage: &str,
) -> Res {
    let run = team_run(state, caller, &body.run_id, &body.run_uuid).await?;
    require(caller, Role::Member)?;
    repo::set_run_lifecycle(&state.db, &run, stage).await?;
    empty()
}

async fn delete_run(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<RunWriteReq>,
) -> Res {
    set_run_stage(&state, &caller, &body, "deleted").await
}

async fn restore_run(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<RunWriteReq>,
) -> Res {
    set_run_stage(&state, &caller, &body, "active").await
}

fn string_value(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

async fn log_metric(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<RunWriteReq>,
) -> Res {
    let run = writable_run(&state, &caller, &body.run_id, &body.run_uuid).await?;
    let key = need(&body.key, "key")?;
    check_key("Metric", key)?;
    let value = match &body.value {
        None | Some(Value::Null) => return Err(missing("value")),
        Some(v) => parse_f64(v).ok_or_else(|| {
            MlflowError::invalid(format!("Got invalid value {v} for metric '{key}'"))
        })?,
    };
    let ts = millis(body.timestamp.ok_or_else(|| missing("timestamp"))?, "timestamp")?;
    let point = Point { name: key.to_owned(), step: body.step.unwrap_or(0), value, ts: Some(ts) };
    runs::append_metrics(&state.db, run.run_uuid, &[point]).await?;
    empty()
}

async fn log_param(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<RunWriteReq>,
) -> Res {
    let run = writable_run(&state, &caller, &body.run_id, &body.run_uuid).await?;
    let key = need(&body.key, "key")?;
    let value = string_value(&body.value);
    check_param(key, &value)?;
    write_params(&state, &run, &[(key.to_owned(), value)]).await?;
    empty()
}

async fn write_params(
    state: &AppState,
    run: &RunInfo,
    params: &[(String, String)],
) -> Result<(), MlflowError> {
    match repo::log_params(&state.db, run.run_uuid, params).await? {
        Ok(()) => Ok(()),
        Err(c) => Err(MlflowError::invalid(format!(
            "Changing param values is not allowed. Param with key='{}' was already logged with \
             value='{}' for run ID='{}'. Attempted logging new value '{}'.",
            c.key, c.old, run.run_id, c.new
        ))),
    }
}

async fn set_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<RunWriteReq>,
) -> Res {
    let run = writable_run(&state, &caller, &body.run_id, &body.run_uuid).await?;
    let key = need(&body.key, "key")?;
    let value = string_value(&body.value);
    check_tag(key, &value)?;
    repo::set_tags(&state.db, run.run_uuid, &[(key.to_owned(), value)]).await?;
    empty()
}

async fn delete_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<RunWriteReq>,
) -> Res {
    let run = writable_run(&state, &caller, &body.run_id, &body.run_uuid).await?;
    let key = need(&body.key, "key")?;
    if !repo::delete_tag(&state.db, run.run_uuid, key).await? {
        return Err(MlflowError::not_found(format!(
            "No tag with name: {key} in run with id {}",
            run.run_id
        )));
    }
    empty()
}

#[derive(Debug, Deserialize)]
struct BatchMetric {
    key: Option<String>,
    #[serde(default, deserialize_with = "opt_f64")]
    value: Option<f64>,
    #[serde(default, deserialize_with = "opt_i64")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    step: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct LogBatchReq {
    run_id: Option<String>,
    run_uuid: Option<String>,
    #[serde(default)]
    metrics: Vec<BatchMetric>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

/// runs/log-batch, the hot path: one run lookup, then one statement per kind present
/// (params first: a changed param refuses the whole batch before anything is written).
async fn log_batch(state: web::Data<AppState>, caller: MlCaller, body: web::Bytes) -> Res {
    if body.len() > MAX_BATCH_REQUEST_BYTES {
        return Err(MlflowError::invalid(format!(
            "Batched logging API requests must be at most {MAX_BATCH_REQUEST_BYTES} bytes, got {}",
            body.len()
        )));
    }
    let req: LogBatchReq = serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            MlflowError::invalid(e.to_string())
        } else {
            MlflowError::new(MlflowCode::MalformedRequest, format!("malformed request: {e}"))
        }
    })?;
    let (m, p, t) = (req.metrics.len(), req.params.len(), req.tags.len());
    if m > MAX_METRICS_PER_BATCH {
        return Err(MlflowError::invalid(format!(
            "A batch logging request can contain at most {MAX_METRICS_PER_BATCH} metrics. Got {m} metrics. \
             Please split up metrics across multiple requests and try again."
        )));
    }
    if p > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(MlflowError::invalid(format!(
            "A batch logging request can contain at most {MAX_PARAMS_TAGS_PER_BATCH} params. Got {p} params. \
             Please split up params across multiple requests and try again."
        )));
    }
    if t > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(MlflowError::invalid(format!(
            "A batch logging request can contain at most {MAX_PARAMS_TAGS_PER_BATCH} tags. Got {t} tags. \
             Please split up tags across multiple requests and try again."
        )));
    }
    if m + p + t > MAX_ENTITIES_PER_BATCH {
        return Err(MlflowError::invalid(format!(
            "A batch logging request can contain at most {MAX_ENTITIES_PER_BATCH} metrics, params and tags \
             in total. Got {} in total.",
            m + p + t
        )));
    }
    let mut points = Vec::with_capacity(m);
    for metric in &req.metrics {
        let key = need(&metric.key, "metrics[].key")?;
        check_key("Metric", key)?;
        let value = metric.value.ok_or_else(|| missing("metrics[].value"))?;
        let ts =
            millis(metric.timestamp.ok_or_else(|| missing("metrics[].timestamp"))?, "timestamp")?;
        points.push(Point {
            name: key.to_owned(),
            step: metric.step.unwrap_or(0),
            value,
            ts: Some(ts),
        });
    }
    let mut params: Vec<(String, String)> = Vec::with_capacity(p);
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for kv in &req.params {
        check_param(&kv.key, &kv.value)?;
        if let Some(prev) = seen.insert(kv.key.as_str(), kv.value.as_str()) {
            if prev != kv.value {
                return Err(MlflowError::invalid(format!(
                    "Duplicate parameter keys have been submitted: ['{}']. Please ensure the request \
                     contains only one param value per param key.",
                    kv.key
                )));
            }
            continue;
        }
        params.push((kv.key.clone(), kv.value.clone()));
    }
    let mut tags = Vec::with_capacity(t);
    for kv in &req.tags {
        check_tag(&kv.key, &kv.value)?;
        tags.push((kv.key.clone(), kv.value.clone()));
    }
    let run = writable_run(&state, &caller, &req.run_id, &req.run_uuid).await?;
    if !params.is_empty() {
        write_params(&state, &run, &params).await?;
    }
    if !points.is_empty() {
        runs::append_metrics(&state.db, run.run_uuid, &points).await?;
    }
    if !tags.is_empty() {
        repo::set_tags(&state.db, run.run_uuid, &tags).await?;
    }
    empty()
}

#[derive(Debug, Deserialize)]
struct DatasetReq {
    name: Option<String>,
    digest: Option<String>,
    source_type: Option<String>,
    source: Option<String>,
    schema: Option<String>,
    profile: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DatasetInputReq {
    #[serde(default)]
    tags: Vec<KeyValue>,
    dataset: Option<DatasetReq>,
}

#[derive(Debug, Deserialize)]
struct ModelRef {
    model_id: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    step: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct LogInputsReq {
    run_id: Option<String>,
    #[serde(default)]
    datasets: Vec<DatasetInputReq>,
    #[serde(default)]
    models: Vec<ModelRef>,
}

async fn log_inputs(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<LogInputsReq>,
) -> Res {
    let run = writable_run(&state, &caller, &body.run_id, &None).await?;
    if body.datasets.len() > MAX_ENTITIES_PER_BATCH {
        return Err(MlflowError::invalid(format!(
            "Cannot log more than {MAX_ENTITIES_PER_BATCH} datasets in one request, got {}",
            body.datasets.len()
        )));
    }
    let mut inputs = Vec::new();
    for d in &body.datasets {
        let ds = d.dataset.as_ref().ok_or_else(|| missing("datasets[].dataset"))?;
        let name = need(&ds.name, "dataset.name")?;
        let digest = need(&ds.digest, "dataset.digest")?;
        if name.chars().count() > 500 || digest.chars().count() > 36 {
            return Err(MlflowError::invalid("dataset name is at most 500 characters, digest 36"));
        }
        let context = d
            .tags
            .iter()
            .find(|t| t.key == "mlflow.data.context")
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let mut dataset = serde_json::Map::new();
        dataset.insert("name".into(), json!(name));
        dataset.insert("digest".into(), json!(digest));
        dataset.insert("source_type".into(), json!(ds.source_type.clone().unwrap_or_default()));
        dataset.insert("source".into(), json!(ds.source.clone().unwrap_or_default()));
        if let Some(schema) = &ds.schema {
            dataset.insert("schema".into(), json!(schema));
        }
        if let Some(profile) = &ds.profile {
            dataset.insert("profile".into(), json!(profile));
        }
        let tags =
            serde_json::to_value(&d.tags).map_err(|e| MlflowError::invalid(e.to_string()))?;
        let dataset = Value::Object(dataset);
        crate::validate::no_nul_chars(&dataset, "dataset")?;
        inputs.push(repo::NewInput {
            name: name.to_owned(),
            digest: digest.to_owned(),
            context,
            dataset,
            tags,
        });
    }
    let models: Vec<(&str, String, i64)> = body
        .models
        .iter()
        .filter_map(|m| m.model_id.clone().filter(|id| !id.is_empty()))
        .map(|id| ("input", id, 0))
        .collect();
    repo::log_inputs(&state.db, run.run_uuid, &inputs, &models).await?;
    empty()
}

#[derive(Debug, Deserialize)]
struct LogOutputsReq {
    run_id: Option<String>,
    #[serde(default)]
    models: Vec<ModelRef>,
}

async fn log_outputs(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<LogOutputsReq>,
) -> Res {
    let run = writable_run(&state, &caller, &body.run_id, &None).await?;
    let mut models = Vec::new();
    for m in &body.models {
        let id = need(&m.model_id, "models[].model_id")?;
        models.push(("output", id.to_owned(), m.step.unwrap_or(0)));
    }
    repo::log_inputs(&state.db, run.run_uuid, &[], &models).await?;
    empty()
}

#[derive(Debug, Deserialize)]
struct LogModelReq {
    run_id: Option<String>,
    model_json: Option<String>,
}

/// runs/log-model (MLflow 2's record of a logged model): kept, as MLflow does, in the run's
/// `mlflow.log-model.history` tag.
async fn log_model(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<LogModelReq>,
) -> Res {
    let run = writable_run(&state, &caller, &body.run_id, &None).await?;
    let model_json = need(&body.model_json, "model_json")?;
    let model: Value = serde_json::from_str(model_json)
        .map_err(|e| MlflowError::invalid(format!("model_json is not JSON: {e}")))?;
    let full = repo::load_runs(&state.db, vec![run.clone()]).await?;
    let key = "mlflow.log-model.history";
    let mut history: Vec<Value> = full
        .first()
        .and_then(|r| r.tags.iter().find(|(k, _)| k == key))
        .and_then(|(_, v)| serde_json::from_str(v).ok())
        .unwrap_or_default();
    history.push(model);
    let value = serde_json::to_string(&history).map_err(|e| MlflowError::invalid(e.to_string()))?;
    repo::set_tags(&state.db, run.run_uuid, &[(key.to_owned(), value)]).await?;
    empty()
}

// ---------------------------------------------------------------------------------------
// Search and metric history
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct SearchRunsReq {
    #[serde(default)]
    experiment_ids: Vec<Value>,
    filter: Option<String>,
    run_view_type: Option<Value>,
    #[serde(default, deserialize_with = "opt_i64")]
    max_results: Option<i64>,
    #[serde(default)]
    order_by: Vec<String>,
    page_token: Option<String>,
}

async fn search_runs(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<SearchRunsReq>,
) -> Res {
    require(&caller, Role::Viewer)?;
    let team = team(&caller)?;
    let limit = page_size(body.max_results, "runs/search")?;
    let offset = page_offset(body.page_token.as_deref())?;
    let stages = view_stages(&body.run_view_type)?;
    let clauses = search::parse_run_filter(body.filter.as_deref().unwrap_or_default())
        .map_err(MlflowError::invalid)?;
    let order = search::parse_run_order(&body.order_by).map_err(MlflowError::invalid)?;
    // Ids that are not numbers name no experiment of this team: they find nothing.
    let experiment_ids: Vec<i64> = body
        .experiment_ids
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => parse_experiment_id(s),
            Value::Number(n) => n.as_i64(),
            _ => None,
        })
        .collect();
    let mut found = repo::search_runs(
        &state.db,
        repo::RunSearch {
            team_id: team,
            experiment_ids: &experiment_ids,
            stages,
            clauses: &clauses,
            order: &order,
            offset,
            limit: limit + 1,
        },
    )
    .await?;
    let next = (found.len() as i64 > limit).then(|| (offset + limit).to_string());
    found.truncate(limit as usize);
    let runs: Vec<RunOut> = found.into_iter().map(run_view).collect();
    match next {
        Some(token) => ok(json!({"runs": runs, "next_page_token": token})),
        None => ok(json!({"runs": runs})),
    }
}

async fn get_metric_history(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Res {
    require(&caller, Role::Viewer)?;
    let run_id = query_one(&query, "run_id").map(str::to_owned);
    let run_uuid = query_one(&query, "run_uuid").map(str::to_owned);
    let run = team_run(&state, &caller, &run_id, &run_uuid).await?;
    let key = query_one(&query, "metric_key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("metric_key"))?;
    let offset = page_offset(query_one(&query, "page_token"))?;
    let max = query_i64(&query, "max_results")?;
    if let Some(n) = max
        && n < 1
    {
        return Err(MlflowError::invalid(format!("max_results must be ≥ 1, got {n}")));
    }
    // Without max_results, every point (as MLflow's own server answers).
    let limit = max.unwrap_or(i64::MAX - 1);
    let mut points =
        repo::metric_history(&state.db, run.run_uuid, key, offset, limit.saturating_add(1)).await?;
    let next = max.filter(|n| points.len() as i64 > *n).map(|n| (offset + n).to_string());
    if let Some(n) = max {
        points.truncate(n as usize);
    }
    let metrics: Vec<MetricOut> = points.into_iter().map(|p| MetricOut::of(p, None)).collect();
    match next {
        Some(token) => ok(json!({"metrics": metrics, "next_page_token": token})),
        None => ok(json!({"metrics": metrics})),
    }
}

/// Evenly spaced indices into `n` points, `k` of them, the first and the last included.
fn sample_indices(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    if k == 1 {
        return vec![n - 1];
    }
    let mut out: Vec<usize> = (0..k).map(|i| i * (n - 1) / (k - 1)).collect();
    out.dedup();
    out
}

async fn get_metric_history_bulk_interval(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Res {
    require(&caller, Role::Viewer)?;
    let team = team(&caller)?;
    let run_ids = query_all(&query, "run_ids");
    if run_ids.is_empty() {
        return Err(missing("run_ids"));
    }
    if run_ids.len() > BULK_MAX_RUNS {
        return Err(MlflowError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {BULK_MAX_RUNS} run_ids. Received {} run_ids.",
            run_ids.len()
        )));
    }
    let key = query_one(&query, "metric_key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("metric_key"))?;
    let max = query_i64(&query, "max_results")?.unwrap_or(BULK_MAX_RESULTS_PER_RUN as i64);
    if !(1..=BULK_MAX_RESULTS_PER_RUN as i64).contains(&max) {
        return Err(MlflowError::invalid(format!(
            "max_results must be between 1 and {BULK_MAX_RESULTS_PER_RUN}."
        )));
    }
    let steps = match (query_i64(&query, "start_step")?, query_i64(&query, "end_step")?) {
        (Some(a), Some(b)) if a > b => {
            return Err(MlflowError::invalid(format!(
                "end_step must be greater than start_step. Found start_step={a} and end_step={b}."
            )));
        }
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        _ => {
            return Err(MlflowError::invalid(
                "If either start step or end step are specified, both must be specified.",
            ));
        }
    };
    let mut runs = Vec::new();
    for id in &run_ids {
        let run = repo::run_by_mlflow_id(&state.db, team, id)
            .await?
            .ok_or_else(|| MlflowError::not_found(format!("Run with id={id} not found")))?;
        runs.push(run);
    }
    let uuids: Vec<Uuid> = runs.iter().map(|r| r.run_uuid).collect();
    let points = repo::metric_points(&state.db, &uuids, key, steps).await?;
    let mut by_run: HashMap<Uuid, Vec<repo::MetricPoint>> = HashMap::new();
    for (run, p) in points {
        by_run.entry(run).or_default().push(p);
    }
    let mut metrics = Vec::new();
    // In the order the runs were named, each run's points sampled evenly over its steps.
    for run in &runs {
        let Some(mut pts) = by_run.remove(&run.run_uuid) else { continue };
        let keep = sample_indices(pts.len(), max as usize);
        let mut taken: Vec<Option<repo::MetricPoint>> = pts.drain(..).map(Some).collect();
        for i in keep {
            if let Some(p) = taken[i].take() {
                metrics.push(MetricOut::of(p, Some(run.run_id.clone())));
            }
        }
    }
    ok(json!({"metrics": metrics}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_the_ends_and_spread_evenly() {
        assert_eq!(sample_indices(5, 10), vec![0, 1, 2, 3, 4]);
        assert_eq!(sample_indices(11, 3), vec![0, 5, 10]);
        assert_eq!(sample_indices(1000, 2), vec![0, 999]);
        assert_eq!(sample_indices(7, 1), vec![6]);
        assert_eq!(sample_indices(2500, 2500).len(), 2500);
        assert_eq!(sample_indices(10_000, 2500).len(), 2500);
    }

    #[test]
    fn keys_follow_mlflow_rules() {
        assert!(check_key("Metric", "train/loss:epoch 1").is_ok());
        assert!(check_key("Metric", "").is_err());
        assert!(check_key("Metric", &"k".repeat(251)).is_err());
        assert!(check_key("Metric", "a\"b").is_err());
        assert!(check_key("Metric", "/abs").is_err());
        assert!(check_key("Metric", "a/../b").is_err());
    }

    #[test]
    fn doubles_read_and_write_like_proto_json() {
        assert!(parse_f64(&json!("NaN")).unwrap().is_nan());
        assert_eq!(parse_f64(&json!("-Infinity")), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(&json!(1.5)), Some(1.5));
        assert_eq!(parse_f64(&json!("x")), None);
        assert_eq!(serde_json::to_string(&WireF64(f64::INFINITY)).unwrap(), "\"Infinity\"");
        assert_eq!(serde_json::to_string(&WireF64(0.25)).unwrap(), "0.25");
    }
}
