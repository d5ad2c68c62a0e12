//! The Open Inference Protocol v2 (KServe, Triton) on every deployment, so `tritonclient`
//! and the `kserve` SDK work unchanged.
//!
//! A deployment is an OIP *model* of the same name, its served versions the model's
//! versions: `POST /v2/models/{deployment}/infer` answers from the version the traffic split
//! picks, `/v2/models/{deployment}/versions/{v}/infer` from version `v` if the split routes
//! to it (stable or canary). Inference goes through [`crate::predict`], the native
//! predict route's own path: the same team-scoped lookup (another team's deployment is 404),
//! the member role, the batching engine, the metrics, the drift sample and the span.
//!
//! These routes alone answer the protocol's error body `{"error": "message"}`
//! ([`error::OipError`]), unknown routes under `/v2` included; health and server metadata
//! need no token, model routes take the caller's Kiln token (`Authorization: Bearer`).
//!
//! Layout: [`routes`] the handlers, [`codec`] the request and response format with the
//! binary tensor data extension, [`tensor`] tensors to the model's rows and predictions to
//! output tensors (the names and datatypes), [`error`] the error body.

pub mod codec;
pub mod error;
pub mod routes;
pub mod tensor;

use actix_web::middleware::ErrorHandlers;
use actix_web::web;

/// Mounts the `/v2` routes (also on a serving-only replica).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v2")
            .wrap(ErrorHandlers::new().default_handler(error::json_error_bodies))
            .service(web::resource("").get(routes::server_metadata))
            .service(web::resource("/health/live").get(routes::live))
            .service(web::resource("/health/ready").get(routes::ready))
            .service(web::resource("/models/{name}").get(routes::model_metadata))
            .service(web::resource("/models/{name}/ready").get(routes::model_ready))
            .service(web::resource("/models/{name}/infer").post(routes::infer))
            .service(web::resource("/models/{name}/versions/{version}").get(routes::model_metadata))
            .service(
                web::resource("/models/{name}/versions/{version}/ready").get(routes::model_ready),
            )
            .service(web::resource("/models/{name}/versions/{version}/infer").post(routes::infer))
            .default_service(web::to(error::unknown_route)),
    );
}
