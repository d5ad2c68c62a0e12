//! MLflow model registry: registered models, model versions, aliases, and MLflow 3's
//! logged models ([`logged_models`]), on Kiln's registry.
//!
//! A registered model is a Kiln model (`GET /v1/models/{name}` shows it), a version a Kiln
//! model version, an alias a Kiln alias, so Kiln's name rule applies and alias moves are
//! audited (`model.alias.move`) and rolled out to the deployments that follow them, as on
//! the native route. A version made from a Kiln job's run refers to the job's bundle and is
//! servable; a version whose source is only MLflow artifacts is registered without a
//! bundle, and deployments refuse it, naming the reason.
//!
//! Roles, as on the native registry: reads need `viewer`; every registry write needs
//! `maintainer` (the native register and alias routes do too). Versions are strings on the
//! wire; timestamps are milliseconds.

// `MlflowError` (the scaffolding's error type, carrying its `ApiError` cause) is large; the
// handlers return it as actix errors anyway, so boxing it here would only add noise.

pub(crate) mod logged_models;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use kiln_db::repo::mlflow::Cmp;
use kiln_db::repo::mlflow_registry::{
    self as repo, Clause, MlVersion, Op, RegisteredModel, SortKey,
};
use kiln_db::repo::{Deletion, models, runs};
use kiln_types::{JobState, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::search::{self, RawClause, Value as Written};
use super::{MlCaller, MlflowCode, MlflowError};
use crate::state::AppState;

/// Mounts the registry routes inside an MLflow scope (paths relative to `/api/2.0/mlflow`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/registered-models/create", web::post().to(create_model))
        .route("/registered-models/get", web::get().to(get_model))
        .route("/registered-models/rename", web::post().to(rename_model))
        .route("/registered-models/update", web::patch().to(update_model))
        .route("/registered-models/delete", web::delete().to(delete_model))
        .route("/registered-models/search", web::get().to(search_models))
        .route("/registered-models/get-latest-versions", web::post().to(latest_versions_post))
        .route("/registered-models/get-latest-versions", web::get().to(latest_versions_get))
        .route("/registered-models/set-tag", web::post().to(set_model_tag))
        .route("/registered-models/delete-tag", web::delete().to(delete_model_tag))
        .route("/registered-models/alias", web::post().to(set_alias))
        .route("/registered-models/alias", web::delete().to(delete_alias))
        .route("/registered-models/alias", web::get().to(get_by_alias))
        .route("/model-versions/create", web::post().to(create_version))
        .route("/model-versions/get", web::get().to(get_version))
        .route("/model-versions/update", web::patch().to(update_version))
        .route("/model-versions/delete", web::delete().to(delete_version))
        .route("/model-versions/search", web::get().to(search_versions))
        .route("/model-versions/set-tag", web::post().to(set_version_tag))
        .route("/model-versions/delete-tag", web::delete().to(delete_version_tag))
        .route("/model-versions/get-download-uri", web::get().to(download_uri))
        .route("/model-versions/transition-stage", web::post().to(transition_stage))
        .configure(logged_models::configure);
}

type Reply = Result<HttpResponse, MlflowError>;

/// `{key, value}` as MLflow sends tags.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A `{key: value}` object as MLflow's tag list, sorted by key.
pub(crate) fn tag_list(tags: &Value) -> Vec<Tag> {
    let mut list: Vec<Tag> = tags
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| Tag {
                    key: k.clone(),
                    value: v.as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    list
}

/// Tags as a `{key: value}` object, checking MLflow's limits.
pub(crate) fn tag_object(tags: &[Tag]) -> Result<Value, MlflowError> {
    let mut object = serde_json::Map::new();
    for t in tags {
        check_tag(&t.key, &t.value)?;
        object.insert(t.key.clone(), Value::String(t.value.clone()));
    }
    Ok(Value::Object(object))
}

pub(crate) fn check_tag(key: &str, value: &str) -> Result<(), MlflowError> {
    if key.is_empty() || key.len() > 250 {
        return Err(MlflowError::invalid(format!("tag key {key:?} must be 1 to 250 characters")));
    }
    if value.len() > 5000 {
        return Err(MlflowError::invalid(format!(
            "the value of tag {key:?} is longer than 5000 characters"
        )));
    }
    Ok(())
}

/// A run id as MLflow sends it: the Kiln run's uuid as 32 hex digits (or hyphenated).
pub(crate) fn parse_run_id(s: &str) -> Result<Uuid, MlflowError> {
    Uuid::try_parse(s)
        .map_err(|_| MlflowError::invalid(format!("run_id {s:?} is not a run id (32 hex digits)")))
}

pub(crate) fn run_hex(id: Uuid) -> String {
    id.simple().to_string()
}

/// The caller's run `id`, or `RESOURCE_DOES_NOT_EXIST` (missing or another team's).
pub(crate) async fn team_run(
    state: &AppState,
    team: Uuid,
    id: Uuid,
) -> Result<runs::Run, MlflowError> {
    runs::get(&state.db, team, id)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("run {} not found", run_hex(id))))
}

