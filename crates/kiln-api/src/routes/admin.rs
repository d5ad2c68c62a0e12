//! Operator routes (admin only): queue statistics and the worker fleet.

use actix_web::web;
use kiln_types::api::{QueueCount, QueueStats, RunningLease, Worker};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Depth per state and team, oldest queued age, running leases.
#[utoipa::path(get, path = "/v1/admin/queue", tag = "admin",
    responses((status = 200, body = QueueStats), (status = 403, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn queue_stats(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<QueueStats>, ApiError> {
    caller.require_admin()?;
    let stats = state.queue.stats().await?;
    Ok(web::Json(QueueStats {
        counts: stats
            .counts
            .into_iter()
            .map(|c| QueueCount { team: c.team, state: c.state, count: c.count })
            .collect(),
        oldest_queued_age_seconds: stats.oldest_queued_age_seconds,
        running: stats
            .running
            .into_iter()
            .map(|r| RunningLease {
                job_id: r.job_id,
                team: r.team,
                worker_id: r.worker_id,
                attempt: r.attempt,
                heartbeat_at: r.heartbeat_at,
                lease_expires_at: r.lease_expires_at,
            })
            .collect(),
    }))
}

/// Workers: id, host, device, last heartbeat, current job.
#[utoipa::path(get, path = "/v1/admin/workers", tag = "admin",
    responses((status = 200, body = Vec<Worker>), (status = 403, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn workers(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<Vec<Worker>>, ApiError> {
    caller.require_admin()?;
    let rows = state.queue.workers().await?;
    Ok(web::Json(
        rows.into_iter()
            .map(|w| Worker {
                id: w.id,
                host: w.host,
                pid: w.pid,
                device: w.device,
                version: w.version,
                started_at: w.started_at,
                last_heartbeat_at: w.last_heartbeat_at,
                heartbeat_age_seconds: w.heartbeat_age_seconds,
                current_job_id: w.current_job_id,
                stopped_at: w.stopped_at,
            })
            .collect(),
    ))
}
