//! Kiln's job queue, in PostgreSQL: the heart of the platform.
//!
//! Training jobs last minutes to hours, so this queue chooses correctness over raw
//! throughput. Its rules:
//!
//! - **Leases with fencing.** [`Queue::claim`] hands out a [`Lease`] carrying the job's
//!   `lease_epoch`, bumped by every claim. Every later write by a worker (heartbeat,
//!   checkpoint, progress, logs, metrics, completion, failure) is a single statement whose
//!   `WHERE` clause checks that epoch and `state = 'running'`. Zero rows changed means the
//!   lease was lost: [`QueueError::LeaseLost`], and the worker must stop at once.
//! - **The database's clock.** Lease expiry, backoff and every "how old" question use the
//!   database's `now()`, never a worker's clock.
//! - **Short claims.** A claim is one short transaction (`FOR UPDATE SKIP LOCKED`) that
//!   commits before any training starts. Fairness: priority first, then the team with the
//!   fewest running jobs, then age; a per-team cap on running jobs is enforced under a lock
//!   on the team's row, so concurrent claimers can never exceed it.
//! - **Rescue.** [`Queue::rescue`] returns expired leases to the queue (the crash counts as
//!   an attempt, with backoff) or fails them when the budget is spent. Many processes may
//!   run it at once.
//! - **Wake-ups.** A trigger notifies `kiln_jobs` whenever a job becomes queued;
//!   [`Waiter`] listens and falls back to polling, so a lost notification costs at most one
//!   poll interval.

mod batch;
mod error;
mod job;
pub mod sql;
mod stats;
mod study;
mod waiter;
mod workers;

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_types::{DeviceRequirement, JobInputs, JobProgress, JobResult, JobState, WorkerDevice};
use sea_orm::DatabaseConnection;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use batch::{BatchPrediction, BatchPredictionJob, NewBatchPrediction};
pub use error::QueueError;
pub use job::{Job, JobAttempt, JobEvent};
pub use stats::{
    AliveWorkers, DurationHistogram, JobMetrics, QueueStats, RunningLease, StateCount,
};
pub use study::{NewStudy, NewTrial, StudyLock, StudyRow, TrialRow};
pub use waiter::{Waiter, Wake};
pub use workers::{WorkerInfo, WorkerRow};

/// The channel the `jobs_notify_queued` trigger notifies.
pub const NOTIFY_CHANNEL: &str = "kiln_jobs";
/// The channel the `jobs_notify_trial_ended` trigger notifies when a study's trial ends.
pub const STUDY_CHANNEL: &str = "kiln_studies";

/// Tunables of the queue. Defaults match OPERATIONS.md.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// Full-jitter exponential backoff: the first retry waits up to `backoff_base`, each
    /// further one up to twice as long, never more than `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How often an idle [`Waiter`] polls when no notification arrives.
    pub poll_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// A job to put on the queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub team_id: Uuid,
    pub kind: String,
    pub spec: Value,
    /// What the spec's ids resolved to (artifact keys, digests), for the worker.
    pub inputs: JobInputs,
    pub priority: i32,
    pub max_attempts: i32,
    pub device: DeviceRequirement,
    /// With a key, the same key and body again answer the existing job.
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the submitting request.
    pub trace_context: Option<String>,
    pub created_by: Option<Uuid>,
}

impl NewJob {
    /// A training job with default scheduling: priority 0, 3 attempts, any device.
    pub fn new(team_id: Uuid, spec: Value) -> Self {
        Self {
            team_id,
            kind: "train".to_owned(),
            spec,
            inputs: JobInputs::default(),
            priority: 0,
            max_attempts: 3,
            device: DeviceRequirement::Any,
            idempotency_key: None,
            trace_context: None,
            created_by: None,
        }
    }

