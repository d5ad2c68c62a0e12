//! MLflow 3's logged models (`mlflow.<flavor>.log_model`): create, get, finalize, search,
//! tags, params, delete and artifact listing (the run side of it, `runs/outputs` and
//! `runs/log-model`, is the tracking module's). A logged model's artifacts go through the artifact proxy under
//! `mlflow-artifacts:/{experiment_id}/models/m-{id}/artifacts`, in the team's prefix.
//! Writes need `member` (logging a model is tracking), reads `viewer`.

// `MlflowError` (the scaffolding's error type, carrying its `ApiError` cause) is large; the
// handlers return it as actix errors anyway, so boxing it here would only add noise.

use actix_web::{HttpResponse, web};
use kiln_db::repo::mlflow_registry::{self as repo, LoggedModel};
use kiln_types::Role;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Tag, Target, check_tag, ms, parse_filter, parse_max_results, parse_page_token, parse_run_id,
    run_hex, tag_list, tag_object, team_run,
};
use crate::mlflow::{MlCaller, MlflowError, artifacts};
use crate::state::AppState;

type Reply = Result<HttpResponse, MlflowError>;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/logged-models", web::post().to(create))
        .route("/logged-models/search", web::post().to(search))
        .route("/logged-models/{model_id}", web::get().to(get))
        .route("/logged-models/{model_id}", web::patch().to(finalize))
        .route("/logged-models/{model_id}", web::delete().to(delete))
        .route("/logged-models/{model_id}/tags", web::patch().to(set_tags))
        .route("/logged-models/{model_id}/tags/{key:.*}", web::delete().to(delete_tag))
        .route("/logged-models/{model_id}/params", web::post().to(log_params))
        .route("/logged-models/{model_id}/artifacts/directories", web::get().to(list_artifacts));
}

/// `m-` and 32 hex digits, as MLflow spells logged model ids.
pub(crate) fn model_id_wire(id: Uuid) -> String {
    format!("m-{}", id.simple())
}

pub(crate) fn parse_model_id(s: &str) -> Result<Uuid, MlflowError> {
    s.strip_prefix("m-").and_then(|hex| Uuid::try_parse(hex).ok()).ok_or_else(|| {
        MlflowError::invalid(format!("model_id {s:?} is not a logged model id (m-<32 hex digits>)"))
    })
}

pub(crate) fn artifact_uri(m: &LoggedModel) -> String {
    format!("mlflow-artifacts:/{}/models/{}/artifacts", m.experiment_id, model_id_wire(m.id))
}

/// The team's logged model, or `RESOURCE_DOES_NOT_EXIST`.
pub(crate) async fn team_logged_model(
    state: &AppState,
    team: Uuid,
    id: Uuid,
) -> Result<LoggedModel, MlflowError> {
    repo::get_logged_model(&state.db, team, id).await?.ok_or_else(|| {
        MlflowError::not_found(format!("logged model {} not found", model_id_wire(id)))
    })
}

fn view(m: &LoggedModel) -> Value {
    let params: Vec<Tag> = tag_list(&m.params);
    json!({
        "info": {
            "model_id": model_id_wire(m.id),
            "experiment_id": m.experiment_id,
            "name": m.name,
            "creation_timestamp_ms": ms(m.created_at),
            "last_updated_timestamp_ms": ms(m.updated_at),
            "artifact_uri": artifact_uri(m),
            "status": m.status,
            "creator_id": 0,
            "model_type": m.model_type.clone().unwrap_or_default(),
            "source_run_id": m.source_run_id.map(run_hex).unwrap_or_default(),
            "status_message": m.status_message.clone().unwrap_or_default(),
            "tags": tag_list(&m.tags),
        },
        "data": {"params": params, "metrics": []},
    })
}

fn path_id(path: &str) -> Result<Uuid, MlflowError> {
    parse_model_id(path)
}

#[derive(Debug, Deserialize)]
struct Create {
    experiment_id: Option<String>,
    name: Option<String>,
    model_type: Option<String>,
    source_run_id: Option<String>,
    #[serde(default)]
    params: Vec<Tag>,
    #[serde(default)]
    tags: Vec<Tag>,
}

fn check_experiment(id: &str) -> Result<(), MlflowError> {
    if id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MlflowError::invalid(format!("experiment_id {id:?} is not an experiment id")));
    }
    Ok(())
}

fn param_object(params: &[Tag]) -> Result<Value, MlflowError> {
    let mut object = serde_json::Map::new();
    for p in params {
        if p.key.is_empty() || p.key.len() > 250 {
            return Err(MlflowError::invalid(format!(
                "param key {:?} must be 1 to 250 characters",
                p.key
            )));
        }
        if p.value.len() > 6000 {
            return Err(MlflowError::invalid(format!(
                "the value of param {:?} is longer than 6000 characters",
                p.key
            )));
        }
        object.insert(p.key.clone(), Value::String(p.value.clone()));
    }
    Ok(Value::Object(object))
}

async fn create(state: web::Data<AppState>, caller: MlCaller, body: web::Json<Create>) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Member)?;
    let source_run = match body.source_run_id.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => Some(team_run(&state, team, parse_run_id(r)?).await?.id),
        None => None,
    };
    let experiment =
        body.experiment_id.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "0".to_owned());
    check_experiment(&experiment)?;
    let name = body.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "model".to_owned());
    if name.len() > 500 || name.contains('/') || name.chars().any(char::is_control) {
        return Err(MlflowError::invalid(format!(
            "logged model name {name:?} refused: at most 500 characters, no '/' or control characters"
        )));
    }
    let model = repo::create_logged_model(
        &state.db,
        repo::NewLoggedModel {
            team_id: team,
            experiment_id: &experiment,
            name: &name,
            model_type: body.model_type.as_deref().filter(|t| !t.is_empty()),
            source_run_id: source_run,
            tags: tag_object(&body.tags)?,
            params: param_object(&body.params)?,
            created_by: Some(caller.token_id()),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({"model": view(&model)})))
}