fn check_name(name: &str) -> Result<(), MlflowError> {
    match models::name_problem(name, 128) {
        Some(problem) => Err(MlflowError::invalid(format!(
            "registered model name {name:?} refused: Kiln model names {problem}"
        ))),
        None => Ok(()),
    }
}

fn parse_version(s: &str) -> Result<i32, MlflowError> {
    s.trim().parse::<i32>().ok().filter(|v| *v > 0).ok_or_else(|| {
        MlflowError::invalid(format!("version {s:?} is not a version number (1, 2, ...)"))
    })
}

/// A version number arrives as a string, but accept a JSON number too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum VersionField {
    Text(String),
    Number(i64),
}

impl VersionField {
    fn number(&self) -> Result<i32, MlflowError> {
        match self {
            VersionField::Text(s) => parse_version(s),
            VersionField::Number(n) => parse_version(&n.to_string()),
        }
    }
}

async fn team_model(
    state: &AppState,
    team: Uuid,
    name: &str,
) -> Result<RegisteredModel, MlflowError> {
    repo::get_model(&state.db, team, name)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("registered model {name:?} not found")))
}

async fn team_version(
    state: &AppState,
    team: Uuid,
    name: &str,
    number: i32,
) -> Result<(RegisteredModel, MlVersion), MlflowError> {
    let model = team_model(state, team, name).await?;
    let version = repo::get_version(&state.db, model.id, number).await?.ok_or_else(|| {
        MlflowError::not_found(format!("version {number} of registered model {name:?} not found"))
    })?;
    Ok((model, version))
}

// ---------------------------------------------------------------------------------------
// Wire views.

#[derive(Debug, Serialize)]
struct AliasView {
    alias: String,
    version: String,
}

fn version_view(v: &MlVersion, aliases: &[(String, i32)]) -> Value {
    let run_id = v.mlflow_run_id.or(v.job_id).map(run_hex).unwrap_or_default();
    let mut view = json!({
        "name": v.model_name,
        "version": v.version.to_string(),
        "creation_timestamp": ms(v.created_at),
        "last_updated_timestamp": ms(v.updated_at),
        "user_id": v.created_by.map(|t| t.to_string()).unwrap_or_default(),
        "current_stage": "None",
        "description": v.description.clone().unwrap_or_default(),
        "source": v.source.clone().unwrap_or_default(),
        "run_id": run_id,
        "status": "READY",
        "status_message": if v.has_bundle() {
            "servable: backed by a Kiln model bundle"
        } else {
            "registered from MLflow artifacts only: no Kiln bundle, not servable"
        },
        "tags": tag_list(&v.mlflow_tags),
        "run_link": v.run_link.clone().unwrap_or_default(),
        "aliases": aliases.iter().filter(|(_, n)| *n == v.version).map(|(a, _)| a.clone()).collect::<Vec<_>>(),
    });
    if let Some(id) = v.logged_model_id {
        view["model_id"] = Value::String(logged_models::model_id_wire(id));
    }
    view
}

async fn model_view(state: &AppState, m: &RegisteredModel) -> Result<Value, MlflowError> {
    let aliases = models::aliases(&state.db, m.id).await?;
    let latest = repo::latest_versions(&state.db, m.id, 1).await?;
    Ok(json!({
        "name": m.name,
        "creation_timestamp": ms(m.created_at),
        "last_updated_timestamp": ms(m.updated_at),
        "description": m.description.clone().unwrap_or_default(),
        "latest_versions": latest.iter().map(|v| version_view(v, &aliases)).collect::<Vec<_>>(),
        "tags": tag_list(&m.mlflow_tags),
        "aliases": aliases.iter().map(|(a, v)| AliasView { alias: a.clone(), version: v.to_string() }).collect::<Vec<_>>(),
    }))
}

async fn one_version(state: &AppState, v: &MlVersion) -> Result<Value, MlflowError> {
    let aliases = models::aliases(&state.db, v.model_id).await?;
    Ok(version_view(v, &aliases))
}

// ---------------------------------------------------------------------------------------
// Search filters, order and pages.

/// What a search may filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Models,
    Versions,
    LoggedModels,
}

