//! The audit log: maintainers read their team's, admins everyone's.

use actix_web::web;
use kiln_db::repo::audit;
use kiln_types::Role;
use kiln_types::api::{AuditRecord, Page};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::state::AppState;

/// Who did what, when; newest first.
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit_records", tag = "audit", params(ListQuery),
    responses((status = 200, body = Page<AuditRecord>), (status = 403, body = kiln_types::api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<AuditRecord>>, ApiError> {
    caller.require(Role::Maintainer)?;
    let team = if caller.role() == Role::Admin { None } else { Some(caller.team()?) };
    let page = audit::list(&state.db, team, query.limit()?, query.cursor()).await?;
    let items = page
        .items
        .into_iter()
        .map(|r| AuditRecord {
            id: r.id,
            ts: r.ts,
            team_id: r.team_id,
            actor_token_id: r.actor_token_id,
            actor: r.actor,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            details: r.details,
        })
        .collect();
    Ok(web::Json(Page { items, next_cursor: page.next_cursor }))
}
