//! Deployments and predictions: a model served behind `POST /v1/deployments/{name}/predict`,
//! following an alias or pinned to a version, with a canary split changed at runtime, and a
//! drift report of recent inputs against the training split.

use std::collections::HashSet;

use actix_web::{HttpResponse, web};
use kiln_db::repo::{deployments, models};
use kiln_serving::{DriftError, Live, Pick, batching_of, traffic_of};
use kiln_types::api::{
    CreateDeployment, Deployment, DriftReport, Page, PatchDeployment, PredictRequest,
    PredictResponse, TrafficSplit,
};
use kiln_types::{ErrorCode, Role};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::predict;
use crate::state::AppState;

/// The weights of a split are percentages: they sum to this.
const WEIGHT_TOTAL: u32 = 100;

fn view(row: &deployments::Deployment, live: Option<&Live>) -> Deployment {
    let routing = live.map(Live::routing);
    let (status, error) = match &routing {
        None => ("loading", None),
        Some(r) if r.routes.is_empty() => ("unavailable", r.error.clone()),
        Some(r) => ("ready", r.error.clone()),
    };
    Deployment {
        id: row.id,
        name: row.name.clone(),
        model: row.model.clone(),
        alias: row.alias.clone(),
        version: row.pinned_version,
        status: status.to_owned(),
        error,
        traffic: traffic_of(row),
        batching: batching_of(row),
        allow_extra_features: row.allow_extra_features,
        versions_loaded: live.map(Live::loaded).unwrap_or_default(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

async fn team_deployment(
    state: &AppState,
    team: Uuid,
    name: &str,
) -> Result<deployments::Deployment, ApiError> {
    deployments::get(&state.db, team, name).await?.ok_or_else(|| ApiError::not_found("deployment"))
}

/// Fetches (into the bundle cache) and parses a version's bundle, so that a deployment of a
/// bundle that cannot load is refused before anything is stored, not created broken.
async fn check_servable(
    state: &AppState,
    model: &str,
    version: i32,
    key: &str,
    sha256: &str,
) -> Result<(), ApiError> {
    // A version registered through MLflow from artifacts alone has no bundle to serve.
    if key.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            crate::mlflow::registry::no_bundle_reason(model, version),
        ));
    }
    state.serving.bundles().get(key, sha256).await.map(drop).map_err(|err| {
        ApiError::new(
            ErrorCode::InvalidState,
            format!("version {version} of `{model}` cannot be served: {err}"),
        )
    })
}

/// Reloads what this process serves; a failure leaves the previous state serving.
async fn sync(state: &AppState) {
    if let Err(err) = state.serving.sync().await {
        tracing::warn!(error = %err, "serving sync failed after a change; the periodic sync retries");
    }
}

/// Serve a model: following an alias, or pinned to a version. Answers once the version is
/// loaded, warmed and taking traffic in this process.
#[utoipa::path(post, path = "/v1/deployments", operation_id = "create_deployment", tag = "serving", request_body = CreateDeployment,
    responses((status = 201, body = Deployment), (status = 409, body = kiln_types::api::ErrorBody),
              (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateDeployment>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Maintainer)?;
    let team = caller.team()?;
    let body = body.into_inner();
    let mut problems = Vec::new();
    if let Some(problem) = deployments::name_problem(&body.name) {
        problems.push(("name".to_owned(), problem));
    }
    match (&body.alias, body.version) {
        (Some(_), Some(_)) | (None, None) => problems.push((
            "alias".to_owned(),
            "give exactly one of `alias` (follow it) and `version` (pin it)".to_owned(),
        )),
        (Some(alias), None) => {
            if let Some(problem) = models::name_problem(alias, 64) {
                problems.push(("alias".to_owned(), problem));
            }
        }
        (None, Some(_)) => {}
    }
    let batching = body.batching.unwrap_or_default();
    problems.extend(batching.problems());
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let model = models::find(&state.db, team, &body.model).await?.ok_or_else(|| {
        ApiError::validation([(
            "model".to_owned(),
            format!("no model `{}` in your team", body.model),
        )])
    })?;
    let version = match (&body.alias, body.version) {
        (Some(alias), _) => {
            let aliases = models::aliases(&state.db, model.id).await?;
            let number =
                aliases.iter().find(|(a, _)| a == alias).map(|(_, v)| *v).ok_or_else(|| {
                    ApiError::validation([(
                        "alias".to_owned(),
                        format!("model `{}` has no alias `{alias}`; set it first", model.name),
                    )])
                })?;
            models::version(&state.db, model.id, number).await?
        }
        (None, Some(number)) => models::version(&state.db, model.id, number).await?,
        (None, None) => None,
    }
    .ok_or_else(|| {
        ApiError::validation([(
            "version".to_owned(),
            format!("model `{}` has no such version", model.name),
        )])
    })?;
    check_servable(
        &state,
        &model.name,
        version.version,
        &version.bundle_key,
        &version.bundle_sha256,
    )
    .await?;
    let row = deployments::create(
        &state.db,
        deployments::NewDeployment {
            team_id: team,
            name: &body.name,
            model_id: model.id,
            alias: body.alias.as_deref(),
            version_id: body.version.map(|_| version.id),
            batching: serde_json::to_value(batching).expect("batching serialises"),
            allow_extra_features: body.allow_extra_features,
            created_by: Some(caller.token_id()),
        },
    )
    .await?;
    sync(&state).await;
    caller
        .audit(
            &state.db,
            Some(team),
            "deployment.create",
            "deployment",
            &row.name,
            json!({"model": row.model, "alias": row.alias, "version": row.pinned_version,
                   "serving_version": version.version, "batching": batching,
                   "allow_extra_features": row.allow_extra_features}),
        )
        .await?;
    let live = state.serving.live(row.id);
    Ok(HttpResponse::Created().json(view(&row, live.as_deref())))
}

