//! Kiln's PostgreSQL schema: sea-orm entities, the migrations that create them, and
//! connection set-up.
//!
//! This crate (with kiln-queue) is the only one that knows SQL. The schema is written as
//! numbered plain-SQL migrations in [`migration`]; the entities in [`entity`] mirror it for
//! the CRUD paths. Every timestamp that decides something is the database's `now()`.

pub mod entity;
pub mod migration;
pub mod repo;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::str::FromStr;
use std::time::{Duration, Instant};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, RuntimeErr, SqlxPostgresConnector, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use kiln_types::Secret;
pub use migration::Migrator;
pub use sea_orm::DatabaseConnection as Db;
pub use sea_orm::DbErr;

/// Database settings shared by every binary (flatten into its clap `Args`).
#[derive(Clone, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL, e.g. postgres://user@host:5432/kiln.
    #[arg(long = "database-url", env = "KILN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Largest number of pooled connections this process opens.
    #[arg(
        long = "database-max-connections",
        env = "KILN_DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,
    /// Seconds a database call waits for a pooled connection (opening one included) before
    /// it fails as "database unavailable": what bounds a request while PostgreSQL is down.
    #[arg(
        long = "database-acquire-timeout-seconds",
        env = "KILN_DATABASE_ACQUIRE_TIMEOUT_SECONDS",
        default_value_t = DEFAULT_ACQUIRE_TIMEOUT_SECONDS,
        value_parser = positive_seconds
    )]
    pub acquire_timeout_seconds: f64,
    /// Seconds start-up waits for PostgreSQL to answer a first time.
    #[arg(
        long = "database-connect-timeout-seconds",
        env = "KILN_DATABASE_CONNECT_TIMEOUT_SECONDS",
        default_value_t = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        value_parser = positive_seconds
    )]
    pub connect_timeout_seconds: f64,
}

/// Default of `KILN_DATABASE_ACQUIRE_TIMEOUT_SECONDS`.
pub const DEFAULT_ACQUIRE_TIMEOUT_SECONDS: f64 = 2.0;
/// Default of `KILN_DATABASE_CONNECT_TIMEOUT_SECONDS`.
pub const DEFAULT_CONNECT_TIMEOUT_SECONDS: f64 = 10.0;

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds between 0 (excluded) and 86400")),
    }
}

impl DbArgs {
    /// Settings for `url` with `max_connections`, every timeout at its default.
    pub fn new(url: impl Into<Secret>, max_connections: u32) -> Self {
        DbArgs {
            database_url: url.into(),
            max_connections,
            acquire_timeout_seconds: DEFAULT_ACQUIRE_TIMEOUT_SECONDS,
            connect_timeout_seconds: DEFAULT_CONNECT_TIMEOUT_SECONDS,
        }
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.acquire_timeout_seconds)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_seconds)
    }
}

impl std::fmt::Debug for DbArgs {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbArgs")
            .field("database_url", &redact_url(self.database_url.expose()))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_seconds", &self.acquire_timeout_seconds)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .finish()
    }
}

/// A database URL with its password replaced by `***`, for logs and Debug output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // The userinfo ends at the last `@` of the authority (a password may hold `@`s).
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return redact_query(url) };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    let redacted = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{userinfo}@{host}"),
    };
    redact_query(&redacted)
}

