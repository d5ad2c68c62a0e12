//! The `/v2` handlers: health, server and model metadata, model readiness, and inference
//! through [`crate::predict`] (the native predict route's lookup, role check and answers,
//! and through it kiln-serving's routing, batching engine, metrics and drift sample).

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures::StreamExt;
use kiln_serving::{Engine, Live, Pick, Routing};
use kiln_types::{ErrorCode, Role};
use serde::Serialize;

use super::codec::{self, Request};
use super::error::OipError;
use super::tensor::{self, MetadataTensor, TensorRows};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::predict;
use crate::state::AppState;

/// The header carrying the JSON header's length of a request or response with binary data.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The extensions of the protocol Kiln implements.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "classification"];

/// [`Caller`], failing in the protocol's error shape.
#[derive(Debug, Clone, Copy)]
pub struct OipCaller(pub Caller);

impl FromRequest for OipCaller {
    type Error = OipError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let inner = Caller::from_request(req, payload);
        Box::pin(async move { inner.await.map(OipCaller).map_err(OipError::from) })
    }
}

#[derive(Serialize)]
struct Liveness {
    live: bool,
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
}

/// `GET /v2/health/live`: the process is up (no token, like `/healthz`).
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { live: true })
}

/// `GET /v2/health/ready`: ready to serve inference, i.e. PostgreSQL (tokens, deployments)
/// answers (no token). 503 otherwise.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let bound = std::time::Duration::from_secs(2);
    let ok = matches!(tokio::time::timeout(bound, kiln_db::ping(&state.db)).await, Ok(Ok(_)));
    if ok {
        HttpResponse::Ok().json(Ready { ready: true })
    } else {
        HttpResponse::ServiceUnavailable().json(Ready { ready: false })
    }
}

#[derive(Serialize)]
struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: &'static [&'static str],
}

/// `GET /v2`: the server's name, version and extensions (no token).
pub async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(ServerMetadata {
        name: "kiln",
        version: env!("CARGO_PKG_VERSION"),
        extensions: EXTENSIONS,
    })
}

/// `{name}` and the optional `{version}` of a model route.
fn model_path(req: &HttpRequest) -> Result<(String, Pick), OipError> {
    let name = req.match_info().get("name").unwrap_or_default().to_owned();
    let pick = match req.match_info().get("version") {
        None => Pick::Routed,
        Some(v) => match v.parse::<i32>() {
            Ok(v) if v > 0 => Pick::Version(v),
            _ => {
                return Err(OipError::not_found(format!(
                    "model `{name}` has no version `{v}`: versions are positive integers"
                )));
            }
        },
    };
    Ok((name, pick))
}

/// The caller's team's deployment `name`, with the protocol's 404.
async fn find(
    state: &AppState,
    caller: &Caller,
    name: &str,
    role: Role,
) -> Result<std::sync::Arc<Live>, OipError> {
    predict::find(state, caller, name, role).await.map_err(|err| match err.code {
        ErrorCode::NotFound => OipError {
            cause: Some(Box::new(err)),
            ..OipError::not_found(format!(
                "model `{name}` not found: it is not a deployment of your team"
            ))
        },
        _ => err.into(),
    })
}

/// The version a metadata or readiness request is about: the one asked for, else the one
/// taking the most traffic.
fn engine_of(
    live: &Live,
    routing: &Routing,
    pick: Pick,
) -> Result<Option<std::sync::Arc<Engine>>, OipError> {
    match pick {
        Pick::Version(v) => Ok(Some(predict::serving_version(live, v)?)),
        Pick::Routed => {
            Ok(routing.routes.iter().max_by_key(|r| r.weight).map(|r| r.engine.clone()))
        }
    }
}

#[derive(Serialize)]
struct ModelMetadata {
    name: String,
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<MetadataTensor>,
    outputs: Vec<MetadataTensor>,
}