/// The team's deployments, newest first.
#[utoipa::path(get, path = "/v1/deployments", operation_id = "list_deployments", tag = "serving", params(ListQuery),
    responses((status = 200, body = Page<Deployment>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<Deployment>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = deployments::list(&state.db, caller.team()?, query.limit()?, query.cursor()).await?;
    Ok(web::Json(Page {
        items: page
            .items
            .iter()
            .map(|row| view(row, state.serving.live(row.id).as_deref()))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A deployment: its target, the effective traffic split, and the versions this process has
/// loaded.
#[utoipa::path(get, path = "/v1/deployments/{name}", operation_id = "get_deployment", tag = "serving", params(("name" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<Deployment>, ApiError> {
    caller.require(Role::Viewer)?;
    let row = team_deployment(&state, caller.team()?, &path).await?;
    Ok(web::Json(view(&row, state.serving.live(row.id).as_deref())))
}

/// Change the traffic split (canary, promotion, rollback) or batching. New versions are
/// loaded and warmed before they take traffic; the old ones finish their requests.
#[utoipa::path(patch, path = "/v1/deployments/{name}", operation_id = "patch_deployment", tag = "serving", request_body = PatchDeployment,
    params(("name" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<PatchDeployment>,
) -> Result<web::Json<Deployment>, ApiError> {
    let team = caller.team()?;
    let row = team_deployment(&state, team, &path).await?;
    caller.require(Role::Maintainer)?;
    let body = body.into_inner();
    let mut problems = Vec::new();
    if let Some(traffic) = &body.traffic {
        problems.extend(traffic_problems(&state, row.model_id, &row.model, traffic).await?);
    }
    if let Some(batching) = &body.batching {
        problems.extend(batching.problems());
    }
    if body.traffic.is_none() && body.batching.is_none() && body.allow_extra_features.is_none() {
        problems.push((
            "traffic".to_owned(),
            "give at least one of `traffic`, `batching` and `allow_extra_features`".to_owned(),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    // Every newly routed version's bundle, before anything changes.
    if let Some(traffic) = &body.traffic {
        let wanted: Vec<(Uuid, i32)> = traffic.iter().map(|t| (row.model_id, t.version)).collect();
        for bundle in deployments::bundles(&state.db, &wanted).await? {
            check_servable(
                &state,
                &row.model,
                bundle.version,
                &bundle.bundle_key,
                &bundle.bundle_sha256,
            )
            .await?;
        }
    }
    let before = (traffic_of(&row), batching_of(&row), row.allow_extra_features);
    let updated = deployments::update(
        &state.db,
        row.id,
        deployments::DeploymentChange {
            traffic: body
                .traffic
                .as_ref()
                .map(|t| serde_json::to_value(t).expect("traffic serialises")),
            batching: body.batching.map(|b| serde_json::to_value(b).expect("batching serialises")),
            allow_extra_features: body.allow_extra_features,
        },
    )
    .await?;
    sync(&state).await;
    caller
        .audit(
            &state.db,
            Some(team),
            "deployment.update",
            "deployment",
            &updated.name,
            json!({"traffic": traffic_of(&updated), "previous_traffic": before.0,
                   "batching": batching_of(&updated), "previous_batching": before.1,
                   "allow_extra_features": updated.allow_extra_features,
                   "previous_allow_extra_features": before.2}),
        )
        .await?;
    Ok(web::Json(view(&updated, state.serving.live(updated.id).as_deref())))
}

async fn traffic_problems(
    state: &AppState,
    model_id: Uuid,
    model: &str,
    traffic: &[TrafficSplit],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (i, split) in traffic.iter().enumerate() {
        if split.weight > WEIGHT_TOTAL {
            problems.push((format!("traffic[{i}].weight"), format!("must be 0 to {WEIGHT_TOTAL}")));
        }
        if !seen.insert(split.version) {
            problems.push((format!("traffic[{i}].version"), "appears twice".to_owned()));
        } else if models::version(&state.db, model_id, split.version).await?.is_none() {
            problems.push((
                format!("traffic[{i}].version"),
                format!("model `{model}` has no version {}", split.version),
            ));
        }
    }
    if !traffic.is_empty() && traffic.iter().all(|t| t.weight == 0) {
        problems.push(("traffic".to_owned(), "at least one weight must be positive".to_owned()));
    }
    let total: u64 = traffic.iter().map(|t| u64::from(t.weight)).sum();
    if !traffic.is_empty() && total != u64::from(WEIGHT_TOTAL) {
        problems.push((
            "traffic".to_owned(),
            format!("the weights are percentages and must sum to {WEIGHT_TOTAL}, not {total}"),
        ));
    }
    Ok(problems)
}

/// Stop serving a deployment; in-flight requests are answered first.
#[utoipa::path(delete, path = "/v1/deployments/{name}", operation_id = "delete_deployment", tag = "serving", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let team = caller.team()?;
    let row = team_deployment(&state, team, &path).await?;
    caller.require(Role::Maintainer)?;
    deployments::delete(&state.db, row.id).await?;
    sync(&state).await;
    caller
        .audit(
            &state.db,
            Some(team),
            "deployment.delete",
            "deployment",
            &row.name,
            json!({"model": row.model, "traffic": traffic_of(&row)}),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Predict: raw rows in, labels with probabilities (classification) or values
/// (regression) out, with the version that answered. Requests are batched per version.
#[utoipa::path(post, path = "/v1/deployments/{name}/predict", operation_id = "predict", tag = "serving", request_body = PredictRequest,
    params(("name" = String, Path)),
    responses((status = 200, body = PredictResponse), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 422, body = kiln_types::api::ErrorBody),
              (status = 503, description = "overloaded (see Retry-After) or no version to serve", body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn predict(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse, ApiError> {
    let live = predict::find(&state, &caller, &path, Role::Member).await?;
    let rows = predict::Instances(body.into_inner().instances);
    let served = predict::predict(&state, &live, Pick::Routed, &rows).await?;
    let version = served.engine.version;
    Ok(HttpResponse::Ok().insert_header(("X-Kiln-Model-Version", version.to_string())).json(
        PredictResponse {
            predictions: served.predictions,
            model_version: version,
            deployment: live.row.name.clone(),
        },
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriftQuery {
    /// Recent sampled rows to compare, 1–10,000 (default 1,000).
    pub window: Option<u64>,
    /// PSI above which a feature is flagged (default 0.2).
    pub threshold: Option<f64>,
    /// The version to examine (default: the one taking the most traffic).
    pub version: Option<i32>,
}

/// Drift: the population stability index of each input feature over recent sampled
/// requests, against the training split's distribution stored in the model bundle.
#[utoipa::path(get, path = "/v1/deployments/{name}/drift", operation_id = "deployment_drift", tag = "serving",
    params(("name" = String, Path), DriftQuery),
    responses((status = 200, body = DriftReport), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 409, body = kiln_types::api::ErrorBody), (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn drift(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<DriftQuery>,
) -> Result<web::Json<DriftReport>, ApiError> {
    caller.require(Role::Viewer)?;
    let row = team_deployment(&state, caller.team()?, &path).await?;
    let window = query.window.unwrap_or(1000);
    let threshold = query.threshold.unwrap_or(0.2);
    let mut problems = Vec::new();
    if !(1..=10_000).contains(&window) {
        problems.push(("window".to_owned(), "must be 1 to 10000".to_owned()));
    }
    if !(threshold.is_finite() && threshold > 0.0) {
        problems.push(("threshold".to_owned(), "must be a positive number".to_owned()));
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let report = state.serving.drift(&row, query.version, window, threshold).await.map_err(
        |err| match err {
            DriftError::NotLoaded => ApiError::unavailable("the deployment", err),
            DriftError::NotServing | DriftError::NoTrainingStats(_) => {
                ApiError::new(ErrorCode::InvalidState, err.to_string())
            }
            DriftError::Repo(err) => err.into(),
        },
    )?;
    let max_psi = report.features.iter().map(|f| f.psi).fold(0.0, f64::max);
    state.metrics.record_drift(
        &row.team_name,
        &row.name,
        report.model_version,
        max_psi,
        report.drifted,
    );
    Ok(web::Json(report))
}
