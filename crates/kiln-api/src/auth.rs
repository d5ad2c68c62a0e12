//! Bearer-token authentication and role checks.
//!
//! [`Caller`] is an extractor: a handler that takes one is authenticated (401 otherwise).
//! Authorisation is explicit in each handler: `caller.require(Role::Member)?` and
//! `caller.team()?` for team resources. Team resources are always looked up *with* the
//! caller's team id, so another team's resource answers 404, exactly like a missing one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use kiln_db::repo::tokens::{self, Principal};
use kiln_db::repo::{RepoError, audit};
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

    /// An audit entry of this caller, for a repository that records it in the transaction
    /// of the change (`actor` is [`Caller::actor`], borrowed).
    pub fn audit_entry<'a>(
        &self,
        actor: &'a str,
        team_id: Option<Uuid>,
        action: &'a str,
        resource_type: &'a str,
        resource_id: impl ToString,
        details: serde_json::Value,
    ) -> audit::AuditEntry<'a> {
        audit::AuditEntry {
            team_id,
            actor_token_id: Some(self.token_id()),
            actor,
            action,
            resource_type,
            resource_id: Some(resource_id.to_string()),
            details,
        }
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
            let hash = tokens::hash_token(&token);
            authenticate(&state, hash).await.map(Caller)
        })
    }
}

/// The principal behind a token's hash: from the cache while it is fresh, else from
/// PostgreSQL; while PostgreSQL is unreachable, a principal it confirmed recently (within
/// `KILN_AUTH_OUTAGE_SECONDS`), so serving from memory goes on. The lookup is bounded by
/// the pool's acquire timeout: an outage answers 503 `unavailable` fast, never hangs.
async fn authenticate(state: &AppState, hash: Vec<u8>) -> Result<Principal, ApiError> {
    let cache = &state.tokens;
    if let Some(principal) = cache.get(&hash) {
        return Ok(principal);
    }
    if cache.database_unreachable()
        && let Some(principal) = cache.get_during_outage(&hash)
    {
        return Ok(principal);
    }
    let generation = cache.generation();
    let bound = kiln_db::acquire_timeout(&state.db) + Duration::from_secs(1);
    let cause: Box<dyn std::error::Error + Send + Sync> =
        match tokio::time::timeout(bound, tokens::authenticate_hashed(&state.db, hash.clone()))
            .await
        {
            Ok(Ok(Some(principal))) => {
                cache.insert(hash, principal, generation);
                return Ok(principal);
            }
            Ok(Ok(None)) => {
                cache.remove(&hash);
                return Err(ApiError::new(ErrorCode::Unauthenticated, "invalid or revoked token"));
            }
            Ok(Err(RepoError::Db(err))) if kiln_db::is_connection_error(&err) => err.into(),
            Ok(Err(err)) => return Err(err.into()),
            Err(elapsed) => format!("token lookup: no answer from PostgreSQL ({elapsed})").into(),
        };
    cache.mark_unreachable();
    match cache.get_during_outage(&hash) {
        Some(principal) => Ok(principal),
        None => Err(ApiError::unavailable("the database", cause)),
    }
}

/// Authenticated tokens, cached so a hot route (predict) does not query PostgreSQL on every
/// request, and so serving outlives a database outage.
///
/// While PostgreSQL answers, correctness comes from revocation notices, not from the TTL:
/// every replica listens on `kiln_tokens` (a trigger announces each revoked or deleted
/// token) and forgets the token at once; the replica that revokes forgets it before
/// answering. Only while that listener is connected is an entry trusted without asking
/// PostgreSQL, for at most `KILN_AUTH_CACHE_SECONDS` (0: always ask). A generation counter
/// stops a lookup that raced a revocation from caching the stale answer.
///
/// While PostgreSQL is unreachable (a lookup or the listener just failed to reach it), a
/// token PostgreSQL confirmed within `KILN_AUTH_OUTAGE_SECONDS` is served from memory (0
/// turns that off). When the listener connects again the cache is emptied (notices may have
/// been lost), so every token is checked against PostgreSQL again: revocations hold.
#[derive(Debug, Clone)]
pub struct TokenCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    /// Principal and when PostgreSQL last confirmed it.
    entries: RwLock<HashMap<Vec<u8>, (Principal, Instant)>>,
    ttl_millis: AtomicU64,
    outage_ttl_millis: AtomicU64,
    listening: AtomicBool,
    generation: AtomicU64,
    /// When PostgreSQL was last found unreachable, if since the listener last connected.
    unreachable_at: Mutex<Option<Instant>>,
}

/// Entries kept at most; beyond it the cache starts over.
const MAX_CACHED_TOKENS: usize = 10_000;

/// How long after PostgreSQL was found unreachable requests skip asking it (and are served
/// from memory) before one asks again; the listener, retrying every second, ends it sooner
/// when PostgreSQL is back.
const UNREACHABLE_HOLD: Duration = Duration::from_secs(5);