    /// The hash that decides whether a repeated idempotency key carries the same request.
    fn request_hash(&self) -> String {
        let canonical = serde_json::json!({
            "kind": self.kind,
            "spec": self.spec,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "device": self.device.as_str(),
        });
        // serde_json's Map is ordered by key (no preserve_order feature), so equal bodies
        // serialise identically whatever order their fields arrived in.
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// What [`Queue::enqueue`] did.
#[derive(Debug, Clone)]
pub enum Enqueued {
    /// A new job was created.
    Created(Job),
    /// The idempotency key was seen before with the same request: this is that job.
    Existing(Job),
}

impl Enqueued {
    pub fn job(&self) -> &Job {
        match self {
            Enqueued::Created(job) | Enqueued::Existing(job) => job,
        }
    }
}

/// A claimer: the worker's id and the device it has.
#[derive(Debug, Clone, Copy)]
pub struct Claimer {
    pub worker_id: Uuid,
    pub device: WorkerDevice,
}

/// The right to work on one job for one attempt. Every write made with it is fenced by
/// `epoch`: once another claim has bumped the job's epoch, all of them fail.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: Job,
    pub epoch: i64,
    pub worker_id: Uuid,
}

impl Lease {
    pub fn job_id(&self) -> Uuid {
        self.job.id
    }
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Someone asked to cancel the job: stop at the next batch and call [`Queue::cancelled`].
    pub cancel_requested: bool,
    pub lease_expires_at: DateTime<Utc>,
}

/// What [`Queue::fail`] did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to the queue, to run again no earlier than `run_after`.
    Retrying { run_after: DateTime<Utc> },
    /// Failed for good: not retryable, or the attempt budget is spent.
    Failed,
}

/// What [`Queue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled,
    /// The job is running: its worker will see the request within one heartbeat.
    Requested,
    /// The job had already ended; nothing changed.
    AlreadyFinished(JobState),
}

/// One job that [`Queue::rescue`] took back from a dead worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub job_id: Uuid,
    pub new_state: JobState,
}

/// A log line a worker writes about its job.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// One metric point: series name, step (epoch for jobs) and value.
#[derive(Debug, Clone)]
pub struct MetricPoint {
    pub name: String,
    pub step: i64,
    pub value: f64,
}

/// The job queue. Cheap to clone: it shares the connection pool.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    config: QueueConfig,
}

use sql::{FENCE, JOB_COLUMNS};