async fn get(state: web::Data<AppState>, caller: MlCaller, path: web::Path<String>) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let model = team_logged_model(&state, team, path_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(json!({"model": view(&model)})))
}

#[derive(Debug, Deserialize)]
struct Finalize {
    status: Value,
}

async fn finalize(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
    body: web::Json<Finalize>,
) -> Reply {
    let team = caller.team()?;
    let id = path_id(&path)?;
    team_logged_model(&state, team, id).await?;
    caller.require(Role::Member)?;
    // The status arrives by name (proto JSON) or by number.
    let status = match &body.status {
        Value::String(s) if s == "LOGGED_MODEL_READY" || s == "LOGGED_MODEL_UPLOAD_FAILED" => {
            s.clone()
        }
        Value::Number(n) if n.as_i64() == Some(2) => "LOGGED_MODEL_READY".to_owned(),
        Value::Number(n) if n.as_i64() == Some(3) => "LOGGED_MODEL_UPLOAD_FAILED".to_owned(),
        other => {
            return Err(MlflowError::invalid(format!(
                "status {other} refused: finalize with LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED"
            )));
        }
    };
    let model = repo::update_logged_model(&state.db, team, id, Some(&status), &[], json!({}))
        .await?
        .ok_or_else(|| MlflowError::not_found("logged model not found"))?;
    Ok(HttpResponse::Ok().json(json!({"model": view(&model)})))
}

async fn delete(state: web::Data<AppState>, caller: MlCaller, path: web::Path<String>) -> Reply {
    let team = caller.team()?;
    let id = path_id(&path)?;
    team_logged_model(&state, team, id).await?;
    caller.require(Role::Member)?;
    repo::delete_logged_model(&state.db, team, id).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
struct SetTags {
    #[serde(default)]
    tags: Vec<Tag>,
}

async fn set_tags(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
    body: web::Json<SetTags>,
) -> Reply {
    let team = caller.team()?;
    let id = path_id(&path)?;
    team_logged_model(&state, team, id).await?;
    caller.require(Role::Member)?;
    let mut changes = Vec::with_capacity(body.tags.len());
    for t in &body.tags {
        check_tag(&t.key, &t.value)?;
        changes.push((t.key.clone(), Some(t.value.clone())));
    }
    let model = repo::update_logged_model(&state.db, team, id, None, &changes, json!({}))
        .await?
        .ok_or_else(|| MlflowError::not_found("logged model not found"))?;
    Ok(HttpResponse::Ok().json(json!({"model": view(&model)})))
}

async fn delete_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<(String, String)>,
) -> Reply {
    let team = caller.team()?;
    let (model_id, key) = path.into_inner();
    let id = path_id(&model_id)?;
    let model = team_logged_model(&state, team, id).await?;
    caller.require(Role::Member)?;
    if model.tags.get(&key).is_none() {
        return Err(MlflowError::not_found(format!(
            "no tag with key {key:?} on logged model {model_id}"
        )));
    }
    repo::update_logged_model(&state.db, team, id, None, &[(key, None)], json!({})).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
struct LogParams {
    #[serde(default)]
    params: Vec<Tag>,
}

async fn log_params(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
    body: web::Json<LogParams>,
) -> Reply {
    let team = caller.team()?;
    let id = path_id(&path)?;
    team_logged_model(&state, team, id).await?;
    caller.require(Role::Member)?;
    repo::update_logged_model(&state.db, team, id, None, &[], param_object(&body.params)?).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
struct Search {
    #[serde(default)]
    experiment_ids: Vec<String>,
    filter: Option<String>,
    max_results: Option<Value>,
    page_token: Option<String>,
}

async fn search(state: web::Data<AppState>, caller: MlCaller, body: web::Json<Search>) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    for e in &body.experiment_ids {
        check_experiment(e)?;
    }
    let clauses = parse_filter(body.filter.as_deref(), Target::LoggedModels)?;
    let max = body.max_results.as_ref().map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let limit = parse_max_results(max.as_deref(), 100, 1000)?;
    let offset = parse_page_token(body.page_token.as_deref())?;
    let mut rows = repo::search_logged_models(
        &state.db,
        team,
        &body.experiment_ids,
        &clauses,
        limit + 1,
        offset,
    )
    .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let mut answer = json!({"models": rows.iter().map(view).collect::<Vec<_>>()});
    if more {
        answer["next_page_token"] = Value::String((offset + limit).to_string());
    }
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    artifact_directory_path: Option<String>,
}

async fn list_artifacts(
    state: web::Data<AppState>,
    caller: MlCaller,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let model = team_logged_model(&state, team, path_id(&path)?).await?;
    let mut dir = format!("{}/models/{}/artifacts", model.experiment_id, model_id_wire(model.id));
    if let Some(sub) = query.artifact_directory_path.as_deref().filter(|p| !p.is_empty()) {
        dir.push('/');
        dir.push_str(sub.trim_matches('/'));
    }
    let files = artifacts::list_dir(&state, team, &dir).await?;
    Ok(HttpResponse::Ok().json(json!({"files": files})))
}
