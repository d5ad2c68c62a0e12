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

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use migration::Migrator;
pub use sea_orm::DatabaseConnection as Db;
pub use sea_orm::DbErr;

/// Database settings shared by every binary (flatten into its clap `Args`).
#[derive(Clone, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL, e.g. postgres://user@host:5432/kiln.
    #[arg(long = "database-url", env = "KILN_DATABASE_URL")]
    pub database_url: String,
    /// Largest number of pooled connections this process opens.
    #[arg(
        long = "database-max-connections",
        env = "KILN_DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,
}

impl std::fmt::Debug for DbArgs {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbArgs")
            .field("database_url", &redact_url(&self.database_url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A database URL with its password replaced by `***`, for logs and Debug output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
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

/// Opens a connection pool. SQL statement logging is off: Kiln logs its own events.
pub async fn connect(args: &DbArgs) -> Result<DatabaseConnection, DbError> {
    let mut options = ConnectOptions::new(args.database_url.clone());
    options
        .max_connections(args.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .map_err(|source| DbError::Connect { url: redact_url(&args.database_url), source })
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
/// not that a query was wrong.
pub fn is_connection_error(err: &DbErr) -> bool {
    matches!(err, DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
}

/// One round trip to PostgreSQL, for readiness checks.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute(Statement::from_string(db.get_database_backend(), "SELECT 1")).await.map(|_| ())
}
