//! Bearer-token authentication and role checks.
//!
//! [`Caller`] is an extractor: a handler that takes one is authenticated (401 otherwise).
//! Authorisation is explicit in each handler: `caller.require(Role::Member)?` and
//! `caller.team()?` for team resources. Team resources are always looked up *with* the
//! caller's team id, so another team's resource answers 404, exactly like a missing one.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use kiln_db::repo::audit;
use kiln_db::repo::tokens::{self, Principal};
use kiln_types::{ErrorCode, Role};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Principal);

impl Caller {
    pub fn role(&self) -> Role {
        self.0.role
    }

    pub fn token_id(&self) -> Uuid {
        self.0.token_id
    }

    /// 403 unless the caller has at least `role`. Admins pass every check.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this action needs the `{role}` role; this token is a `{}`",
                self.0.role
            )))
        }
    }

    /// 403 unless the caller is a platform admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require(Role::Admin)
    }

    /// The caller's team, for team resources. Admin tokens belong to no team.
    pub fn team(&self) -> Result<Uuid, ApiError> {
        self.0.team_id.ok_or_else(|| {
            ApiError::forbidden(
                "admin tokens belong to no team; use a team token for team resources",
            )
        })
    }

    /// True when the caller may manage `team_id`: an admin, or that team's maintainer.
    pub fn manages(&self, team_id: Uuid) -> bool {
        self.0.role == Role::Admin
            || (self.0.role == Role::Maintainer && self.0.team_id == Some(team_id))
    }

    /// Records what this caller did in the audit log.
    pub async fn audit(
        &self,
        db: &kiln_db::Db,
        team_id: Option<Uuid>,
        action: &str,
        resource_type: &str,
        resource_id: impl ToString,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        let entry = audit::AuditEntry {
            team_id,
            actor_token_id: Some(self.token_id()),
            actor: &self.actor(),
            action,
            resource_type,
            resource_id: Some(resource_id.to_string()),
            details,
        };
        audit::record(db, entry).await?;
        Ok(())
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token:{} ({})", self.0.token_id, self.0.role)
    }
}

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(ErrorCode::Unauthenticated, "missing `Authorization: Bearer <token>` header")
    })?;
    let value = value.to_str().map_err(|_| {
        ApiError::new(ErrorCode::Unauthenticated, "the Authorization header is not text")
    })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    Ok(token.to_owned())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut actix_web::dev::Payload) -> Self::Future {
        let token = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token?;
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            if !token.starts_with("kiln_") {
                return Err(ApiError::new(ErrorCode::Unauthenticated, "invalid token"));
            }
            match tokens::authenticate(&state.db, &token).await? {
                Some(principal) => Ok(Caller(principal)),
                None => Err(ApiError::new(ErrorCode::Unauthenticated, "invalid or revoked token")),
            }
        })
    }
}
