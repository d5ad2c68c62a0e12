//! The lease side of a job: its shared context, fenced writes retried through database
//! trouble, log and metric batches, and the heartbeat task that renews the lease with the
//! job's progress (kiln-types' `JobProgress`) and hears cancel requests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kiln_ml::StopReason;
use kiln_queue::{Lease, LogLine, MetricPoint, Queue, QueueError};
use kiln_store::ArtifactStore;

use crate::control::JobControl;

/// Why a fenced write did not happen.
#[derive(Debug)]
pub(super) enum WriteError {
    LeaseLost,
    GaveUp(String),
}

/// One job's context, shared by its tasks.
#[derive(Debug)]
pub(super) struct JobCtx {
    pub(super) queue: Queue,
    pub(super) store: Arc<dyn ArtifactStore>,
    pub(super) lease: Lease,
    pub(super) control: Arc<JobControl>,
    pub(super) heartbeat: Duration,
    /// Longest wait for one database call before it counts as failed.
    pub(super) db_timeout: Duration,
    /// How long a patient store operation retries (`KILN_STORE_RETRY_SECONDS`).
    pub(super) store_retry: Duration,
}

impl JobCtx {
    pub(super) fn job_id(&self) -> uuid::Uuid {
        self.lease.job.id
    }

    /// Runs a fenced write, retrying transient failures with backoff until it succeeds,
    /// the lease is lost, or (by this process's clock) the lease must have expired.
    pub(super) async fn write<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, WriteError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, QueueError>>,
    {
        let mut delay = Duration::from_millis(50);
        loop {
            if self.control.lease_lost() {
                return Err(WriteError::LeaseLost);
            }
            let problem = match tokio::time::timeout(self.db_timeout, op()).await {
                Ok(Ok(value)) => {
                    self.control.renewed();
                    return Ok(value);
                }
                Ok(Err(QueueError::LeaseLost { .. })) => {
                    self.lease_lost(what);
                    return Err(WriteError::LeaseLost);
                }
                Ok(Err(err)) if err.is_transient() => format!("{err:#}"),
                Ok(Err(err)) => return Err(WriteError::GaveUp(format!("{what}: {err}"))),
                Err(_) => format!("no answer within {:?}", self.db_timeout),
            };
            if self.control.lease_expired_locally() {
                tracing::error!(
                    job = %self.job_id(),
                    what,
                    problem,
                    "the database stayed unreachable for longer than the lease; stopping as if \
                     the lease were lost"
                );
                self.control.request_stop(StopReason::LeaseLost);
                return Err(WriteError::LeaseLost);
            }
            tracing::warn!(job = %self.job_id(), what, problem, "database write failed; retrying");
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(self.heartbeat.max(Duration::from_millis(200)));
        }
    }

    pub(super) fn lease_lost(&self, what: &str) {
        if !self.control.lease_lost() {
            tracing::warn!(
                job = %self.job_id(),
                epoch = self.lease.epoch,
                what,
                "lease lost: another attempt owns the job; stopping and writing nothing more"
            );
        }
        self.control.request_stop(StopReason::LeaseLost);
    }

    /// Appends log lines and metric points, metrics first. Empties both buffers.
    pub(super) async fn flush(&self, logs: &mut Vec<LogLine>, points: &mut Vec<MetricPoint>) {
        if !points.is_empty() {
            let batch = std::mem::take(points);
            if let Err(WriteError::GaveUp(why)) = self
                .write("append metrics", || self.queue.append_metrics(&self.lease, &batch))
                .await
            {
                tracing::warn!(job = %self.job_id(), why, "dropped a batch of metrics");
            }
        }
        if !logs.is_empty() {
            let batch = std::mem::take(logs);
            if let Err(WriteError::GaveUp(why)) =
                self.write("append logs", || self.queue.append_logs(&self.lease, &batch)).await
            {
                tracing::warn!(job = %self.job_id(), why, "dropped a batch of log lines");
            }
        }
    }

    pub(super) async fn log_now(&self, line: LogLine) {
        self.flush(&mut vec![line], &mut Vec::new()).await;
    }
}

/// Full jitter: a uniform delay in [d/2, d].
pub(super) fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.5..=1.0))
}

/// Renews the lease every heartbeat period until aborted or the lease is lost.
pub(super) async fn heartbeat_loop(ctx: Arc<JobCtx>) {
    let period = ctx.heartbeat;
    let mut delay = period;
    loop {
        tokio::time::sleep(delay).await;
        if ctx.control.lease_lost() {
            return;
        }
        let progress = ctx.control.progress();
        let answer = tokio::time::timeout(
            ctx.db_timeout,
            ctx.queue.heartbeat(&ctx.lease, progress.as_ref()),
        )
        .await;
        let problem = match answer {
            Ok(Ok(reply)) => {
                ctx.control.renewed();
                if reply.cancel_requested
                    && ctx.control.stop_reason() != Some(StopReason::Cancelled)
                {
                    tracing::info!(job = %ctx.job_id(), "cancel requested; stopping at the next batch");
                    ctx.control.request_stop(StopReason::Cancelled);
                }
                delay = period;
                continue;
            }
            Ok(Err(QueueError::LeaseLost { .. })) => {
                ctx.lease_lost("heartbeat");
                return;
            }
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => format!("no answer within {:?}", ctx.db_timeout),
        };
        if ctx.control.lease_expired_locally() {
            tracing::error!(
                job = %ctx.job_id(),
                problem,
                "could not renew the lease for longer than it lasts; stopping as if it were lost"
            );
            ctx.control.request_stop(StopReason::LeaseLost);
            return;
        }
        tracing::warn!(job = %ctx.job_id(), problem, "heartbeat failed; training goes on, retrying");
        // Retry sooner than a full period, backing off up to it.
        delay = if delay >= period { period / 4 } else { (delay * 2).min(period) };
        delay = jitter(delay.max(Duration::from_millis(20)));
    }
}
