//! Tracked runs: training that happens outside Kiln logs params and metrics here; a Kiln
//! job is a run too (same id), so one metrics view serves both.

use actix_web::{HttpResponse, web};
use kiln_db::repo::{Deletion, runs};
use kiln_types::Role;
use kiln_types::api::{Accepted, CreateRun, FinishRun, LogMetrics, MetricSeries, Page, Run};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::routes::jobs::SeriesQuery;
use crate::state::AppState;

/// Most points one call may carry.
pub const MAX_POINTS_PER_CALL: usize = 10_000;

fn run_view(r: runs::Run) -> Run {
    Run {
        id: r.id,
        team_id: r.team_id,
        job_id: r.job_id,
        is_job: r.job_id.is_some(),
        name: r.name,
        params: r.params,
        status: r.status,
        created_at: r.created_at,
        finished_at: r.finished_at,
    }
}

async fn team_run(state: &AppState, caller: &Caller, id: Uuid) -> Result<runs::Run, ApiError> {
    runs::get(&state.db, caller.team()?, id).await?.ok_or_else(|| ApiError::not_found("run"))
}

/// Start a tracked run.
#[utoipa::path(post, path = "/v1/runs", operation_id = "create_run", tag = "runs", request_body = CreateRun,
    responses((status = 201, body = Run), (status = 422, body = kiln_types::api::ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateRun>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Member)?;
    let team = caller.team()?;
    if body.name.trim().is_empty() || body.name.len() > 200 {
        return Err(ApiError::validation([(
            "name".to_owned(),
            "must be 1 to 200 characters".to_owned(),
        )]));
    }
    let params = serde_json::to_value(&body.params).map_err(ApiError::internal)?;
    crate::validate::no_nul_chars(&params, "params")?;
    crate::validate::no_nul_chars(&serde_json::Value::String(body.name.clone()), "name")?;
    let run = runs::create(
        &state.db,
        Uuid::now_v7(),
        team,
        None,
        &body.name,
        params,
        Some(caller.token_id()),
    )
    .await?;
    Ok(HttpResponse::Created().json(run_view(run)))
}

