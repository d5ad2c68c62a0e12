//! One claimed job, from its lease to the one final write that ends the attempt.
//!
//! Three tasks cooperate while a job runs:
//!
//! - **Training** runs on a blocking thread (`spawn_blocking`) through kiln-ml. Its observer
//!   ([`WorkerObserver`]) never waits on the async side: it publishes progress in atomics,
//!   sends epoch metrics, log lines and encoded checkpoints over an unbounded channel, and
//!   between batches reads the stop reason from [`JobControl`].
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

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kiln_ml::{
    Checkpoint, Dataset, DeviceChoice, EpochMetrics, FinalMetrics, MlError, StepProgress,
    StopReason, TrainObserver, TrainOptions, TrainOutcome,
};
use kiln_queue::{Lease, LogLine, MetricPoint, Queue, QueueError};
use kiln_store::{ArtifactStore, ErrorKind, Key, ObjectInfo, StoreError, Team};
use kiln_types::spec::{JobSpec, ModelSpec};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::control::JobControl;
use crate::inputs::{CacheOutcome, DatasetCache, Inputs};
use crate::shutdown::Shutdown;

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
            JobEnd::Released => "released",
            JobEnd::LeaseLost => "lease_lost",
            JobEnd::Abandoned => "abandoned",
        }
    }
}

/// Why an attempt fails.
#[derive(Debug)]
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

/// A store failure while fetching one of the job's inputs. A missing or refused object
/// cannot appear by retrying; anything else may.
fn input_failure(what: &str, err: StoreError) -> Failure {
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::InvalidKey => {
            Failure::User(format!("{what} is not in the artifact store (was it deleted?): {err}"))
        }
        _ => Failure::Infra(format!("{what}: {err}")),
    }
}

/// What the training thread produced.
#[derive(Debug)]
enum Trained {
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

/// Messages from the training thread to the uploader.
#[derive(Debug)]
enum Event {
    Log(LogLine),
    Epoch { metrics: EpochMetrics, line: String },
    Checkpoint { epoch: u32, bytes: Vec<u8> },
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

/// Why a fenced write did not happen.
#[derive(Debug)]
enum WriteError {
    LeaseLost,
    GaveUp(String),
}

/// One job's context, shared by its tasks.
#[derive(Debug)]
struct JobCtx {
    queue: Queue,
    store: Arc<dyn ArtifactStore>,
    lease: Lease,
    control: Arc<JobControl>,
    heartbeat: Duration,
    /// Longest wait for one database call before it counts as failed.
    db_timeout: Duration,
    /// How long a patient store operation retries (`KILN_STORE_RETRY_SECONDS`).
    store_retry: Duration,
}

/// How long a store operation waits out a store that may recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patience {
    /// A few quick retries: checkpoints, where a newer one follows and training goes on.
    Brief,
    /// Up to `KILN_STORE_RETRY_SECONDS` from the first failure: what the attempt cannot do
    /// without (inputs, the model bundle).
    Patient,
}

/// The longest wait between two tries of a patient store operation.
const STORE_RETRY_MAX_DELAY: Duration = Duration::from_secs(10);

/// Store failures that may end by themselves: an outage, a full or read-only disk (an
/// operator frees space or remounts). Anything else fails at once.
fn store_may_recover(err: &StoreError) -> bool {
    err.is_retryable() || matches!(err.kind(), ErrorKind::NoSpace | ErrorKind::ReadOnly)
}

impl JobCtx {
    fn job_id(&self) -> uuid::Uuid {
        self.lease.job.id
    }

    /// Runs a fenced write, retrying transient failures with backoff until it succeeds,
    /// the lease is lost, or (by this process's clock) the lease must have expired.
    async fn write<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, WriteError>
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