/// `GET /v2/models/{name}[/versions/{version}]`: the deployment's inputs and outputs, from
/// the bundle of that version (default: the one taking the most traffic). Viewer and up.
pub async fn model_metadata(
    state: web::Data<AppState>,
    caller: OipCaller,
    req: HttpRequest,
) -> Result<HttpResponse, OipError> {
    let (name, pick) = model_path(&req)?;
    let live = find(&state, &caller.0, &name, Role::Viewer).await?;
    let routing = live.routing();
    let engine = engine_of(&live, &routing, pick)?.ok_or_else(|| {
        let why = routing.error.clone().unwrap_or_else(|| "no version takes traffic".to_owned());
        OipError::from(ApiError::unavailable("the deployment", why))
    })?;
    let (inputs, outputs) = tensor::metadata(&engine.preprocessing);
    Ok(HttpResponse::Ok().json(ModelMetadata {
        name: live.row.name.clone(),
        versions: routing.routes.iter().map(|r| r.engine.version.to_string()).collect(),
        platform: "kiln",
        inputs,
        outputs,
    }))
}

#[derive(Serialize)]
struct ModelReady {
    name: String,
    ready: bool,
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`: 200 `{name, ready: true}` when the
/// deployment (that version) takes traffic in this process, else 503 with `ready: false`.
pub async fn model_ready(
    state: web::Data<AppState>,
    caller: OipCaller,
    req: HttpRequest,
) -> Result<HttpResponse, OipError> {
    let (name, pick) = model_path(&req)?;
    let live = match find(&state, &caller.0, &name, Role::Viewer).await {
        Ok(live) => live,
        // Known but not loaded here yet: not ready.
        Err(err) if err.status.as_u16() == 503 => {
            return Ok(HttpResponse::ServiceUnavailable().json(ModelReady { name, ready: false }));
        }
        Err(err) => return Err(err),
    };
    let routing = live.routing();
    let ready = engine_of(&live, &routing, pick)?.is_some();
    let body = ModelReady { name: live.row.name.clone(), ready };
    Ok(if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    })
}

/// Content encodings of a request body that are decoded (actix's decoder, with a limit on
/// the decoded size).
fn check_encoding(headers: &HeaderMap) -> Result<(), OipError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else { return Ok(()) };
    let text = value.to_str().unwrap_or_default().trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" | "gzip" | "x-gzip" | "deflate" => Ok(()),
        _ => Err(OipError::bad_request(format!(
            "Content-Encoding `{}` is not supported; send the body as is, gzip or deflate",
            value.to_str().unwrap_or("(not text)")
        ))),
    }
}

fn header_length(headers: &HeaderMap) -> Result<Option<usize>, OipError> {
    let Some(value) = headers.get(HEADER_LENGTH) else { return Ok(None) };
    value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).map(Some).ok_or_else(|| {
        OipError::bad_request(format!(
            "Inference-Header-Content-Length must be a byte count, got `{}`",
            value.to_str().unwrap_or("(not text)")
        ))
    })
}

/// The body, decoded (gzip, deflate), at most `limit` bytes once decoded.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, OipError> {
    let too_large = || {
        OipError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes (KILN_MAX_JSON_BYTES)"),
        )
    };
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let compressed = req.headers().contains_key(header::CONTENT_ENCODING);
    if !compressed && length.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut stream = actix_web::dev::Decompress::from_headers(payload.into_inner(), req.headers());
    let mut body = BytesMut::with_capacity(length.unwrap_or(8192).min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            OipError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`: inference on the deployment (that
/// version, if its split routes to it). Member and up, like the native predict route.
pub async fn infer(
    state: web::Data<AppState>,
    caller: OipCaller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OipError> {
    let (name, pick) = model_path(&req)?;
    check_encoding(req.headers())?;
    let header_len = header_length(req.headers())?;
    let live = find(&state, &caller.0, &name, Role::Member).await?;
    let body = read_body(&req, payload, state.limits.json_bytes).await?;
    let request: Request<'_> = codec::parse_request(&body, header_len)?;
    let rows = TensorRows::new(&request);
    let served = predict::predict(&state, &live, pick, &rows).await?;
    let version = served.engine.version;
    let outputs =
        tensor::outputs(&request, &served.engine.preprocessing.target, &served.predictions);
    let encoded = codec::write_response(&live.row.name, version, request.id.as_deref(), &outputs);
    let mut response = HttpResponse::Ok();
    response.insert_header(("X-Kiln-Model-Version", version.to_string()));
    Ok(match encoded.header_len {
        Some(n) => response
            .insert_header((HEADER_LENGTH, n.to_string()))
            .content_type("application/octet-stream")
            .body(encoded.body),
        None => response.content_type("application/json").body(encoded.body),
    })
}
