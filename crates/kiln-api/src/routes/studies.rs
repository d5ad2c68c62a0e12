//! `/v1/studies`: hyperparameter searches. A study is accepted here (its spec parsed field
//! by field, its base spec checked against its dataset as `POST /v1/jobs` checks a job);
//! the scheduler (kiln-study, running in every API process) proposes its trials as ordinary
//! jobs of the team.

use actix_web::{HttpResponse, web};
use kiln_queue::{NewStudy, StudyRow, TrialRow};
use kiln_types::api::{ErrorBody, Page};
use kiln_types::spec::ValidationErrors;
use kiln_types::study::{
    BestTrial, RegisterBest, Study, StudySpec, StudyState, Trial, TrialCounts,
};
use kiln_types::{ErrorCode, Role};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::state::AppState;

/// The study as the API answers it; `trials` empty when `with_trials` is false.
pub fn view(study: StudyRow, trials: &[TrialRow], with_trials: bool) -> Study {
    let spec = &study.spec;
    let best = kiln_study::best_trial(spec, trials).map(|(t, objective)| BestTrial {
        number: t.number,
        job_id: t.job_id,
        params: t.params.clone(),
        objective,
    });
    let counts = TrialCounts::of(trials.iter().map(|t| &t.state));
    let trials = if with_trials {
        trials
            .iter()
            .map(|t| Trial {
                number: t.number,
                job_id: t.job_id,
                params: t.params.clone(),
                state: t.state,
                objective: kiln_study::objective_of(spec, t).filter(|v| v.is_finite()),
                epochs: t.result.as_ref().map_or(t.epochs, |r| r.epochs_completed),
                promotions: t.promotions,
            })
            .collect()
    } else {
        Vec::new()
    };
    Study {
        id: study.id,
        name: study.name.clone(),
        state: study.state,
        reason: study.reason.clone(),
        best_trial: best,
        counts,
        trials,
        created_at: study.created_at,
        finished_at: study.finished_at,
        spec: study.spec,
    }
}

async fn team_study(state: &AppState, caller: &Caller, id: Uuid) -> Result<StudyRow, ApiError> {
    state.queue.study(caller.team()?, id).await?.ok_or_else(|| ApiError::not_found("study"))
}

/// Start a hyperparameter search.
#[utoipa::path(post, path = "/v1/studies", operation_id = "create_study", tag = "studies",
    request_body = StudySpec,
    responses((status = 201, body = Study), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Member)?;
    let team = caller.team()?;
    crate::validate::no_nul_chars(&body, "")?;
    let spec = StudySpec::parse(&body).map_err(|e| ApiError::invalid(&e))?;
    let base = spec.base_spec().map_err(|e| ApiError::invalid(&e))?;
    // The base spec against its dataset, as a job's: every problem under `base.`.
    let mut problems = ValidationErrors::default();
    let (inputs, shape) =
        crate::routes::submit::resolve_inputs(&state, team, &base, &mut problems).await?;
    if !problems.is_empty() {
        let mut prefixed = ValidationErrors::default();
        prefixed.merge_under("base.", &problems);
        return Err(ApiError::invalid(&prefixed));
    }
    if let Some(shape) = &shape {
        // The largest model the space can propose must fit, as any job's must.
        for (path, param) in &spec.parameters {
            for value in param.probes() {
                let mut probe = spec.base.clone();
                kiln_types::study::set_path(&mut probe, path, value);
                if let Ok(probe) = kiln_types::JobSpec::parse(&probe) {
                    crate::routes::submit::check_model_memory(
                        &probe,
                        shape,
                        state.limits.model_memory_bytes,
                    )
                    .map_err(|mut err| {
                        err.details["parameter"] = json!(path);
                        err
                    })?;
                }
            }
        }
    }
    let study = state
        .queue
        .create_study(&NewStudy {
            team_id: team,
            spec,
            inputs,
            created_by: Some(caller.token_id()),
        })
        .await?;
    caller
        .audit(
            &state.db,
            Some(team),
            "study.create",
            "study",
            study.id.to_string(),
            json!({"name": study.name, "algorithm": study.spec.algorithm,
                   "max_trials": study.spec.max_trials, "objective": study.spec.objective.metric}),
        )
        .await?;
    Ok(HttpResponse::Created().json(view(study, &[], true)))
}

/// The team's studies, newest first (without their trials: `GET /v1/studies/{id}`).
#[utoipa::path(get, path = "/v1/studies", operation_id = "list_studies", tag = "studies",
    params(ListQuery), responses((status = 200, body = Page<Study>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<Study>>, ApiError> {
    caller.require(Role::Viewer)?;
    let team = caller.team()?;
    let limit = query.limit()?;
    let before = kiln_db::repo::parse_cursor(query.cursor())?;
    let mut rows = state.queue.studies(team, before, limit as i64 + 1).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|s| s.id.to_string()) } else { None };
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let trials = state.queue.trials(&row).await?;
        items.push(view(row, &trials, false));
    }
    Ok(web::Json(Page { items, next_cursor }))
}

/// One study: its state, best trial, counts by state and every trial.
#[utoipa::path(get, path = "/v1/studies/{id}", operation_id = "get_study", tag = "studies",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Study), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Study>, ApiError> {
    caller.require(Role::Viewer)?;
    let study = team_study(&state, &caller, path.into_inner()).await?;
    let trials = state.queue.trials(&study).await?;
    Ok(web::Json(view(study, &trials, true)))
}

/// Stop a study: no more trials are proposed, queued and running trials are cancelled
/// (finished ones and their models are kept). A finished study is answered unchanged.
#[utoipa::path(post, path = "/v1/studies/{id}/stop", operation_id = "stop_study", tag = "studies",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Study), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn stop(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Study>, ApiError> {
    caller.require(Role::Member)?;
    let team = caller.team()?;
    let id = path.into_inner();
    let before = team_study(&state, &caller, id).await?;
    let study = state
        .queue
        .stop_study(team, id, "stopped by a member")
        .await?
        .ok_or_else(|| ApiError::not_found("study"))?;
    if before.state == StudyState::Running {
        caller
            .audit(&state.db, Some(team), "study.stop", "study", id.to_string(), json!({}))
            .await?;
    }
    let trials = state.queue.trials(&study).await?;
    Ok(web::Json(view(study, &trials, true)))
}

/// Register the best finished trial's model as a version of `model` (201; 200 when that
/// trial is already a version of it).
#[utoipa::path(post, path = "/v1/studies/{id}/register", operation_id = "register_study_best", tag = "studies",
    params(("id" = Uuid, Path)), request_body = RegisterBest,
    responses((status = 201, body = kiln_types::api::ModelVersion),
              (status = 200, body = kiln_types::api::ModelVersion, description = "Already registered"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "No trial has finished yet"),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<RegisterBest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Maintainer)?;
    let team = caller.team()?;
    let study = team_study(&state, &caller, path.into_inner()).await?;
    let trials = state.queue.trials(&study).await?;
    let Some((best, objective)) = kiln_study::best_trial(&study.spec, &trials) else {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "study {} has no finished trial yet; register once one has succeeded",
                study.id
            ),
        ));
    };
    let response = crate::routes::models::register_job(
        &state,
        &caller,
        body.model.clone(),
        "model",
        best.job_id,
    )
    .await?;
    if response.status() == actix_web::http::StatusCode::CREATED {
        caller
            .audit(
                &state.db,
                Some(team),
                "study.register",
                "study",
                study.id.to_string(),
                json!({"model": body.model, "trial": best.number, "job_id": best.job_id,
                       "objective": objective}),
            )
            .await?;
    }
    Ok(response)
}
