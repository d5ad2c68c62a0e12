//! Route handlers, one module per resource. Each handler authenticates with [`Caller`],
//! checks its role, scopes by team, and answers a kiln-types wire type or an [`ApiError`].
//!
//! [`Caller`]: crate::auth::Caller
//! [`ApiError`]: crate::error::ApiError

pub mod admin;
pub mod audit;
pub mod batch;
pub mod datasets;
pub mod deployments;
pub mod health;
pub mod jobs;
pub mod models;
pub mod runs;
pub mod studies;
pub mod submit;
pub mod teams;
pub mod tokens;

use actix_web::web;

/// Mounts every route; a serving-only replica mounts health, metrics, the OpenAPI document,
/// the deployment read, predict and drift routes and the OIP v2 routes (everything else
/// answers 404). `json_limit` is the JSON body limit (for the MLflow scopes' own config).
pub fn configure(cfg: &mut web::ServiceConfig, serving_only: bool, json_limit: usize) {
    crate::oip::configure(cfg);
    cfg.service(web::resource("/healthz").get(health::healthz))
        .service(web::resource("/readyz").get(health::readyz))
        .service(web::resource("/metrics").get(health::metrics))
        .service(web::resource("/openapi.json").get(health::openapi))
        .service(web::resource("/v1/deployments/{name}/predict").post(deployments::predict))
        .service(web::resource("/v1/deployments/{name}/drift").get(deployments::drift));
    if serving_only {
        cfg.service(web::resource("/v1/deployments").get(deployments::list))
            .service(web::resource("/v1/deployments/{name}").get(deployments::get));
        return;
    }
    crate::mlflow::configure(cfg, json_limit);
    crate::ui::configure(cfg);
    cfg.service(web::resource("/v1/deployments").post(deployments::create).get(deployments::list))
        .service(
            web::resource("/v1/deployments/{name}")
                .get(deployments::get)
                .patch(deployments::patch)
                .delete(deployments::delete),
        )
        .service(web::resource("/v1/teams").post(teams::create).get(teams::list))
        .service(web::resource("/v1/teams/{team_id}/tokens").post(tokens::create).get(tokens::list))
        .service(web::resource("/v1/tokens/{token_id}").delete(tokens::revoke))
        .service(web::resource("/v1/datasets").post(datasets::upload).get(datasets::list))
        .service(web::resource("/v1/datasets/{id}").get(datasets::get).delete(datasets::delete))
        .service(web::resource("/v1/datasets/{id}/content").get(datasets::download))
        .service(web::resource("/v1/jobs").post(submit::submit).get(jobs::list))
        .service(web::resource("/v1/jobs/{id}").get(jobs::get))
        .service(web::resource("/v1/jobs/{id}/cancel").post(jobs::cancel))
        .service(web::resource("/v1/jobs/{id}/retry").post(jobs::retry))
        .service(web::resource("/v1/jobs/{id}/metrics").get(jobs::metrics))
        .service(web::resource("/v1/jobs/{id}/logs").get(jobs::logs))
        .service(web::resource("/v1/runs").post(runs::create).get(runs::list))
        .service(web::resource("/v1/runs/{id}").get(runs::get).delete(runs::delete))
        .service(web::resource("/v1/runs/{id}/metrics").post(runs::log_metrics).get(runs::metrics))
        .service(web::resource("/v1/runs/{id}/finish").post(runs::finish))
        .service(web::resource("/v1/models").get(models::list))
        .service(web::resource("/v1/models/{name}").get(models::get))
        .service(
            web::resource("/v1/models/{name}/versions")
                .post(models::register)
                .get(models::versions),
        )
        .service(
            web::resource("/v1/models/{name}/versions/{version}").delete(models::delete_version),
        )
        .service(web::resource("/v1/models/{name}/versions/{version}/bundle").get(models::bundle))
        .service(web::resource("/v1/models/{name}/aliases/{alias}").put(models::set_alias))
        .service(web::resource("/v1/batch-predictions").post(batch::create).get(batch::list))
        .service(web::resource("/v1/batch-predictions/{id}").get(batch::get))
        .service(web::resource("/v1/batch-predictions/{id}/output").get(batch::output))
        .service(web::resource("/v1/studies").post(studies::create).get(studies::list))
        .service(web::resource("/v1/studies/{id}").get(studies::get))
        .service(web::resource("/v1/studies/{id}/stop").post(studies::stop))
        .service(web::resource("/v1/studies/{id}/register").post(studies::register))
        .service(web::resource("/v1/audit").get(audit::list))
        .service(web::resource("/v1/admin/queue").get(admin::queue_stats))
        .service(web::resource("/v1/admin/workers").get(admin::workers))
        .service(web::resource("/v1/admin/artifacts/gc").post(admin::artifacts_gc));
}
