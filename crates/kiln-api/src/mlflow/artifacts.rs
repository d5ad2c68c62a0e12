//! The `mlflow-artifacts:` proxy: upload, download, list and delete, streamed into Kiln's
//! artifact store under the team's prefix.
//!
//! The client reaches it for a run whose `artifact_uri` is
//! `mlflow-artifacts:/{experiment_id}/{run_id}/artifacts` and for a logged model's
//! `mlflow-artifacts:/{experiment_id}/models/m-{id}/artifacts`: every path must start with
//! one of those, and the run or logged model must be the caller's team's (another team's is
//! `RESOURCE_DOES_NOT_EXIST`). Objects are stored under
//! `teams/{team}/mlflow/runs/{run}/artifacts/...` and
//! `teams/{team}/mlflow/models/m-{id}/artifacts/...` (keyed by the run or model, not the
//! experiment). Those keys are outside the artifacts garbage collection ([`is_mlflow_key`]):
//! MLflow's artifacts are referenced by paths, not by rows.
//!
//! Uploads stream into the store (never whole in memory) and become visible only once
//! complete; a re-upload of a path replaces it. Downloads stream with their length.
//! Directories are inferred from keys. Paths with `..`, `.`, empty segments, a leading `/`,
//! a backslash, NUL or other control characters are refused. Reads need `viewer`, uploads
//! and deletes `member`.
//!
//! Multipart uploads (`mpu/create|complete|abort`, which the client uses for large files
//! when `MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true`) are in [`super::multipart`]. Presigned
//! downloads (`presigned/*`) are not offered: the client asks for them only when the
//! server's `server-info` advertises them, which Kiln does not.

// `MlflowError` (the scaffolding's error type, carrying its `ApiError` cause) is large; the
// handlers return it as actix errors anyway, so boxing it here would only add noise.

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kiln_store::{ByteStream, ErrorKind, Key, StoreError};
use kiln_types::Role;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::registry::{logged_models, parse_run_id, run_hex, team_run};
use super::{MlCaller, MlflowCode, MlflowError};
use crate::state::AppState;

/// Mounts the artifact routes inside an `mlflow-artifacts` scope (paths relative to
/// `/api/2.0/mlflow-artifacts`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/artifacts", web::get().to(list))
        .route("/artifacts/{path:.+}", web::get().to(download))
        .route("/artifacts/{path:.+}", web::put().to(upload))
        .route("/artifacts/{path:.+}", web::delete().to(delete))
        .configure(super::multipart::configure);
}

/// True for the keys this proxy writes (`teams/{team}/mlflow/...`): the artifacts garbage
/// collection leaves them alone.
pub fn is_mlflow_key(key: &str) -> bool {
    let mut parts = key.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some("teams"), Some(t), Some("mlflow")) if !t.is_empty())
}

/// Refuses paths that could leave their place.
fn check_path(path: &str) -> Result<(), MlflowError> {
    let refuse =
        |why: &str| Err(MlflowError::invalid(format!("artifact path {path:?} refused: {why}")));
    if path.starts_with('/') {
        return refuse("absolute paths are not allowed");
    }
    if path.chars().any(|c| c.is_control()) {
        return refuse("control characters (NUL included) are not allowed");
    }
    if path.contains('\\') {
        return refuse("backslashes are not allowed");
    }
    for segment in path.split('/') {
        match segment {
            "" => return refuse("empty path segment"),
            "." | ".." => return refuse("`.` and `..` are not allowed"),
            s if s.starts_with('.') => {
                return refuse("names starting with '.' are not stored by Kiln's artifact store");
            }
            _ => {}
        }
    }
    Ok(())
}

/// The store key of an artifact path (`{exp}/{run}/artifacts/...` or
/// `{exp}/models/m-{id}/artifacts/...`), after checking that the run or logged model is the
/// team's.
pub(super) async fn resolve(
    state: &AppState,
    team: Uuid,
    path: &str,
) -> Result<String, MlflowError> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Err(MlflowError::invalid(
            "give an artifact path: `{experiment_id}/{run_id}/artifacts[/...]` or `{experiment_id}/models/{model_id}/artifacts[/...]`",
        ));
    }
    check_path(path)?;
    let segs: Vec<&str> = path.split('/').collect();
    let shape = || {
        MlflowError::invalid(format!(
            "artifact path {path:?} is not under a run or logged model: expected `{{experiment_id}}/{{run_id}}/artifacts[/...]` or `{{experiment_id}}/models/{{model_id}}/artifacts[/...]`"
        ))
    };
    if !segs[0].bytes().all(|b| b.is_ascii_digit()) || segs.len() < 3 {
        return Err(shape());
    }
    let (owner, rest) = if segs[1] == "models" {
        if segs.len() < 4 || segs[3] != "artifacts" {
            return Err(shape());
        }
        let id = logged_models::parse_model_id(segs[2])?;
        logged_models::team_logged_model(state, team, id).await?;
        (format!("models/m-{}", id.simple()), &segs[4..])
    } else {
        if segs[2] != "artifacts" {
            return Err(shape());
        }
        let run = team_run(state, team, parse_run_id(segs[1])?).await?;
        (format!("runs/{}", run_hex(run.id)), &segs[3..])
    };
    let mut key = format!("teams/{team}/mlflow/{owner}/artifacts");
    for s in rest {
        key.push('/');
        key.push_str(s);
    }
    if key.len() > kiln_store::MAX_KEY_LEN {
        return Err(MlflowError::invalid(format!("artifact path {path:?} is too long")));
    }
    Ok(key)
}

