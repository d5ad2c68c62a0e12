//! Checkpoints: stored content-addressed and recorded in the job under the lease fence
//! while training runs, and the last one loaded (and the job marked resumed) when an
//! attempt starts from it.

use kiln_ml::Checkpoint;
use kiln_queue::LogLine;
use kiln_store::ErrorKind;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::lease::{JobCtx, WriteError};
use super::store::Patience;
use super::{Event, Failure, info, warn};

impl JobCtx {
    /// Stores a checkpoint and records it in the job under the fence. Returns the log line
    /// saying what happened (nothing when the lease is lost).
    pub(super) async fn save_checkpoint(&self, epoch: u32, bytes: &[u8]) -> Option<LogLine> {
        if self.control.lease_lost() {
            return None;
        }
        let span = tracing::info_span!(
            "kiln.job.checkpoint.upload",
            job.id = %self.job_id(),
            epoch,
            size_bytes = bytes.len(),
            otel.status_code = tracing::field::Empty,
        );
        let line = self.save_checkpoint_in_span(epoch, bytes).instrument(span.clone()).await;
        if line.as_ref().is_some_and(|l| l.level != "info") {
            span.record("otel.status_code", "error");
        } else if line.is_some() {
            crate::metrics::checkpoint_stored(bytes.len());
        }
        line
    }

    async fn save_checkpoint_in_span(&self, epoch: u32, bytes: &[u8]) -> Option<LogLine> {
        let stored = match self.put_bytes(bytes, Patience::Brief).await {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(job = %self.job_id(), epoch, error = %err, "checkpoint not saved");
                return Some(warn(format!(
                    "checkpoint at epoch {epoch} could not be stored ({err}); training goes on"
                )));
            }
        };
        let key = stored.key.to_string();
        let epoch_i32 = i32::try_from(epoch).unwrap_or(i32::MAX);
        match self
            .write("record checkpoint", || self.queue.checkpoint(&self.lease, &key, epoch_i32))
            .await
        {
            Ok(()) => Some(info(format!(
                "checkpoint written at epoch {epoch} ({} bytes, {key})",
                stored.size
            ))),
            Err(WriteError::LeaseLost) => None,
            Err(WriteError::GaveUp(why)) => {
                Some(warn(format!("checkpoint at epoch {epoch} stored but not recorded: {why}")))
            }
        }
    }
}

/// Where the attempt starts: the job's last checkpoint (`None`: from scratch), with the
/// job marked resumed from it; [`LeaseGone`] when the lease was lost on the way.
pub(super) async fn resume(
    ctx: &JobCtx,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Result<Option<Checkpoint>, LeaseGone>, Failure> {
    let job = &ctx.lease.job;
    let resume = match &job.checkpoint_key {
        Some(key) => {
            let span = tracing::info_span!(
                "kiln.job.checkpoint.download",
                job.id = %job.id,
                epoch = job.checkpoint_epoch,
            );
            load_checkpoint(ctx, key, events).instrument(span).await?
        }
        None => None,
    };
    if let Some(checkpoint) = &resume {
        let epoch = i32::try_from(checkpoint.epoch()).unwrap_or(i32::MAX);
        match ctx.write("mark resumed", || ctx.queue.mark_resumed(&ctx.lease, epoch)).await {
            Ok(()) | Err(WriteError::GaveUp(_)) => {}
            Err(WriteError::LeaseLost) => return Ok(Err(LeaseGone { resume })),
        }
        let _ = events.send(Event::Log(info(resumed_line(checkpoint.epoch(), checkpoint.step()))));
    }
    Ok(Ok(resume))
}

/// The lease was lost before training started; the checkpoint it would have resumed from.
#[derive(Debug)]
pub(super) struct LeaseGone {
    pub(super) resume: Option<Checkpoint>,
}

fn resumed_line(epoch: u32, step: u64) -> String {
    format!("resumed from epoch {epoch} (step {step}) of the last checkpoint")
}

/// The job's last checkpoint, or `None` (with a warning) when it is gone or unreadable:
/// starting over beats failing every attempt on the same broken file.
async fn load_checkpoint(
    ctx: &JobCtx,
    key: &str,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Option<Checkpoint>, Failure> {
    let bytes = match ctx.get_bytes(key).await {
        Ok(bytes) => bytes,
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Integrity) => {
            let _ = events.send(Event::Log(warn(format!(
                "the last checkpoint {key} cannot be read ({err}); starting from epoch 0"
            ))));
            return Ok(None);
        }
        Err(err) => return Err(Failure::Infra(format!("reading the checkpoint {key}: {err}"))),
    };
    match Checkpoint::from_bytes(&bytes) {
        Ok(checkpoint) => Ok(Some(checkpoint)),
        Err(err) => {
            let _ = events.send(Event::Log(warn(format!(
                "the last checkpoint {key} is unreadable ({err}); starting from epoch 0"
            ))));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_line_names_epoch_and_step() {
        assert_eq!(resumed_line(3, 0), "resumed from epoch 3 (step 0) of the last checkpoint");
    }
}