/// List the team's runs (Kiln jobs included), newest first.
#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "runs", params(ListQuery),
    responses((status = 200, body = Page<Run>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<Run>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = runs::list(&state.db, caller.team()?, query.limit()?, query.cursor()).await?;
    Ok(web::Json(Page {
        items: page.items.into_iter().map(run_view).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One run: its name, params, status, times, and whether it is a Kiln job's.
#[utoipa::path(get, path = "/v1/runs/{id}", operation_id = "get_run", tag = "runs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Run), (status = 404, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Run>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(web::Json(run_view(team_run(&state, &caller, path.into_inner()).await?)))
}

/// Delete a run and its metric series (maintainer). A Kiln job's run can go once the job
/// has ended (the job itself stays); while the job is queued or running the answer is 409
/// `in_use` naming it in `details.jobs`.
#[utoipa::path(delete, path = "/v1/runs/{id}", operation_id = "delete_run", tag = "runs", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted, with its metric points"),
              (status = 404, body = kiln_types::api::ErrorBody),
              (status = 409, description = "`in_use`: its job is still queued or running (`details.jobs`)", body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    // The lookup first: another team's run answers 404 whatever the caller's role.
    let run = team_run(&state, &caller, path.into_inner()).await?;
    caller.require(Role::Maintainer)?;
    let team = caller.team()?;
    let actor = caller.actor();
    let details = serde_json::json!({"name": run.name, "job_id": run.job_id, "status": run.status});
    let entry = caller.audit_entry(&actor, Some(team), "run.delete", "run", run.id, details);
    match runs::delete_unless_used(&state.db, team, run.id, entry).await? {
        Deletion::Deleted => Ok(HttpResponse::NoContent().finish()),
        Deletion::InUse(users) => Err(ApiError::in_use(&format!("run {}", run.id), &users)),
        Deletion::NotFound => Err(ApiError::not_found("run")),
    }
}

/// Log up to 10,000 metric points in one call.
#[utoipa::path(post, path = "/v1/runs/{id}/metrics", operation_id = "log_run_metrics", tag = "runs", request_body = LogMetrics, params(("id" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn log_metrics(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<LogMetrics>,
) -> Result<HttpResponse, ApiError> {
    // The lookup first: another team's run answers 404 whatever the caller's role.
    let run = team_run(&state, &caller, path.into_inner()).await?;
    caller.require(Role::Member)?;
    let points = &body.points;
    let mut problems = Vec::new();
    if points.is_empty() || points.len() > MAX_POINTS_PER_CALL {
        problems.push((
            "points".to_owned(),
            format!("must hold 1 to {MAX_POINTS_PER_CALL} points, got {}", points.len()),
        ));
    }
    for (i, p) in points.iter().enumerate() {
        if p.name.is_empty() || p.name.len() > 250 || p.name.contains('\0') {
            problems.push((
                format!("points[{i}].name"),
                "must be 1 to 250 characters, without U+0000".to_owned(),
            ));
        }
        if !p.value.is_finite() {
            problems.push((format!("points[{i}].value"), "must be a finite number".to_owned()));
        }
        if p.step < 0 {
            problems.push((format!("points[{i}].step"), "must be ≥ 0".to_owned()));
        }
        if problems.len() >= 50 {
            break; // enough to fix the client; the body may hold 10,000 bad points
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let rows: Vec<runs::Point> = points
        .iter()
        .map(|p| runs::Point { name: p.name.clone(), step: p.step, value: p.value, ts: p.ts })
        .collect();
    runs::append_metrics(&state.db, run.id, &rows).await?;
    Ok(HttpResponse::Accepted().json(Accepted { accepted: rows.len() }))
}

/// A run's metric series.
#[utoipa::path(get, path = "/v1/runs/{id}/metrics", operation_id = "run_metrics", tag = "runs", params(("id" = Uuid, Path), SeriesQuery),
    responses((status = 200, body = MetricSeries), (status = 404, body = kiln_types::api::ErrorBody)), security(("bearer" = [])))]
pub async fn metrics(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    query: web::Query<SeriesQuery>,
) -> Result<web::Json<MetricSeries>, ApiError> {
    caller.require(Role::Viewer)?;
    let run = team_run(&state, &caller, path.into_inner()).await?;
    Ok(web::Json(MetricSeries {
        series: runs::series(&state.db, run.id, query.name.as_deref()).await?,
    }))
}

/// End a run.
#[utoipa::path(post, path = "/v1/runs/{id}/finish", operation_id = "finish_run", tag = "runs", request_body = FinishRun, params(("id" = Uuid, Path)),
    responses((status = 200, body = Run), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 409, body = kiln_types::api::ErrorBody), (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn finish(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<FinishRun>,
) -> Result<web::Json<Run>, ApiError> {
    // The lookup first: another team's run answers 404 whatever the caller's role.
    let run = team_run(&state, &caller, path.into_inner()).await?;
    caller.require(Role::Member)?;
    if !matches!(body.status.as_str(), "succeeded" | "failed") {
        return Err(ApiError::validation([(
            "status".to_owned(),
            "must be `succeeded` or `failed`".to_owned(),
        )]));
    }
    if run.job_id.is_some() {
        return Err(ApiError::new(
            kiln_types::ErrorCode::InvalidState,
            "a Kiln job's run ends with its job",
        ));
    }
    if !runs::finish(&state.db, run.id, &body.status).await? {
        return Err(ApiError::new(
            kiln_types::ErrorCode::InvalidState,
            format!("run already {}", run.status),
        ));
    }
    Ok(web::Json(run_view(team_run(&state, &caller, run.id).await?)))
}
