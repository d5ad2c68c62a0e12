//! The model registry: versions registered from succeeded jobs (with lineage), aliases
//! moved only by maintainers, bundles downloadable by the team.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use kiln_db::repo::{Deletion, models};
use kiln_types::api::{
    Alias, ModelDetail, ModelSummary, ModelVersion, Page, RegisterVersion, SetAlias,
};
use kiln_types::{ErrorCode, JobState, Role};
use serde_json::json;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::state::AppState;

fn version_view(model: &str, v: models::ModelVersion, aliases: &[(String, i32)]) -> ModelVersion {
    ModelVersion {
        model: model.to_owned(),
        version: v.version,
        job_id: v.job_id,
        dataset_sha256: v.dataset_sha256,
        bundle_sha256: v.bundle_sha256,
        metrics: v.metrics,
        spec: v.spec,
        aliases: aliases.iter().filter(|(_, n)| *n == v.version).map(|(a, _)| a.clone()).collect(),
        created_at: v.created_at,
    }
}

async fn team_model(state: &AppState, team: Uuid, name: &str) -> Result<models::Model, ApiError> {
    models::find(&state.db, team, name).await?.ok_or_else(|| ApiError::not_found("model"))
}

/// Register a new version of a model from a succeeded job. The same job registered again
/// under the same model answers its existing version (200).
#[utoipa::path(post, path = "/v1/models/{name}/versions", operation_id = "register_model_version", tag = "models", request_body = RegisterVersion,
    params(("name" = String, Path)),
    responses((status = 201, body = ModelVersion),
              (status = 200, body = ModelVersion, description = "This job is already a version of this model: that version"),
              (status = 404, body = kiln_types::api::ErrorBody),
              (status = 409, body = kiln_types::api::ErrorBody), (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn register(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<RegisterVersion>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Maintainer)?;
    register_job(&state, &caller, path.into_inner(), "name", body.job_id).await
}

/// Registers succeeded job `job_id` as a version of model `name` (`name_field`: the
/// request field a bad name is reported under): 201 with the new version, 200 with the
/// existing one when the job is already a version of this model.
pub(crate) async fn register_job(
    state: &AppState,
    caller: &Caller,
    name: String,
    name_field: &str,
    job_id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let team = caller.team()?;
    if let Some(problem) = models::name_problem(&name, 128) {
        return Err(ApiError::validation([(name_field.to_owned(), problem)]));
    }
    let job = state.queue.get_for_team(team, job_id).await.map_err(|err| match err {
        kiln_queue::QueueError::NotFound { .. } => ApiError::validation([(
            "job_id".to_owned(),
            "no job with this id in your team".to_owned(),
        )]),
        other => other.into(),
    })?;
    if job.state != JobState::Succeeded {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("job {} is {}; only a succeeded job can be registered", job.id, job.state),
        ));
    }
    let Some(result) = &job.result else {
        return Err(ApiError::internal(format!(
            "succeeded job {} has no model bundle in its result",
            job.id
        )));
    };
    let bundle_sha256 = result.bundle_sha256.as_str();
    let dataset_sha256 =
        Some(job.inputs.dataset.as_ref().map_or(&result.dataset_sha256, |d| &d.sha256).as_str());
    let (version, created) = models::register_version_once(
        &state.db,
        team,
        &name,
        models::NewVersion {
            job_id: job.id,
            bundle_key: &result.model_bundle,
            bundle_sha256,
            dataset_sha256,
            spec: job.spec.clone(),
            metrics: serde_json::to_value(&result.metrics).map_err(ApiError::internal)?,
            created_by: Some(caller.token_id()),
        },
    )
    .await?;
    if !created {
        let aliases = models::aliases(&state.db, version.model_id).await?;
        return Ok(HttpResponse::Ok().json(version_view(&name, version, &aliases)));
    }
    caller
        .audit(
            &state.db,
            Some(team),
            "model.register",
            "model_version",
            format!("{name}/{}", version.version),
            json!({"job_id": job.id, "bundle_sha256": bundle_sha256}),
        )
        .await?;
    Ok(HttpResponse::Created().json(version_view(&name, version, &[])))
}

