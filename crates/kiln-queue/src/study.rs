//! Studies on the queue: the `studies` and `study_trials` rows, and the statements the
//! study scheduler and the workers run against them.
//!
//! - A trial is proposed in one transaction with its job and its run, under the study's
//!   row lock ([`Queue::lock_study`], `FOR UPDATE SKIP LOCKED`): any number of API
//!   replicas may run the scheduler, each study is advanced by one of them at a time, and a
//!   crash between proposing and queuing cannot happen.
//! - A trial stopped early ends `pruned` under its lease fence ([`Queue::pruned`]), keeping
//!   its checkpoint; [`StudyLock::promote`] puts it back on the queue to resume from there.
//! - Workers read the other trials' values at an epoch ([`Queue::trial_values_at`]) to decide
//!   whether to stop.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kiln_types::study::{StudySpec, StudyState};
use kiln_types::{JobInputs, JobResult, JobState};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{Lease, NewJob, Queue, QueueError, parse_state};

/// A study as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    pub id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    pub spec: StudySpec,
    /// What every trial's job reads (the base spec's dataset).
    pub inputs: JobInputs,
    pub state: StudyState,
    pub reason: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const STUDY_COLUMNS: &str =
    "id, team_id, name, spec, inputs, state, reason, created_by, created_at, finished_at";

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for StudyRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        let state: String = row.try_get("state")?;
        Ok(StudyRow {
            id: row.try_get("id")?,
            team_id: row.try_get("team_id")?,
            name: row.try_get("name")?,
            spec: row.try_get::<Json<StudySpec>, _>("spec")?.0,
            inputs: row.try_get::<Json<JobInputs>, _>("inputs")?.0,
            state: StudyState::parse(&state).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "state".to_owned(),
                source: format!("unknown study state `{state}`").into(),
            })?,
            reason: row.try_get("reason")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// One trial with what its job says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    pub number: u32,
    pub job_id: Uuid,
    pub params: BTreeMap<String, Value>,
    pub state: JobState,
    pub promotions: u32,
    /// The job's result, once it succeeded.
    pub result: Option<JobResult>,
    /// Epochs trained (the last reported progress, or the objective series' last epoch).
    pub epochs: u32,
    /// The objective series so far: `(epoch, value)`, by epoch.
    pub series: Vec<(u32, f64)>,
}

impl TrialRow {
    /// The value at `epoch`, if the trial reported it.
    pub fn value_at(&self, epoch: u32) -> Option<f64> {
        self.series.iter().find(|(e, _)| *e == epoch).map(|(_, v)| *v)
    }

    /// The newest reported value.
    pub fn last_value(&self) -> Option<f64> {
        self.series.last().map(|(_, v)| *v)
    }
}

/// A study proposed for creation.
#[derive(Debug, Clone)]
pub struct NewStudy {
    pub team_id: Uuid,
    pub spec: StudySpec,
    pub inputs: JobInputs,
    pub created_by: Option<Uuid>,
}

/// A trial to queue: its number and values, and its training job.
#[derive(Debug, Clone)]
pub struct NewTrial {
    pub number: u32,
    pub params: BTreeMap<String, Value>,
    pub job: NewJob,
    /// The run's name and params (what run lists and comparisons show).
    pub run_name: String,
    pub run_params: Value,
}

const TRIALS: &str = "SELECT t.number, t.job_id, t.params, t.promotions, j.state, j.result, \
        coalesce((j.progress ->> 'epoch')::int, 0) AS epochs, \
        coalesce((SELECT array_agg(m.step ORDER BY m.step) FROM metrics m \
                  WHERE m.run_id = t.job_id AND m.name = $2), '{}') AS steps, \
        coalesce((SELECT array_agg(m.value ORDER BY m.step) FROM metrics m \
                  WHERE m.run_id = t.job_id AND m.name = $2), '{}') AS vals \
    FROM study_trials t JOIN jobs j ON j.id = t.job_id \
    WHERE t.study_id = $1 ORDER BY t.number";

fn trial_from_row(row: &sqlx::postgres::PgRow) -> Result<TrialRow, QueueError> {
    let state: String = row.try_get("state")?;
    let steps: Vec<i64> = row.try_get("steps")?;
    let values: Vec<f64> = row.try_get("vals")?;
    let number: i32 = row.try_get("number")?;
    let promotions: i32 = row.try_get("promotions")?;
    let epochs: i32 = row.try_get("epochs")?;
    let series: Vec<(u32, f64)> = steps.into_iter().map(|s| s.max(0) as u32).zip(values).collect();
    // A trial shorter than one heartbeat never reported its progress: its series says how
    // far it got.
    let epochs = (epochs.max(0) as u32).max(series.last().map_or(0, |(e, _)| *e));
    Ok(TrialRow {
        number: number.max(0) as u32,
        job_id: row.try_get("job_id")?,
        params: row.try_get::<Json<BTreeMap<String, Value>>, _>("params")?.0,
        state: parse_state(&state)?,
        promotions: promotions.max(0) as u32,
        result: row.try_get::<Option<Json<JobResult>>, _>("result")?.map(|j| j.0),
        epochs,
        series,
    })
}

