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
    // A generous acquire timeout: test machines are loaded, and a test that wants the
    // production bound (an outage test) builds its own pool.
    let args =
        DbArgs { acquire_timeout_seconds: 10.0, ..DbArgs::new(url.clone(), max_connections) };
    let db = connect(&args).await?;
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

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones:
/// a database outage as a client (worker, API) sees it, without touching the shared server.
#[derive(Debug)]
pub struct DbProxy {
    pub addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener =
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = tokio::sync::watch::Sender::new(true);
        let state = up.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue; // dropped at once: the client sees the connection close
                }
                let mut down = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up, accept }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    /// `url` (a postgres:// URL) with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
        format!("{scheme}://{userinfo}{}/{path}", self.addr)
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The host and port of a postgres:// URL, resolved.
pub fn db_addr(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port =
        if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    host_port.to_socket_addrs().expect("resolve").next().expect("an address")
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
