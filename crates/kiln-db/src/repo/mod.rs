//! Repositories: the queries the API and the CLI run, one module per resource. Callers get
//! plain structs back and never see SQL.
//!
//! Team scoping lives here too: every function that reads a team resource takes the team
//! id and filters on it, so a handler cannot forget to.

pub mod artifacts;
pub mod audit;
pub mod datasets;
pub mod deployments;
pub mod mlflow;
pub mod mlflow_registry;
pub mod models;
pub mod runs;
pub mod teams;
pub mod tokens;
pub mod ui_sessions;

/// A page of a list: the items and the cursor of the next page, if any.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first: the extra row only
    /// says that another page exists.
    pub fn from_rows(mut rows: Vec<T>, limit: u64, cursor_of: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(cursor_of) } else { None };
        Page { items: rows, next_cursor }
    }
}

/// What a delete that is refused while the resource is in use did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion<Users> {
    /// Deleted, and its audit entry recorded in the same transaction.
    Deleted,
    /// Not deleted: these still use it.
    InUse(Users),
    /// No such resource in the team (deleted meanwhile, or never there).
    NotFound,
}

/// A model version as other resources name it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, sea_orm::FromQueryResult,
)]
pub struct VersionRef {
    pub model: String,
    pub version: i32,
}

/// Errors of the repositories.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{resource} `{name}` already exists")]
    AlreadyExists { resource: &'static str, name: String },
    #[error("{resource} not found")]
    NotFound { resource: &'static str },
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

impl RepoError {
    /// Maps a unique-violation into `AlreadyExists`, anything else into `Db`.
    pub(crate) fn unique(err: sea_orm::DbErr, resource: &'static str, name: &str) -> Self {
        let unique = matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)));
        if unique {
            RepoError::AlreadyExists { resource, name: name.to_owned() }
        } else {
            RepoError::Db(err)
        }
    }
}

/// Parses an opaque list cursor (the id of the last item seen).
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<uuid::Uuid>, RepoError> {
    cursor.map(|c| c.parse().map_err(|_| RepoError::BadCursor)).transpose()
}
