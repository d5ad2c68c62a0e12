//! One error type for every route, answered as the JSON body of API.md:
//! `{"error": {"code", "message", "details"}}`. The status comes from the error-code table
//! in kiln-types; internal causes are logged, never sent.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use kiln_db::repo::RepoError;
use kiln_queue::QueueError;
use kiln_types::ErrorCode;
use kiln_types::api::{ErrorBody, ErrorDetail};
use serde_json::{Value, json};

type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    /// Seconds for a `Retry-After` header (overload answers).
    pub retry_after: Option<u64>,
    /// What went wrong inside; logged, never sent.
    #[source]
    pub cause: Option<Cause>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: json!({}), retry_after: None, cause: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 422 listing every offending field: `details.fields = {"path": "message"}`.
    pub fn validation(fields: impl IntoIterator<Item = (String, String)>) -> Self {
        let fields: serde_json::Map<String, Value> =
            fields.into_iter().map(|(path, msg)| (path, Value::String(msg))).collect();
        let message = match fields.len() {
            1 => format!(
                "invalid field `{}`: {}",
                fields.keys().next().unwrap(),
                fields.values().next().unwrap().as_str().unwrap_or_default()
            ),
            n => format!("{n} fields are invalid"),
        };
        Self::new(ErrorCode::ValidationFailed, message).with_details(json!({ "fields": fields }))
    }

    /// [`ApiError::validation`] of a spec's collected problems.
    pub fn invalid(errors: &kiln_types::ValidationErrors) -> Self {
        Self::validation(errors.fields().iter().map(|(k, v)| (k.clone(), v.clone())))
    }

    /// 409 `in_use`: `what` cannot be deleted while `users` (a struct of lists by kind,
    /// such as `{"jobs": [...], "deployments": [...]}`) use it; `details` is `users`.
    pub fn in_use(what: &str, users: &impl serde::Serialize) -> Self {
        let details = serde_json::to_value(users).unwrap_or_else(|_| json!({}));
        let named: Vec<String> = details
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(kind, list)| {
                let n = list.as_array().map_or(0, Vec::len);
                (n > 0).then(|| format!("{n} {}", kind.replace('_', " ")))
            })
            .collect();
        Self::new(
            ErrorCode::InUse,
            format!(
                "{what} is in use ({}); `details` names them: remove or finish those first",
                named.join(", ")
            ),
        )
        .with_details(details)
    }

    pub fn internal(cause: impl Into<Cause>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(ErrorCode::Internal, "internal error; the server logged the details")
        }
    }

    pub fn unavailable(what: &str, cause: impl Into<Cause>) -> Self {
        Self {
            cause: Some(cause.into()),
            retry_after: Some(1),
            ..Self::new(ErrorCode::Unavailable, format!("{what} is unavailable; retry shortly"))
        }
    }

    /// The message as one line, for surfaces whose error body has no `details` (MLflow,
    /// OIP): a validation error's fields joined (`path: message; ...`), else the message.
    pub fn one_line(&self) -> String {
        match self.details.get("fields").and_then(|f| f.as_object()) {
            Some(fields) if !fields.is_empty() => fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; "),
            _ => self.message.clone(),
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            // The whole cause chain, for operators.
            let mut chain = String::new();
            let mut source = std::error::Error::source(self);
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            tracing::error!(code = %self.code, "{}{chain}", self.message);
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.body())
    }
}

impl From<kiln_db::DbErr> for ApiError {
    fn from(err: kiln_db::DbErr) -> Self {
        if kiln_db::is_connection_error(&err) {
            ApiError::unavailable("the database", err)
        } else {
            ApiError::internal(err)
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::AlreadyExists { .. } => {
                ApiError::new(ErrorCode::AlreadyExists, err.to_string())
            }
            RepoError::NotFound { resource } => ApiError::not_found(resource),
            RepoError::BadCursor => {
                ApiError::bad_request("`cursor` is not a cursor this list gave out")
            }
            RepoError::Db(db) => db.into(),
        }
    }
}