impl TokenCache {
    /// A cache that trusts nothing without asking PostgreSQL until [`TokenCache::start`]
    /// has its listener connected.
    pub fn new(ttl: Duration) -> Self {
        TokenCache {
            inner: Arc::new(CacheInner {
                entries: RwLock::new(HashMap::new()),
                ttl_millis: AtomicU64::new(ttl.as_millis() as u64),
                outage_ttl_millis: AtomicU64::new(
                    Duration::from_secs(crate::state::DEFAULT_AUTH_OUTAGE_SECONDS).as_millis()
                        as u64,
                ),
                listening: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                unreachable_at: Mutex::new(None),
            }),
        }
    }

    /// Starts listening for revocations (on the current tokio runtime).
    pub fn start(ttl: Duration, db: kiln_db::Db) -> Self {
        let cache = TokenCache::new(ttl);
        let listener = cache.clone();
        tokio::spawn(async move {
            loop {
                match tokens::Revocations::listen(&db).await {
                    Ok(mut revocations) => {
                        listener.clear();
                        *listener.inner.unreachable_at.lock().expect("token cache lock") = None;
                        listener.inner.listening.store(true, Ordering::SeqCst);
                        while let Ok(Some(id)) = revocations.next().await {
                            listener.forget(id);
                        }
                        // Entries stay for an outage, but none is trusted as fresh until the
                        // listener is back (and has emptied the cache).
                        listener.inner.listening.store(false, Ordering::SeqCst);
                    }
                    Err(RepoError::Db(err)) if kiln_db::is_connection_error(&err) => {
                        listener.mark_unreachable();
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        cache
    }

    pub fn set_ttl(&self, ttl: Duration) {
        self.inner.ttl_millis.store(ttl.as_millis() as u64, Ordering::Relaxed);
        self.clear();
    }

    /// How long a token PostgreSQL confirmed is served while PostgreSQL is unreachable.
    pub fn set_outage_ttl(&self, ttl: Duration) {
        self.inner.outage_ttl_millis.store(ttl.as_millis() as u64, Ordering::Relaxed);
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.inner.ttl_millis.load(Ordering::Relaxed))
    }

    fn outage_ttl(&self) -> Duration {
        Duration::from_millis(self.inner.outage_ttl_millis.load(Ordering::Relaxed))
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// A principal trusted without asking PostgreSQL: the listener is connected and
    /// PostgreSQL confirmed it within the TTL.
    fn get(&self, hash: &[u8]) -> Option<Principal> {
        if !self.inner.listening.load(Ordering::SeqCst) {
            return None;
        }
        let entries = self.inner.entries.read().expect("token cache lock");
        let (principal, at) = entries.get(hash)?;
        (at.elapsed() < self.ttl()).then_some(*principal)
    }

    /// A principal PostgreSQL confirmed within the outage TTL, for when it cannot be asked.
    fn get_during_outage(&self, hash: &[u8]) -> Option<Principal> {
        let entries = self.inner.entries.read().expect("token cache lock");
        let (principal, at) = entries.get(hash)?;
        (at.elapsed() < self.outage_ttl()).then_some(*principal)
    }

    /// True while PostgreSQL was found unreachable recently and the listener has not
    /// connected since.
    fn database_unreachable(&self) -> bool {
        self.inner
            .unreachable_at
            .lock()
            .expect("token cache lock")
            .is_some_and(|at| at.elapsed() < UNREACHABLE_HOLD)
    }

    fn mark_unreachable(&self) {
        *self.inner.unreachable_at.lock().expect("token cache lock") = Some(Instant::now());
    }

    fn insert(&self, hash: Vec<u8>, principal: Principal, generation: u64) {
        if self.ttl().is_zero() && self.outage_ttl().is_zero() {
            return;
        }
        let mut entries = self.inner.entries.write().expect("token cache lock");
        // Checked under the lock: forget/clear bump the generation holding it too.
        if self.generation() != generation {
            return;
        }
        if entries.len() >= MAX_CACHED_TOKENS {
            entries.clear();
        }
        entries.insert(hash, (principal, Instant::now()));
    }

    /// Forgets a token PostgreSQL no longer knows (or knows as revoked).
    /// (No generation bump: a lookup racing this one read the same row or an older one,
    /// and revocations bump it through [`TokenCache::forget`].)
    fn remove(&self, hash: &[u8]) {
        self.inner.entries.write().expect("token cache lock").remove(hash);
    }

    /// Forgets a token (revoked or deleted) at once.
    pub fn forget(&self, token_id: Uuid) {
        let mut entries = self.inner.entries.write().expect("token cache lock");
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, (p, _)| p.token_id != token_id);
    }

    fn clear(&self) {
        let mut entries = self.inner.entries.write().expect("token cache lock");
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}