/// Parses an MLflow search filter with the shared grammar ([`search::parse_clauses`]):
/// clauses joined by AND, each `name`, `tags.<key>` (versions also `run_id`, `source_path`,
/// `version_number`; logged models `source_run_id`) compared with `=`, `!=`, `LIKE` or
/// `ILIKE` to a quoted string (`version_number` to a number).
pub(crate) fn parse_filter(
    filter: Option<&str>,
    target: Target,
) -> Result<Vec<Clause>, MlflowError> {
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(Vec::new());
    };
    let keys = match target {
        Target::Models => "`name` or `tags.<key>`",
        Target::Versions => "`name`, `tags.<key>`, `run_id`, `source_path` or `version_number`",
        Target::LoggedModels => "`name`, `tags.<key>` or `source_run_id`",
    };
    let bad = |e: String| MlflowError::invalid(format!("invalid filter `{filter}`: {e}"));
    let raw = search::parse_clauses(filter).map_err(bad)?;
    let mut clauses = Vec::with_capacity(raw.len());
    for RawClause { ident, cmp, value } in raw {
        let shown = match &ident.entity {
            Some(entity) => format!("{entity}.{}", ident.key),
            None => ident.key.clone(),
        };
        let op = match cmp {
            Cmp::Eq => Op::Eq,
            Cmp::Ne => Op::Ne,
            Cmp::Like => Op::Like,
            Cmp::ILike => Op::ILike,
            other => {
                return Err(bad(format!(
                    "`{shown}` takes =, !=, LIKE or ILIKE, not {}",
                    search::cmp_name(other)
                )));
            }
        };
        let string = |value: Written| match value {
            Written::Str(s) => Ok(s),
            Written::Num(_, raw) => {
                Err(bad(format!("`{shown}` compares with a quoted string: write '{raw}'")))
            }
            _ => Err(bad(format!("`{shown}` compares with a quoted string"))),
        };
        let exact = || {
            if matches!(op, Op::Eq | Op::Ne) {
                Ok(())
            } else {
                Err(bad(format!("`{shown}` takes = or !=")))
            }
        };
        let entity = ident.entity.as_deref();
        let key = ident.key.to_ascii_lowercase();
        let clause = match (entity, key.as_str()) {
            (Some("tag" | "tags"), _) => Clause::Tag(ident.key, op, string(value)?),
            (None | Some("attribute" | "attributes"), "name") => Clause::Name(op, string(value)?),
            (None, "run_id") if target == Target::Versions => {
                exact()?;
                Clause::RunId(op, parse_run_id(&string(value)?)?)
            }
            (None, "source_run_id") if target == Target::LoggedModels => {
                exact()?;
                Clause::RunId(op, parse_run_id(&string(value)?)?)
            }
            (None, "source_path") if target == Target::Versions => {
                Clause::Source(op, string(value)?)
            }
            (None, "version_number") if target == Target::Versions => {
                exact()?;
                let v = match value {
                    Written::Str(s) => s,
                    Written::Num(_, raw) => raw,
                    _ => return Err(bad("`version_number` compares with a number".into())),
                };
                Clause::Version(op, parse_version(&v)?)
            }
            _ => {
                return Err(bad(format!(
                    "`{shown}` is not a key this search filters on: use {keys}"
                )));
            }
        };
        clauses.push(clause);
    }
    Ok(clauses)
}

fn parse_order(order_by: &[String], target: Target) -> Result<Vec<(SortKey, bool)>, MlflowError> {
    let mut keys = Vec::new();
    for term in order_by.iter().filter(|t| !t.trim().is_empty()) {
        let (ident, ascending) = search::order_term(term)
            .map_err(|e| MlflowError::invalid(format!("invalid order_by `{term}`: {e}")))?;
        let key = match (ident.entity.as_deref(), ident.key.as_str()) {
            (None, "name") => SortKey::Name,
            (None, "timestamp" | "creation_timestamp") => SortKey::Created,
            (None, "last_updated_timestamp") => SortKey::Updated,
            (None, "version_number") if target == Target::Versions => SortKey::Version,
            _ => {
                return Err(MlflowError::invalid(format!(
                    "order_by field `{term}` is not supported: use name, creation_timestamp, last_updated_timestamp{}",
                    if target == Target::Versions { " or version_number" } else { "" }
                )));
            }
        };
        keys.push((key, ascending));
    }
    Ok(keys)
}

/// Page tokens are offsets (opaque to the client).
pub(crate) fn parse_page_token(token: Option<&str>) -> Result<u64, MlflowError> {
    match token.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => t.parse().map_err(|_| MlflowError::invalid(format!("invalid page_token {t:?}"))),
    }
}

