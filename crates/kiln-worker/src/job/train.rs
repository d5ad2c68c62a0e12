//! The training run: the job's spec and inputs made ready (fetched, resumed), kiln-ml's
//! training on a blocking thread with the worker's observer, and the uploader that writes
//! what the thread sends (metrics, log lines, checkpoints) in batches.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_ml::{
    Checkpoint, Dataset, EpochMetrics, FinalMetrics, StepProgress, StopReason, TrainObserver,
    TrainOptions, TrainOutcome,
};
use kiln_queue::MetricPoint;
use kiln_types::Sha256Digest;
use kiln_types::spec::JobSpec;
use tokio::sync::mpsc;

use super::lease::JobCtx;
use super::{Event, Failure, WorkerEnv, checkpoint, fetch, info, warn};
use crate::control::JobControl;

/// What the training thread produced.
#[derive(Debug)]
pub(super) enum Trained {
    Completed {
        bundle: Vec<u8>,
        metrics: Box<FinalMetrics>,
        device: String,
        training_seconds: f64,
    },
    Stopped {
        reason: StopReason,
        /// Epochs completed and batches into the next one.
        epoch: u32,
        step: u64,
        /// The encoded stop-time checkpoint, when training had started and it encoded.
        checkpoint: Option<Vec<u8>>,
    },
}

/// What the result records besides training's own output.
#[derive(Debug)]
pub(super) struct RunFacts {
    pub(super) dataset_sha256: Sha256Digest,
    pub(super) resumed_from_epoch: Option<u32>,
}

