//! The queue's typed errors. Callers match on the variant; logs show the cause.

use kiln_types::JobState;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The lease's epoch no longer matches, or the job is no longer running: another
    /// attempt owns the job now. The holder must stop and write nothing more.
    #[error("lease lost on job {job_id} (epoch {epoch}): another attempt owns it now")]
    LeaseLost { job_id: Uuid, epoch: i64 },
    #[error("idempotency key `{key}` was already used for job {job_id} with a different request")]
    IdempotencyConflict { key: String, job_id: Uuid },
    #[error("job {job_id} not found")]
    NotFound { job_id: Uuid },
    #[error("team {team_id} not found")]
    TeamNotFound { team_id: Uuid },
    #[error("cannot {action} job {job_id}: it is {state}")]
    InvalidState { job_id: Uuid, state: JobState, action: &'static str },
    #[error("the jobs table holds a value Kiln does not know: {0}")]
    Corrupt(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl QueueError {
    /// True for errors caused by the database being unreachable or overloaded: worth
    /// retrying with backoff, unlike a lost lease or a conflict.
    pub fn is_transient(&self) -> bool {
        match self {
            // The database unreachable (kiln-db's one definition), a protocol hiccup, or a
            // serialization failure / deadlock (40001/40P01) that a retry resolves.
            QueueError::Database(err) => {
                kiln_db::is_sqlx_connection_error(err)
                    || matches!(err, sqlx::Error::Protocol(_))
                    || err
                        .as_database_error()
                        .and_then(|e| e.code())
                        .is_some_and(|code| code == "40001" || code == "40P01")
            }
            _ => false,
        }
    }

    /// Maps a foreign-key violation on insert to [`QueueError::TeamNotFound`].
    pub(crate) fn from_insert(err: sqlx::Error, team_id: Uuid) -> Self {
        if err.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "23503") {
            QueueError::TeamNotFound { team_id }
        } else {
            QueueError::Database(err)
        }
    }
}
