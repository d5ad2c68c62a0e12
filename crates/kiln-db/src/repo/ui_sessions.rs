//! The web UI's sign-in sessions: the sha256 of a random secret the browser holds, the
//! token it signed in with, and when it expires. Never the token itself.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;

use super::RepoError;
use super::tokens::Principal;

/// Records a session for `token_id` until `expires_at` (and drops expired ones).
pub async fn create(
    db: &impl ConnectionTrait,
    id_hash: Vec<u8>,
    token_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), RepoError> {
    db.execute(Statement::from_string(
        db.get_database_backend(),
        "DELETE FROM ui_sessions WHERE expires_at < now()",
    ))
    .await?;
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO ui_sessions (id_hash, token_id, expires_at) VALUES ($1, $2, $3)",
        [id_hash.into(), token_id.into(), expires_at.into()],
    ))
    .await?;
    Ok(())
}

/// The principal of a live session: not expired, its token not revoked.
pub async fn principal(
    db: &impl ConnectionTrait,
    id_hash: Vec<u8>,
) -> Result<Option<Principal>, RepoError> {
    let row = db
        .query_one(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT t.id, t.team_id, t.role FROM ui_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.id_hash = $1 AND s.expires_at > now() AND t.revoked_at IS NULL",
            [id_hash.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let role: String = row.try_get("", "role")?;
    let token_id: Uuid = row.try_get("", "id")?;
    let team_id: Option<Uuid> = row.try_get("", "team_id")?;
    Ok(role.parse().ok().map(|role| Principal { token_id, team_id, role }))
}

/// Ends a session (signing out); true when it existed.
pub async fn delete(db: &impl ConnectionTrait, id_hash: Vec<u8>) -> Result<bool, RepoError> {
    let done = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "DELETE FROM ui_sessions WHERE id_hash = $1",
            [id_hash.into()],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}