pub(crate) fn parse_max_results(
    v: Option<&str>,
    default: u64,
    max: u64,
) -> Result<u64, MlflowError> {
    match v.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(default),
        Some(t) => match t.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(MlflowError::invalid(format!(
                "max_results must be between 1 and {max}, not {t}"
            ))),
        },
    }
}

/// A query string with repeated keys (`order_by=a&order_by=b`).
#[derive(Debug)]
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }
    fn need(&self, key: &str) -> Result<&str, MlflowError> {
        self.get(key).ok_or_else(|| {
            MlflowError::invalid(format!("missing value for required parameter '{key}'"))
        })
    }
}

fn params(query: web::Query<Vec<(String, String)>>) -> Params {
    Params(query.into_inner())
}

// ---------------------------------------------------------------------------------------
// Registered models.

#[derive(Debug, Deserialize)]
struct CreateModel {
    name: String,
    #[serde(default)]
    tags: Vec<Tag>,
    description: Option<String>,
}

async fn create_model(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<CreateModel>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Maintainer)?;
    check_name(&body.name)?;
    let tags = tag_object(&body.tags)?;
    let model = repo::create_model(&state.db, team, &body.name, body.description.as_deref(), tags)
        .await
        .map_err(|e| match e {
            kiln_db::repo::RepoError::AlreadyExists { .. } => MlflowError::new(
                MlflowCode::ResourceAlreadyExists,
                format!("registered model (name={}) already exists", body.name),
            ),
            other => other.into(),
        })?;
    caller
        .audit(
            &state.db,
            Some(team),
            "model.create",
            "model",
            &model.name,
            json!({"via": "mlflow"}),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({"registered_model": model_view(&state, &model).await?})))
}

async fn get_model(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let p = params(query);
    let model = team_model(&state, team, p.need("name")?).await?;
    Ok(HttpResponse::Ok().json(json!({"registered_model": model_view(&state, &model).await?})))
}

#[derive(Debug, Deserialize)]
struct RenameModel {
    name: String,
    new_name: String,
}

async fn rename_model(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<RenameModel>,
) -> Reply {
    let team = caller.team()?;
    let model = team_model(&state, team, &body.name).await?;
    caller.require(Role::Maintainer)?;
    check_name(&body.new_name)?;
    let renamed = repo::rename_model(&state.db, model.id, &body.new_name)
        .await?
        .ok_or_else(|| MlflowError::not_found("registered model not found"))?;
    caller
        .audit(
            &state.db,
            Some(team),
            "model.rename",
            "model",
            &body.new_name,
            json!({"previous_name": body.name}),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({"registered_model": model_view(&state, &renamed).await?})))
}

#[derive(Debug, Deserialize)]
struct UpdateModel {
    name: String,
    description: Option<String>,
}

async fn update_model(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<UpdateModel>,
) -> Reply {
    let team = caller.team()?;
    let model = team_model(&state, team, &body.name).await?;
    caller.require(Role::Maintainer)?;
    let updated = repo::update_model_description(&state.db, model.id, body.description.as_deref())
        .await?
        .ok_or_else(|| MlflowError::not_found("registered model not found"))?;
    Ok(HttpResponse::Ok().json(json!({"registered_model": model_view(&state, &updated).await?})))
}

#[derive(Debug, Deserialize)]
struct NameOnly {
    name: String,
}

async fn delete_model(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<NameOnly>,
) -> Reply {
    let team = caller.team()?;
    let model = team_model(&state, team, &body.name).await?;
    caller.require(Role::Maintainer)?;
    let actor = caller.actor();
    let entry = caller.audit_entry(
        &actor,
        Some(team),
        "model.delete",
        "model",
        &model.name,
        json!({"via": "mlflow"}),
    );
    match repo::delete_model(&state.db, model.id, entry).await? {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({}))),
        Err(deployments) => Err(MlflowError::new(
            MlflowCode::InvalidState,
            format!(
                "registered model {:?} is used by deployments ({}); delete them first",
                model.name,
                deployments.join(", ")
            ),
        )),
    }
}

