//! Multipart uploads through the `mlflow-artifacts:` proxy (`mpu/create`, the parts,
//! `mpu/complete`, `mpu/abort`): what the stock client does for a large artifact when
//! `MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true` (files of at least
//! `MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE`, parts of `MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE`,
//! several in flight at once).
//!
//! MLflow's own server hands out presigned URLs of its object store; Kiln hands out URLs of
//! its own (`.../mpu/parts/{team}/{upload_id}/{part}`), because its default store is a local
//! directory that cannot presign, and because every byte then passes the same checks. The
//! client `PUT`s each part there without its tracking token, with the headers `create`
//! returned: a per-upload secret in `X-Kiln-Upload-Secret`, checked against the digest kept
//! in the upload's manifest (so a URL seen in an access log grants nothing).
//!
//! State lives in the artifact store, not in PostgreSQL, beside the parts:
//! `teams/{team}/mlflow/uploads/{upload_id}/manifest` (the target key, the number of parts,
//! the secret's SHA-256) and `.../parts/{n:05}-{attempt}` (each part, visible only once
//! whole; the attempt's id is the part's `ETag`, which `complete` names). `complete` streams the parts in order
//! into the target (never whole in memory), which appears only once whole, then deletes the
//! upload; `abort` deletes it. An upload neither completed nor aborted stays in the store
//! (the client aborts on any failure it sees).

use actix_web::{HttpRequest, HttpResponse, web};
use futures::{StreamExt, TryStreamExt};
use kiln_store::{ByteStream, ErrorKind, Key};
use kiln_types::Role;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::artifacts::{key, resolve, stream_into_store};
use super::{MlCaller, MlflowCode, MlflowError};
use crate::state::AppState;

/// S3's own limit on the parts of one upload.
const MAX_PARTS: u32 = 10_000;
/// The header carrying an upload's secret on each part.
const SECRET_HEADER: &str = "x-kiln-upload-secret";
/// A manifest is a few hundred bytes; anything bigger is not one of ours.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Mounts the multipart routes inside an `mlflow-artifacts` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/mpu/create/{path:.+}", web::post().to(create))
        .route("/mpu/complete/{path:.+}", web::post().to(complete))
        .route("/mpu/abort/{path:.+}", web::post().to(abort))
        .route("/mpu/parts/{team}/{upload}/{part}", web::put().to(put_part));
}

/// What an upload is for, kept beside its parts.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// The store key the completed artifact goes to.
    key: String,
    num_parts: u32,
    /// SHA-256 (hex) of the secret each part must carry.
    secret_sha256: String,
}

fn upload_prefix(team: Uuid, upload: Uuid) -> String {
    format!("teams/{team}/mlflow/uploads/{}", upload.simple())
}

fn parse_upload_id(id: &str) -> Result<Uuid, MlflowError> {
    Uuid::try_parse(id)
        .map_err(|_| MlflowError::invalid(format!("upload_id {id:?} is not an upload id")))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The upload's manifest, or `RESOURCE_DOES_NOT_EXIST` saying why it may be gone.
async fn manifest(state: &AppState, team: Uuid, upload: Uuid) -> Result<Manifest, MlflowError> {
    let k = key(&format!("{}/manifest", upload_prefix(team, upload)))?;
    let gone = || {
        MlflowError::not_found(format!(
            "no multipart upload {}: it was completed, aborted or never created",
            upload.simple()
        ))
    };
    let mut stream = match state.store.get(&k, None).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(gone()),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(gone());
        }
    }
    serde_json::from_slice(&bytes).map_err(|_| gone())
}

/// One stored part: its number, ETag, size and key.
#[derive(Clone)]
struct StoredPart {
    number: u32,
    etag: String,
    size: u64,
    key: Key,
}

