//! Teams (admin only).

use actix_web::{HttpResponse, web};
use kiln_db::repo::teams;
use kiln_types::api::{CreateTeam, Page, Team};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::state::AppState;

pub(crate) fn team_view(t: teams::Team) -> Team {
    Team { id: t.id, name: t.name, max_running_jobs: t.max_running_jobs, created_at: t.created_at }
}

/// Create a team.
#[utoipa::path(post, path = "/v1/teams", operation_id = "create_team", tag = "teams", request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 409, body = kiln_types::api::ErrorBody),
              (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateTeam>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let mut problems = Vec::new();
    if let Some(problem) = teams::name_problem(&body.name) {
        problems.push(("name".to_owned(), problem.to_owned()));
    }
    let cap = body.max_running_jobs.unwrap_or(teams::DEFAULT_MAX_RUNNING_JOBS);
    if !(1..=10_000).contains(&cap) {
        problems.push(("max_running_jobs".to_owned(), "must be between 1 and 10000".to_owned()));
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let team = teams::create(&state.db, &body.name, cap).await?;
    caller
        .audit(
            &state.db,
            Some(team.id),
            "team.create",
            "team",
            team.id.to_string(),
            json!({ "name": team.name }),
        )
        .await?;
    Ok(HttpResponse::Created().json(team_view(team)))
}

/// List teams.
#[utoipa::path(get, path = "/v1/teams", operation_id = "list_teams", tag = "teams", params(ListQuery),
    responses((status = 200, body = Page<Team>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<Team>>, ApiError> {
    caller.require_admin()?;
    let page = teams::list(&state.db, query.limit()?, query.cursor()).await?;
    Ok(web::Json(Page {
        items: page.items.into_iter().map(team_view).collect(),
        next_cursor: page.next_cursor,
    }))
}
