//! A batch prediction's attempt: the input and the model fetched, the rows scored in parts
//! on a blocking thread (kiln-ml's `ScoringInput`), and each part stored then recorded
//! under the lease fence before the next is recorded, so a crashed attempt's successor
//! starts at the first row no recorded part covers. Bad rows are counted and the first 100
//! kept with their errors; they never fail the job.

use std::sync::Arc;
use std::time::Instant;

use kiln_ml::{ModelBundle, ScoredPart, ScoringInput, StopReason};
use kiln_queue::BatchPrediction;
use kiln_types::batch::MAX_BAD_ROW_SAMPLES;
use kiln_types::{BatchPredictionSpec, OutputPart, Sha256Digest};
use tokio::sync::mpsc;

use super::lease::{JobCtx, WriteError};
use super::store::Patience;
use super::{Event, Failure, JobEnd, WorkerEnv, fetch, finish, info};

use crate::control::JobControl;

/// Messages from the scoring thread.
enum Scoring {
    Opened { rows: u64, header: String, device: String },
    Part { index: u32, first_row: u64, part: ScoredPart },
    Stopped(StopReason),
    Done,
}

/// Ends the attempt of a batch prediction with its one final write, once [`score`] is
/// done and its log lines are written.
pub(super) async fn finish(ctx: &JobCtx, outcome: Result<Outcome, Failure>) -> JobEnd {
    if ctx.control.lease_lost() {
        tracing::warn!(job = %ctx.job_id(), "lease lost: the attempt ends without writing anything");
        return JobEnd::LeaseLost;
    }
    match outcome {
        Ok(Outcome::Done { device }) => {
            finish::final_write(ctx, "complete", JobEnd::Succeeded, || {
                ctx.queue.complete_batch_prediction(&ctx.lease, &device)
            })
            .await
        }
        Ok(Outcome::Stopped(StopReason::LeaseLost)) => JobEnd::LeaseLost,
        Ok(Outcome::Stopped(StopReason::Cancelled | StopReason::Pruned)) => {
            ctx.log_now(info("cancelled; the stored parts are kept")).await;
            finish::final_write(ctx, "cancelled", JobEnd::Cancelled, || {
                ctx.queue.cancelled(&ctx.lease)
            })
            .await
        }
        Ok(Outcome::Stopped(StopReason::Shutdown)) => {
            ctx.log_now(info(
                "released back to the queue: the worker is shutting down; the next attempt \
                 resumes after the last stored part",
            ))
            .await;
            finish::final_write(ctx, "release", JobEnd::Released, || ctx.queue.release(&ctx.lease))
                .await
        }
        Err(failure) => finish::fail(ctx, failure).await,
    }
}

/// How scoring ended.
pub(super) enum Outcome {
    Done { device: String },
    Stopped(StopReason),
}

fn lost(err: WriteError) -> Failure {
    match err {
        // The caller sees `lease_lost()` and writes nothing.
        WriteError::LeaseLost => Failure::Infra("lease lost".into()),
        WriteError::GaveUp(why) => Failure::Infra(why),
    }
}