impl From<kiln_store::StoreError> for ApiError {
    fn from(err: kiln_store::StoreError) -> Self {
        use kiln_store::ErrorKind;
        // The store's message names keys and files: logged, never sent. What is sent is the
        // kind and the OS's own reason, which names no path.
        let reason = err.os_reason().map(|r| format!(" ({r})")).unwrap_or_default();
        let details = json!({"store_error": err.kind().to_string(), "os_error": err.os_reason()});
        let with = |code: ErrorCode, message: String, err: kiln_store::StoreError| ApiError {
            cause: Some(Box::new(err)),
            details: details.clone(),
            ..ApiError::new(code, message)
        };
        match err.kind() {
            ErrorKind::NotFound => ApiError::not_found("artifact"),
            ErrorKind::Unavailable => ApiError::unavailable("the artifact store", err),
            ErrorKind::NoSpace => with(
                ErrorCode::InsufficientStorage,
                format!("the artifact store has no space left{reason}; nothing was stored"),
                err,
            ),
            ErrorKind::ReadOnly => ApiError {
                retry_after: Some(30),
                ..with(
                    ErrorCode::Unavailable,
                    format!("the artifact store is read-only{reason}; nothing was stored"),
                    err,
                )
            },
            ErrorKind::Io | ErrorKind::Unauthorized if !reason.is_empty() => with(
                ErrorCode::Internal,
                format!("the artifact store failed{reason}; the server logged the details"),
                err,
            ),
            _ => ApiError::internal(err),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match &err {
            QueueError::NotFound { .. } => ApiError::not_found("job"),
            QueueError::TeamNotFound { .. } => ApiError::not_found("team"),
            QueueError::IdempotencyConflict { .. } => ApiError::new(
                ErrorCode::IdempotencyConflict,
                format!("{err}; use a new Idempotency-Key for a new request"),
            ),
            QueueError::InvalidState { .. } => {
                ApiError::new(ErrorCode::InvalidState, err.to_string())
            }
            _ if err.is_transient() => ApiError::unavailable("the database", err),
            _ => ApiError::internal(err),
        }
    }
}

/// Extractor failures (malformed JSON, wrong content type, oversize bodies, bad query or
/// path parameters) answered in the JSON error shape.
pub mod extractors {
    use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};

    use super::*;

    pub fn json(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
        let api = match &err {
            JsonPayloadError::ContentType => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON with `Content-Type: application/json`",
            ),
            JsonPayloadError::Overflow { limit }
            | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the JSON body is larger than {limit} bytes"),
            ),
            JsonPayloadError::Deserialize(de) if de.is_data() => {
                ApiError::validation([("body".to_owned(), de.to_string())])
            }
            JsonPayloadError::Deserialize(de) => {
                ApiError::bad_request(format!("malformed JSON: {de}"))
            }
            JsonPayloadError::Payload(PayloadError::Overflow) => {
                ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
            }
            other => ApiError::bad_request(format!("could not read the JSON body: {other}")),
        };
        api.into()
    }

    pub fn query(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::bad_request(format!("bad query string: {err}")).into()
    }

    pub fn path(_err: PathError, req: &HttpRequest) -> actix_web::Error {
        // A malformed id names nothing: answer exactly like a missing resource.
        ApiError::new(ErrorCode::NotFound, format!("no resource at {}", req.path())).into()
    }
}

/// `err` and every error below it, joined by `: `, for the server's log.
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// The default service: unknown routes.
pub async fn unknown_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::NotFound, format!("no route for {} {}", req.method(), req.path())))
}

/// Middleware hook: any error answer that is not already JSON (actix's own 404/405, a
/// panic's 500, a payload error) is rewritten into the JSON error shape.
pub fn json_error_bodies<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // The web UI's error pages are HTML and say what to do next themselves.
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on {}", res.request().method(), res.request().path()),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "the body is too large".to_owned())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (ErrorCode::UnsupportedMediaType, "unsupported content type".to_owned())
        }
        s if s.is_client_error() => {
            (ErrorCode::BadRequest, s.canonical_reason().unwrap_or("bad request").to_lowercase())
        }
        _ => (ErrorCode::Internal, "internal error; the server logged the details".to_owned()),
    };
    let body = ErrorBody {
        error: ErrorDetail { code: code.as_str().to_owned(), message, details: json!({}) },
    };
    let (req, mut res) = res.into_parts();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let res = res.set_body(BoxBody::new(serde_json::to_vec(&body).unwrap_or_default()));
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, res).map_into_right_body()))
}