pub(super) fn key(s: &str) -> Result<Key, MlflowError> {
    Key::parse(s.to_owned())
        .map_err(|e| MlflowError::invalid(format!("artifact path refused: {e}")))
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

/// The entries directly inside artifact directory `path` (names relative to it, sorted);
/// empty when `path` is a file or holds nothing.
pub(crate) async fn list_dir(
    state: &AppState,
    team: Uuid,
    path: &str,
) -> Result<Vec<FileInfo>, MlflowError> {
    let base = resolve(state, team, path).await?;
    if state.store.head(&key(&base)?).await.is_ok() {
        // A file lists as nothing, as MLflow's own server answers.
        return Ok(Vec::new());
    }
    let prefix = format!("{base}/");
    let mut entries: std::collections::BTreeMap<String, FileInfo> = Default::default();
    let mut continuation = None;
    loop {
        let page = state.store.list(&prefix, continuation).await?;
        for object in page.objects {
            let Some(rest) = object.key.as_str().strip_prefix(&prefix) else { continue };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    entries.entry(dir.to_owned()).or_insert(FileInfo {
                        path: dir.to_owned(),
                        is_dir: true,
                        file_size: None,
                    });
                }
                None => {
                    entries.insert(
                        rest.to_owned(),
                        FileInfo {
                            path: rest.to_owned(),
                            is_dir: false,
                            file_size: Some(object.size),
                        },
                    );
                }
            }
        }
        match page.next {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    Ok(entries.into_values().collect())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    path: Option<String>,
}

async fn list(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, MlflowError> {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let files = list_dir(&state, team, query.path.as_deref().unwrap_or("")).await?;
    Ok(HttpResponse::Ok().json(json!({"files": files})))
}

fn mime_of(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" | "py" | "yaml" | "yml" | "csv" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "html" => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn download(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, MlflowError> {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let k = key(&resolve(&state, team, &path).await?)?;
    let meta = state.store.head(&k).await.map_err(|e| match e.kind() {
        ErrorKind::NotFound => {
            MlflowError::not_found(format!("artifact {:?} not found", path.as_str()))
        }
        _ => e.into(),
    })?;
    let stream = state.store.get(&k, None).await?;
    Ok(HttpResponse::Ok()
        .content_type(mime_of(&path))
        .no_chunking(meta.size)
        .streaming(stream.map(|chunk| chunk.map_err(std::io::Error::other))))
}

async fn upload(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, MlflowError> {
    let team = caller.team()?;
    let base = resolve(&state, team, &path).await?;
    caller.require(Role::Member)?;
    if base.ends_with("/artifacts") {
        return Err(MlflowError::invalid("give a file name under the artifacts directory"));
    }
    let k = key(&base)?;
    // MLflow replaces an artifact logged again at the same path.
    state.store.delete(&k).await?;
    stream_into_store(&state, k, payload, state.limits.upload_bytes).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// Streams a request body into the store at `k` (create-only: the caller deletes an old
/// object first) and answers its size. The body is forwarded chunk by chunk into the
/// store's reader; a body that breaks off or grows past `limit` fails the reader, so nothing
/// partial is stored.
pub(super) async fn stream_into_store(
    state: &AppState,
    k: Key,
    mut payload: web::Payload,
    limit: u64,
) -> Result<u64, MlflowError> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<kiln_store::Result<Bytes>>(4);
    let pump = async move {
        let mut size: u64 = 0;
        while let Some(chunk) = payload.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    let why = format!("the upload broke off: {err}");
                    let _ = tx.send(Err(StoreError::new(ErrorKind::Source, why.clone()))).await;
                    return Err(MlflowError::new(MlflowCode::BadRequest, why));
                }
            };
            size += chunk.len() as u64;
            if size > limit {
                let why = format!(
                    "the upload is larger than the limit of {limit} bytes (KILN_MAX_UPLOAD_BYTES)"
                );
                let _ = tx.send(Err(StoreError::new(ErrorKind::Source, why.clone()))).await;
                return Err(MlflowError::invalid(why));
            }
            if tx.send(Ok(chunk)).await.is_err() {
                // The store stopped reading: its own error is the answer.
                break;
            }
        }
        Ok(size)
    };
    let stream: ByteStream = Box::pin(rx);
    let mut reader = kiln_store::into_async_read(stream);
    let store = state.store.clone();
    let put = async move { store.put_at(&k, &mut reader).await };
    let (pumped, stored) = futures::future::join(pump, put).await;
    let streamed = pumped?;
    stored?;
    Ok(streamed)
}

async fn delete(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, MlflowError> {
    let team = caller.team()?;
    let base = resolve(&state, team, &path).await?;
    caller.require(Role::Member)?;
    // The path itself when it is a file (a directory is no object: some stores refuse to
    // delete one by name), and everything under it.
    let k = key(&base)?;
    if state.store.head(&k).await.is_ok() {
        state.store.delete(&k).await?;
    }
    let prefix = format!("{base}/");
    for object in kiln_store::list_all(state.store.as_ref(), &prefix).await? {
        state.store.delete(&object.key).await?;
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_paths_are_refused() {
        for bad in ["../x", "0/a/../b", "/etc/passwd", "a//b", "a/./b", "a\\b", "a\0b", "a/.hidden"]
        {
            assert!(check_path(bad).is_err(), "{bad:?} passed");
        }
        assert!(check_path("0/abc/artifacts/dir/file.txt").is_ok());
    }

    #[test]
    fn mlflow_keys_are_recognised() {
        assert!(is_mlflow_key("teams/abc/mlflow/runs/x/artifacts/f"));
        assert!(!is_mlflow_key("teams/abc/blobs/sha256/ab/abcd"));
        assert!(!is_mlflow_key("teams//mlflow/x"));
    }
}
