//! Training jobs: list, get, cancel, retry, metrics and logs. (Submission is in
//! `submit.rs`.)

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use kiln_db::repo::runs;
use kiln_queue::CancelOutcome;
use kiln_types::api::{self, LogLine, MetricSeries, Page, Progress};
use kiln_types::spec::JobSpec;
use kiln_types::{JobState, Role};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::state::AppState;

/// The wire view of a queue job.
pub fn job_view(job: kiln_queue::Job) -> api::Job {
    let result = job.result.as_ref();
    api::Job {
        id: job.id,
        team_id: job.team_id,
        kind: job.kind.clone(),
        state: job.state.as_str().to_owned(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        priority: job.priority,
        progress: match (job.progress, result) {
            (Some(p), _) => {
                Progress { epoch: Some(i64::from(p.epoch)), epochs: Some(i64::from(p.epochs)) }
            }
            // A job that ended between heartbeats: its result says how far it got.
            (None, Some(r)) => Progress {
                epoch: Some(i64::from(r.epochs_completed)),
                epochs: JobSpec::parse(&job.spec)
                    .ok()
                    .map(|spec| i64::from(spec.hyperparameters.epochs)),
            },
            (None, None) => Progress { epoch: None, epochs: None },
        },
        device: job.device.as_str().to_owned(),
        ran_on_device: job.ran_on_device,
        resumed_from_epoch: job.resumed_from_epoch,
        checkpoint_epoch: job.checkpoint_epoch,
        cancel_requested: job.cancel_requested_at.is_some(),
        error: job.error,
        model_bundle: result.map(|r| r.model_bundle.clone()),
        metrics: result.map(|r| serde_json::to_value(&r.metrics).expect("metrics serialise")),
        spec: job.spec,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs in this state.
    pub state: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

/// List the team's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs", params(JobListQuery),
    responses((status = 200, body = Page<api::Job>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<JobListQuery>,
) -> Result<web::Json<Page<api::Job>>, ApiError> {
    caller.require(Role::Viewer)?;
    let team = caller.team()?;
    let paging = ListQuery { limit: query.limit, cursor: query.cursor.clone() };
    let limit = paging.limit()?;
    let job_state = match query.state.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| ApiError::validation([("state".to_owned(), e.to_string())]))?,
        ),
    };
    let before = kiln_db::repo::parse_cursor(paging.cursor())?;
    let mut jobs = state.queue.list(team, job_state, before, limit as i64 + 1).await?;
    let more = jobs.len() as u64 > limit;
    jobs.truncate(limit as usize);
    let next_cursor = if more { jobs.last().map(|j| j.id.to_string()) } else { None };
    Ok(web::Json(Page { items: jobs.into_iter().map(job_view).collect(), next_cursor }))
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = api::Job), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<api::Job>, ApiError> {
    caller.require(Role::Viewer)?;
    let job = state.queue.get_for_team(caller.team()?, path.into_inner()).await?;
    Ok(web::Json(job_view(job)))
}

/// Cancel a job: a queued job ends `cancelled` at once; a running one stops within one
/// heartbeat or one batch.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "cancel_job", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 202, body = api::Job), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    // The lookup first: another team's job answers 404 whatever the caller's role.
    let job = state.queue.get_for_team(caller.team()?, path.into_inner()).await?;
    caller.require(Role::Member)?;
    match state.queue.cancel(job.id).await? {
        CancelOutcome::Cancelled | CancelOutcome::Requested => {}
        CancelOutcome::AlreadyFinished(s) => {
            return Err(ApiError::new(
                kiln_types::ErrorCode::InvalidState,
                format!("job {} already ended: it is {s}", job.id),
            ));
        }
    }
    let job = state.queue.get(job.id).await?;
    Ok(HttpResponse::Accepted().json(job_view(job)))
}

/// Queue a failed or cancelled job again; it resumes from its last checkpoint.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", operation_id = "retry_job", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = api::Job), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<api::Job>, ApiError> {
    // The lookup first: another team's job answers 404 whatever the caller's role.
    let job = state.queue.get_for_team(caller.team()?, path.into_inner()).await?;
    caller.require(Role::Member)?;
    Ok(web::Json(job_view(state.queue.retry(job.id).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Only this series.
    pub name: Option<String>,
}

/// A job's metric series, ready to plot: `[[epoch, value], ...]` per name.
#[utoipa::path(get, path = "/v1/jobs/{id}/metrics", operation_id = "job_metrics", tag = "jobs", params(("id" = Uuid, Path), SeriesQuery),
    responses((status = 200, body = MetricSeries), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn metrics(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    query: web::Query<SeriesQuery>,
) -> Result<web::Json<MetricSeries>, ApiError> {
    caller.require(Role::Viewer)?;
    let job = state.queue.get_for_team(caller.team()?, path.into_inner()).await?;
    let series = runs::series(&state.db, job.id, query.name.as_deref()).await?;
    Ok(web::Json(MetricSeries { series }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    pub limit: Option<u64>,
    /// `next_cursor` of the previous answer: only newer lines.
    pub cursor: Option<String>,
    /// Long-poll: when there is nothing newer and the job has not ended, wait up to this
    /// many seconds (at most 30) for a line before answering.
    pub wait: Option<u64>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LogsPage {
    pub items: Vec<LogLine>,
    /// Pass back as `?cursor=` to follow; always set, so a follower never misses a line.
    pub next_cursor: Option<String>,
    /// True once the job has ended and every line has been sent.
    pub done: bool,
}

/// A job's log lines, oldest first, with a cursor to follow (long-poll with `?wait=`).
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", operation_id = "job_logs", tag = "jobs", params(("id" = Uuid, Path), LogsQuery),
    responses((status = 200, body = LogsPage), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn logs(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    query: web::Query<LogsQuery>,
) -> Result<web::Json<LogsPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let team = caller.team()?;
    let job_id = path.into_inner();
    let limit = ListQuery { limit: query.limit, cursor: None }.limit()? as i64;
    let after = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>().map_err(|_| ApiError::bad_request("`cursor` is not a log cursor"))?,
        ),
    };
    let deadline = Instant::now() + Duration::from_secs(query.wait.unwrap_or(0).min(30));
    loop {
        let job = state.queue.get_for_team(team, job_id).await?;
        let lines = state.queue.logs(job_id, after, limit).await?;
        let ended = job.state.is_terminal();
        if !lines.is_empty() || ended || Instant::now() >= deadline {
            let last = lines.last().map(|l| l.id).or(after);
            let done = ended && (lines.len() as i64) < limit;
            let items = lines
                .into_iter()
                .map(|l| LogLine {
                    ts: l.ts,
                    level: l.level,
                    message: l.message,
                    attempt: l.attempt,
                })
                .collect();
            return Ok(web::Json(LogsPage {
                items,
                next_cursor: last.map(|id| id.to_string()),
                done,
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
