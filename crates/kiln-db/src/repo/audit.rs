//! The audit log: who did what, when. Written in the same transaction as the change it
//! records whenever the caller passes its transaction.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Page, RepoError};
use crate::entity::audit_log;

/// One audit entry to record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub team_id: Option<Uuid>,
    pub actor_token_id: Option<Uuid>,
    /// Human-readable actor, e.g. `token:kiln_AbCdEfG (maintainer)` or `cli:bootstrap`.
    pub actor: &'a str,
    /// Dotted verb, e.g. `token.issue`, `model.alias.move`.
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<String>,
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub ts: DateTime<Utc>,
    pub team_id: Option<Uuid>,
    pub actor_token_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub details: Value,
}

impl From<audit_log::Model> for AuditRecord {
    fn from(m: audit_log::Model) -> Self {
        AuditRecord {
            id: m.id,
            ts: m.ts,
            team_id: m.team_id,
            actor_token_id: m.actor_token_id,
            actor: m.actor,
            action: m.action,
            resource_type: m.resource_type,
            resource_id: m.resource_id,
            details: m.details,
        }
    }
}

pub async fn record(db: &impl ConnectionTrait, entry: AuditEntry<'_>) -> Result<(), RepoError> {
    audit_log::ActiveModel {
        id: NotSet,
        ts: Set(Utc::now()),
        team_id: Set(entry.team_id),
        actor_token_id: Set(entry.actor_token_id),
        actor: Set(entry.actor.to_owned()),
        action: Set(entry.action.to_owned()),
        resource_type: Set(entry.resource_type.to_owned()),
        resource_id: Set(entry.resource_id),
        details: Set(entry.details),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Entries of one team (or all when `team_id` is `None`), newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    team_id: Option<Uuid>,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<AuditRecord>, RepoError> {
    let mut query = audit_log::Entity::find().order_by_desc(audit_log::Column::Id);
    if let Some(team) = team_id {
        query = query.filter(audit_log::Column::TeamId.eq(team));
    }
    if let Some(cursor) = cursor {
        let after: i64 = cursor.parse().map_err(|_| RepoError::BadCursor)?;
        query = query.filter(audit_log::Column::Id.lt(after));
    }
    let rows = query.limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows.into_iter().map(Into::into).collect(), limit, |r: &AuditRecord| {
        r.id.to_string()
    }))
}

/// A team's newest entries of one action on one resource type, newest first (for a
/// resource's history: the web UI's alias history reads `model.alias.move` on
/// `model_alias`).
pub async fn of_action(
    db: &impl ConnectionTrait,
    team_id: Uuid,
    action: &str,
    resource_type: &str,
    limit: u64,
) -> Result<Vec<AuditRecord>, RepoError> {
    let rows = audit_log::Entity::find()
        .filter(audit_log::Column::TeamId.eq(team_id))
        .filter(audit_log::Column::Action.eq(action))
        .filter(audit_log::Column::ResourceType.eq(resource_type))
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
