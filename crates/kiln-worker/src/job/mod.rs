//! One claimed job, from its lease to the one final write that ends the attempt.
//!
//! Three tasks cooperate while a job runs:
//!
//! - **Training** runs on a blocking thread (`spawn_blocking`) through kiln-ml. Its observer
//!   ([`train::WorkerObserver`]) never waits on the async side: it publishes progress in
//!   atomics, sends epoch metrics, log lines and encoded checkpoints over an unbounded
//!   channel, and between batches reads the stop reason from [`JobControl`].
//! - **The heartbeat** renews the lease every `KILN_HEARTBEAT_SECONDS` with the progress.
//!   A cancel request sets the stop reason `Cancelled`; a fenced-out heartbeat sets
//!   `LeaseLost`. Transient database errors are retried with backoff while training goes
//!   on; if they outlast the lease by this process's own clock (a safety bound only), the
//!   job stops as if the lease were lost.
//! - **The uploader** drains the channel in batches: metrics and log lines in one statement
//!   each, checkpoints uploaded to the store then recorded in the job under the lease fence
//!   (only the newest of several queued checkpoints is uploaded).
//!
//! Every write about the job is fenced by the lease's epoch (kiln-queue). Once any of them,
//! or the heartbeat, answers `LeaseLost`, the job's tasks drop whatever they hold and write
//! nothing more. When training ends, the attempt ends with exactly one of `complete`,
//! `fail` (user error: at once; infrastructure: retryable), `cancelled` or `release`
//! (shutdown), each preceded by the stop-time checkpoint where there is one.
//!
//! Checkpoint cadence: kiln-ml checkpoints every `checkpoint_every_epochs` of the spec. The
//! time-based cadence (`KILN_CHECKPOINT_EVERY_SECONDS`) uses kiln-ml's stop-with-checkpoint:
//! the observer asks training to stop, the worker keeps the checkpoint and calls `train`
//! again from it. Resuming is exact (all randomness derives from seed and position), so the
//! result is the one an uninterrupted run gives.
//!
//! The modules, one role each:
//!
//! - [`lease`]: the job's shared context, fenced writes with retry, the heartbeat task;
//! - [`store`]: artifact-store reads and writes with the retry patience they deserve;
//! - [`fetch`]: the job's typed inputs (kiln-types' `JobInputs`) into local bytes: the
//!   dataset through the cache, the TorchScript module;
//! - [`checkpoint`]: storing checkpoints under the fence, loading the one to resume from;
//! - [`train`]: the training thread, its observer, the uploader of what it sends;
//! - [`score`]: a batch prediction's attempt (kind `batch_prediction`): the rows scored in
//!   parts on a blocking thread, each part stored and recorded under the fence;
//! - [`finish`]: the attempt's one final write, and the `JobResult` of a success.

mod checkpoint;
mod fetch;
mod finish;
mod lease;
mod score;
mod store;
mod train;

use std::sync::Arc;
use std::time::Duration;

use kiln_ml::{DeviceChoice, MlError};
use kiln_queue::{Lease, LogLine, Queue};
use kiln_store::ArtifactStore;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::control::JobControl;
use crate::inputs::DatasetCache;
use crate::shutdown::Shutdown;
use lease::JobCtx;

/// What every job of this worker shares.
#[derive(Debug)]
pub(crate) struct WorkerEnv {
    pub queue: Queue,
    pub store: Arc<dyn ArtifactStore>,
    pub cache: DatasetCache,
    pub worker_id: uuid::Uuid,
    pub device: DeviceChoice,
    pub device_name: &'static str,
    pub shutdown: Arc<Shutdown>,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub checkpoint_every: Duration,
    /// How long downloads and the bundle upload keep retrying a store that may recover.
    pub store_retry: Duration,
}

/// How an attempt ended, for the worker's own log and its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobEnd {
    Succeeded,
    Failed {
        retrying: bool,
    },
    Cancelled,
    /// A study's early-stopping rule stopped the trial.
    Pruned,
    Released,
    /// Another attempt owns the job; this one wrote nothing more.
    LeaseLost,
    /// The final write could not get through before the lease ran out; the rescuer will
    /// take the job back.
    Abandoned,
}

