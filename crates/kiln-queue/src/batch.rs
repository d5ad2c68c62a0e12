//! Batch predictions on the queue: a job of kind `batch_prediction` and its record in
//! `batch_predictions` (same id), created in one transaction; the worker's fenced writes
//! as it scores (the input's size, each stored output part); the reads the API answers from.
//!
//! A part is recorded only if it starts where the record's `rows_done` ends, under the
//! job's lease fence, so a part is never counted twice and a stale attempt writes nothing.

use chrono::{DateTime, Utc};
use kiln_types::batch::MAX_BAD_ROW_SAMPLES;
use kiln_types::{BadRow, JobKind, OutputPart};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::sql::JOB_COLUMNS;
use crate::{Job, Lease, NewJob, Queue, QueueError, fenced};

/// What the API resolved a batch prediction's request to, besides the job itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatchPrediction {
    pub model_id: Uuid,
    pub version_id: Uuid,
    pub model_name: String,
    pub version: i32,
    pub alias: Option<String>,
    pub dataset_id: Uuid,
}

/// A batch prediction's record, as the worker keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPrediction {
    pub id: Uuid,
    pub team_id: Uuid,
    pub model_id: Uuid,
    pub model_name: String,
    pub version: i32,
    pub alias: Option<String>,
    pub dataset_id: Option<Uuid>,
    /// Input rows, once the worker has read the input.
    pub rows_total: Option<u64>,
    /// Input rows covered by the stored parts: where the next attempt starts.
    pub rows_done: u64,
    pub bad_rows: u64,
    pub bad_row_samples: Vec<BadRow>,
    pub parts: Vec<OutputPart>,
    /// The output's CSV header line, without its newline.
    pub header: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A record with its job, for the reads that answer both.
const WITH_JOB: &str = "FROM batch_predictions b JOIN jobs ON jobs.id = b.id";

const RECORD_COLUMNS: &str = "b.id, b.team_id, b.model_id, b.model_name, b.version, b.alias, \
    b.dataset_id, b.rows_total, b.rows_done, b.bad_rows, b.bad_row_samples, b.parts, b.header, \
    b.created_at AS b_created_at, b.updated_at AS b_updated_at";

fn count(row: &PgRow, column: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = row.try_get(column)?;
    u64::try_from(n)
        .map_err(|e| sqlx::Error::ColumnDecode { index: column.to_owned(), source: Box::new(e) })
}

impl<'r> sqlx::FromRow<'r, PgRow> for BatchPrediction {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let rows_total: Option<i64> = row.try_get("rows_total")?;
        Ok(BatchPrediction {
            id: row.try_get("id")?,
            team_id: row.try_get("team_id")?,
            model_id: row.try_get("model_id")?,
            model_name: row.try_get("model_name")?,
            version: row.try_get("version")?,
            alias: row.try_get("alias")?,
            dataset_id: row.try_get("dataset_id")?,
            rows_total: rows_total.map(|n| n.max(0) as u64),
            rows_done: count(row, "rows_done")?,
            bad_rows: count(row, "bad_rows")?,
            bad_row_samples: row.try_get::<Json<Vec<BadRow>>, _>("bad_row_samples")?.0,
            parts: row.try_get::<Json<Vec<OutputPart>>, _>("parts")?.0,
            header: row.try_get("header")?,
            created_at: row.try_get("b_created_at")?,
            updated_at: row.try_get("b_updated_at")?,
        })
    }
}

/// A batch prediction with the job that runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPredictionJob {
    pub job: Job,
    pub record: BatchPrediction,
}

impl<'r> sqlx::FromRow<'r, PgRow> for BatchPredictionJob {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(BatchPredictionJob { job: Job::from_row(row)?, record: BatchPrediction::from_row(row)? })
    }
}