async fn search_models(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let p = params(query);
    let clauses = parse_filter(p.get("filter"), Target::Models)?;
    let order = parse_order(&p.all("order_by"), Target::Models)?;
    let limit = parse_max_results(p.get("max_results"), 100, 1000)?;
    let offset = parse_page_token(p.get("page_token"))?;
    let mut rows =
        repo::search_models(&state.db, team, &clauses, &order, limit + 1, offset).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let mut models = Vec::with_capacity(rows.len());
    for m in &rows {
        models.push(model_view(&state, m).await?);
    }
    let mut body = json!({"registered_models": models});
    if more {
        body["next_page_token"] = Value::String((offset + limit).to_string());
    }
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
struct LatestVersions {
    name: String,
    #[serde(default)]
    stages: Vec<String>,
}

async fn latest_versions(
    state: &AppState,
    caller: &MlCaller,
    name: &str,
    stages: &[String],
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let model = team_model(state, team, name).await?;
    // Kiln has no stages: every version is in stage "None".
    let wanted = stages.is_empty() || stages.iter().any(|s| s.eq_ignore_ascii_case("none"));
    let versions =
        if wanted { repo::latest_versions(&state.db, model.id, 1).await? } else { Vec::new() };
    let aliases = models::aliases(&state.db, model.id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "model_versions": versions.iter().map(|v| version_view(v, &aliases)).collect::<Vec<_>>()
    })))
}

async fn latest_versions_post(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<LatestVersions>,
) -> Reply {
    latest_versions(&state, &caller, &body.name, &body.stages).await
}

