//! The MLflow tracking and registry REST API, so stock `mlflow` client code works against
//! Kiln unchanged (`MLFLOW_TRACKING_URI` and `MLFLOW_TRACKING_TOKEN`, nothing else).
//!
//! Mounted under `/api/2.0/mlflow/` and `/ajax-api/2.0/mlflow/` (what the MLflow UI calls),
//! the artifact proxy under `/api/2.0/mlflow-artifacts/`, and `/api/3.0/mlflow/` for the
//! routes newer clients probe. These routes alone answer MLflow's error body
//! `{"error_code", "message"}` with MLflow's status codes ([`MlflowError`]); an unknown
//! route under these prefixes is a JSON 404 in that shape (`ENDPOINT_NOT_FOUND`), which is
//! how newer clients learn a feature is not supported.
//!
//! The token is a Kiln token ([`MlCaller`]) and every object is scoped to its team exactly
//! as on the native API: another team's experiment or run is `RESOURCE_DOES_NOT_EXIST`.
//!
//! Layout: [`tracking`] experiments, runs, params, tags and metrics (a tracked MLflow run
//! *is* a Kiln run); [`registry`] registered models, versions and aliases on Kiln's
//! registry; [`artifacts`] the `mlflow-artifacts:` proxy into Kiln's artifact store.

pub mod artifacts;
pub mod multipart;
pub mod registry;
pub mod search;
pub mod tracking;

use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use kiln_types::ErrorCode;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::ApiError;

/// MLflow's error codes (`mlflow/protos/databricks.proto`), each with the status MLflow's
/// own server answers it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlflowCode {
    InvalidParameterValue,
    ResourceDoesNotExist,
    ResourceAlreadyExists,
    InvalidState,
    BadRequest,
    MalformedRequest,
    EndpointNotFound,
    Unauthenticated,
    PermissionDenied,
    RequestLimitExceeded,
    TemporarilyUnavailable,
    InternalError,
}

impl MlflowCode {
    /// The code as MLflow spells it on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            MlflowCode::InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            MlflowCode::ResourceDoesNotExist => "RESOURCE_DOES_NOT_EXIST",
            MlflowCode::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            MlflowCode::InvalidState => "INVALID_STATE",
            MlflowCode::BadRequest => "BAD_REQUEST",
            MlflowCode::MalformedRequest => "MALFORMED_REQUEST",
            MlflowCode::EndpointNotFound => "ENDPOINT_NOT_FOUND",
            MlflowCode::Unauthenticated => "UNAUTHENTICATED",
            MlflowCode::PermissionDenied => "PERMISSION_DENIED",
            MlflowCode::RequestLimitExceeded => "REQUEST_LIMIT_EXCEEDED",
            MlflowCode::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
            MlflowCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status MLflow's tracking server answers the code with.
    pub const fn status(self) -> u16 {
        match self {
            MlflowCode::InvalidParameterValue
            | MlflowCode::ResourceAlreadyExists
            | MlflowCode::InvalidState
            | MlflowCode::BadRequest
            | MlflowCode::MalformedRequest => 400,
            MlflowCode::Unauthenticated => 401,
            MlflowCode::PermissionDenied => 403,
            MlflowCode::ResourceDoesNotExist | MlflowCode::EndpointNotFound => 404,
            MlflowCode::RequestLimitExceeded => 429,
            MlflowCode::TemporarilyUnavailable => 503,
            MlflowCode::InternalError => 500,
        }
    }
}

/// An error on an MLflow route: `{"error_code", "message"}` with MLflow's status. Built
/// from any [`ApiError`] (so Kiln's repositories and checks are reused as they are), whose
/// cause is logged and never sent.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct MlflowError {
    pub code: MlflowCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (the MLflow client retries 429 and 503).
    pub retry_after: Option<u64>,
    #[source]
    pub cause: Option<Box<ApiError>>,
}

/// The wire body of an [`MlflowError`].
#[derive(Debug, Serialize)]
pub struct MlflowErrorBody<'a> {
    pub error_code: &'static str,
    pub message: &'a str,
}

impl MlflowError {
    pub fn new(code: MlflowCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None, cause: None }
    }

    /// `INVALID_PARAMETER_VALUE` (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(MlflowCode::InvalidParameterValue, message)
    }

    /// `RESOURCE_DOES_NOT_EXIST` (404): missing, or another team's.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(MlflowCode::ResourceDoesNotExist, message)
    }
}

