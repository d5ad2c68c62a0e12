//! The end of an attempt: its one final write (`complete` with the job's [`JobResult`],
//! `fail`, `cancelled` or `release`), each preceded by what must land first (the model
//! bundle, the stop-time checkpoint, a closing log line).

use std::future::Future;

use kiln_ml::{FinalMetrics, StopReason};
use kiln_queue::QueueError;
use kiln_store::ObjectInfo;
use kiln_types::{DigestError, JobResult, ResultMetrics, Sha256Digest};
use tracing::Instrument as _;

use super::lease::{JobCtx, WriteError};
use super::store::Patience;
use super::train::{RunFacts, Trained};
use super::{Failure, JobEnd, error, info, warn};

/// Ends the attempt with its one final write.
pub(super) async fn finish(ctx: &JobCtx, trained: Result<(Trained, RunFacts), Failure>) -> JobEnd {
    if ctx.control.lease_lost() {
        tracing::warn!(job = %ctx.job_id(), "lease lost: the attempt ends without writing anything");
        return JobEnd::LeaseLost;
    }
    let (trained, facts) = match trained {
        Ok(done) => done,
        Err(failure) => return fail(ctx, failure).await,
    };
    match trained {
        Trained::Stopped { reason: StopReason::LeaseLost, .. } => {
            tracing::warn!(job = %ctx.job_id(), "lease lost: training stopped, nothing more written");
            JobEnd::LeaseLost
        }
        Trained::Stopped { reason, epoch, step, checkpoint } => {
            if let Some(bytes) = checkpoint
                && let Some(line) = ctx.save_checkpoint(epoch, &bytes).await
            {
                ctx.log_now(line).await;
            }
            if reason == StopReason::Cancelled {
                ctx.log_now(info(format!(
                    "cancelled at epoch {epoch}, step {step}; the last checkpoint is kept"
                )))
                .await;
                final_write(ctx, "cancelled", JobEnd::Cancelled, || ctx.queue.cancelled(&ctx.lease))
                    .await
            } else if reason == StopReason::Pruned {
                ctx.log_now(info(format!(
                    "pruned by the study's early-stopping rule after epoch {epoch}; the \
                     checkpoint is kept, so a promotion resumes from here"
                )))
                .await;
                final_write(ctx, "pruned", JobEnd::Pruned, || ctx.queue.pruned(&ctx.lease)).await
            } else {
                ctx.log_now(info(format!(
                    "released back to the queue at epoch {epoch}, step {step}: the worker is \
                     shutting down; the next attempt resumes from the last checkpoint"
                )))
                .await;
                final_write(ctx, "release", JobEnd::Released, || ctx.queue.release(&ctx.lease))
                    .await
            }
        }
        Trained::Completed { bundle, metrics, device, training_seconds } => {
            let upload = tracing::info_span!(
                "kiln.job.bundle.upload",
                job.id = %ctx.job_id(),
                size_bytes = bundle.len(),
            );
            let stored = match ctx.put_bytes(&bundle, Patience::Patient).instrument(upload).await {
                Ok(info) => info,
                Err(err) => {
                    return fail(ctx, Failure::Infra(format!("uploading the model bundle: {err}")))
                        .await;
                }
            };
            let result = match job_result(&stored, &metrics, &facts, &device, training_seconds) {
                Ok(result) => result,
                Err(err) => {
                    return fail(ctx, Failure::Infra(format!("the stored model bundle: {err}")))
                        .await;
                }
            };
            let mut summary = format!(
                "completed: {} epochs in {training_seconds:.2}s on {device}",
                metrics.epochs_run
            );
            for (name, value) in metrics.validation.series() {
                summary.push_str(&format!(", {name} {value:.4}"));
            }
            summary.push_str(&format!("; model bundle {}", stored.key));
            ctx.log_now(info(summary)).await;
            // Where training ended, which the last heartbeat may predate by up to a period.
            let progress = ctx.control.progress();
            final_write(ctx, "complete", JobEnd::Succeeded, || {
                ctx.queue.complete(&ctx.lease, &result, &device, progress.as_ref())
            })
            .await
        }
    }
}

/// The job's result: where the bundle is, what training measured, its lineage.
fn job_result(
    stored: &ObjectInfo,
    metrics: &FinalMetrics,
    facts: &RunFacts,
    device: &str,
    training_seconds: f64,
) -> Result<JobResult, DigestError> {
    Ok(JobResult {
        model_bundle: stored.key.to_string(),
        bundle_sha256: Sha256Digest::parse(stored.sha256.to_string())?,
        metrics: result_metrics(metrics),
        dataset_sha256: facts.dataset_sha256.clone(),
        device: device.to_owned(),
        training_seconds,
        epochs_completed: metrics.epochs_run,
        resumed_from_epoch: facts.resumed_from_epoch,
    })
}

/// The final metrics as the result records them: the validation series of the epoch whose
/// weights the model ships, and the confusion matrix for classification.
fn result_metrics(metrics: &FinalMetrics) -> ResultMetrics {
    let v = &metrics.validation;
    ResultMetrics {
        train_loss: v.train_loss,
        val_loss: v.val_loss,
        val_accuracy: v.val_accuracy,
        val_f1: v.val_f1,
        val_rmse: v.val_rmse,
        val_mae: v.val_mae,
        val_r2: v.val_r2,
        confusion_matrix: metrics.confusion_matrix.clone(),
        best_epoch: metrics.best_epoch,
        stopped_early: metrics.stopped_early,
    }
}