/// Parses the spec, fetches the inputs, loads the checkpoint to resume from and trains.
pub(super) async fn prepare_and_train(
    env: &WorkerEnv,
    ctx: &JobCtx,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(Trained, RunFacts), Failure> {
    let job = &ctx.lease.job;
    let spec = JobSpec::parse(&job.spec).map_err(|err| Failure::User(err.to_string()))?;
    let needed = fetch::needed(&spec, &job.inputs)?;
    let fetched = fetch::fetch(env, ctx, &needed, &events).await?;
    let dataset_sha256 = needed.dataset.sha256.clone();
    let resume = match checkpoint::resume(ctx, &events).await? {
        Ok(resume) => resume,
        Err(gone) => {
            let facts = RunFacts {
                dataset_sha256,
                resumed_from_epoch: gone.resume.as_ref().map(Checkpoint::epoch),
            };
            return Ok((stopped_before_training(StopReason::LeaseLost, &gone.resume), facts));
        }
    };
    let facts = RunFacts {
        dataset_sha256: dataset_sha256.clone(),
        resumed_from_epoch: resume.as_ref().map(Checkpoint::epoch),
    };
    if let Some(reason) = ctx.control.stop_reason() {
        return Ok((stopped_before_training(reason, &resume), facts));
    }

    let train_span = tracing::info_span!(
        "kiln.job.train",
        job.id = %job.id,
        model.type = spec.model.type_name(),
        device = env.device_name,
        train.samples = tracing::field::Empty,
        epochs = spec.hyperparameters.epochs,
        resumed_from_epoch = resume.as_ref().map(Checkpoint::epoch),
    );
    let model_type = spec.model.type_name();
    let training = Training {
        spec,
        dataset_path: fetched.dataset_path,
        dataset_sha256,
        options: TrainOptions { device: env.device, script: fetched.script, job_id: Some(job.id) },
        resume,
        observer: WorkerObserver {
            control: ctx.control.clone(),
            events,
            trial: job.inputs.trial.clone(),
            checkpoint_every: env.checkpoint_every,
            last_checkpoint: Instant::now(),
            periodic_stop: false,
            epochs: EpochSpans {
                parent: train_span.clone(),
                job_id: job.id,
                model_type,
                device: env.device_name,
                samples: 0,
                current: None,
                epoch_started: Instant::now(),
            },
        },
    };
    match tokio::task::spawn_blocking(move || train_span.in_scope(|| training.run())).await {
        Ok(result) => result.map(|trained| (trained, facts)),
        Err(err) => Err(Failure::Infra(format!("the training thread failed: {err}"))),
    }
}

fn stopped_before_training(reason: StopReason, resume: &Option<Checkpoint>) -> Trained {
    Trained::Stopped {
        reason,
        epoch: resume.as_ref().map_or(0, Checkpoint::epoch),
        step: resume.as_ref().map_or(0, Checkpoint::step),
        checkpoint: None,
    }
}

/// Everything the training thread owns.
struct Training {
    spec: JobSpec,
    dataset_path: PathBuf,
    dataset_sha256: Sha256Digest,
    options: TrainOptions,
    resume: Option<Checkpoint>,
    observer: WorkerObserver,
}

impl Training {
    fn run(mut self) -> Result<Trained, Failure> {
        let bytes = std::fs::read(&self.dataset_path).map_err(|err| {
            Failure::Infra(format!(
                "reading the cached dataset {}: {err}",
                self.dataset_path.display()
            ))
        })?;
        let dataset = Dataset::from_bytes(&bytes)?;
        drop(bytes);
        if dataset.sha256() != self.dataset_sha256.as_str() {
            let _ = std::fs::remove_file(&self.dataset_path);
            return Err(Failure::Infra(format!(
                "the cached dataset {} was corrupt (sha256 {}); removed it, the next attempt \
                 downloads it again",
                self.dataset_path.display(),
                dataset.sha256()
            )));
        }
        let prepared = kiln_ml::prepare(&self.spec, &dataset)?;
        drop(dataset);
        let device = self.options.device.resolve()?.name();
        self.observer.epochs.samples = prepared.train_len();
        tracing::Span::current().record("train.samples", prepared.train_len());
        let first_epoch = self.resume.as_ref().map_or(1, |c| c.epoch() + 1);
        let partial = self.resume.as_ref().is_some_and(|c| c.step() > 0);
        if first_epoch <= self.spec.hyperparameters.epochs {
            self.observer.epochs.start(first_epoch, partial);
        }

        let started = Instant::now();
        let mut resume = self.resume.take();
        let outcome = loop {
            let outcome = kiln_ml::train(
                &self.spec,
                &prepared,
                &self.options,
                &mut self.observer,
                resume.as_ref(),
            )?;
            match outcome {
                // A time-based checkpoint: keep it and carry on from exactly there.
                TrainOutcome::Stopped { checkpoint, .. } if self.observer.take_periodic() => {
                    self.observer.on_checkpoint(&checkpoint);
                    resume = Some(*checkpoint);
                }
                other => break other,
            }
        };
        let training_seconds = started.elapsed().as_secs_f64();
        Ok(match outcome {
            TrainOutcome::Completed(model) => Trained::Completed {
                bundle: model.bundle.to_bytes()?,
                metrics: Box::new(model.metrics),
                device,
                training_seconds,
            },
            TrainOutcome::Stopped { reason, checkpoint } => Trained::Stopped {
                reason,
                epoch: checkpoint.epoch(),
                step: checkpoint.step(),
                checkpoint: match reason {
                    StopReason::LeaseLost => None,
                    _ => checkpoint
                        .to_bytes()
                        .inspect_err(|err| {
                            tracing::error!(error = %err, "could not encode the stop checkpoint");
                        })
                        .ok(),
                },
            },
        })
    }
}

/// The training thread's view of the worker.
struct WorkerObserver {
    control: Arc<JobControl>,
    events: mpsc::UnboundedSender<Event>,
    /// The study this job is a trial of: at its rule's deciding epochs, training waits for
    /// the verdict (a few milliseconds) so a trial stops exactly where the rule says.
    trial: Option<kiln_types::study::TrialInput>,
    checkpoint_every: Duration,
    last_checkpoint: Instant,
    /// Set when `should_stop` stopped training only for a time-based checkpoint.
    periodic_stop: bool,
    epochs: EpochSpans,
}

/// One span per epoch (`kiln.job.epoch`, a child of `kiln.job.train`), and the training
/// throughput metric. The first span opens when training starts, the next ones at their
/// epoch's first step (a span opened at the previous `on_epoch` would be a phantom epoch
/// when training stops early), so a span misses its first batch; the throughput is timed
/// from the previous epoch's end and does not.
struct EpochSpans {
    parent: tracing::Span,
    job_id: uuid::Uuid,
    model_type: &'static str,
    device: &'static str,
    /// Training samples per epoch.
    samples: usize,
    /// The open epoch's span, and whether it began mid-epoch (a resume from a stop
    /// checkpoint: its throughput would be wrong).
    current: Option<(tracing::Span, bool)>,
    /// When the current epoch started: the end of the previous one, or training's start.
    epoch_started: Instant,
}

impl EpochSpans {
    fn open(&mut self, epoch: u32, partial: bool) {
        let span = tracing::info_span!(
            parent: &self.parent,
            "kiln.job.epoch",
            job.id = %self.job_id,
            epoch,
            samples = self.samples,
            samples_per_second = tracing::field::Empty,
            train.loss = tracing::field::Empty,
            val.loss = tracing::field::Empty,
        );
        self.current = Some((span, partial));
    }

    /// Training started (`partial`: mid-epoch, from a stop checkpoint).
    fn start(&mut self, epoch: u32, partial: bool) {
        self.epoch_started = Instant::now();
        self.open(epoch, partial);
    }

    /// A step of `epoch` ended: its span opens if it is not open yet.
    fn step(&mut self, epoch: u32) {
        if self.current.is_none() {
            self.open(epoch, false);
        }
    }

    /// An epoch ended.
    fn close(&mut self, metrics: &EpochMetrics) {
        let seconds = self.epoch_started.elapsed().as_secs_f64();
        self.epoch_started = Instant::now();
        if let Some((span, partial)) = self.current.take() {
            span.record("train.loss", metrics.train_loss);
            span.record("val.loss", metrics.val_loss);
            if !partial && seconds > 0.0 {
                crate::metrics::epoch_finished(seconds, self.model_type, self.device);
                let rate = self.samples as f64 / seconds;
                span.record("samples_per_second", rate);
                kiln_telemetry::metrics::epoch_throughput(rate, self.model_type, self.device);
            }
        }
    }
}

impl WorkerObserver {
    fn take_periodic(&mut self) -> bool {
        std::mem::take(&mut self.periodic_stop)
    }
}

impl TrainObserver for WorkerObserver {
    fn on_step(&mut self, progress: &StepProgress) {
        self.control.set_progress(progress);
        self.epochs.step(progress.epoch);
    }

    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        let epochs = self.control.progress().map_or(0, |p| p.epochs);
        self.epochs.close(metrics);
        let line = epoch_line(metrics, epochs);
        let deciding = self
            .trial
            .as_ref()
            .and_then(|t| t.early_stopping)
            .is_some_and(|rule| rule.decides_at(metrics.epoch, epochs));
        let (decide, verdict) = if deciding {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let _ = self.events.send(Event::Epoch { metrics: metrics.clone(), line, decide });
        // Without an answer in time (the database unreachable), training goes on: a trial
        // is never stopped on a guess.
        if let Some(rx) = verdict
            && rx.recv_timeout(PRUNE_VERDICT_WAIT) == Ok(true)
        {
            self.control.request_stop(StopReason::Pruned);
        }
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) {
        self.last_checkpoint = Instant::now();
        if self.control.lease_lost() {
            return;
        }
        match checkpoint.to_bytes() {
            Ok(bytes) => {
                let _ = self.events.send(Event::Checkpoint { epoch: checkpoint.epoch(), bytes });
            }
            Err(err) => {
                let _ = self.events.send(Event::Log(warn(format!(
                    "checkpoint at epoch {} could not be encoded: {err}",
                    checkpoint.epoch()
                ))));
            }
        }
    }

    fn should_stop(&mut self) -> Option<StopReason> {
        if let Some(reason) = self.control.stop_reason() {
            return Some(reason);
        }
        if self.last_checkpoint.elapsed() >= self.checkpoint_every {
            // Not a real stop: the training loop takes the checkpoint and goes on.
            self.periodic_stop = true;
            return Some(StopReason::Shutdown);
        }
        None
    }
}

/// How long a trial's training waits for the early-stopping verdict after a deciding epoch.
const PRUNE_VERDICT_WAIT: Duration = Duration::from_secs(60);

/// Writes what the training thread sends, in batches, until the channel closes.
pub(super) async fn upload_events(ctx: Arc<JobCtx>, mut rx: mpsc::UnboundedReceiver<Event>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(event) = rx.try_recv() {
            batch.push(event);
        }
        if ctx.control.lease_lost() {
            continue; // drop it: nothing more may be written about this job
        }
        // Of several checkpoints waiting, only the newest is worth uploading.
        let newest_checkpoint = batch.iter().rposition(|e| matches!(e, Event::Checkpoint { .. }));
        let mut logs = Vec::new();
        let mut points = Vec::new();
        for (i, event) in batch.into_iter().enumerate() {
            match event {
                Event::Log(line) => logs.push(line),
                Event::Epoch { metrics, line, decide } => {
                    points.extend(metric_points(&metrics));
                    logs.push(info(line));
                    if let Some(reply) = decide {
                        // The verdict compares this epoch with the other trials': it must
                        // be stored first.
                        ctx.flush(&mut logs, &mut points).await;
                        let stop = prune_verdict(&ctx, metrics.epoch).await;
                        if stop {
                            logs.push(info(format!(
                                "the study's early-stopping rule stops this trial after epoch {}",
                                metrics.epoch
                            )));
                        }
                        let _ = reply.send(stop);
                    }
                }
                Event::Checkpoint { epoch, bytes } if Some(i) == newest_checkpoint => {
                    // Metrics up to this epoch land before the checkpoint that follows them.
                    ctx.flush(&mut logs, &mut points).await;
                    logs.extend(ctx.save_checkpoint(epoch, &bytes).await);
                }
                Event::Checkpoint { .. } => {}
            }
        }
        ctx.flush(&mut logs, &mut points).await;
    }
}