/// The parts stored for an upload, by number (a part uploaded again replaces the earlier
/// attempt once stored; until then both may be listed, and `complete` takes the one whose
/// ETag the client names).
async fn stored_parts(
    state: &AppState,
    team: Uuid,
    upload: Uuid,
) -> Result<Vec<StoredPart>, MlflowError> {
    let prefix = format!("{}/parts/", upload_prefix(team, upload));
    let mut parts = Vec::new();
    for object in kiln_store::list_all(state.store.as_ref(), &prefix).await? {
        let Some(name) = object.key.as_str().strip_prefix(&prefix) else { continue };
        let Some((number, etag)) = name.split_once('-') else { continue };
        let Ok(number) = number.parse::<u32>() else { continue };
        parts.push(StoredPart {
            number,
            etag: etag.to_owned(),
            size: object.size,
            key: object.key.clone(),
        });
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// Deletes everything an upload stored.
async fn delete_upload(state: &AppState, team: Uuid, upload: Uuid) -> Result<(), MlflowError> {
    let prefix = format!("{}/", upload_prefix(team, upload));
    for object in kiln_store::list_all(state.store.as_ref(), &prefix).await? {
        state.store.delete(&object.key).await?;
    }
    Ok(())
}

/// The target key of an upload. As on MLflow's own server, the route's path is the
/// artifact *directory* and the file's name is the last segment of the body's `path` (the
/// client sends the local file's path there).
async fn target(
    state: &AppState,
    team: Uuid,
    dir: &str,
    local_file: Option<&str>,
) -> Result<String, MlflowError> {
    let name = local_file
        .and_then(|p| p.rsplit(['/', '\\']).next())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            MlflowError::invalid(
                "`path` must name the file being uploaded (the client sends its local path; its last segment is the artifact's name)",
            )
        })?;
    resolve(state, team, &format!("{}/{name}", dir.trim_end_matches('/'))).await
}

/// The upload a `complete` or `abort` names, after checking that the caller may write the
/// artifact and that the upload was created for this very path.
async fn open_upload(
    state: &AppState,
    caller: &MlCaller,
    dir: &str,
    local_file: Option<&str>,
    upload_id: &str,
) -> Result<(Uuid, Uuid, Manifest), MlflowError> {
    let team = caller.team()?;
    let target = target(state, team, dir, local_file).await?;
    caller.require(Role::Member)?;
    let upload = parse_upload_id(upload_id)?;
    let manifest = manifest(state, team, upload).await?;
    if manifest.key != target {
        return Err(MlflowError::invalid(format!(
            "upload {} was created for another artifact path",
            upload.simple()
        )));
    }
    Ok((team, upload, manifest))
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    path: Option<String>,
    num_parts: u32,
}

#[derive(Debug, Serialize)]
struct Credential {
    url: String,
    part_number: u32,
    headers: serde_json::Map<String, serde_json::Value>,
}

async fn create(
    state: web::Data<AppState>,
    caller: MlCaller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, MlflowError> {
    let team = caller.team()?;
    let target = target(&state, team, &path, body.path.as_deref()).await?;
    caller.require(Role::Member)?;
    let num_parts = body.num_parts;
    if num_parts == 0 || num_parts > MAX_PARTS {
        return Err(MlflowError::invalid(format!(
            "num_parts must be between 1 and {MAX_PARTS}, got {num_parts}"
        )));
    }
    let upload = Uuid::new_v4();
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let manifest =
        Manifest { key: target, num_parts, secret_sha256: sha256_hex(secret.as_bytes()) };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| {
        MlflowError::new(MlflowCode::InternalError, format!("manifest not encoded: {e}"))
    })?;
    let k = key(&format!("{}/manifest", upload_prefix(team, upload)))?;
    state.store.put_at(&k, &mut bytes.as_slice()).await?;

    // The parts go to this same scope (`/api/2.0/mlflow-artifacts` or the ajax one), at the
    // address the client reached (proxies' `Forwarded` / `X-Forwarded-*` headers included).
    let scope = req.path().split("/mpu/create/").next().unwrap_or_default();
    let info = req.connection_info();
    let base =
        format!("{}://{}{scope}/mpu/parts/{team}/{}", info.scheme(), info.host(), upload.simple());
    let mut headers = serde_json::Map::new();
    headers.insert("X-Kiln-Upload-Secret".into(), secret.into());
    let credentials: Vec<Credential> = (1..=num_parts)
        .map(|n| Credential {
            url: format!("{base}/{n}"),
            part_number: n,
            headers: headers.clone(),
        })
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({"upload_id": upload.simple().to_string(), "credentials": credentials})))
}

