//! Datasets: uploaded as a streamed body into the artifact store, format detected, schema
//! inferred, versions counted up per name.
//!
//! The body is never held whole in memory: it streams to a temporary file while it is
//! hashed and measured (413 past the limit), is read there for its schema in one streaming
//! pass of bounded memory (a malformed file answers 422 naming the row and column, and
//! nothing is stored), and then goes to the artifact store
//! under its content address, so the same bytes uploaded twice are stored once. The same
//! bytes uploaded again under the same name answer the version that holds them (200)
//! instead of making a new one.
//!
//! A dataset downloads as it was uploaded, streamed from the store; it can be deleted
//! while no queued or running job and no registered model version uses it.

use std::io::Write;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use kiln_db::repo::{Deletion, datasets};
use kiln_types::api::{Dataset, Page};
use kiln_types::{ErrorCode, Role};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::state::AppState;

pub fn dataset_view(d: datasets::Dataset) -> Dataset {
    Dataset {
        id: d.id,
        name: d.name,
        version: d.version,
        format: d.format,
        sha256: d.sha256,
        size_bytes: d.size_bytes,
        schema: d.schema,
        created_at: d.created_at,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Dataset name; each upload under a name is its next version.
    pub name: String,
    /// `csv`, `npz` or `torchscript` (a scripted module's `.pt`); detected when absent.
    pub format: Option<String>,
}

/// The team's store prefix.
pub fn store_team(team_id: Uuid) -> Result<kiln_store::Team, ApiError> {
    kiln_store::Team::parse(team_id.to_string()).map_err(ApiError::internal)
}

/// Upload a dataset (streamed). The same bytes under the same name again answer the
/// version that holds them (200) instead of a new version.
#[utoipa::path(post, path = "/v1/datasets", operation_id = "upload_dataset", tag = "datasets", params(UploadQuery),
    request_body(description = "The file's bytes, streamed: a CSV with a header, an NPZ archive or a TorchScript `.pt`. \
Sent as `application/octet-stream` (the format is detected, or given by `?format=`); a CSV may also be sent as `text/csv`, \
which this document leaves out because client generators cannot send that type.",
                 content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Dataset),
              (status = 200, body = Dataset, description = "These bytes are already a version of this name: that version"),
              (status = 413, body = kiln_types::api::ErrorBody),
              (status = 415, body = kiln_types::api::ErrorBody), (status = 422, body = kiln_types::api::ErrorBody),
              (status = 503, description = "the artifact store is unavailable or read-only; nothing stored", body = kiln_types::api::ErrorBody),
              (status = 507, description = "the artifact store has no space left (`insufficient_storage`); nothing stored", body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<UploadQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Member)?;
    let team = caller.team()?;
    if let Some(problem) = datasets::name_problem(&query.name) {
        return Err(ApiError::validation([("name".to_owned(), problem.to_owned())]));
    }
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !matches!(media.as_str(), "text/csv" | "application/octet-stream") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "upload a dataset as `text/csv` or `application/octet-stream`, not `{content_type}`"
            ),
        ));
    }
    let requested = match query.format.as_deref() {
        None => None,
        Some(f @ ("csv" | "npz" | "torchscript")) => Some(f.to_owned()),
        Some(other) => {
            return Err(ApiError::validation([(
                "format".to_owned(),
                format!("unknown format `{other}`; expected csv, npz or torchscript"),
            )]));
        }
    };

    // 1. Stream to a temporary file, hashing and counting.
    let limit = state.limits.upload_bytes;
    let tmp = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
    let mut file = std::io::BufWriter::new(tmp.reopen().map_err(ApiError::internal)?);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the dataset is larger than the limit of {limit} bytes"),
            ));
        }
        if head.len() < 8 {
            head.extend_from_slice(&chunk[..chunk.len().min(8 - head.len())]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(ApiError::internal)?;
    }
    file.flush().map_err(ApiError::internal)?;
    drop(file);
    if size == 0 {
        return Err(ApiError::validation([("body".to_owned(), "the dataset is empty".to_owned())]));
    }
    let sha256 = hex::encode(hasher.finalize());

    // 2. Detect the format; the same bytes in the same format under this name again answer
    // the version that holds them. Otherwise infer the schema (off the async runtime).
    let format =
        requested.unwrap_or_else(|| kiln_ml::DatasetFormat::sniff(&head).as_str().to_owned());
    if let Some(same) = datasets::find_same(&state.db, team, &query.name, &sha256, &format).await? {
        return Ok(HttpResponse::Ok().json(dataset_view(same)));
    }
    let path = tmp.path().to_path_buf();
    let schema = match format.as_str() {
        "torchscript" => {
            if !head.starts_with(b"PK\x03\x04") {
                return Err(ApiError::validation([(
                    "body".to_owned(),
                    "a TorchScript module is the zip archive `torch.jit.save` writes".to_owned(),
                )]));
            }
            kiln_types::DatasetSchema::TorchScript
        }
        _ => {
            let expect = format.clone();
            // One streaming pass over the file: memory stays bounded whatever its size.
            let parsed = web::block(move || kiln_ml::schema_of_file(&path))
                .await
                .map_err(ApiError::internal)?;
            match parsed {
                Ok((found, schema)) if found.as_str() == expect => schema,
                Ok((found, _)) => {
                    return Err(ApiError::validation([(
                        "format".to_owned(),
                        format!("the body is {}, not {expect}", found.as_str()),
                    )]));
                }
                Err(err) if err.is_user_error() => {
                    return Err(ApiError::validation([("body".to_owned(), err.to_string())]));
                }
                Err(err) => return Err(ApiError::internal(err)),
            }
        }
    };

    // 3. Store under the content address, then record the version.
    let info = kiln_store::put_file(state.store.as_ref(), &store_team(team)?, tmp.path()).await?;
    debug_assert_eq!(info.sha256.to_string(), sha256);
    let (dataset, created) = datasets::create_unless_same(
        &state.db,
        datasets::NewDataset {
            team_id: team,
            name: &query.name,
            format: &format,
            sha256: &sha256,
            size_bytes: size as i64,
            storage_key: info.key.as_str(),
            schema,
            created_by: Some(caller.token_id()),
        },
    )
    .await?;
    if !created {
        // An identical upload finished first.
        return Ok(HttpResponse::Ok().json(dataset_view(dataset)));
    }
    let details = json!({"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256, "size_bytes": size});
    caller
        .audit(&state.db, Some(team), "dataset.upload", "dataset", dataset.id.to_string(), details)
        .await?;
    Ok(HttpResponse::Created().json(dataset_view(dataset)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DatasetListQuery {
    /// Only versions of this name.
    pub name: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

/// List the team's datasets, newest first.
#[utoipa::path(get, path = "/v1/datasets", operation_id = "list_datasets", tag = "datasets", params(DatasetListQuery),
    responses((status = 200, body = Page<Dataset>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<DatasetListQuery>,
) -> Result<web::Json<Page<Dataset>>, ApiError> {
    caller.require(Role::Viewer)?;
    let paging = ListQuery { limit: query.limit, cursor: query.cursor.clone() };
    let page = datasets::list(
        &state.db,
        caller.team()?,
        query.name.as_deref(),
        paging.limit()?,
        paging.cursor(),
    )
    .await?;
    Ok(web::Json(Page {
        items: page.items.into_iter().map(dataset_view).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One dataset.
#[utoipa::path(get, path = "/v1/datasets/{id}", operation_id = "get_dataset", tag = "datasets", params(("id" = Uuid, Path)),
    responses((status = 200, body = Dataset), (status = 404, body = kiln_types::api::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Dataset>, ApiError> {
    caller.require(Role::Viewer)?;
    let dataset = datasets::get(&state.db, caller.team()?, path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("dataset"))?;
    Ok(web::Json(dataset_view(dataset)))
}

/// The media type and file name a dataset downloads with.
fn download_kind(d: &datasets::Dataset) -> (&'static str, String) {
    match d.format.as_str() {
        "csv" => ("text/csv", format!("{}-v{}.csv", d.name, d.version)),
        "npz" => ("application/octet-stream", format!("{}-v{}.npz", d.name, d.version)),
        _ => ("application/octet-stream", format!("{}-v{}.pt", d.name, d.version)),
    }
}

/// Download a dataset's bytes as uploaded, streamed from the artifact store:
/// `text/csv` for CSV, `application/octet-stream` for NPZ and TorchScript (listed first:
/// a generated client reads the body as bytes), with its
/// `Content-Length`, a `Content-Disposition` file name (`NAME-vVERSION.csv|.npz|.pt`) and
/// its digest in `X-Kiln-Sha256`.
#[utoipa::path(get, path = "/v1/datasets/{id}/content", operation_id = "download_dataset", tag = "datasets", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The dataset's bytes",
               content((Vec<u8> = "application/octet-stream"), (Vec<u8> = "text/csv")),
               headers(("Content-Disposition" = String, description = "attachment; filename=\"NAME-vVERSION.EXT\""),
                       ("X-Kiln-Sha256" = String, description = "sha256 of the bytes, hex"))),
              (status = 404, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn download(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let team = caller.team()?;
    let dataset = datasets::get(&state.db, team, path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("dataset"))?;
    let key = kiln_store::Key::parse(dataset.storage_key.clone()).map_err(ApiError::internal)?;
    let stream = state.store.get(&key, None).await?;
    let (media, filename) = download_kind(&dataset);
    let size = u64::try_from(dataset.size_bytes).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type(media)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header(("X-Kiln-Sha256", dataset.sha256.as_str().to_owned()))
        .no_chunking(size)
        .streaming(stream.map(|chunk| chunk.map_err(std::io::Error::other))))
}

/// Delete a dataset version (maintainer). Refused with 409 `in_use` while a queued or
/// running job trains on it (`details.jobs`) or a registered model version was trained on
/// it (`details.model_versions`). Its bytes are left to the artifacts garbage collection
/// (another version may hold the same content).
#[utoipa::path(delete, path = "/v1/datasets/{id}", operation_id = "delete_dataset", tag = "datasets", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 409, description = "`in_use`: jobs or model versions still use it (`details.jobs`, `details.model_versions`)", body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let team = caller.team()?;
    // The lookup first: another team's dataset answers 404 whatever the caller's role.
    let dataset = datasets::get(&state.db, team, path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("dataset"))?;
    caller.require(Role::Maintainer)?;
    let actor = caller.actor();
    let details =
        json!({"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256});
    let entry =
        caller.audit_entry(&actor, Some(team), "dataset.delete", "dataset", dataset.id, details);
    match datasets::delete_unless_used(&state.db, team, dataset.id, entry).await? {
        Deletion::Deleted => Ok(HttpResponse::NoContent().finish()),
        Deletion::InUse(users) => Err(ApiError::in_use(
            &format!("dataset `{}` version {}", dataset.name, dataset.version),
            &users,
        )),
        Deletion::NotFound => Err(ApiError::not_found("dataset")),
    }
}