impl Queue {
    /// Records a new study (state `running`) and wakes the schedulers: one of them proposes
    /// its first trials at once.
    pub async fn create_study(&self, new: &NewStudy) -> Result<StudyRow, QueueError> {
        sqlx::query_as(&format!(
            "WITH s AS (INSERT INTO studies (id, team_id, name, spec, inputs, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {STUDY_COLUMNS}) \
             SELECT s.*, pg_notify('{}', s.id::text) FROM s",
            crate::STUDY_CHANNEL
        ))
        .bind(Uuid::now_v7())
        .bind(new.team_id)
        .bind(&new.spec.name)
        .bind(Json(&new.spec))
        .bind(Json(&new.inputs))
        .bind(new.created_by)
        .fetch_one(&self.pool)
        .await
        .map_err(|err| QueueError::from_insert(err, new.team_id))
    }

    /// One study of one team (another team's answers `None`, like a missing one).
    pub async fn study(&self, team_id: Uuid, id: Uuid) -> Result<Option<StudyRow>, QueueError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {STUDY_COLUMNS} FROM studies WHERE id = $1 AND team_id = $2"
        ))
        .bind(id)
        .bind(team_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A team's studies, newest first; `before` is the last id of the previous page.
    pub async fn studies(
        &self,
        team_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<StudyRow>, QueueError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {STUDY_COLUMNS} FROM studies \
             WHERE team_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(team_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A study's trials in proposal order, each with its objective series.
    pub async fn trials(&self, study: &StudyRow) -> Result<Vec<TrialRow>, QueueError> {
        let rows = sqlx::query(TRIALS)
            .bind(study.id)
            .bind(&study.spec.objective.metric)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(trial_from_row).collect()
    }

    /// The studies the scheduler should look at.
    pub async fn running_studies(&self) -> Result<Vec<Uuid>, QueueError> {
        let rows: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM studies WHERE state = 'running' ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Takes the study's row lock, if it is running and nobody else holds it.
    pub async fn lock_study(&self, id: Uuid) -> Result<Option<StudyLock>, QueueError> {
        let mut tx = self.pool.begin().await?;
        let study: Option<StudyRow> = sqlx::query_as(&format!(
            "SELECT {STUDY_COLUMNS} FROM studies WHERE id = $1 AND state = 'running' \
             FOR UPDATE SKIP LOCKED"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(study.map(|study| StudyLock { tx, study }))
    }

    /// Stops a running study: it ends `stopped` and its queued and running trials are
    /// cancelled (a running one within a heartbeat). `None` when not found; the study as
    /// it is now otherwise (a finished one unchanged).
    pub async fn stop_study(
        &self,
        team_id: Uuid,
        id: Uuid,
        reason: &str,
    ) -> Result<Option<StudyRow>, QueueError> {
        let Some(study) = self.study(team_id, id).await? else { return Ok(None) };
        if study.state != StudyState::Running {
            return Ok(Some(study));
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE studies SET state = 'stopped', reason = $2, finished_at = now(), \
                 updated_at = now() WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        cancel_open_trials(&mut tx, id).await?;
        tx.commit().await?;
        self.study(team_id, id).await
    }

    /// The worker stopped a trial early: it ends `pruned`, keeping its checkpoint.
    pub async fn pruned(&self, lease: &Lease) -> Result<(), QueueError> {
        self.stopped_as(lease, JobState::Pruned).await
    }

    /// Every trial's value of `metric` at `epoch`, with its state (the trials that reported
    /// that epoch): what a worker judges its own trial against.
    pub async fn trial_values_at(
        &self,
        study_id: Uuid,
        metric: &str,
        epoch: u32,
    ) -> Result<Vec<(Uuid, JobState, f64)>, QueueError> {
        let rows: Vec<(Uuid, String, f64)> = sqlx::query_as(
            "SELECT t.job_id, j.state, m.value FROM study_trials t \
             JOIN jobs j ON j.id = t.job_id \
             JOIN metrics m ON m.run_id = t.job_id AND m.name = $2 AND m.step = $3 \
             WHERE t.study_id = $1",
        )
        .bind(study_id)
        .bind(metric)
        .bind(i64::from(epoch))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(id, state, v)| Ok((id, parse_state(&state)?, v))).collect()
    }

    /// A job's series `metric` up to and including `epoch`, by epoch.
    pub async fn series_until(
        &self,
        job_id: Uuid,
        metric: &str,
        epoch: u32,
    ) -> Result<Vec<(u32, f64)>, QueueError> {
        let rows: Vec<(i64, f64)> = sqlx::query_as(
            "SELECT step, value FROM metrics WHERE run_id = $1 AND name = $2 AND step <= $3 \
             ORDER BY step",
        )
        .bind(job_id)
        .bind(metric)
        .bind(i64::from(epoch))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(s, v)| (s.max(0) as u32, v)).collect())
    }
}

async fn cancel_open_trials(
    tx: &mut Transaction<'_, Postgres>,
    study_id: Uuid,
) -> Result<u64, QueueError> {
    let done = sqlx::query(
        "UPDATE jobs SET \
             state = CASE WHEN jobs.state = 'queued' THEN 'cancelled' ELSE jobs.state END, \
             finished_at = CASE WHEN jobs.state = 'queued' THEN now() ELSE jobs.finished_at END, \
             cancel_requested_at = coalesce(jobs.cancel_requested_at, now()), updated_at = now() \
         FROM study_trials t \
         WHERE t.study_id = $1 AND t.job_id = jobs.id AND jobs.state IN ('queued', 'running')",
    )
    .bind(study_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// A running study under its row lock: what one scheduler pass reads and changes, committed
/// together by [`StudyLock::commit`] (dropping it rolls back).
#[derive(Debug)]
pub struct StudyLock {
    tx: Transaction<'static, Postgres>,
    pub study: StudyRow,
}

impl StudyLock {
    /// The study's trials, read inside the lock.
    pub async fn trials(&mut self) -> Result<Vec<TrialRow>, QueueError> {
        let rows = sqlx::query(TRIALS)
            .bind(self.study.id)
            .bind(&self.study.spec.objective.metric)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(trial_from_row).collect()
    }

    /// Queues a trial: its job, its run and its row, in this transaction.
    pub async fn add_trial(&mut self, trial: &NewTrial) -> Result<Uuid, QueueError> {
        let id = Uuid::now_v7();
        let job = &trial.job;
        sqlx::query(
            "INSERT INTO jobs (id, team_id, kind, spec, priority, max_attempts, device, \
                 trace_context, created_by, inputs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(job.team_id)
        .bind(&job.kind)
        .bind(&job.spec)
        .bind(job.priority)
        .bind(job.max_attempts)
        .bind(job.device.as_str())
        .bind(&job.trace_context)
        .bind(job.created_by)
        .bind(Json(&job.inputs))
        .execute(&mut *self.tx)
        .await
        .map_err(|err| QueueError::from_insert(err, job.team_id))?;
        sqlx::query(
            "INSERT INTO runs (id, team_id, job_id, name, params, status, created_by) \
             VALUES ($1, $2, $1, $3, $4, 'running', $5)",
        )
        .bind(id)
        .bind(job.team_id)
        .bind(&trial.run_name)
        .bind(&trial.run_params)
        .bind(job.created_by)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO study_trials (study_id, number, job_id, params) VALUES ($1, $2, $3, $4)",
        )
        .bind(self.study.id)
        .bind(i32::try_from(trial.number).unwrap_or(i32::MAX))
        .bind(id)
        .bind(Json(&trial.params))
        .execute(&mut *self.tx)
        .await?;
        Ok(id)
    }

    /// Puts a pruned trial back on the queue with a fresh attempt budget: it resumes from
    /// its checkpoint. False when the job is not pruned (any more).
    pub async fn promote(&mut self, job_id: Uuid) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempt = 0, run_after = now(), error = NULL, \
                 finished_at = NULL, updated_at = now() \
             WHERE id = $1 AND state = 'pruned'",
        )
        .bind(job_id)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE study_trials SET promotions = promotions + 1 WHERE study_id = $1 AND job_id = $2",
        )
        .bind(self.study.id)
        .bind(job_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(true)
    }

    /// Ends the study; with `cancel_open`, its queued and running trials are cancelled.
    pub async fn finish(
        &mut self,
        state: StudyState,
        reason: &str,
        cancel_open: bool,
    ) -> Result<(), QueueError> {
        sqlx::query(
            "UPDATE studies SET state = $2, reason = $3, finished_at = now(), updated_at = now() \
             WHERE id = $1",
        )
        .bind(self.study.id)
        .bind(state.as_str())
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        if cancel_open {
            cancel_open_trials(&mut self.tx, self.study.id).await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), QueueError> {
        Ok(self.tx.commit().await?)
    }
}