impl JobEnd {
    /// The outcome's name in spans and metrics (`job.outcome`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobEnd::Succeeded => "succeeded",
            JobEnd::Failed { retrying: true } => "failed_retrying",
            JobEnd::Failed { retrying: false } => "failed",
            JobEnd::Cancelled => "cancelled",
            JobEnd::Pruned => "pruned",
            JobEnd::Released => "released",
            JobEnd::LeaseLost => "lease_lost",
            JobEnd::Abandoned => "abandoned",
        }
    }
}

/// Why an attempt fails.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The job itself is wrong: fail at once, with a message for a data scientist.
    User(String),
    /// The platform failed: retry with backoff while attempts remain.
    Infra(String),
}

impl From<MlError> for Failure {
    fn from(err: MlError) -> Self {
        if err.is_user_error() {
            Failure::User(err.to_string())
        } else {
            Failure::Infra(err.to_string())
        }
    }
}

/// Messages from the training thread to the uploader.
#[derive(Debug)]
enum Event {
    Log(LogLine),
    /// An epoch's metrics; for a study's trial at a deciding epoch, `decide` answers,
    /// once they are stored, whether the trial stops there.
    Epoch {
        metrics: kiln_ml::EpochMetrics,
        line: String,
        decide: Option<std::sync::mpsc::SyncSender<bool>>,
    },
    Checkpoint {
        epoch: u32,
        bytes: Vec<u8>,
    },
}

fn info(message: impl Into<String>) -> LogLine {
    LogLine { level: "info", message: message.into() }
}

fn warn(message: impl Into<String>) -> LogLine {
    LogLine { level: "warn", message: message.into() }
}

fn error(message: impl Into<String>) -> LogLine {
    LogLine { level: "error", message: message.into() }
}

/// Runs one claimed job to the end of its attempt.
pub(crate) async fn run_job(env: &WorkerEnv, lease: Lease) -> JobEnd {
    let control = Arc::new(JobControl::new(env.shutdown.clone(), env.lease));
    let ctx = Arc::new(JobCtx {
        queue: env.queue.clone(),
        store: env.store.clone(),
        control,
        heartbeat: env.heartbeat,
        db_timeout: env.heartbeat.max(Duration::from_secs(2)).min(env.lease),
        store_retry: env.store_retry,
        lease,
    });
    // The job's tasks run under its span (`kiln.job`): their log lines carry its trace id,
    // and the checkpoint uploads nest under it.
    let heartbeat = tokio::spawn(lease::heartbeat_loop(ctx.clone()).in_current_span());
    let (events, rx) = mpsc::unbounded_channel();
    let uploader = tokio::spawn(train::upload_events(ctx.clone(), rx).in_current_span());
    let job = &ctx.lease.job;
    let _ = events.send(Event::Log(info(format!(
        "claimed by worker {} on {} (attempt {} of {})",
        env.worker_id, env.device_name, job.attempt, job.max_attempts
    ))));
    if job.kind == kiln_types::JobKind::BatchPrediction.as_str() {
        let scored = score::score(env, &ctx, &events).await;
        drop(events);
        let _ = uploader.await;
        let end = score::finish(&ctx, scored).await;
        heartbeat.abort();
        return end;
    }
    let trained = train::prepare_and_train(env, &ctx, events).await;
    // The training thread has ended and dropped its sender: the uploader drains what is
    // left, then ends, so epoch metrics land before the attempt's final write.
    let _ = uploader.await;
    let end = finish::finish(&ctx, trained).await;
    heartbeat.abort();
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_have_distinct_names() {
        let ends = [
            JobEnd::Succeeded,
            JobEnd::Failed { retrying: true },
            JobEnd::Failed { retrying: false },
            JobEnd::Cancelled,
            JobEnd::Pruned,
            JobEnd::Released,
            JobEnd::LeaseLost,
            JobEnd::Abandoned,
        ];
        let names: std::collections::BTreeSet<&str> = ends.iter().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), ends.len());
        assert_eq!(JobEnd::Failed { retrying: true }.as_str(), "failed_retrying");
    }

    #[test]
    fn user_errors_fail_at_once_and_infrastructure_errors_retry() {
        let user = MlError::Dataset("`x` is empty".into());
        assert_eq!(Failure::from(user), Failure::User("bad dataset: `x` is empty".into()));
        let infra = MlError::CudaUnavailable;
        assert!(matches!(Failure::from(infra), Failure::Infra(m) if m.contains("CUDA")));
    }
}