impl Queue {
    /// A queue over the pool of an open sea-orm connection.
    pub fn new(db: &DatabaseConnection, config: QueueConfig) -> Self {
        Self { pool: db.get_postgres_connection_pool().clone(), config }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn lease_secs(&self) -> f64 {
        self.config.lease.as_secs_f64()
    }

    /// Puts a job on the queue. With an idempotency key, a repeat of the same request answers
    /// the job it created; the same key with another request is [`QueueError::IdempotencyConflict`].
    pub async fn enqueue(&self, new: NewJob) -> Result<Enqueued, QueueError> {
        let hash = new.idempotency_key.as_ref().map(|_| new.request_hash());
        let inserted: Option<Job> = sqlx::query_as(&format!(
            "INSERT INTO jobs (id, team_id, kind, spec, priority, max_attempts, device, \
                 idempotency_key, request_hash, trace_context, created_by, inputs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (team_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(new.team_id)
        .bind(&new.kind)
        .bind(&new.spec)
        .bind(new.priority)
        .bind(new.max_attempts)
        .bind(new.device.as_str())
        .bind(&new.idempotency_key)
        .bind(&hash)
        .bind(&new.trace_context)
        .bind(new.created_by)
        .bind(Json(&new.inputs))
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| QueueError::from_insert(err, new.team_id))?;
        if let Some(job) = inserted {
            return Ok(Enqueued::Created(job));
        }
        // The key exists: same request → same job; otherwise a conflict.
        let key = new.idempotency_key.expect("ON CONFLICT only fires with a key");
        let (existing_hash, job): (Option<String>, Job) = {
            let row: Option<(Option<String>, Uuid)> = sqlx::query_as(
                "SELECT request_hash, id FROM jobs WHERE team_id = $1 AND idempotency_key = $2",
            )
            .bind(new.team_id)
            .bind(&key)
            .fetch_optional(&self.pool)
            .await?;
            let (existing_hash, id) = row.ok_or(QueueError::NotFound { job_id: Uuid::nil() })?;
            (existing_hash, self.get(id).await?)
        };
        if existing_hash == hash {
            Ok(Enqueued::Existing(job))
        } else {
            Err(QueueError::IdempotencyConflict { key, job_id: job.id })
        }
    }

    /// Enqueues many jobs in one statement (no idempotency keys). For bulk submission and
    /// benchmarks; returns the new ids in input order.
    pub async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Uuid>, QueueError> {
        let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
        let teams: Vec<Uuid> = jobs.iter().map(|j| j.team_id).collect();
        let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
        let specs: Vec<Value> = jobs.iter().map(|j| j.spec.clone()).collect();
        let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
        let attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
        let devices: Vec<&str> = jobs.iter().map(|j| j.device.as_str()).collect();
        let inputs: Vec<Value> = jobs
            .iter()
            .map(|j| serde_json::to_value(&j.inputs).expect("job inputs always serialise"))
            .collect();
        sqlx::query(
            "INSERT INTO jobs (id, team_id, kind, spec, priority, max_attempts, device, inputs) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::int[], \
                                  $6::int[], $7::text[], $8::jsonb[])",
        )
        .bind(&ids)
        .bind(&teams)
        .bind(&kinds)
        .bind(&specs)
        .bind(&priorities)
        .bind(&attempts)
        .bind(&devices)
        .bind(&inputs)
        .execute(&self.pool)
        .await
        .map_err(|err| QueueError::from_insert(err, teams.first().copied().unwrap_or_default()))?;
        Ok(ids)
    }

    /// One job by id.
    pub async fn get(&self, job_id: Uuid) -> Result<Job, QueueError> {
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(QueueError::NotFound { job_id })
    }

    /// One job of one team: another team's job answers `NotFound`, like a missing one.
    pub async fn get_for_team(&self, team_id: Uuid, job_id: Uuid) -> Result<Job, QueueError> {
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND team_id = $2"))
            .bind(job_id)
            .bind(team_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(QueueError::NotFound { job_id })
    }

    /// A team's jobs, newest first, optionally in one state; `before` is the last id of the
    /// previous page. Fetches `limit` rows.
    pub async fn list(
        &self,
        team_id: Uuid,
        state: Option<JobState>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Job>, QueueError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE team_id = $1 \
               AND ($2::text IS NULL OR state = $2) AND ($3::uuid IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(team_id)
        .bind(state.map(JobState::as_str))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A job's log lines in order, after line `after` (a cursor), at most `limit`.
    pub async fn logs(
        &self,
        job_id: Uuid,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JobEvent>, QueueError> {
        Ok(sqlx::query_as(
            "SELECT id, ts, level, message, attempt FROM job_events \
             WHERE job_id = $1 AND id > coalesce($2, 0) ORDER BY id LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every attempt of a job, oldest first.
    pub async fn attempts(&self, job_id: Uuid) -> Result<Vec<JobAttempt>, QueueError> {
        Ok(sqlx::query_as(
            "SELECT job_id, lease_epoch, attempt, worker_id, started_at, ended_at, outcome, error \
             FROM job_attempts WHERE job_id = $1 ORDER BY lease_epoch",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims the next job this worker may run, or `None` when there is none.
    ///
    /// Order: highest priority first; among equal priorities the team with the fewest
    /// running jobs (so a team with a thousand queued jobs does not starve a team with one);
    /// then the oldest job. Teams at their running-job cap are skipped. The transaction
    /// commits before this returns.
    pub async fn claim(&self, claimer: Claimer) -> Result<Option<Lease>, QueueError> {
        let devices: Vec<&str> = claimer.device.accepts().iter().map(|d| d.as_str()).collect();
        let mut skipped_teams: Vec<Uuid> = Vec::new();
        loop {
            let mut tx = self.pool.begin().await?;
            // 1. Choose a team: the best head-of-line job of each team, without locks.
            let team: Option<(Uuid,)> = sqlx::query_as(sql::CHOOSE_TEAM)
                .bind(&devices)
                .bind(&skipped_teams)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((team_id,)) = team else {
                tx.commit().await?;
                return Ok(None);
            };
            // 2. Serialise claims within the team to enforce its cap exactly. NO KEY UPDATE
            //    does not block inserts of new jobs (their foreign key takes KEY SHARE).
            let (cap,): (i32,) =
                sqlx::query_as(sql::LOCK_TEAM).bind(team_id).fetch_one(&mut *tx).await?;
            // A new statement sees every claim committed while we waited for the lock.
            let (running,): (i64,) =
                sqlx::query_as(sql::COUNT_RUNNING).bind(team_id).fetch_one(&mut *tx).await?;
            if running >= i64::from(cap) {
                tx.rollback().await?;
                skipped_teams.push(team_id);
                continue;
            }
            // 3. Take the team's best job that nobody else is taking.
            let claimed = self.claim_in_team(&mut tx, team_id, &devices, claimer.worker_id).await?;
            match claimed {
                Some(job) => {
                    tx.commit().await?;
                    let epoch = job.lease_epoch;
                    return Ok(Some(Lease { job, epoch, worker_id: claimer.worker_id }));
                }
                None => {
                    // Others took the team's claimable jobs between steps 1 and 3.
                    tx.rollback().await?;
                    skipped_teams.push(team_id);
                }
            }
        }
    }

    async fn claim_in_team(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        team_id: Uuid,
        devices: &[&str],
        worker_id: Uuid,
    ) -> Result<Option<Job>, QueueError> {
        let job: Option<Job> = sqlx::query_as(&sql::CLAIM_IN_TEAM)
            .bind(team_id)
            .bind(devices)
            .bind(worker_id)
            .bind(self.lease_secs())
            .fetch_optional(&mut **tx)
            .await?;
        Ok(job)
    }

    /// Extends the lease and records progress. [`QueueError::LeaseLost`] means stop now.
    pub async fn heartbeat(
        &self,
        lease: &Lease,
        progress: Option<&JobProgress>,
    ) -> Result<HeartbeatReply, QueueError> {
        let row: Option<(bool, DateTime<Utc>)> = sqlx::query_as(&format!(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3), \
                 heartbeat_at = now(), progress = coalesce($4, progress), updated_at = now() \
             WHERE {FENCE} \
             RETURNING cancel_requested_at IS NOT NULL, lease_expires_at"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(self.lease_secs())
        .bind(progress.map(Json))
        .fetch_optional(&self.pool)
        .await?;
        let (cancel_requested, lease_expires_at) = row.ok_or_else(|| lease_lost(lease))?;
        Ok(HeartbeatReply { cancel_requested, lease_expires_at })
    }

    /// Records that this attempt resumed from a checkpoint taken at `epoch`.
    pub async fn mark_resumed(&self, lease: &Lease, epoch: i32) -> Result<(), QueueError> {
        self.fenced_update(lease, "resumed_from_epoch = $3", epoch).await
    }

    /// Records the job's newest checkpoint. The next attempt resumes from it.
    pub async fn checkpoint(&self, lease: &Lease, key: &str, epoch: i32) -> Result<(), QueueError> {
        let done = sqlx::query(&format!(
            "UPDATE jobs SET checkpoint_key = $3, checkpoint_epoch = $4, updated_at = now() \
             WHERE {FENCE}"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(key)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)
    }

    async fn fenced_update<T>(&self, lease: &Lease, set: &str, value: T) -> Result<(), QueueError>
    where
        T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        let done = sqlx::query(&format!("UPDATE jobs SET {set}, updated_at = now() WHERE {FENCE}"))
            .bind(lease.job.id)
            .bind(lease.epoch)
            .bind(value)
            .execute(&self.pool)
            .await?;
        fenced(done.rows_affected(), lease)
    }

    /// Appends log lines to the job, only while the lease holds.
    pub async fn append_logs(&self, lease: &Lease, lines: &[LogLine]) -> Result<(), QueueError> {
        if lines.is_empty() {
            return Ok(());
        }
        let levels: Vec<&str> = lines.iter().map(|l| l.level).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        let done = sqlx::query(&format!(
            "WITH fence AS (SELECT id, attempt FROM jobs WHERE {FENCE}) \
             INSERT INTO job_events (job_id, attempt, level, message) \
             SELECT fence.id, fence.attempt, l.level, l.message \
             FROM fence, unnest($3::text[], $4::text[]) WITH ORDINALITY AS l(level, message, n) \
             ORDER BY l.n"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(&levels)
        .bind(&messages)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)
    }

    /// Writes metric points to the job's run, only while the lease holds. Idempotent: a
    /// point for a (name, step) already written replaces it, so an attempt that resumed
    /// from a checkpoint and re-runs its epochs leaves one point per epoch, the latest.
    pub async fn append_metrics(
        &self,
        lease: &Lease,
        points: &[MetricPoint],
    ) -> Result<(), QueueError> {
        if points.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        let steps: Vec<i64> = points.iter().map(|p| p.step).collect();
        let values: Vec<f64> = points.iter().map(|p| p.value).collect();
        let done = sqlx::query(&format!(
            "WITH fence AS (SELECT id FROM jobs WHERE {FENCE}) \
             INSERT INTO metrics (run_id, name, step, value) \
             SELECT DISTINCT ON (p.name, p.step) fence.id, p.name, p.step, p.value \
             FROM fence, unnest($3::text[], $4::bigint[], $5::float8[]) \
                 WITH ORDINALITY AS p(name, step, value, n) \
             ORDER BY p.name, p.step, p.n DESC \
             ON CONFLICT (run_id, name, step) DO UPDATE SET value = excluded.value, ts = now()"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(&names)
        .bind(&steps)
        .bind(&values)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)
    }

    /// Marks the job succeeded with its result and its final progress (the position training
    /// ended at, which the last heartbeat may predate; `None` keeps the last reported one).
    pub async fn complete(
        &self,
        lease: &Lease,
        result: &JobResult,
        ran_on_device: &str,
        progress: Option<&JobProgress>,
    ) -> Result<(), QueueError> {
        let done = sqlx::query(&sql::COMPLETE)
            .bind(lease.job.id)
            .bind(lease.epoch)
            .bind(Json(result))
            .bind(ran_on_device)
            .bind(progress.map(Json))
            .execute(&self.pool)
            .await?;
        fenced(done.rows_affected(), lease)
    }

    /// Ends this attempt with an error. A retryable error goes back to the queue with
    /// full-jitter exponential backoff while the attempt budget lasts; anything else fails
    /// the job at once.
    pub async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError> {
        let backoff = backoff_sql("$5", "$6");
        let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(&format!(
            "WITH done AS ( \
                 UPDATE jobs SET \
                     state = CASE WHEN $3 AND attempt < max_attempts THEN 'queued' ELSE 'failed' END, \
                     run_after = CASE WHEN $3 AND attempt < max_attempts \
                         THEN now() + {backoff} ELSE run_after END, \
                     finished_at = CASE WHEN $3 AND attempt < max_attempts THEN NULL ELSE now() END, \
                     error = $4, lease_owner = NULL, lease_expires_at = NULL, updated_at = now() \
                 WHERE {FENCE} RETURNING id, lease_epoch, state, run_after), \
             attempt AS ( \
                 UPDATE job_attempts a SET ended_at = now(), error = $4, \
                     outcome = CASE WHEN done.state = 'queued' THEN 'retrying' ELSE 'failed' END \
                 FROM done WHERE a.job_id = done.id AND a.lease_epoch = done.lease_epoch) \
             SELECT state, run_after FROM done"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(retryable)
        .bind(error)
        .bind(self.config.backoff_base.as_secs_f64())
        .bind(self.config.backoff_cap.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        let (state, run_after) = row.ok_or_else(|| lease_lost(lease))?;
        Ok(if state == "queued" {
            FailOutcome::Retrying { run_after }
        } else {
            FailOutcome::Failed
        })
    }

    /// Graceful shutdown: puts the job back at once without counting the attempt.
    pub async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let done = sqlx::query(&format!(
            "WITH done AS ( \
                 UPDATE jobs SET state = 'queued', attempt = attempt - 1, run_after = now(), \
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = now() \
                 WHERE {FENCE} RETURNING id, lease_epoch) \
             UPDATE job_attempts a SET ended_at = now(), outcome = 'released' \
             FROM done WHERE a.job_id = done.id AND a.lease_epoch = done.lease_epoch \
             RETURNING a.job_id"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)
    }

    /// The worker saw a cancel request and stopped: the job ends `cancelled`, keeping its
    /// last checkpoint.
    pub async fn cancelled(&self, lease: &Lease) -> Result<(), QueueError> {
        self.stopped_as(lease, JobState::Cancelled).await
    }

    /// Ends the leased job in `state` (`cancelled` or `pruned`), its attempt with the same
    /// outcome, keeping its checkpoint; fenced by the lease.
    pub(crate) async fn stopped_as(
        &self,
        lease: &Lease,
        state: JobState,
    ) -> Result<(), QueueError> {
        let done = sqlx::query(&format!(
            "WITH done AS ( \
                 UPDATE jobs SET state = $3, lease_owner = NULL, lease_expires_at = NULL, \
                     finished_at = now(), updated_at = now() \
                 WHERE {FENCE} RETURNING id, lease_epoch) \
             UPDATE job_attempts a SET ended_at = now(), outcome = $3 \
             FROM done WHERE a.job_id = done.id AND a.lease_epoch = done.lease_epoch \
             RETURNING a.job_id"
        ))
        .bind(lease.job.id)
        .bind(lease.epoch)
        .bind(state.as_str())
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)
    }

    /// Cancels a job: a queued job at once, a running one by request (its worker stops
    /// within one heartbeat or one batch).
    pub async fn cancel(&self, job_id: Uuid) -> Result<CancelOutcome, QueueError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "WITH old AS (SELECT id, state FROM jobs WHERE id = $1 FOR UPDATE) \
             UPDATE jobs SET \
                 state = CASE WHEN old.state = 'queued' THEN 'cancelled' ELSE jobs.state END, \
                 finished_at = CASE WHEN old.state = 'queued' THEN now() ELSE jobs.finished_at END, \
                 cancel_requested_at = CASE WHEN old.state IN ('queued', 'running') \
                     THEN coalesce(jobs.cancel_requested_at, now()) \
                     ELSE jobs.cancel_requested_at END, \
                 updated_at = now() \
             FROM old WHERE jobs.id = old.id \
             RETURNING old.state, jobs.state",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        let (old, _new) = row.ok_or(QueueError::NotFound { job_id })?;
        let old = parse_state(&old)?;
        Ok(match old {
            JobState::Queued => CancelOutcome::Cancelled,
            JobState::Running => CancelOutcome::Requested,
            finished => CancelOutcome::AlreadyFinished(finished),
        })
    }

    /// Puts a failed or cancelled job back on the queue with a fresh attempt budget. It
    /// resumes from its last checkpoint.
    pub async fn retry(&self, job_id: Uuid) -> Result<Job, QueueError> {
        let job: Option<Job> = sqlx::query_as(&format!(
            "UPDATE jobs SET state = 'queued', attempt = 0, run_after = now(), error = NULL, \
                 cancel_requested_at = NULL, finished_at = NULL, updated_at = now() \
             WHERE id = $1 AND state IN ('failed', 'cancelled') RETURNING {JOB_COLUMNS}"
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        match job {
            Some(job) => Ok(job),
            None => {
                let current = self.get(job_id).await?;
                Err(QueueError::InvalidState { job_id, state: current.state, action: "retry" })
            }
        }
    }

    /// Takes back every expired lease: the job returns to the queue with backoff (the crash
    /// counts as an attempt), fails when its budget is spent, or ends cancelled when cancel
    /// was requested. Safe to run from many processes at once: each expired job is rescued
    /// by exactly one of them.
    pub async fn rescue(&self) -> Result<Vec<Rescued>, QueueError> {
        let backoff = backoff_sql("$1", "$2");
        let rows: Vec<(Uuid, String)> = sqlx::query_as(&format!(
            "WITH expired AS ( \
                 SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < now() \
                 FOR UPDATE SKIP LOCKED), \
             rescued AS ( \
                 UPDATE jobs SET \
                     state = CASE WHEN jobs.cancel_requested_at IS NOT NULL THEN 'cancelled' \
                                  WHEN jobs.attempt >= jobs.max_attempts THEN 'failed' \
                                  ELSE 'queued' END, \
                     run_after = CASE WHEN jobs.cancel_requested_at IS NULL \
                                       AND jobs.attempt < jobs.max_attempts \
                                  THEN now() + {backoff} ELSE jobs.run_after END, \
                     finished_at = CASE WHEN jobs.cancel_requested_at IS NOT NULL \
                                         OR jobs.attempt >= jobs.max_attempts \
                                    THEN now() ELSE NULL END, \
                     error = CASE WHEN jobs.cancel_requested_at IS NOT NULL THEN jobs.error \
                                  ELSE format('worker %s stopped renewing its lease during attempt %s of %s', \
                                              jobs.lease_owner, jobs.attempt, jobs.max_attempts) END, \
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = now() \
                 FROM expired WHERE jobs.id = expired.id \
                 RETURNING jobs.id, jobs.lease_epoch, jobs.state), \
             attempt AS ( \
                 UPDATE job_attempts a SET ended_at = now(), outcome = 'lease_expired', \
                     error = 'lease expired' \
                 FROM rescued WHERE a.job_id = rescued.id AND a.lease_epoch = rescued.lease_epoch) \
             SELECT id, state FROM rescued"
        ))
        .bind(self.config.backoff_base.as_secs_f64())
        .bind(self.config.backoff_cap.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(job_id, state)| Ok(Rescued { job_id, new_state: parse_state(&state)? }))
            .collect()
    }

    /// A waiter that sleeps until work may be available (see [`Waiter`]).
    pub async fn waiter(&self) -> Result<Waiter, QueueError> {
        Waiter::listen(&self.pool, self.config.poll_interval).await
    }

    /// A waiter woken when a study's trial ends (or after `poll`): the study scheduler's.
    pub async fn study_waiter(&self, poll: Duration) -> Result<Waiter, QueueError> {
        Waiter::listen_on(&self.pool, STUDY_CHANNEL, poll).await
    }

    /// Registers (or re-registers) a worker process.
    pub async fn register_worker(&self, info: &WorkerInfo) -> Result<(), QueueError> {
        workers::register(&self.pool, info).await
    }

    /// The worker is alive and runs `current_job` (if any).
    pub async fn worker_heartbeat(
        &self,
        worker_id: Uuid,
        current_job: Option<Uuid>,
    ) -> Result<(), QueueError> {
        workers::heartbeat(&self.pool, worker_id, current_job).await
    }

    /// The worker stopped cleanly.
    pub async fn worker_stopped(&self, worker_id: Uuid) -> Result<(), QueueError> {
        workers::stopped(&self.pool, worker_id).await
    }

    /// Live workers (and those stopped within the hour).
    pub async fn workers(&self) -> Result<Vec<WorkerRow>, QueueError> {
        workers::list(&self.pool).await
    }

    /// Counts per state and team, the oldest queued job's age, and the running leases.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        stats::collect(&self.pool).await
    }

    /// Job durations and queue waits as cumulative bucket counts over `bounds` (seconds,
    /// ascending), by team (and outcome), and the workers heard from within
    /// `alive_seconds`, by device: what the API's `/metrics` exposes.
    pub async fn job_metrics(
        &self,
        bounds: &[f64],
        alive_seconds: f64,
    ) -> Result<JobMetrics, QueueError> {
        stats::collect_job_metrics(&self.pool, bounds, alive_seconds).await
    }
}

/// Full-jitter exponential backoff in SQL, from the database clock: a uniform random
/// delay in `[0, min(cap, base * 2^(attempt-1))]` seconds, where `attempt` is the attempt
/// that just ended and `base`/`cap` name the statement's parameters holding seconds.
fn backoff_sql(base: &str, cap: &str) -> String {
    format!(
        "make_interval(secs => random() * least({cap}::float8, \
         {base}::float8 * power(2, greatest(jobs.attempt - 1, 0))))"
    )
}

fn lease_lost(lease: &Lease) -> QueueError {
    QueueError::LeaseLost { job_id: lease.job.id, epoch: lease.epoch }
}

fn fenced(rows: u64, lease: &Lease) -> Result<(), QueueError> {
    if rows == 0 { Err(lease_lost(lease)) } else { Ok(()) }
}

fn parse_state(s: &str) -> Result<JobState, QueueError> {
    s.parse().map_err(|err: kiln_types::ParseEnumError| QueueError::Corrupt(err.to_string()))
}