/// Scores the job's rows from where the stored parts end, storing and recording each part.
pub(super) async fn score(
    env: &WorkerEnv,
    ctx: &JobCtx,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Outcome, Failure> {
    let job = &ctx.lease.job;
    let spec: BatchPredictionSpec = serde_json::from_value(job.spec.clone())
        .map_err(|e| Failure::User(format!("the batch prediction's spec is not valid: {e}")))?;
    let model = job.inputs.model.clone().ok_or_else(|| {
        Failure::User("the job names no model version in its inputs; submit it again".into())
    })?;
    let dataset = job.inputs.dataset.as_ref().ok_or_else(|| {
        Failure::User("the job has no dataset in its inputs; submit it again".into())
    })?;
    let record: BatchPrediction = ctx
        .write("read the batch record", || ctx.queue.batch_record(&ctx.lease))
        .await
        .map_err(lost)?;
    let needed = fetch::Needed { dataset, script: None };
    let fetched = fetch::fetch(env, ctx, &needed, events).await?;
    let bundle = ctx.get_bytes(&model.bundle_key).await.map_err(|err| {
        fetch::input_failure(&format!("the model bundle {}", model.bundle_key), err)
    })?;
    let digest = kiln_ml::sha256_hex(&bundle);
    if digest != model.bundle_sha256.as_str() {
        return Err(Failure::Infra(format!(
            "the model bundle {} has sha256 {digest}, not the registered {}",
            model.bundle_key, model.bundle_sha256
        )));
    }
    if let Some(reason) = ctx.control.stop_reason() {
        return Ok(Outcome::Stopped(reason));
    }
    let start = record.rows_done;
    let first_index = record.parts.len() as u32;
    let rows_per_part = spec.rows_per_part();
    let (tx, mut rx) = mpsc::channel::<Result<Scoring, Failure>>(2);
    let control = ctx.control.clone();
    let device = env.device;
    let dataset_path = fetched.dataset_path.clone();
    let id_column = spec.id_column.clone();
    let thread = tokio::task::spawn_blocking(move || {
        let send = |m| tx.blocking_send(m).is_ok();
        let result = score_thread(
            &control,
            &dataset_path,
            &bundle,
            device,
            id_column.as_deref(),
            (start, first_index, rows_per_part),
            &send,
        );
        if let Err(failure) = result {
            let _ = tx.blocking_send(Err(failure));
        }
    });
    let started = Instant::now();
    let mut device_name = env.device_name.to_owned();
    let mut rows_total = 0u64;
    let mut totals = (start, 0u64, 0u64); // rows done, predictions this attempt, bad this attempt
    let mut samples_kept = record.bad_row_samples.len();
    let mut outcome = Err(Failure::Infra("the scoring thread ended without a word".into()));
    while let Some(message) = rx.recv().await {
        match message {
            Err(failure) => {
                outcome = Err(failure);
                break;
            }
            Ok(Scoring::Opened { rows, header, device }) => {
                device_name = device;
                rows_total = rows;
                if let Some(known) = record.rows_total
                    && known != rows
                {
                    outcome = Err(Failure::Infra(format!(
                        "the input now has {rows} rows; an earlier attempt read {known}"
                    )));
                    break;
                }
                if record.rows_total.is_none()
                    && let Err(err) = ctx
                        .write("record the input", || {
                            ctx.queue.batch_started(&ctx.lease, rows, &header)
                        })
                        .await
                {
                    outcome = Err(lost(err));
                    break;
                }
                let from =
                    if start > 0 { format!(", resuming at row {start}") } else { String::new() };
                ctx.log_now(info(format!(
                    "scoring {rows} rows with {} v{} on {device_name}{from}, {rows_per_part} rows \
                     per part",
                    model.name, model.version
                )))
                .await;
            }
            Ok(Scoring::Part { index, first_row, part }) => {
                let stored = match ctx.put_bytes(&part.csv, Patience::Patient).await {
                    Ok(stored) => stored,
                    Err(err) => {
                        outcome =
                            Err(Failure::Infra(format!("storing output part {index}: {err}")));
                        break;
                    }
                };
                let output = OutputPart {
                    index,
                    key: stored.key.to_string(),
                    first_row,
                    rows: part.rows,
                    predictions: part.predictions,
                    size_bytes: stored.size,
                    sha256: match Sha256Digest::parse(stored.sha256.to_string()) {
                        Ok(d) => d,
                        Err(err) => {
                            outcome =
                                Err(Failure::Infra(format!("the stored part's digest: {err}")));
                            break;
                        }
                    },
                };
                let room = MAX_BAD_ROW_SAMPLES.saturating_sub(samples_kept);
                let samples: Vec<_> = part.bad.iter().take(room).cloned().collect();
                let bad = part.bad.len() as u64;
                if let Err(err) = ctx
                    .write("record an output part", || {
                        ctx.queue.batch_part_stored(&ctx.lease, &output, bad, &samples)
                    })
                    .await
                {
                    outcome = Err(lost(err));
                    break;
                }
                samples_kept += samples.len();
                totals.0 += part.rows;
                totals.1 += part.predictions;
                totals.2 += bad;
                let _ = events.send(Event::Log(info(format!(
                    "part {index}: rows {first_row}..{} of {rows_total}, {} predictions, {bad} bad \
                     rows",
                    first_row + part.rows,
                    part.predictions
                ))));
            }
            Ok(Scoring::Stopped(reason)) => {
                outcome = Ok(Outcome::Stopped(reason));
                break;
            }
            Ok(Scoring::Done) => {
                let seconds = started.elapsed().as_secs_f64();
                let scored = totals.0 - start;
                ctx.log_now(info(format!(
                    "completed: {scored} rows scored in {seconds:.2}s ({:.0} rows/s) on \
                     {device_name}: {} predictions, {} bad rows",
                    scored as f64 / seconds.max(1e-9),
                    totals.1,
                    totals.2
                )))
                .await;
                outcome = Ok(Outcome::Done { device: device_name.clone() });
                break;
            }
        }
    }
    // Stop the thread if we left early (it sees the stop, or a closed channel), then wait.
    if outcome.is_err() || matches!(outcome, Ok(Outcome::Stopped(_))) {
        ctx.control.request_stop(StopReason::Shutdown);
    }
    drop(rx);
    let _ = thread.await;
    outcome
}

/// The scoring thread: loads the model, opens the input, scores part after part from
/// `start`, until done or asked to stop. `send` answers false once the receiver is gone.
fn score_thread(
    control: &Arc<JobControl>,
    dataset_path: &std::path::Path,
    bundle: &[u8],
    device: kiln_ml::DeviceChoice,
    id_column: Option<&str>,
    (start, first_index, rows_per_part): (u64, u32, u64),
    send: &dyn Fn(Result<Scoring, Failure>) -> bool,
) -> Result<(), Failure> {
    let bundle = ModelBundle::from_bytes(bundle)?;
    let model = bundle.load(device)?;
    drop(bundle);
    let bytes = std::fs::read(dataset_path).map_err(|err| {
        Failure::Infra(format!("reading the cached dataset {}: {err}", dataset_path.display()))
    })?;
    let input = ScoringInput::open(model.meta(), bytes, id_column)?;
    if !send(Ok(Scoring::Opened {
        rows: input.rows(),
        header: input.header().to_owned(),
        device: model.device().name(),
    })) {
        return Ok(());
    }
    let mut scorer = input.from_row(start);
    let mut index = first_index;
    loop {
        if let Some(reason) = control.stop_reason() {
            send(Ok(Scoring::Stopped(reason)));
            return Ok(());
        }
        let first_row = scorer.row();
        let Some(part) = scorer.next_part(&model, rows_per_part)? else { break };
        if !send(Ok(Scoring::Part { index, first_row, part })) {
            return Ok(());
        }
        index += 1;
    }
    send(Ok(Scoring::Done));
    Ok(())
}