/// `password=` in a URL's query string (libpq accepts it there too) replaced by `***`.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// Errors from connecting or migrating.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL at {url}")]
    Connect {
        url: String,
        #[source]
        source: DbErr,
    },
    #[error("migration failed")]
    Migrate(#[source] DbErr),
    #[error(transparent)]
    Query(#[from] DbErr),
}

/// Opens a connection pool and waits (up to the connect timeout) for PostgreSQL to answer.
///
/// Every later database call waits at most the acquire timeout for a connection, so while
/// PostgreSQL is down a call fails in that time with [`DbErr::ConnectionAcquire`] (see
/// [`is_connection_error`]) instead of hanging.
///
/// The sqlx pool is built here rather than by `sea_orm::Database::connect`: that path
/// records its `ConnectOptions` (the URL, password included) in a trace-level span. sqlx's
/// own statement logging is off: Kiln logs its own events.
pub async fn connect(args: &DbArgs) -> Result<DatabaseConnection, DbError> {
    let url = || redact_url(args.database_url.expose());
    let options = PgConnectOptions::from_str(args.database_url.expose())
        .map_err(|e| DbError::Connect { url: url(), source: conn_err(e) })?
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(args.max_connections)
        .min_connections(1)
        .acquire_timeout(args.acquire_timeout())
        .connect_lazy_with(options);
    let deadline = Instant::now() + args.connect_timeout();
    loop {
        match pool.acquire().await {
            Ok(_first) => break,
            // PostgreSQL not (yet) reachable: keep trying until the connect timeout.
            Err(e) if is_sqlx_connection_error(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(DbError::Connect { url: url(), source: conn_err(e) }),
        }
    }
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}

fn conn_err(e: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(e))
}

/// How long a database call of this pool waits for a connection at most: the bound of a
/// request's database calls while PostgreSQL is unreachable.
pub fn acquire_timeout(db: &DatabaseConnection) -> Duration {
    db.get_postgres_connection_pool().options().get_acquire_timeout()
}

/// Applies every pending migration. Idempotent; safe to run from several processes at once
/// (a transaction-scoped advisory lock serialises them).
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbError> {
    // sea-orm-migration does not serialise two migrators by itself. PostgreSQL has
    // transactional DDL, so the whole run happens in one transaction that first takes a
    // transaction-scoped advisory lock: a concurrent `kiln admin migrate` waits, then sees
    // nothing left to do.
    let txn = db.begin().await?;
    txn.execute(Statement::from_string(
        txn.get_database_backend(),
        "SELECT pg_advisory_xact_lock(7365420001)",
    ))
    .await?;
    Migrator::up(&txn, None).await.map_err(DbError::Migrate)?;
    txn.commit().await?;
    Ok(())
}

/// Names of migrations that exist in this binary but are not applied to the database.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbError> {
    let pending = Migrator::get_pending_migrations(db).await?;
    Ok(pending.iter().map(|m| m.name().to_owned()).collect())
}

/// True when the error means PostgreSQL could not be reached (worth a 503 and a retry),
/// not that a query was wrong: no connection to be had in time, or the connection broke.
pub fn is_connection_error(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            is_sqlx_connection_error(e)
        }
        _ => false,
    }
}

/// [`is_connection_error`] for a sqlx error: I/O, pool timeouts, a server shutting down
/// (SQLSTATE 57P0x) or a connection exception (class 08).
pub fn is_sqlx_connection_error(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
    ) || err
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0"))
}

/// One round trip to PostgreSQL, for readiness checks; it fails within the pool's acquire
/// timeout (plus a second for the query) when PostgreSQL does not answer.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    let bound = acquire_timeout(db) + Duration::from_secs(1);
    let query = db.execute(Statement::from_string(db.get_database_backend(), "SELECT 1"));
    match tokio::time::timeout(bound, query).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("postgres://kiln:hunter2@db:5432/kiln"),
            "postgres://kiln:***@db:5432/kiln"
        );
        assert_eq!(redact_url("postgres://kiln:p@ss@db/kiln"), "postgres://kiln:***@db/kiln");
        assert_eq!(redact_url("postgres://kiln@db/kiln"), "postgres://kiln@db/kiln");
        assert_eq!(
            redact_url("postgres://db/kiln?user=kiln&password=hunter2&sslmode=require"),
            "postgres://db/kiln?user=kiln&password=***&sslmode=require"
        );
        let args = DbArgs::new("postgres://kiln:hunter2@db/kiln", 4);
        assert!(!format!("{args:?}").contains("hunter2"), "{args:?}");
    }
}
