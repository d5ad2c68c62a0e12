//! Test support: a fresh, migrated database per test (feature `testing`).
//!
//! Each call creates `kiln_test_<uuid>` on the server named by `KILN_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). `scripts/test.sh` drops stale
//! test databases before each run.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use crate::{DbArgs, DbError, connect, migrate};

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("KILN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A freshly created and migrated database.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub db: DatabaseConnection,
}

/// Creates and migrates a new database; `max_connections` sizes its pool.
pub async fn fresh_database(max_connections: u32) -> Result<TestDatabase, DbError> {
    let admin = admin_url();
    let name = format!("kiln_test_{}", uuid::Uuid::new_v4().simple());
    let server = Database::connect(&admin)
        .await
        .map_err(|source| DbError::Connect { url: crate::redact_url(&admin), source })?;
    server
        .execute(Statement::from_string(
            server.get_database_backend(),
            format!("CREATE DATABASE {name}"),
        ))
        .await?;
    server.close().await?;
    let url = replace_database(&admin, &name);
    let db = connect(&DbArgs { database_url: url.clone(), max_connections }).await?;
    migrate(&db).await?;
    Ok(TestDatabase { name, url, db })
}

/// The same server URL with another database name.
pub fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start =
        base[authority_end..].find('/').map(|i| authority_end + i).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn database_name_is_replaced_and_query_kept() {
        assert_eq!(replace_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(replace_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            replace_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
    }
}