/// Whether the study's rule stops this trial after `epoch` (false when it cannot tell).
async fn prune_verdict(ctx: &JobCtx, epoch: u32) -> bool {
    let Some(trial) = &ctx.lease.job.inputs.trial else { return false };
    match kiln_study::should_prune(&ctx.queue, trial, ctx.job_id(), epoch).await {
        Ok(stop) => stop,
        Err(err) => {
            tracing::warn!(job = %ctx.job_id(), error = %err, "no early-stopping verdict; training goes on");
            false
        }
    }
}

/// The job log's line for an epoch: `epoch 2/10: train_loss 0.5000, val_loss 0.4000, ...`.
fn epoch_line(metrics: &EpochMetrics, epochs: u32) -> String {
    let mut line = format!("epoch {}/{epochs}:", metrics.epoch);
    for (i, (name, value)) in metrics.series().into_iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        line.push_str(&format!("{sep}{name} {value:.4}"));
    }
    line
}

/// An epoch's metric points, one per series, at the epoch as their step.
fn metric_points(metrics: &EpochMetrics) -> Vec<MetricPoint> {
    let step = i64::from(metrics.epoch);
    metrics
        .series()
        .into_iter()
        .map(|(name, value)| MetricPoint { name: name.to_owned(), step, value })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch() -> EpochMetrics {
        EpochMetrics {
            epoch: 2,
            learning_rate: 0.01,
            train_loss: 0.5,
            val_loss: 0.25,
            val_accuracy: Some(0.875),
            val_f1: Some(0.8),
            ..EpochMetrics::default()
        }
    }

    #[test]
    fn an_epoch_becomes_one_log_line_and_one_point_per_series() {
        assert_eq!(
            epoch_line(&epoch(), 10),
            "epoch 2/10: train_loss 0.5000, val_loss 0.2500, val_accuracy 0.8750, val_f1 0.8000"
        );
        let points = metric_points(&epoch());
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["train_loss", "val_loss", "val_accuracy", "val_f1"]);
        assert!(points.iter().all(|p| p.step == 2));
        assert_eq!(points[1].value, 0.25);
    }

    #[test]
    fn a_stop_before_training_keeps_the_checkpoint_position() {
        let Trained::Stopped { reason, epoch, step, checkpoint } =
            stopped_before_training(StopReason::Cancelled, &None)
        else {
            panic!("not stopped")
        };
        assert_eq!((reason, epoch, step), (StopReason::Cancelled, 0, 0));
        assert!(checkpoint.is_none());
    }

    #[test]
    fn the_observer_asks_for_a_periodic_checkpoint_then_goes_on() {
        let (events, mut rx) = mpsc::unbounded_channel();
        let control =
            Arc::new(JobControl::new(crate::shutdown::Shutdown::new(), Duration::from_secs(60)));
        let mut observer = WorkerObserver {
            control: control.clone(),
            events,
            trial: None,
            checkpoint_every: Duration::ZERO,
            last_checkpoint: Instant::now(),
            periodic_stop: false,
            epochs: EpochSpans {
                parent: tracing::Span::none(),
                job_id: uuid::Uuid::nil(),
                model_type: "mlp",
                device: "cpu",
                samples: 10,
                current: None,
                epoch_started: Instant::now(),
            },
        };
        // Time for a checkpoint: a stop that is not one.
        assert_eq!(observer.should_stop(), Some(StopReason::Shutdown));
        assert!(observer.take_periodic());
        assert!(!observer.take_periodic());
        // A real stop reason wins and is not periodic.
        control.request_stop(StopReason::Cancelled);
        assert_eq!(observer.should_stop(), Some(StopReason::Cancelled));
        assert!(!observer.take_periodic());
        // Progress reaches the control; the epoch line counts the epochs.
        observer.on_step(&StepProgress {
            epoch: 2,
            step: 1,
            steps_per_epoch: 4,
            epochs: 10,
            loss: 0.5,
        });
        observer.on_epoch(&epoch());
        let Some(Event::Epoch { line, .. }) = rx.try_recv().ok() else { panic!("no epoch event") };
        assert!(line.starts_with("epoch 2/10:"), "{line}");
    }
}
