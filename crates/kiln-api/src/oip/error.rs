//! The Open Inference Protocol's error answer: an HTTP status with `{"error": "message"}`
//! (a string), which `tritonclient` raises as `InferenceServerException(msg=error)` and the
//! `kserve` client puts in its `HTTPStatusError`. Built from any [`ApiError`] (so Kiln's
//! lookups and checks are reused as they are); the cause is logged, never sent.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use kiln_types::ErrorCode;
use serde::Serialize;

use crate::error::ApiError;

/// An error on an OIP route.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct OipError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (overload, not loaded yet).
    pub retry_after: Option<u64>,
    /// Boxed: an error value stays small on every `Result` path.
    #[source]
    pub cause: Option<Box<ApiError>>,
}

/// The wire body of an [`OipError`].
#[derive(Debug, Serialize)]
pub struct OipErrorBody<'a> {
    pub error: &'a str,
}

impl OipError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None, cause: None }
    }

    /// 400: the request does not fit the protocol or the model.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such model (deployment) or version, or another team's.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<ApiError> for OipError {
    fn from(err: ApiError) -> Self {
        let status = match err.code {
            // The protocol answers every bad request with 400 (Kiln's 422 included).
            ErrorCode::ValidationFailed | ErrorCode::UnsupportedMediaType => {
                StatusCode::BAD_REQUEST
            }
            code => StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        // A validation error's field list is in its details; OIP has one message.
        let message = err.one_line();
        Self { status, message, retry_after: err.retry_after, cause: Some(Box::new(err)) }
    }
}

impl ResponseError for OipError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            let cause = self.cause.as_deref().map(|c| crate::error::cause_chain(c));
            tracing::error!(
                status = self.status.as_u16(),
                cause = cause.as_deref(),
                "{}",
                self.message
            );
        }
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(OipErrorBody { error: &self.message })
    }
}

/// Unknown routes under `/v2`: a 404 in the protocol's shape.
pub async fn unknown_route(req: HttpRequest) -> Result<HttpResponse, OipError> {
    Err(OipError::not_found(format!(
        "no Open Inference Protocol endpoint {} {} on this Kiln server",
        req.method(),
        req.path()
    )))
}

/// Middleware hook for the `/v2` scope: an error answer that is not JSON already (actix's
/// 405, an oversize or undecodable body) is rewritten into `{"error": "..."}`, so these
/// routes never answer Kiln's native error body.
pub fn json_error_bodies<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let message = match status {
        StatusCode::NOT_FOUND => {
            format!("no Open Inference Protocol endpoint {}", res.request().path())
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("{} is not allowed on {}", res.request().method(), res.request().path())
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_owned(),
        s if s.is_client_error() => format!(
            "the request body could not be read ({})",
            s.canonical_reason().unwrap_or("bad request").to_lowercase()
        ),
        _ => "internal error; the server logged the details".to_owned(),
    };
    let body = serde_json::to_vec(&OipErrorBody { error: &message }).unwrap_or_default();
    let (req, mut res) = res.into_parts();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let res = res.set_body(BoxBody::new(body));
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, res).map_into_right_body()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiln_errors_keep_their_status_but_validation_is_400_with_one_message() {
        let e = OipError::from(ApiError::not_found("deployment"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = OipError::from(ApiError::validation([
            ("a".to_owned(), "bad".to_owned()),
            ("b".to_owned(), "worse".to_owned()),
        ]));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "a: bad; b: worse");
        let e = OipError::from(ApiError::new(ErrorCode::Overloaded, "busy"));
        assert_eq!(e.status.as_u16(), 503);
    }
}
