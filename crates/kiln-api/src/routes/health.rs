//! Liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use kiln_types::api::{Health, Readiness};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok".to_owned() })
}

/// Ready to serve: PostgreSQL answers and the artifact store takes writes. For a local
/// store that means a writable file system with at least `KILN_STORE_MIN_FREE_MIB` free and
/// a probe file written and fsynced; `checks.artifact_store` says `read_only`, `no_space`,
/// `unavailable` or `error` when not.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = BTreeMap::new();
    let db_ok = kiln_db::ping(&state.db).await.is_ok();
    checks.insert("postgres".to_owned(), if db_ok { "ok" } else { "unavailable" }.to_owned());
    // S3: one cheap listing proves the store answers with these credentials; local: free
    // space, read-only mount and a real probe write.
    let store =
        tokio::time::timeout(std::time::Duration::from_secs(5), state.store.check_writable()).await;
    let store_check = match store {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: the artifact store cannot take writes");
            match err.kind() {
                kiln_store::ErrorKind::ReadOnly => "read_only",
                kiln_store::ErrorKind::NoSpace => "no_space",
                kiln_store::ErrorKind::Unavailable => "unavailable",
                _ => "error",
            }
        }
        Err(_) => "unavailable",
    };
    checks.insert("artifact_store".to_owned(), store_check.to_owned());
    let ready = checks.values().all(|v| v == "ok");
    let body = Readiness { status: if ready { "ready" } else { "not_ready" }.to_owned(), checks };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format, for an admin token: the metrics name every team's deployments
/// and traffic. An in-cluster Prometheus scrapes `KILN_METRICS_BIND` instead, which serves
/// this without a token.
#[utoipa::path(get, path = "/metrics", operation_id = "prometheus_metrics", tag = "health",
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 401, body = kiln_types::api::ErrorBody),
        (status = 403, body = kiln_types::api::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn metrics(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    Ok(metrics_unauthenticated(state).await)
}

/// `GET /metrics` on the metrics-only address (`KILN_METRICS_BIND`): no token.
pub async fn metrics_unauthenticated(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.queue.refresh(&state.queue).await;
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi_document", tag = "health", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(crate::openapi::document_json())
}