async fn put_part(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, MlflowError> {
    let (team, upload, part) = path.into_inner();
    let team =
        Uuid::try_parse(&team).map_err(|_| MlflowError::not_found("no such multipart upload"))?;
    let upload = parse_upload_id(&upload)?;
    let manifest = manifest(&state, team, upload).await?;
    let secret = req.headers().get(SECRET_HEADER).ok_or_else(|| {
        MlflowError::new(
            MlflowCode::Unauthenticated,
            "a part needs the X-Kiln-Upload-Secret header that mpu/create returned with its URL",
        )
    })?;
    if sha256_hex(secret.as_bytes()) != manifest.secret_sha256 {
        return Err(MlflowError::new(
            MlflowCode::PermissionDenied,
            "X-Kiln-Upload-Secret is not this upload's secret",
        ));
    }
    let number =
        part.parse::<u32>().ok().filter(|n| (1..=manifest.num_parts).contains(n)).ok_or_else(
            || {
                MlflowError::invalid(format!(
                    "part {part:?} is not a part of this upload: parts are numbered 1 to {}",
                    manifest.num_parts
                ))
            },
        )?;
    // Each attempt at a part is its own object, visible only once whole; its name is the
    // part's ETag. A retried part replaces the earlier attempts once it is stored.
    let attempt = Uuid::new_v4().simple().to_string();
    let prefix = upload_prefix(team, upload);
    let k = key(&format!("{prefix}/parts/{number:05}-{attempt}"))?;
    stream_into_store(&state, k, payload, state.limits.upload_bytes).await?;
    for old in stored_parts(&state, team, upload).await? {
        if old.number == number && old.etag != attempt {
            state.store.delete(&old.key).await?;
        }
    }
    Ok(HttpResponse::Ok().insert_header(("ETag", format!("\"{attempt}\""))).finish())
}

#[derive(Debug, Deserialize)]
struct PartRef {
    part_number: u32,
    #[serde(default)]
    etag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompleteBody {
    #[serde(default)]
    path: Option<String>,
    upload_id: String,
    #[serde(default)]
    parts: Vec<PartRef>,
}

async fn complete(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
    body: web::Json<CompleteBody>,
) -> Result<HttpResponse, MlflowError> {
    let (team, upload, manifest) =
        open_upload(&state, &caller, &path, body.path.as_deref(), &body.upload_id).await?;
    let listed: Vec<u32> = body.parts.iter().map(|p| p.part_number).collect();
    if listed != (1..=manifest.num_parts).collect::<Vec<_>>() {
        return Err(MlflowError::invalid(format!(
            "parts must list every part from 1 to {} once, in order; got {listed:?}",
            manifest.num_parts
        )));
    }
    let stored = stored_parts(&state, team, upload).await?;
    let missing: Vec<u32> =
        (1..=manifest.num_parts).filter(|n| !stored.iter().any(|p| p.number == *n)).collect();
    if !missing.is_empty() {
        return Err(MlflowError::invalid(format!("parts {missing:?} were never uploaded")));
    }
    // One object a part: the attempt the client names by its ETag, or the only one stored.
    let mut chosen: Vec<StoredPart> = Vec::with_capacity(stored.len());
    for given in &body.parts {
        let n = given.part_number;
        let mut attempts: Vec<StoredPart> =
            stored.iter().filter(|p| p.number == n).cloned().collect();
        let etag = given.etag.as_deref().map(|e| e.trim_matches('"')).filter(|e| !e.is_empty());
        let pick = match etag {
            Some(etag) => attempts.into_iter().find(|p| p.etag == etag).ok_or_else(|| {
                MlflowError::invalid(format!(
                    "part {n}'s ETag {etag:?} is not a stored part of this upload"
                ))
            })?,
            None if attempts.len() == 1 => attempts.remove(0),
            None => {
                return Err(MlflowError::invalid(format!(
                    "part {n} is stored more than once (uploads of it overlapped): name the ETag of the one to keep"
                )));
            }
        };
        chosen.push(pick);
    }
    let stored = chosen;
    let total: u64 = stored.iter().map(|p| p.size).sum();
    let limit = state.limits.upload_bytes;
    if total > limit {
        delete_upload(&state, team, upload).await?;
        return Err(MlflowError::invalid(format!(
            "the artifact is {total} bytes, larger than the limit of {limit} bytes (KILN_MAX_UPLOAD_BYTES); the upload is deleted"
        )));
    }
    // The parts, one after another, streamed into the target.
    let store = state.store.clone();
    let keys: Vec<Key> = stored.into_iter().map(|p| p.key).collect();
    let joined: ByteStream = Box::pin(
        futures::stream::iter(keys)
            .then(move |k| {
                let store = store.clone();
                async move { store.get(&k, None).await }
            })
            .try_flatten(),
    );
    let k = key(&manifest.key)?;
    state.store.delete(&k).await?;
    let mut reader = kiln_store::into_async_read(joined);
    state.store.put_at(&k, &mut reader).await?;
    delete_upload(&state, team, upload).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
struct AbortBody {
    #[serde(default)]
    path: Option<String>,
    upload_id: String,
}

async fn abort(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
    body: web::Json<AbortBody>,
) -> Result<HttpResponse, MlflowError> {
    let (team, upload, _) =
        open_upload(&state, &caller, &path, body.path.as_deref(), &body.upload_id).await?;
    delete_upload(&state, team, upload).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