impl Queue {
    /// Queues a batch prediction: the job (kind `batch_prediction`) and its record, in one
    /// transaction. `new.kind` is set here.
    pub async fn enqueue_batch_prediction(
        &self,
        mut new: NewJob,
        record: &NewBatchPrediction,
    ) -> Result<BatchPredictionJob, QueueError> {
        new.kind = JobKind::BatchPrediction.as_str().to_owned();
        let mut tx = self.pool.begin().await?;
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO jobs (id, team_id, kind, spec, priority, max_attempts, device, \
                 trace_context, created_by, inputs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(new.team_id)
        .bind(&new.kind)
        .bind(&new.spec)
        .bind(new.priority)
        .bind(new.max_attempts)
        .bind(new.device.as_str())
        .bind(&new.trace_context)
        .bind(new.created_by)
        .bind(Json(&new.inputs))
        .execute(&mut *tx)
        .await
        .map_err(|err| QueueError::from_insert(err, new.team_id))?;
        sqlx::query(
            "INSERT INTO batch_predictions (id, team_id, model_id, version_id, model_name, \
                 version, alias, dataset_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(new.team_id)
        .bind(record.model_id)
        .bind(record.version_id)
        .bind(&record.model_name)
        .bind(record.version)
        .bind(&record.alias)
        .bind(record.dataset_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.batch_prediction_for_team(new.team_id, id)
            .await?
            .ok_or(QueueError::NotFound { job_id: id })
    }

    /// One batch prediction of one team (another team's answers `None`, like a missing one).
    pub async fn batch_prediction_for_team(
        &self,
        team_id: Uuid,
        id: Uuid,
    ) -> Result<Option<BatchPredictionJob>, QueueError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS}, {RECORD_COLUMNS} {WITH_JOB} WHERE b.id = $1 AND b.team_id = $2"
        ))
        .bind(id)
        .bind(team_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A team's batch predictions, newest first; `before` is the last id of the previous
    /// page. Fetches `limit` rows.
    pub async fn batch_predictions(
        &self,
        team_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<BatchPredictionJob>, QueueError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS}, {RECORD_COLUMNS} {WITH_JOB} \
             WHERE b.team_id = $1 AND ($2::uuid IS NULL OR b.id < $2) \
             ORDER BY b.id DESC LIMIT $3"
        ))
        .bind(team_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The record of the leased job, read by the worker when an attempt starts.
    pub async fn batch_record(&self, lease: &Lease) -> Result<BatchPrediction, QueueError> {
        sqlx::query_as(&format!("SELECT {RECORD_COLUMNS} FROM batch_predictions b WHERE b.id = $1"))
            .bind(lease.job.id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(QueueError::NotFound { job_id: lease.job.id })
    }

    /// Records the input's row count and the output's header, under the lease fence. A
    /// resumed attempt that reads a different count or header than the first one is refused
    /// by the caller, not here.
    pub async fn batch_started(
        &self,
        lease: &Lease,
        rows_total: u64,
        header: &str,
    ) -> Result<(), QueueError> {
        let done = sqlx::query(
            "UPDATE batch_predictions b SET rows_total = $3, header = $4, updated_at = now() \
             FROM jobs j WHERE b.id = j.id \
               AND j.id = $1 AND j.lease_epoch = $2 AND j.state = 'running'",
        )
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(rows_total as i64)
        .bind(header)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)
    }

    /// Records one stored output part and the bad rows it left out, under the lease fence,
    /// only if the part starts where the stored ones end (a retried write after a lost
    /// answer finds it already recorded and changes nothing: it answers `Ok`).
    pub async fn batch_part_stored(
        &self,
        lease: &Lease,
        part: &OutputPart,
        bad_rows: u64,
        samples: &[BadRow],
    ) -> Result<(), QueueError> {
        let done = sqlx::query(&format!(
            "UPDATE batch_predictions b SET \
                 parts = b.parts || jsonb_build_array($3::jsonb), \
                 rows_done = b.rows_done + $4, bad_rows = b.bad_rows + $5, \
                 bad_row_samples = (SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb) FROM \
                     (SELECT e, n FROM jsonb_array_elements(b.bad_row_samples || $6::jsonb) \
                      WITH ORDINALITY AS t(e, n) ORDER BY n LIMIT {MAX_BAD_ROW_SAMPLES}) s), \
                 updated_at = now() \
             FROM jobs j WHERE b.id = j.id AND b.rows_done = $7 \
               AND j.id = $1 AND j.lease_epoch = $2 AND j.state = 'running'"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(Json(part))
        .bind(part.rows as i64)
        .bind(bad_rows as i64)
        .bind(Json(samples))
        .bind(part.first_row as i64)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        // Either the lease is gone, or this part is already recorded (the answer to an
        // earlier try of this write was lost).
        let record = self.batch_record(lease).await?;
        let job = self.get(lease.job.id).await?;
        if job.lease_epoch == lease.epoch
            && job.state == kiln_types::JobState::Running
            && record.parts.iter().any(|p| p.index == part.index && p.sha256 == part.sha256)
        {
            return Ok(());
        }
        fenced(0, lease)
    }

    /// Marks the batch prediction's job succeeded (its record holds the output).
    pub async fn complete_batch_prediction(
        &self,
        lease: &Lease,
        ran_on_device: &str,
    ) -> Result<(), QueueError> {
        let done = sqlx::query(&crate::sql::COMPLETE)
            .bind(lease.job.id)
            .bind(lease.epoch)
            .bind(Option::<Json<kiln_types::JobResult>>::None)
            .bind(ran_on_device)
            .bind(Option::<Json<kiln_types::JobProgress>>::None)
            .execute(&self.pool)
            .await?;
        fenced(done.rows_affected(), lease)
    }
}