async fn latest_versions_get(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Reply {
    let p = params(query);
    latest_versions(&state, &caller, p.need("name")?, &p.all("stages")).await
}

#[derive(Debug, Deserialize)]
struct ModelTag {
    name: String,
    key: String,
    #[serde(default)]
    value: String,
}

async fn set_model_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<ModelTag>,
) -> Reply {
    let team = caller.team()?;
    let model = team_model(&state, team, &body.name).await?;
    caller.require(Role::Maintainer)?;
    check_tag(&body.key, &body.value)?;
    repo::set_model_tag(&state.db, model.id, &body.key, Some(&body.value)).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn delete_model_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<ModelTag>,
) -> Reply {
    let team = caller.team()?;
    let model = team_model(&state, team, &body.name).await?;
    caller.require(Role::Maintainer)?;
    if model.mlflow_tags.get(&body.key).is_none() {
        return Err(MlflowError::not_found(format!(
            "no tag with key {:?} on registered model {:?}",
            body.key, body.name
        )));
    }
    repo::set_model_tag(&state.db, model.id, &body.key, None).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

// ---------------------------------------------------------------------------------------
// Aliases.

#[derive(Debug, Deserialize)]
struct SetAlias {
    name: String,
    alias: String,
    version: VersionField,
}

fn check_alias(alias: &str) -> Result<(), MlflowError> {
    if let Some(problem) = models::name_problem(alias, 64) {
        return Err(MlflowError::invalid(format!(
            "alias {alias:?} refused: Kiln aliases {problem}"
        )));
    }
    let lower = alias.to_ascii_lowercase();
    if lower == "latest"
        || (lower.starts_with('v')
            && lower.len() > 1
            && lower[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(MlflowError::invalid(format!(
            "alias {alias:?} is reserved by MLflow (`latest` and `v<number>` name versions)"
        )));
    }
    Ok(())
}

async fn set_alias(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<SetAlias>,
) -> Reply {
    let team = caller.team()?;
    let number = body.version.number()?;
    let (model, version) = team_version(&state, team, &body.name, number).await?;
    caller.require(Role::Maintainer)?;
    check_alias(&body.alias)?;
    crate::routes::models::refuse_unservable(
        &state,
        (model.id, &model.name),
        &body.alias,
        number,
        version.has_bundle(),
    )
    .await?;
    let previous =
        models::set_alias(&state.db, model.id, &body.alias, version.id, Some(caller.token_id()))
            .await?;
    let previous_version = match previous {
        Some(id) => models::version_by_id(&state.db, id).await?.map(|v| v.version),
        None => None,
    };
    caller
        .audit(
            &state.db,
            Some(team),
            "model.alias.move",
            "model_alias",
            format!("{}@{}", model.name, body.alias),
            json!({"version": number, "previous_version": previous_version, "via": "mlflow"}),
        )
        .await?;
    if previous_version != Some(number) {
        let native = models::Model {
            id: model.id,
            team_id: model.team_id,
            name: model.name.clone(),
            description: model.description.clone(),
            created_at: model.created_at,
        };
        crate::routes::models::roll_out(
            &state,
            &caller,
            team,
            &native,
            &body.alias,
            number,
            previous_version,
        )
        .await?;
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

/// Why a version without a Kiln bundle cannot be served.
pub fn no_bundle_reason(model: &str, version: i32) -> String {
    format!(
        "version {version} of model {model} has only MLflow artifacts, no Kiln bundle; register a Kiln job's run to serve it"
    )
}

#[derive(Debug, Deserialize)]
struct DeleteAlias {
    name: String,
    alias: String,
}

async fn delete_alias(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<DeleteAlias>,
) -> Reply {
    let team = caller.team()?;
    let model = team_model(&state, team, &body.name).await?;
    caller.require(Role::Maintainer)?;
    let followers = repo::alias_followers(&state.db, model.id, &body.alias).await?;
    if !followers.is_empty() {
        return Err(MlflowError::new(
            MlflowCode::InvalidState,
            format!(
                "alias {:?} of model {:?} is followed by deployments ({}); change them first",
                body.alias,
                model.name,
                followers.join(", ")
            ),
        ));
    }
    let Some(was) = repo::delete_alias(&state.db, model.id, &body.alias).await? else {
        return Err(MlflowError::not_found(format!(
            "registered model {:?} has no alias {:?}",
            model.name, body.alias
        )));
    };
    caller
        .audit(
            &state.db,
            Some(team),
            "model.alias.delete",
            "model_alias",
            format!("{}@{}", model.name, body.alias),
            json!({"previous_version": was, "via": "mlflow"}),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn get_by_alias(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let p = params(query);
    let name = p.need("name")?;
    let alias = p.need("alias")?;
    let model = team_model(&state, team, name).await?;
    let target = models::resolve_alias(&state.db, model.id, alias).await?.ok_or_else(|| {
        MlflowError::not_found(format!("registered model {name:?} has no alias {alias:?}"))
    })?;
    let version = repo::get_version(&state.db, model.id, target.version)
        .await?
        .ok_or_else(|| MlflowError::not_found("model version not found"))?;
    Ok(HttpResponse::Ok().json(json!({"model_version": one_version(&state, &version).await?})))
}

// ---------------------------------------------------------------------------------------
// Model versions.

#[derive(Debug, Deserialize)]
struct CreateVersion {
    name: String,
    source: String,
    run_id: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    run_link: Option<String>,
    description: Option<String>,
    model_id: Option<String>,
}

/// The run a source URI names: `runs:/<id>/...` or `mlflow-artifacts:/<exp>/<id>/artifacts/...`.
fn run_of_source(source: &str) -> Option<Uuid> {
    if let Some(rest) = source.strip_prefix("runs:/") {
        return Uuid::try_parse(rest.trim_start_matches('/').split('/').next()?).ok();
    }
    if let Some(rest) = source.strip_prefix("mlflow-artifacts:") {
        let mut parts = rest.trim_start_matches('/').split('/');
        let _experiment = parts.next()?;
        let id = parts.next()?;
        if parts.next() == Some("artifacts") {
            return Uuid::try_parse(id).ok();
        }
    }
    None
}

async fn create_version(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<CreateVersion>,
) -> Reply {
    let team = caller.team()?;
    let model = team_model(&state, team, &body.name).await?;
    caller.require(Role::Maintainer)?;
    if body.source.trim().is_empty() {
        return Err(MlflowError::invalid("missing value for required parameter 'source'"));
    }
    let tags = tag_object(&body.tags)?;
    // The logged model (MLflow 3) it comes from: `model_id`, or a `models:/m-...` source.
    let logged_id = match body.model_id.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => Some(logged_models::parse_model_id(m)?),
        None => {
            body.source.strip_prefix("models:/").and_then(|m| logged_models::parse_model_id(m).ok())
        }
    };
    let logged = match logged_id {
        Some(id) => Some(logged_models::team_logged_model(&state, team, id).await?),
        None => None,
    };
    let run_id = match body.run_id.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => Some(parse_run_id(r)?),
        None => run_of_source(&body.source).or(logged.as_ref().and_then(|l| l.source_run_id)),
    };
    let run = match run_id {
        Some(id) => Some(team_run(&state, team, id).await?),
        None => None,
    };
    // A Kiln job's run whose job succeeded: the version refers to the job's bundle.
    let job = match run.as_ref().and_then(|r| r.job_id) {
        Some(job_id) => match state.queue.get_for_team(team, job_id).await {
            Ok(job) if job.state == JobState::Succeeded && job.result.is_some() => Some(job),
            Ok(_) | Err(kiln_queue::QueueError::NotFound { .. }) => None,
            Err(other) => return Err(crate::error::ApiError::from(other).into()),
        },
        None => None,
    };
    let metrics = match job.as_ref().and_then(|j| j.result.as_ref()) {
        Some(r) => serde_json::to_value(&r.metrics).map_err(crate::error::ApiError::internal)?,
        None => Value::Null,
    };
    let bundle = job.as_ref().and_then(|j| {
        let result = j.result.as_ref()?;
        Some(repo::JobBundle {
            job_id: j.id,
            bundle_key: &result.model_bundle,
            bundle_sha256: result.bundle_sha256.as_str(),
            dataset_sha256: Some(
                j.inputs.dataset.as_ref().map_or(&result.dataset_sha256, |d| &d.sha256).as_str(),
            ),
            spec: j.spec.clone(),
            metrics: metrics.clone(),
        })
    });
    let servable = bundle.is_some();
    let version = repo::create_version(
        &state.db,
        model.id,
        repo::NewMlVersion {
            source: &body.source,
            run_id,
            run_link: body.run_link.as_deref(),
            description: body.description.as_deref(),
            tags,
            logged_model_id: logged.as_ref().map(|l| l.id),
            bundle,
            created_by: Some(caller.token_id()),
        },
    )
    .await?;
    caller
        .audit(
            &state.db,
            Some(team),
            "model.register",
            "model_version",
            format!("{}/{}", model.name, version.version),
            json!({"via": "mlflow", "source": body.source, "run_id": run_id.map(run_hex),
                   "job_id": version.job_id, "servable": servable}),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({"model_version": one_version(&state, &version).await?})))
}

async fn get_version(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let p = params(query);
    let number = parse_version(p.need("version")?)?;
    let (_, version) = team_version(&state, team, p.need("name")?, number).await?;
    Ok(HttpResponse::Ok().json(json!({"model_version": one_version(&state, &version).await?})))
}

#[derive(Debug, Deserialize)]
struct UpdateVersion {
    name: String,
    version: VersionField,
    description: Option<String>,
}

async fn update_version(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<UpdateVersion>,
) -> Reply {
    let team = caller.team()?;
    let number = body.version.number()?;
    let (model, version) = team_version(&state, team, &body.name, number).await?;
    caller.require(Role::Maintainer)?;
    repo::update_version_description(&state.db, version.id, body.description.as_deref()).await?;
    let version = repo::get_version(&state.db, model.id, number)
        .await?
        .ok_or_else(|| MlflowError::not_found("model version not found"))?;
    Ok(HttpResponse::Ok().json(json!({"model_version": one_version(&state, &version).await?})))
}

#[derive(Debug, Deserialize)]
struct VersionRef {
    name: String,
    version: VersionField,
}

async fn delete_version(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<VersionRef>,
) -> Reply {
    let team = caller.team()?;
    let number = body.version.number()?;
    let (model, version) = team_version(&state, team, &body.name, number).await?;
    caller.require(Role::Maintainer)?;
    let actor = caller.actor();
    let id = format!("{}/{number}", model.name);
    let entry = caller.audit_entry(
        &actor,
        Some(team),
        "model.version.delete",
        "model_version",
        &id,
        json!({"job_id": version.job_id, "source": version.source, "via": "mlflow"}),
    );
    match models::delete_version_unless_used(&state.db, model.id, number, entry).await? {
        Deletion::Deleted => Ok(HttpResponse::Ok().json(json!({}))),
        Deletion::InUse(users) => {
            let mut named: Vec<String> =
                users.aliases.iter().map(|a| format!("alias {a}")).collect();
            named.extend(users.deployments.iter().map(|d| format!("deployment {d}")));
            named.extend(users.jobs.iter().map(|j| format!("batch prediction {j}")));
            Err(MlflowError::new(
                MlflowCode::InvalidState,
                format!(
                    "version {number} of registered model {:?} is in use ({}); move the aliases or change the deployments first",
                    model.name,
                    named.join(", ")
                ),
            ))
        }
        Deletion::NotFound => Err(MlflowError::not_found("model version not found")),
    }
}

async fn search_versions(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let p = params(query);
    let clauses = parse_filter(p.get("filter"), Target::Versions)?;
    let order = parse_order(&p.all("order_by"), Target::Versions)?;
    let limit = parse_max_results(p.get("max_results"), 10_000, 200_000)?;
    let offset = parse_page_token(p.get("page_token"))?;
    let mut rows =
        repo::search_versions(&state.db, team, &clauses, &order, limit + 1, offset).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let mut aliases_of: std::collections::HashMap<Uuid, Vec<(String, i32)>> = Default::default();
    let mut versions = Vec::with_capacity(rows.len());
    for v in &rows {
        if let std::collections::hash_map::Entry::Vacant(e) = aliases_of.entry(v.model_id) {
            e.insert(models::aliases(&state.db, v.model_id).await?);
        }
        versions.push(version_view(v, &aliases_of[&v.model_id]));
    }
    let mut body = json!({"model_versions": versions});
    if more {
        body["next_page_token"] = Value::String((offset + limit).to_string());
    }
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
struct VersionTag {
    name: String,
    version: VersionField,
    key: String,
    #[serde(default)]
    value: String,
}

async fn set_version_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<VersionTag>,
) -> Reply {
    let team = caller.team()?;
    let (_, version) = team_version(&state, team, &body.name, body.version.number()?).await?;
    caller.require(Role::Maintainer)?;
    check_tag(&body.key, &body.value)?;
    repo::set_version_tag(&state.db, version.id, &body.key, Some(&body.value)).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn delete_version_tag(
    state: web::Data<AppState>,
    caller: MlCaller,
    body: web::Json<VersionTag>,
) -> Reply {
    let team = caller.team()?;
    let (_, version) = team_version(&state, team, &body.name, body.version.number()?).await?;
    caller.require(Role::Maintainer)?;
    if version.mlflow_tags.get(&body.key).is_none() {
        return Err(MlflowError::not_found(format!(
            "no tag with key {:?} on version {} of registered model {:?}",
            body.key, version.version, body.name
        )));
    }
    repo::set_version_tag(&state.db, version.id, &body.key, None).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// Where a version's MLflow artifacts are: a logged model's artifact location for
/// `models:/m-...`, the run's artifact location for `runs:/<id>/<path>`, else the source.
async fn download_uri(
    state: web::Data<AppState>,
    caller: MlCaller,
    query: web::Query<Vec<(String, String)>>,
) -> Reply {
    let team = caller.team()?;
    caller.require(Role::Viewer)?;
    let p = params(query);
    let number = parse_version(p.need("version")?)?;
    let (_, version) = team_version(&state, team, p.need("name")?, number).await?;
    let source = version.source.clone().unwrap_or_default();
    let uri = if let Some(id) = version.logged_model_id.filter(|_| source.starts_with("models:/")) {
        let logged = logged_models::team_logged_model(&state, team, id).await?;
        logged_models::artifact_uri(&logged)
    } else if let Some(rest) = source.strip_prefix("runs:/") {
        match run_of_source(&source) {
            Some(run) => {
                let path =
                    rest.trim_start_matches('/').split_once('/').map(|(_, p)| p).unwrap_or("");
                // The proxy keys run artifacts by run, not by experiment: any experiment
                // segment reaches them.
                let base = format!("mlflow-artifacts:/0/{}/artifacts", run_hex(run));
                if path.is_empty() { base } else { format!("{base}/{path}") }
            }
            None => source,
        }
    } else {
        source
    };
    Ok(HttpResponse::Ok().json(json!({"artifact_uri": uri})))
}

async fn transition_stage(caller: MlCaller) -> Reply {
    caller.team()?;
    Err(MlflowError::invalid(
        "model version stages are not supported by Kiln (MLflow deprecated them): use aliases, e.g. set_registered_model_alias(name, \"production\", version)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_filters_use_the_shared_grammar() {
        let clauses = parse_filter(
            Some("name LIKE '%iris%' AND tag.mlflow.prompt.is_prompt != 'true' and version_number = 3"),
            Target::Versions,
        )
        .unwrap();
        assert_eq!(
            clauses,
            vec![
                Clause::Name(Op::Like, "%iris%".into()),
                Clause::Tag("mlflow.prompt.is_prompt".into(), Op::Ne, "true".into()),
                Clause::Version(Op::Eq, 3),
            ]
        );
        let quoted = parse_filter(Some("tags.`my key` = \"a b\""), Target::Models).unwrap();
        assert_eq!(quoted, vec![Clause::Tag("my key".into(), Op::Eq, "a b".into())]);
        assert!(parse_filter(Some("  "), Target::Models).unwrap().is_empty());
    }

    #[test]
    fn registry_filters_name_what_is_wrong() {
        let message = |f: &str, t: Target| parse_filter(Some(f), t).unwrap_err().message;
        assert!(message("run_id = 'x'", Target::Models).contains("`name` or `tags.<key>`"));
        assert!(message("name > 'a'", Target::Models).contains("not >"));
        assert!(message("name = 3", Target::Models).contains("write '3'"));
        assert!(message("version_number LIKE '3'", Target::Versions).contains("= or !="));
        assert!(
            message("name = 'a' OR name = 'b'", Target::Models).contains("OR is not supported")
        );
        assert!(parse_filter(Some("name = 'a'"), Target::Models).is_ok());
    }

    #[test]
    fn registry_order_terms() {
        let order = parse_order(
            &["name DESC".into(), "version_number".into(), " ".into()],
            Target::Versions,
        )
        .unwrap();
        assert_eq!(order, vec![(SortKey::Name, false), (SortKey::Version, true)]);
        assert!(parse_order(&["version_number".into()], Target::Models).is_err());
        assert!(parse_order(&["name SIDEWAYS".into()], Target::Models).is_err());
    }
}
