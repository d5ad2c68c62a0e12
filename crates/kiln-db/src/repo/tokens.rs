//! API tokens: issued at random, shown once, stored only as a sha256 hash.
//!
//! A token looks like `kiln_<43 url-safe characters>` (256 random bits). Authentication
//! hashes the presented token and looks the hash up; revocation sets `revoked_at`, which
//! the lookup checks on every request, so it takes effect at once.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Page, RepoError, parse_cursor};
use crate::entity::api_tokens;
pub use kiln_types::Role;

/// Who is calling: the token's id, team (none for platform admins) and role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub token_id: Uuid,
    pub team_id: Option<Uuid>,
    pub role: Role,
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub team_id: Option<Uuid>,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_tokens::Model> for TokenInfo {
    fn from(m: api_tokens::Model) -> Self {
        TokenInfo {
            id: m.id,
            team_id: m.team_id,
            name: m.name,
            role: m.role,
            prefix: m.prefix,
            created_at: m.created_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A freshly issued token: the only time its secret exists outside the caller's hands.
#[derive(Clone, PartialEq)]
pub struct IssuedToken {
    pub info: TokenInfo,
    pub secret: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("info", &self.info).field("secret", &"***").finish()
    }
}

/// sha256 of a token's text: what the database stores.
pub fn hash_token(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // Base64url without padding, by hand: 32 bytes → 43 characters.
    let mut out = String::from("kiln_");
    let mut acc = 0u32;
    let mut bits = 0;
    for byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// Issues a token. `team_id` is `None` exactly for admin tokens.
pub async fn issue(
    db: &impl ConnectionTrait,
    team_id: Option<Uuid>,
    role: Role,
    name: &str,
    created_by: Option<Uuid>,
) -> Result<IssuedToken, RepoError> {
    let secret = new_secret();
    let model = api_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        team_id: Set(team_id),
        name: Set(name.to_owned()),
        role: Set(role.as_str().to_owned()),
        token_hash: Set(hash_token(&secret)),
        prefix: Set(secret[..12].to_owned()),
        created_by: Set(created_by),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(IssuedToken { info: model.into(), secret })
}

/// The principal behind a presented token, or `None` when it is unknown or revoked.
pub async fn authenticate(
    db: &impl ConnectionTrait,
    secret: &str,
) -> Result<Option<Principal>, RepoError> {
    authenticate_hashed(db, hash_token(secret)).await
}

/// [`authenticate`] for a secret already hashed with [`hash_token`].
pub async fn authenticate_hashed(
    db: &impl ConnectionTrait,
    hash: Vec<u8>,
) -> Result<Option<Principal>, RepoError> {
    let found = api_tokens::Entity::find()
        .filter(api_tokens::Column::TokenHash.eq(hash))
        .filter(api_tokens::Column::RevokedAt.is_null())
        .one(db)
        .await?;
    Ok(found.and_then(|t| {
        Some(Principal { token_id: t.id, team_id: t.team_id, role: t.role.parse().ok()? })
    }))
}

/// One token by id (revoked ones too).
pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<TokenInfo>, RepoError> {
    Ok(api_tokens::Entity::find_by_id(id).one(db).await?.map(Into::into))
}

/// Revokes a token; true when it was active.
pub async fn revoke(db: &impl ConnectionTrait, id: Uuid) -> Result<bool, RepoError> {
    let done = api_tokens::Entity::update_many()
        .col_expr(
            api_tokens::Column::RevokedAt,
            sea_orm::sea_query::Expr::current_timestamp().into(),
        )
        .filter(api_tokens::Column::Id.eq(id))
        .filter(api_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// Tokens of one team (or every token when `team_id` is `None`), newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    team_id: Option<Uuid>,
    limit: u64,
    cursor: Option<&str>,
) -> Result<Page<TokenInfo>, RepoError> {
    let mut query = api_tokens::Entity::find().order_by_desc(api_tokens::Column::Id);
    if let Some(team) = team_id {
        query = query.filter(api_tokens::Column::TeamId.eq(team));
    }
    if let Some(after) = parse_cursor(cursor)? {
        query = query.filter(api_tokens::Column::Id.lt(after));
    }
    let rows = query.limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows.into_iter().map(Into::into).collect(), limit, |t: &TokenInfo| {
        t.id.to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_url_safe() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with("kiln_"));
        assert_eq!(a.len(), 5 + 43);
        assert!(a[5..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}

/// The channel a trigger notifies with the id of every revoked or deleted token.
pub const REVOCATIONS_CHANNEL: &str = "kiln_tokens";

/// Token revocations as they happen, made through any process: what lets an API replica
/// cache authenticated tokens and still stop a revoked one at once.
#[derive(Debug)]
pub struct Revocations {
    listener: sqlx::postgres::PgListener,
}

impl Revocations {
    /// Listens on [`REVOCATIONS_CHANNEL`] over its own connection.
    pub async fn listen(db: &crate::Db) -> Result<Self, RepoError> {
        let pool = db.get_postgres_connection_pool();
        let mut listener = sqlx::postgres::PgListener::connect_with(pool)
            .await
            .map_err(|e| RepoError::Db(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))))?;
        listener
            .listen(REVOCATIONS_CHANNEL)
            .await
            .map_err(|e| RepoError::Db(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))))?;
        Ok(Self { listener })
    }

    /// The next revoked token's id. `Ok(None)` when the connection dropped: notifications
    /// may have been lost, so a cache must forget everything before trusting this again.
    pub async fn next(&mut self) -> Result<Option<Uuid>, RepoError> {
        match self.listener.try_recv().await {
            Ok(Some(notification)) => Ok(notification.payload().parse().ok().or(Some(Uuid::nil()))),
            Ok(None) => Ok(None),
            Err(e) => Err(RepoError::Db(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)))),
        }
    }
}