    fn lease_lost(&self, what: &str) {
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
    async fn flush(&self, logs: &mut Vec<LogLine>, points: &mut Vec<MetricPoint>) {
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

    async fn log_now(&self, line: LogLine) {
        self.flush(&mut vec![line], &mut Vec::new()).await;
    }

    /// Runs a store operation, retrying while the store may recover (see
    /// [`store_may_recover`]) and the lease holds: `Brief`ly, three more tries within about
    /// a second and a half; `Patient`ly, with exponential backoff (half a second doubling to
    /// ten, jittered) until `store_retry` has passed since the first failure, so a store
    /// outage of a minute costs no attempt. (The S3 backend also retries each call.)
    async fn with_store_retry<T, F, Fut>(
        &self,
        what: &str,
        patience: Patience,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(match patience {
            Patience::Brief => 200,
            Patience::Patient => 500,
        });
        let mut first_failure = None;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let err = match op().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            let more = match patience {
                Patience::Brief => tries < 4,
                Patience::Patient => since.elapsed() + delay / 2 <= self.store_retry,
            };
            if !store_may_recover(&err) || !more || self.control.lease_lost() {
                if tries > 1 {
                    tracing::warn!(
                        job = %self.job_id(), what, tries, error = %err,
                        "the artifact store did not recover; giving up"
                    );
                }
                return Err(err);
            }
            tracing::warn!(
                job = %self.job_id(), what, tries, error = %err,
                "the artifact store failed; retrying"
            );
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(STORE_RETRY_MAX_DELAY);
        }
    }

    /// Uploads bytes content-addressed under the job's team.
    async fn put_bytes(&self, bytes: &[u8], patience: Patience) -> Result<ObjectInfo, StoreError> {
        let team = Team::parse(self.lease.job.team_id.to_string())?;
        let started = Instant::now();
        let team = &team;
        let result = self
            .with_store_retry("upload", patience, || async move {
                let mut reader = bytes;
                self.store.put_stream(team, &mut reader).await
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        kiln_telemetry::metrics::store_operation(
            "put",
            bytes.len() as u64,
            seconds,
            result.is_ok(),
        );
        result
    }

    /// Reads a whole object, patiently.
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let key = Key::parse(key.to_owned())?;
        let started = Instant::now();
        let key = &key;
        let result = self
            .with_store_retry("download", Patience::Patient, || async move {
                let mut stream = self.store.get(key, None).await?;
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok::<_, StoreError>(out)
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let size = result.as_ref().map_or(0, |bytes| bytes.len() as u64);
        kiln_telemetry::metrics::store_operation("get", size, seconds, result.is_ok());
        result
    }

    /// Stores a checkpoint and records it in the job under the fence. Returns the log line
    /// saying what happened (nothing when the lease is lost).
    async fn save_checkpoint(&self, epoch: u32, bytes: &[u8]) -> Option<LogLine> {
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

/// Full jitter: a uniform delay in [d/2, d].
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.5..=1.0))
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
    let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone()).in_current_span());
    let (events, rx) = mpsc::unbounded_channel();
    let uploader = tokio::spawn(upload_events(ctx.clone(), rx).in_current_span());
    let job = &ctx.lease.job;
    let _ = events.send(Event::Log(info(format!(
        "claimed by worker {} on {} (attempt {} of {})",
        env.worker_id, env.device_name, job.attempt, job.max_attempts
    ))));
    let trained = prepare_and_train(env, &ctx, events).await;
    // The training thread has ended and dropped its sender: the uploader drains what is
    // left, then ends, so epoch metrics land before the attempt's final write.
    let _ = uploader.await;
    let end = finish(&ctx, trained).await;
    heartbeat.abort();
    end
}

/// What the result records besides training's own output.
#[derive(Debug)]
struct RunFacts {
    dataset_sha256: String,
    resumed_from_epoch: Option<u32>,
}

async fn prepare_and_train(
    env: &WorkerEnv,
    ctx: &JobCtx,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(Trained, RunFacts), Failure> {
    let job = &ctx.lease.job;
    let spec = JobSpec::parse(&job.spec).map_err(|err| Failure::User(err.to_string()))?;
    let inputs = Inputs::parse(&job.inputs).map_err(Failure::User)?;
    if matches!(spec.model, ModelSpec::TorchScript { .. }) && inputs.script.is_none() {
        return Err(Failure::User(
            "the job trains a torchscript model but its inputs carry no script".to_owned(),
        ));
    }

    let started = Instant::now();
    let download = tracing::info_span!(
        "kiln.job.dataset.download",
        job.id = %job.id,
        dataset.sha256 = %inputs.dataset.sha256,
        size_bytes = inputs.dataset.size_bytes,
        cache.hit = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let fetched = ctx
        .with_store_retry("dataset download", Patience::Patient, || {
            env.cache.fetch(&*env.store, &inputs.dataset)
        })
        .instrument(download.clone())
        .await;
    match &fetched {
        Ok((_, cached)) => download.record("cache.hit", *cached == CacheOutcome::Hit),
        Err(_) => download.record("otel.status_code", "error"),
    };
    drop(download);
    let (dataset_path, cached) = fetched
        .map_err(|err| input_failure(&format!("the dataset {}", inputs.dataset.key), err))?;
    let short = &inputs.dataset.sha256[..12];
    let _ = events.send(Event::Log(info(match cached {
        CacheOutcome::Hit => format!("dataset {short}: cache hit, nothing downloaded"),
        CacheOutcome::Downloaded => format!(
            "dataset {short}: cache miss, downloaded {} bytes in {:.2}s",
            inputs.dataset.size_bytes.map_or_else(|| "?".to_owned(), |s| s.to_string()),
            started.elapsed().as_secs_f64()
        ),
    })));
    let script = match &inputs.script {
        Some(script) => Some(
            ctx.get_bytes(&script.key)
                .instrument(tracing::info_span!(
                    "kiln.job.script.download",
                    job.id = %job.id,
                    size_bytes = script.size_bytes,
                ))
                .await
                .map_err(|err| input_failure(&format!("the script {}", script.key), err))?,
        ),
        None => None,
    };
    let resume = match &job.checkpoint_key {
        Some(key) => {
            let span = tracing::info_span!(
                "kiln.job.checkpoint.download",
                job.id = %job.id,
                epoch = job.checkpoint_epoch,
            );
            load_checkpoint(ctx, key, &events).instrument(span).await?
        }
        None => None,
    };
    let facts = RunFacts {
        dataset_sha256: inputs.dataset.sha256.clone(),
        resumed_from_epoch: resume.as_ref().map(Checkpoint::epoch),
    };
    if let Some(checkpoint) = &resume {
        let epoch = i32::try_from(checkpoint.epoch()).unwrap_or(i32::MAX);
        match ctx.write("mark resumed", || ctx.queue.mark_resumed(&ctx.lease, epoch)).await {
            Ok(()) | Err(WriteError::GaveUp(_)) => {}
            Err(WriteError::LeaseLost) => {
                return Ok((stopped_before_training(StopReason::LeaseLost, &resume), facts));
            }
        }
        let _ = events.send(Event::Log(info(format!(
            "resumed from epoch {} (step {}) of the last checkpoint",
            checkpoint.epoch(),
            checkpoint.step()
        ))));
    }
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
        dataset_path,
        dataset_sha256: inputs.dataset.sha256.clone(),
        options: TrainOptions { device: env.device, script, job_id: Some(job.id) },
        resume,
        observer: WorkerObserver {
            control: ctx.control.clone(),
            events,
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

/// Everything the training thread owns.
struct Training {
    spec: JobSpec,
    dataset_path: PathBuf,
    dataset_sha256: String,
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
        if dataset.sha256() != self.dataset_sha256 {
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
        let epochs = self.control.progress().and_then(|p| p["epochs"].as_u64()).unwrap_or(0);
        self.epochs.close(metrics);
        let mut line = format!("epoch {}/{epochs}:", metrics.epoch);
        for (i, (name, value)) in metrics.series().into_iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            line.push_str(&format!("{sep}{name} {value:.4}"));
        }
        let _ = self.events.send(Event::Epoch { metrics: metrics.clone(), line });
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

/// Renews the lease every heartbeat period until aborted or the lease is lost.
async fn heartbeat_loop(ctx: Arc<JobCtx>) {
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

/// Writes what the training thread sends, in batches, until the channel closes.
async fn upload_events(ctx: Arc<JobCtx>, mut rx: mpsc::UnboundedReceiver<Event>) {
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
                Event::Epoch { metrics, line } => {
                    let step = i64::from(metrics.epoch);
                    points.extend(metrics.series().into_iter().map(|(name, value)| MetricPoint {
                        name: name.to_owned(),
                        step,
                        value,
                    }));
                    logs.push(info(line));
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

/// Ends the attempt with its one final write.
async fn finish(ctx: &JobCtx, trained: Result<(Trained, RunFacts), Failure>) -> JobEnd {
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
            let result = json!({
                "model_bundle": stored.key.to_string(),
                "bundle_sha256": stored.sha256.to_string(),
                "metrics": metrics_json(&metrics),
                "dataset_sha256": facts.dataset_sha256,
                "device": device,
                "training_seconds": training_seconds,
                "epochs_completed": metrics.epochs_run,
                "resumed_from_epoch": facts.resumed_from_epoch,
            });
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

/// The final metrics as the result records them: the validation series of the epoch whose
/// weights the model ships, and the confusion matrix for classification.
fn metrics_json(metrics: &FinalMetrics) -> Value {
    let mut out = Map::new();
    for (name, value) in metrics.validation.series() {
        out.insert(name.to_owned(), json!(value));
    }
    if let Some(matrix) = &metrics.confusion_matrix {
        out.insert("confusion_matrix".to_owned(), json!(matrix));
    }
    out.insert("best_epoch".to_owned(), json!(metrics.best_epoch));
    out.insert("stopped_early".to_owned(), json!(metrics.stopped_early));
    Value::Object(out)
}

async fn fail(ctx: &JobCtx, failure: Failure) -> JobEnd {
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

async fn final_write<F, Fut>(ctx: &JobCtx, what: &str, end: JobEnd, op: F) -> JobEnd
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