pub(super) async fn fail(ctx: &JobCtx, failure: Failure) -> JobEnd {
    let (message, retryable) = match failure {
        Failure::User(message) => (message, false),
        Failure::Infra(message) => (message, true),
    };
    ctx.log_now(if retryable {
        warn(format!(
            "attempt failed (an infrastructure error; retried while attempts remain): {message}"
        ))
    } else {
        error(format!("failed: {message}"))
    })
    .await;
    tracing::warn!(job = %ctx.job_id(), retryable, message, "attempt failed");
    // The message stays in the job's logs and row: it may quote the data.
    let span = tracing::info_span!("kiln.job.fail", job.id = %ctx.job_id(), retryable);
    match ctx
        .write("fail", || ctx.queue.fail(&ctx.lease, &message, retryable))
        .instrument(span)
        .await
    {
        Ok(outcome) => {
            JobEnd::Failed { retrying: matches!(outcome, kiln_queue::FailOutcome::Retrying { .. }) }
        }
        Err(WriteError::LeaseLost) => JobEnd::LeaseLost,
        Err(WriteError::GaveUp(why)) => {
            tracing::error!(job = %ctx.job_id(), why, "could not record the failure");
            JobEnd::Abandoned
        }
    }
}

pub(super) async fn final_write<F, Fut>(ctx: &JobCtx, what: &str, end: JobEnd, op: F) -> JobEnd
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), QueueError>>,
{
    // `kiln.job.complete`, `kiln.job.cancelled` or `kiln.job.release`.
    let span = tracing::info_span!(
        "kiln.job.final_write",
        otel.name = %format!("kiln.job.{what}"),
        job.id = %ctx.job_id(),
    );
    match ctx.write(what, op).instrument(span).await {
        Ok(()) => end,
        Err(WriteError::LeaseLost) => JobEnd::LeaseLost,
        Err(WriteError::GaveUp(why)) => {
            tracing::error!(job = %ctx.job_id(), why, "could not end the attempt");
            JobEnd::Abandoned
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_ml::EpochMetrics;
    use kiln_store::Key;
    use serde_json::json;

    use super::*;

    const DATA: &str = "9cc1c345c71bcc9b486b74cbf6063fa66f4bb5e0f603a4b3c3471ec2e5e8e355";

    fn stored() -> ObjectInfo {
        let sha = kiln_store::Sha256Digest::from_bytes([0xab; 32]);
        let key = Key::parse(format!("teams/t1/blobs/sha256/ab/{sha}")).unwrap();
        ObjectInfo { key, sha256: sha, size: 1234 }
    }

    fn facts(resumed: Option<u32>) -> RunFacts {
        RunFacts { dataset_sha256: Sha256Digest::parse(DATA).unwrap(), resumed_from_epoch: resumed }
    }

    /// The result is the JSON the worker wrote before it was typed (the `jobs.result` rows
    /// the API and the registry read back).
    #[test]
    fn a_classification_result_is_todays_row() {
        let metrics = FinalMetrics {
            epochs_run: 3,
            best_epoch: 3,
            stopped_early: false,
            validation: EpochMetrics {
                epoch: 3,
                learning_rate: 0.01,
                train_loss: 0.5,
                val_loss: 0.25,
                val_accuracy: Some(0.9),
                val_f1: Some(0.875),
                ..EpochMetrics::default()
            },
            confusion_matrix: Some(vec![vec![5, 1], vec![0, 4]]),
        };
        let result = job_result(&stored(), &metrics, &facts(None), "cpu", 1.5).unwrap();
        let sha = "ab".repeat(32);
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({
                "model_bundle": format!("teams/t1/blobs/sha256/ab/{sha}"),
                "bundle_sha256": sha,
                "metrics": {"train_loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.9,
                            "val_f1": 0.875, "confusion_matrix": [[5, 1], [0, 4]],
                            "best_epoch": 3, "stopped_early": false},
                "dataset_sha256": DATA,
                "device": "cpu",
                "training_seconds": 1.5,
                "epochs_completed": 3,
                "resumed_from_epoch": null,
            })
        );
    }

    #[test]
    fn a_regression_result_has_its_series_and_where_it_resumed() {
        let metrics = FinalMetrics {
            epochs_run: 6,
            best_epoch: 4,
            stopped_early: true,
            validation: EpochMetrics {
                epoch: 4,
                train_loss: 0.5,
                val_loss: 0.25,
                val_rmse: Some(0.5),
                val_mae: Some(0.375),
                val_r2: Some(0.75),
                ..EpochMetrics::default()
            },
            confusion_matrix: None,
        };
        let result = job_result(&stored(), &metrics, &facts(Some(2)), "cuda:0", 2.0).unwrap();
        let value = serde_json::to_value(&result).unwrap();
        assert_eq!(
            value["metrics"],
            json!({"train_loss": 0.5, "val_loss": 0.25, "val_rmse": 0.5, "val_mae": 0.375,
                   "val_r2": 0.75, "best_epoch": 4, "stopped_early": true})
        );
        assert_eq!(
            (value["resumed_from_epoch"].clone(), value["device"].clone()),
            (json!(2), json!("cuda:0"))
        );
        assert_eq!(result.metrics.series().len(), 5);
    }
}