impl From<ApiError> for MlflowError {
    fn from(err: ApiError) -> Self {
        let code = match err.code {
            ErrorCode::BadRequest => MlflowCode::BadRequest,
            ErrorCode::Unauthenticated => MlflowCode::Unauthenticated,
            ErrorCode::Forbidden => MlflowCode::PermissionDenied,
            ErrorCode::NotFound => MlflowCode::ResourceDoesNotExist,
            ErrorCode::MethodNotAllowed => MlflowCode::EndpointNotFound,
            ErrorCode::AlreadyExists => MlflowCode::ResourceAlreadyExists,
            ErrorCode::IdempotencyConflict | ErrorCode::InvalidState | ErrorCode::InUse => {
                MlflowCode::InvalidState
            }
            ErrorCode::PayloadTooLarge | ErrorCode::ValidationFailed => {
                MlflowCode::InvalidParameterValue
            }
            ErrorCode::UnsupportedMediaType => MlflowCode::MalformedRequest,
            ErrorCode::Overloaded => MlflowCode::RequestLimitExceeded,
            ErrorCode::Unavailable => MlflowCode::TemporarilyUnavailable,
            ErrorCode::InsufficientStorage | ErrorCode::Internal => MlflowCode::InternalError,
        };
        // A validation error's field list is in its details; MLflow has one message.
        let message = err.one_line();
        Self { code, message, retry_after: err.retry_after, cause: Some(Box::new(err)) }
    }
}

impl From<kiln_db::repo::RepoError> for MlflowError {
    fn from(err: kiln_db::repo::RepoError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<kiln_db::DbErr> for MlflowError {
    fn from(err: kiln_db::DbErr) -> Self {
        ApiError::from(err).into()
    }
}

impl From<kiln_store::StoreError> for MlflowError {
    fn from(err: kiln_store::StoreError) -> Self {
        ApiError::from(err).into()
    }
}

impl ResponseError for MlflowError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            let cause = self.cause.as_deref().map(|c| crate::error::cause_chain(c));
            tracing::error!(
                code = self.code.as_str(),
                cause = cause.as_deref(),
                "{}",
                self.message
            );
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(MlflowErrorBody { error_code: self.code.as_str(), message: &self.message })
    }
}

/// The authenticated caller of an MLflow route: [`Caller`], failing in MLflow's error shape.
#[derive(Debug, Clone, Copy)]
pub struct MlCaller(pub Caller);

impl std::ops::Deref for MlCaller {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl FromRequest for MlCaller {
    type Error = MlflowError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let inner = Caller::from_request(req, payload);
        Box::pin(async move { inner.await.map(MlCaller).map_err(MlflowError::from) })
    }
}

/// Unknown routes under the MLflow prefixes: a JSON 404 in MLflow's shape.
pub async fn unknown_route(req: HttpRequest) -> Result<HttpResponse, MlflowError> {
    Err(MlflowError::new(
        MlflowCode::EndpointNotFound,
        format!("no MLflow endpoint {} {} on this Kiln server", req.method(), req.path()),
    ))
}

/// A JSON body on an MLflow route that does not parse: MLflow's `MALFORMED_REQUEST` /
/// `INVALID_PARAMETER_VALUE`, not Kiln's body.
fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    let e = match &err {
        JsonPayloadError::Deserialize(de) if de.is_data() => MlflowError::invalid(de.to_string()),
        JsonPayloadError::ContentType => MlflowError::new(
            MlflowCode::MalformedRequest,
            "the body must be JSON with `Content-Type: application/json`",
        ),
        other => {
            MlflowError::new(MlflowCode::MalformedRequest, format!("malformed request: {other}"))
        }
    };
    e.into()
}

fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    MlflowError::invalid(format!("bad query string: {err}")).into()
}

/// Mounts the MLflow surfaces. `json_limit` is the API's JSON body limit (a log-batch of
/// MLflow's own 1 MB limit must fit).
pub fn configure(cfg: &mut web::ServiceConfig, json_limit: usize) {
    for prefix in
        ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow", "/api/3.0/mlflow", "/ajax-api/3.0/mlflow"]
    {
        cfg.service(
            web::scope(prefix)
                .app_data(web::JsonConfig::default().limit(json_limit).error_handler(json_error))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .configure(tracking::configure)
                .configure(registry::configure)
                .default_service(web::to(unknown_route)),
        );
    }
    for prefix in ["/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"] {
        cfg.service(
            web::scope(prefix)
                .app_data(web::JsonConfig::default().limit(json_limit).error_handler(json_error))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .configure(artifacts::configure)
                .default_service(web::to(unknown_route)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiln_codes_map_to_mlflow_codes_and_statuses() {
        let e = MlflowError::from(ApiError::not_found("run"));
        assert_eq!((e.code.as_str(), e.code.status()), ("RESOURCE_DOES_NOT_EXIST", 404));
        let e = MlflowError::from(ApiError::validation([("name".into(), "too long".into())]));
        assert_eq!(e.code, MlflowCode::InvalidParameterValue);
        assert_eq!(e.message, "name: too long");
        let e = MlflowError::from(ApiError::forbidden("viewer"));
        assert_eq!(e.code.status(), 403);
    }
}