/// List the team's models with their aliases.
#[utoipa::path(get, path = "/v1/models", operation_id = "list_models", tag = "models", params(ListQuery),
    responses((status = 200, body = Page<ModelSummary>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<ModelSummary>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = models::list(&state.db, caller.team()?, query.limit()?, query.cursor()).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for m in page.items {
        let latest =
            models::versions(&state.db, m.id, 1, None).await?.items.first().map(|v| v.version);
        let aliases: BTreeMap<String, i32> =
            models::aliases(&state.db, m.id).await?.into_iter().collect();
        items.push(ModelSummary {
            name: m.name,
            latest_version: latest,
            aliases,
            created_at: m.created_at,
        });
    }
    Ok(web::Json(Page { items, next_cursor: page.next_cursor }))
}

/// One model: how many versions it has, the latest, its aliases.
#[utoipa::path(get, path = "/v1/models/{name}", operation_id = "get_model", tag = "models", params(("name" = String, Path)),
    responses((status = 200, body = ModelDetail), (status = 404, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<ModelDetail>, ApiError> {
    caller.require(Role::Viewer)?;
    let model = team_model(&state, caller.team()?, &path).await?;
    let (versions, latest_version) = models::version_stats(&state.db, model.id).await?;
    let aliases: BTreeMap<String, i32> =
        models::aliases(&state.db, model.id).await?.into_iter().collect();
    Ok(web::Json(ModelDetail {
        name: model.name,
        description: model.description,
        versions,
        latest_version,
        aliases,
        created_at: model.created_at,
    }))
}

/// Delete a model version (maintainer). Refused with 409 `in_use` while an alias points at
/// it or a deployment serves it (`details.aliases`, `details.deployments`): move the alias
/// or change the deployment first. Its bundle is left to the artifacts garbage collection.
#[utoipa::path(delete, path = "/v1/models/{name}/versions/{version}", operation_id = "delete_model_version", tag = "models",
    params(("name" = String, Path), ("version" = i32, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 409, description = "`in_use`: aliases, deployments or queued/running batch predictions still use it (`details.aliases`, `details.deployments`, `details.jobs`)", body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_version(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    let team = caller.team()?;
    let (name, number) = path.into_inner();
    // The lookup first: another team's model answers 404 whatever the caller's role.
    let model = team_model(&state, team, &name).await?;
    let version = models::version(&state.db, model.id, number)
        .await?
        .ok_or_else(|| ApiError::not_found("model version"))?;
    caller.require(Role::Maintainer)?;
    let actor = caller.actor();
    let details = json!({"job_id": version.job_id, "bundle_sha256": version.bundle_sha256});
    let id = format!("{name}/{number}");
    let entry = caller.audit_entry(
        &actor,
        Some(team),
        "model.version.delete",
        "model_version",
        &id,
        details,
    );
    match models::delete_version_unless_used(&state.db, model.id, number, entry).await? {
        Deletion::Deleted => Ok(HttpResponse::NoContent().finish()),
        Deletion::InUse(users) => {
            Err(ApiError::in_use(&format!("version {number} of model `{name}`"), &users))
        }
        Deletion::NotFound => Err(ApiError::not_found("model version")),
    }
}

/// A model's versions, newest first.
#[utoipa::path(get, path = "/v1/models/{name}/versions", operation_id = "list_model_versions", tag = "models", params(("name" = String, Path), ListQuery),
    responses((status = 200, body = Page<ModelVersion>), (status = 404, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn versions(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<ModelVersion>>, ApiError> {
    caller.require(Role::Viewer)?;
    let model = team_model(&state, caller.team()?, &path).await?;
    let aliases = models::aliases(&state.db, model.id).await?;
    let page = models::versions(&state.db, model.id, query.limit()?, query.cursor()).await?;
    Ok(web::Json(Page {
        items: page.items.into_iter().map(|v| version_view(&model.name, v, &aliases)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Point an alias (`production`, `staging`, anything) at a version.
#[utoipa::path(put, path = "/v1/models/{name}/aliases/{alias}", operation_id = "set_alias", tag = "models", request_body = SetAlias,
    params(("name" = String, Path), ("alias" = String, Path)),
    responses((status = 200, body = Alias), (status = 404, body = kiln_types::api::ErrorBody),
              (status = 409, description = "`invalid_state`: deployments follow the alias and the version has no Kiln bundle to serve (`details.deployments`)", body = kiln_types::api::ErrorBody),
              (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_alias(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Json<SetAlias>,
) -> Result<web::Json<Alias>, ApiError> {
    let team = caller.team()?;
    let (name, alias) = path.into_inner();
    // The lookup first: another team's model answers 404 whatever the caller's role.
    let model = team_model(&state, team, &name).await?;
    caller.require(Role::Maintainer)?;
    if let Some(problem) = models::name_problem(&alias, 64) {
        return Err(ApiError::validation([("alias".to_owned(), problem)]));
    }
    let version = models::version(&state.db, model.id, body.version).await?.ok_or_else(|| {
        ApiError::validation([(
            "version".to_owned(),
            format!("model `{name}` has no version {}", body.version),
        )])
    })?;
    refuse_unservable(
        &state,
        (model.id, &name),
        &alias,
        version.version,
        !version.bundle_key.is_empty(),
    )
    .await?;
    let previous =
        models::set_alias(&state.db, model.id, &alias, version.id, Some(caller.token_id())).await?;
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
            format!("{name}@{alias}"),
            json!({"version": version.version, "previous_version": previous_version}),
        )
        .await?;
    if previous_version != Some(version.version) {
        roll_out(&state, &caller, team, &model, &alias, version.version, previous_version).await?;
    }
    Ok(web::Json(Alias { model: name, alias, version: version.version, previous_version }))
}

/// A version registered through MLflow from artifacts alone cannot be served: an alias that
/// deployments follow must not point at it (they would lose their model). 409
/// `invalid_state` naming them, for the native and the MLflow alias routes alike.
pub(crate) async fn refuse_unservable(
    state: &AppState,
    (model_id, model): (Uuid, &str),
    alias: &str,
    version: i32,
    has_bundle: bool,
) -> Result<(), ApiError> {
    if has_bundle {
        return Ok(());
    }
    let followers =
        kiln_db::repo::mlflow_registry::alias_followers(&state.db, model_id, alias).await?;
    if followers.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InvalidState,
        format!(
            "deployments ({}) follow alias `{alias}`, and {}; point the alias at a servable version",
            followers.join(", "),
            crate::mlflow::registry::no_bundle_reason(model, version)
        ),
    )
    .with_details(json!({"deployments": followers})))
}

/// Rolls every deployment that follows the alias to its new version: this process loads and
/// warms it before switching (other replicas within their sync period), and each rollout is
/// audited.
pub(crate) async fn roll_out(
    state: &AppState,
    caller: &Caller,
    team: Uuid,
    model: &models::Model,
    alias: &str,
    version: i32,
    previous_version: Option<i32>,
) -> Result<(), ApiError> {
    if let Err(err) = state.serving.sync().await {
        tracing::warn!(error = %err, "serving sync failed after an alias move; the periodic sync retries");
    }
    for live in state.serving.following(model.id, alias) {
        let routing = live.routing();
        caller
            .audit(
                &state.db,
                Some(team),
                "deployment.rollout",
                "deployment",
                &live.row.name,
                json!({"model": model.name, "alias": alias, "version": version,
                       "previous_version": previous_version,
                       "serving": routing.routes.iter().map(|r| r.engine.version).collect::<Vec<_>>(),
                       "error": routing.error}),
            )
            .await?;
    }
    Ok(())
}

/// Download a version's model bundle (a zip of `model.json` and `model.safetensors`).
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}/bundle", operation_id = "download_model_bundle", tag = "models",
    params(("name" = String, Path), ("version" = i32, Path)),
    responses((status = 200, description = "The bundle, sent as `application/zip` (a zip is an octet stream too: \
clients that know no zip type read it as `application/octet-stream`)",
               content((Vec<u8> = "application/zip"), (Vec<u8> = "application/octet-stream"))),
              (status = 404, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn bundle(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let (name, number) = path.into_inner();
    let model = team_model(&state, caller.team()?, &name).await?;
    let version = models::version(&state.db, model.id, number)
        .await?
        .ok_or_else(|| ApiError::not_found("model version"))?;
    if version.bundle_key.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            crate::mlflow::registry::no_bundle_reason(&name, number),
        ));
    }
    let key = kiln_store::Key::parse(version.bundle_key.clone()).map_err(ApiError::internal)?;
    let stream = state.store.get(&key, None).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{name}-v{number}.kiln.zip\""),
        ))
        .insert_header(("X-Kiln-Bundle-Sha256", version.bundle_sha256))
        .streaming(futures::StreamExt::map(stream, |chunk| chunk.map_err(std::io::Error::other))))
}
