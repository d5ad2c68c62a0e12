//! Team tokens: issued by an admin or the team's maintainer, shown once, revocable.

use actix_web::{HttpResponse, web};
use kiln_db::repo::{teams, tokens};
use kiln_types::Role;
use kiln_types::api::{CreateToken, IssuedToken, Page, TokenInfo};
use serde_json::json;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::state::AppState;

fn info_view(t: tokens::TokenInfo) -> TokenInfo {
    TokenInfo {
        id: t.id,
        team_id: t.team_id,
        name: t.name,
        role: t.role,
        prefix: t.prefix,
        created_at: t.created_at,
        revoked_at: t.revoked_at,
    }
}

/// The team, if the caller may manage it; otherwise 404 for other teams (no existence
/// leak) and 403 for the caller's own team without the maintainer role.
async fn managed_team(
    state: &AppState,
    caller: &Caller,
    team_id: Uuid,
) -> Result<teams::Team, ApiError> {
    if !caller.manages(team_id) {
        return Err(if caller.0.team_id == Some(team_id) {
            ApiError::forbidden("managing tokens needs the `maintainer` role")
        } else {
            ApiError::not_found("team")
        });
    }
    teams::get(&state.db, team_id).await?.ok_or_else(|| ApiError::not_found("team"))
}

/// Issue a token for a team. The secret is in this answer only.
#[utoipa::path(post, path = "/v1/teams/{team_id}/tokens", operation_id = "create_token", tag = "tokens", request_body = CreateToken,
    params(("team_id" = Uuid, Path)),
    responses((status = 201, body = IssuedToken), (status = 403, body = kiln_types::api::ErrorBody),
              (status = 404, body = kiln_types::api::ErrorBody), (status = 422, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<CreateToken>,
) -> Result<HttpResponse, ApiError> {
    let team = managed_team(&state, &caller, path.into_inner()).await?;
    let mut problems = Vec::new();
    if body.role == Role::Admin {
        problems.push((
            "role".to_owned(),
            "team tokens are `maintainer`, `member` or `viewer`".to_owned(),
        ));
    }
    if body.name.trim().is_empty() || body.name.len() > 100 || body.name.contains('\0') {
        problems
            .push(("name".to_owned(), "must be 1 to 100 characters, without U+0000".to_owned()));
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let issued =
        tokens::issue(&state.db, Some(team.id), body.role, &body.name, Some(caller.token_id()))
            .await?;
    caller
        .audit(
            &state.db,
            Some(team.id),
            "token.issue",
            "token",
            issued.info.id.to_string(),
            json!({ "name": body.name, "role": body.role, "prefix": issued.info.prefix }),
        )
        .await?;
    Ok(HttpResponse::Created().json(IssuedToken {
        id: issued.info.id,
        token: issued.secret,
        role: body.role,
        team_id: Some(team.id),
        name: issued.info.name,
        created_at: issued.info.created_at,
    }))
}

/// List a team's tokens (never their secrets).
#[utoipa::path(get, path = "/v1/teams/{team_id}/tokens", operation_id = "list_tokens", tag = "tokens", params(("team_id" = Uuid, Path), ListQuery),
    responses((status = 200, body = Page<TokenInfo>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<TokenInfo>>, ApiError> {
    let team = managed_team(&state, &caller, path.into_inner()).await?;
    let page = tokens::list(&state.db, Some(team.id), query.limit()?, query.cursor()).await?;
    Ok(web::Json(Page {
        items: page.items.into_iter().map(info_view).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revoke a token: it stops working on the next request.
#[utoipa::path(delete, path = "/v1/tokens/{token_id}", operation_id = "revoke_token", tag = "tokens", params(("token_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = kiln_types::api::ErrorBody)), security(("bearer" = [])))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let token_id = path.into_inner();
    let token =
        tokens::get(&state.db, token_id).await?.ok_or_else(|| ApiError::not_found("token"))?;
    let allowed = match token.team_id {
        Some(team) => caller.manages(team),
        None => caller.role() == Role::Admin,
    };
    if !allowed {
        // Another team's token, or the caller's own team without the maintainer role.
        return Err(if token.team_id.is_some() && token.team_id == caller.0.team_id {
            ApiError::forbidden("revoking tokens needs the `maintainer` role")
        } else {
            ApiError::not_found("token")
        });
    }
    tokens::revoke(&state.db, token_id).await?;
    // This replica forgets it before answering; the others on the trigger's notice.
    state.tokens.forget(token_id);
    caller
        .audit(
            &state.db,
            token.team_id,
            "token.revoke",
            "token",
            token_id.to_string(),
            json!({ "name": token.name, "prefix": token.prefix }),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
