//! Liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use kiln_types::api::{Health, Readiness};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok".to_owned() })
}

/// Ready to serve: PostgreSQL and the artifact store answer.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = BTreeMap::new();
    let db_ok = kiln_db::ping(&state.db).await.is_ok();
    checks.insert("postgres".to_owned(), if db_ok { "ok" } else { "unavailable" }.to_owned());
    // One cheap listing proves the artifact store answers with these credentials.
    let store = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.store.list("kiln-readyz/", None),
    )
    .await;
    let store_ok = matches!(store, Ok(Ok(_)));
    checks.insert(
        "artifact_store".to_owned(),
        if store_ok { "ok" } else { "unavailable" }.to_owned(),
    );
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
#[utoipa::path(get, path = "/metrics", tag = "health",
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
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(crate::openapi::document_json())
}
