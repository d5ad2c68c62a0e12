//! Operator routes (admin only): queue statistics, the worker fleet, and garbage
//! collection of the artifact store.

use std::time::{Duration, SystemTime};

use actix_web::web;
use kiln_types::api::{GcReport, GcRequest, QueueCount, QueueStats, RunningLease, Worker};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Depth per state and team, oldest queued age, running leases.
#[utoipa::path(get, path = "/v1/admin/queue", operation_id = "queue_stats", tag = "admin",
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

/// Workers: id, host, device, last heartbeat, current job. A worker silent for longer than
/// its lease (killed) is listed `lost`, stopped at its last heartbeat.
#[utoipa::path(get, path = "/v1/admin/workers", operation_id = "list_workers", tag = "admin",
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
                lost: w.lost,
            })
            .collect(),
    ))
}

/// Reference-counted garbage collection of the artifact store: objects that no dataset, job
/// checkpoint, job result or model version refers to, older than the grace period. A dry
/// run unless `apply`; pages through any number of objects.
#[utoipa::path(post, path = "/v1/admin/artifacts/gc", operation_id = "gc_artifacts", tag = "admin", request_body = GcRequest,
    responses((status = 200, body = GcReport), (status = 403, body = kiln_types::api::ErrorBody),
              (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn artifacts_gc(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<GcRequest>,
) -> Result<web::Json<GcReport>, ApiError> {
    caller.require_admin()?;
    let request = body.into_inner();
    if request.grace_seconds < 60 {
        return Err(ApiError::validation([(
            "grace_seconds".to_owned(),
            "must be at least 60: younger objects may belong to an upload in progress".to_owned(),
        )]));
    }
    // References first: an object referenced after this read is younger than the grace
    // period (it was just written), so it is skipped below.
    let referenced = kiln_db::repo::artifacts::referenced_keys(&state.db).await?;
    let cutoff = SystemTime::now() - Duration::from_secs(request.grace_seconds);
    let mut report = GcReport {
        applied: request.apply,
        grace_seconds: request.grace_seconds,
        scanned: 0,
        referenced: 0,
        too_young: 0,
        candidates: 0,
        candidate_bytes: 0,
        deleted: 0,
        sample: Vec::new(),
    };
    let mut continuation = None;
    loop {
        let page = state.store.list("teams/", continuation).await?;
        for object in page.objects {
            report.scanned += 1;
            // MLflow's artifacts are referenced by their paths, not by rows: never taken.
            if referenced.contains(object.key.as_str())
                || crate::mlflow::artifacts::is_mlflow_key(object.key.as_str())
            {
                report.referenced += 1;
                continue;
            }
            // Unknown age counts as young: never delete what we cannot date.
            if object.modified.is_none_or(|m| m > cutoff) {
                report.too_young += 1;
                continue;
            }
            report.candidates += 1;
            report.candidate_bytes += object.size;
            if report.sample.len() < 100 {
                report.sample.push(object.key.as_str().to_owned());
            }
            if request.apply {
                state.store.delete(&object.key).await?;
                report.deleted += 1;
            }
        }
        match page.next {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    if request.apply {
        caller
            .audit(
                &state.db,
                None,
                "artifacts.gc",
                "artifact_store",
                "teams/",
                json!({"deleted": report.deleted, "bytes": report.candidate_bytes,
                       "grace_seconds": report.grace_seconds}),
            )
            .await?;
    }
    Ok(web::Json(report))
}
