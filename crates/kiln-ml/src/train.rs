//! The training loop.
//!
//! Data is moved to the device once; each epoch draws a permutation from (seed, epoch),
//! gathers the shuffled training set in one `index_select`, and walks it in `narrow`ed
//! batches, so the loop allocates nothing per sample. Between batches it asks the observer
//! whether to stop (cancel, shutdown, lost lease) and, if so, returns a checkpoint of the
//! exact position. Evaluation runs under `no_grad` in eval mode.

use kiln_types::spec::{JobSpec, Task};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};
use uuid::Uuid;

use crate::bundle::{FinalMetrics, Lineage, LoadedModel, ModelBundle, ModelMeta};
use crate::checkpoint::{self, Checkpoint, CheckpointMeta, EarlyStopping};
use crate::device::{ComputeDevice, DeviceChoice};
use crate::drift::TrainingStats;
use crate::error::{MlError, Result, is_allocation_failure, requested_bytes};
use crate::metrics::{self, EpochMetrics};
use crate::model::{Architecture, Network};
use crate::optim::Optimizer;
use crate::prepare::{InputEncoding, Prepared, Split, TargetEncoding};
use crate::rng::{self, SplitMix64, stream};
use crate::tensors;

/// Why training stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The user cancelled the job.
    Cancelled,
    /// The worker is shutting down; the job goes back to the queue.
    Shutdown,
    /// Another attempt owns the job now.
    LeaseLost,
    /// A study's early-stopping rule stopped the trial (kept with its checkpoint).
    Pruned,
}

/// Progress after one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// 1-based.
    pub epoch: u32,
    /// 1-based, within the epoch.
    pub step: u64,
    pub steps_per_epoch: u64,
    pub epochs: u32,
    /// This batch's mean loss.
    pub loss: f64,
}

/// The worker's view into a running training. Every method has a do-nothing default.
pub trait TrainObserver {
    /// After every batch.
    fn on_step(&mut self, _progress: &StepProgress) {}
    /// After every epoch's validation.
    fn on_epoch(&mut self, _metrics: &EpochMetrics) {}
    /// Every `checkpoint_every_epochs` epochs (not after the last one: the model bundle
    /// supersedes it). Encode it with [`Checkpoint::to_bytes`].
    fn on_checkpoint(&mut self, _checkpoint: &Checkpoint) {}
    /// Asked before every batch; `Some` stops training with a checkpoint of this position.
    fn should_stop(&mut self) -> Option<StopReason> {
        None
    }
}

/// An observer that watches nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl TrainObserver for NoObserver {}

/// What training needs besides the spec and the data.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub device: DeviceChoice,
    /// The TorchScript module's bytes, for `{"type": "torchscript"}` models.
    pub script: Option<Vec<u8>>,
    /// Recorded in the bundle's lineage.
    pub job_id: Option<Uuid>,
}

/// A finished training: the bundle to store and the model, still in memory, to use.
#[derive(Debug)]
pub struct TrainedModel {
    pub bundle: ModelBundle,
    pub metrics: FinalMetrics,
    pub history: Vec<EpochMetrics>,
    pub model: LoadedModel,
}

/// How a call to [`train`] ended.
#[derive(Debug)]
pub enum TrainOutcome {
    Completed(Box<TrainedModel>),
    /// The observer asked to stop; the checkpoint resumes at exactly this position.
    Stopped {
        reason: StopReason,
        checkpoint: Box<Checkpoint>,
    },
}

/// Where the loop is, and everything a checkpoint records besides tensors.
struct LoopState {
    epoch: u32,
    step: u64,
    loss_sum: f64,
    count: u64,
    history: Vec<EpochMetrics>,
    early: EarlyStopping,
    best: Option<Vec<(String, Tensor)>>,
}

/// Rows per evaluation forward pass (the memory estimate counts the same).
const EVAL_CHUNK: i64 = kiln_types::memory::EVAL_ROWS_PER_PASS as i64;

/// Trains the spec's model on prepared data, optionally resuming from a checkpoint.
///
/// When libtorch cannot allocate what the model needs (weights, optimizer state, a batch's
/// activations), training ends in [`MlError::OutOfMemory`] with the model's estimated need
/// ([`JobSpec::memory_estimate`]), whether libtorch returned the failure as an error or tch
/// panicked on it (its infallible constructors, `nn::linear` among them, unwrap). Any other
/// panic goes on unwinding.
pub fn train(
    spec: &JobSpec,
    prepared: &Prepared,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
    resume: Option<&Checkpoint>,
) -> Result<TrainOutcome> {
    let run =
        std::panic::AssertUnwindSafe(|| train_unguarded(spec, prepared, options, observer, resume));
    match std::panic::catch_unwind(run) {
        Ok(Err(MlError::Torch(err))) if is_allocation_failure(&err.to_string()) => {
            Err(out_of_memory(spec, prepared, options, &err.to_string()))
        }
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if is_allocation_failure(message) {
                Err(out_of_memory(spec, prepared, options, message))
            } else {
                std::panic::resume_unwind(payload)
            }
        }
    }
}

/// The user's error for a model libtorch could not allocate, quoting its estimated need.
fn out_of_memory(
    spec: &JobSpec,
    prepared: &Prepared,
    options: &TrainOptions,
    message: &str,
) -> MlError {
    let shape = kiln_types::DataShape {
        train_rows: prepared.train_len() as u64,
        val_rows: prepared.val_len() as u64,
        sample_shape: prepared
            .preprocessor
            .input
            .sample_shape()
            .iter()
            .map(|&d| u64::try_from(d).unwrap_or(0))
            .collect(),
        outputs: prepared.outputs() as u64,
    };
    MlError::OutOfMemory {
        estimate_bytes: spec.memory_estimate(&shape).map(|e| e.total_bytes),
        requested_bytes: requested_bytes(message),
        device: options.device.resolve().map_or_else(|_| "cuda".to_owned(), |d| d.name()),
    }
}

fn train_unguarded(
    spec: &JobSpec,
    prepared: &Prepared,
    options: &TrainOptions,
    observer: &mut dyn TrainObserver,
    resume: Option<&Checkpoint>,
) -> Result<TrainOutcome> {
    let device = options.device.resolve()?;
    let hp = &spec.hyperparameters;
    let sample_shape = prepared.preprocessor.input.sample_shape();
    let architecture = Architecture::from_spec(spec, &sample_shape, prepared.outputs() as i64)?;

    let mut network = {
        let _rng = rng::torch_rng_lock();
        tch::manual_seed(SplitMix64::new(hp.seed, &[stream::INIT]).torch_seed());
        Network::build(&architecture, spec.task, device.0, options.script.as_deref())?
    };
    let mut optimizer = Optimizer::new(hp, network.named_parameters());
    let mut state = LoopState {
        epoch: 0,
        step: 0,
        loss_sum: 0.0,
        count: 0,
        history: Vec::new(),
        early: EarlyStopping::default(),
        best: None,
    };
    if let Some(checkpoint) = resume {
        restore(
            checkpoint,
            spec,
            prepared,
            &architecture,
            &mut network,
            &mut optimizer,
            &mut state,
        )?;
    }

    let train_x = prepared.train.x.to_device(device.0);
    let train_y = prepared.train.y.to_device(device.0);
    let n = prepared.train.len();
    let batch = hp.batch_size as usize;
    let steps_per_epoch = n.div_ceil(batch) as u64;
    let mut stopped_early = false;

    while state.epoch < hp.epochs {
        let epoch = state.epoch;
        let lr = hp.lr_schedule.learning_rate(hp.learning_rate, epoch, hp.epochs);
        optimizer.set_lr(lr);
        network.set_training(true);

        let mut order: Vec<i64> = (0..n as i64).collect();
        SplitMix64::new(hp.seed, &[stream::SHUFFLE, u64::from(epoch)]).shuffle(&mut order);
        let order = Tensor::from_slice(&order).to_device(device.0);
        let xs = train_x.index_select(0, &order);
        let ys = train_y.index_select(0, &order);

        while state.step < steps_per_epoch {
            if let Some(reason) = observer.should_stop() {
                let checkpoint =
                    make_checkpoint(spec, prepared, &architecture, &network, &optimizer, &state)?;
                return Ok(TrainOutcome::Stopped { reason, checkpoint: Box::new(checkpoint) });
            }
            let step = state.step;
            // Dropout masks come from (seed, epoch, step): a resumed run draws the same ones.
            let rng_guard = network.is_stochastic().then(|| {
                let guard = rng::torch_rng_lock();
                tch::manual_seed(
                    SplitMix64::new(hp.seed, &[stream::STEP, u64::from(epoch), step]).torch_seed(),
                );
                guard
            });
            let start = step as usize * batch;
            let len = batch.min(n - start) as i64;
            let xb = xs.narrow(0, start as i64, len);
            let yb = ys.narrow(0, start as i64, len);

            // Gradients are zero here: the optimiser zeroes them after each update.
            let out = network.forward(&xb)?;
            drop(rng_guard);
            let loss = loss_fn(spec.task, &out, &yb)?;
            let value = loss.f_double_value(&[])?;
            if !value.is_finite() {
                return Err(MlError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: step + 1,
                    loss: value,
                });
            }
            loss.f_backward()?;
            if let Some(max_norm) = hp.grad_clip {
                optimizer.clip_grad_norm(max_norm);
            }
            optimizer.step();

            state.loss_sum += value * len as f64;
            state.count += len as u64;
            state.step += 1;
            observer.on_step(&StepProgress {
                epoch: epoch + 1,
                step: step + 1,
                steps_per_epoch,
                epochs: hp.epochs,
                loss: value,
            });
        }

        let evaluation = evaluate(&mut network, prepared, &prepared.val, device.0)?;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            learning_rate: lr,
            train_loss: state.loss_sum / state.count.max(1) as f64,
            ..evaluation.metrics
        };
        state.history.push(metrics.clone());
        state.epoch += 1;
        state.step = 0;
        state.loss_sum = 0.0;
        state.count = 0;
        observer.on_epoch(&metrics);

        if let Some(patience) = hp.early_stopping_patience {
            let metric = hp.early_stopping_metric;
            let value = metrics.get(metric).unwrap_or(f64::NAN);
            let improved = match state.early.best_value {
                None => value.is_finite(),
                Some(best) if metric.higher_is_better() => value > best,
                Some(best) => value < best,
            };
            if improved {
                state.early = EarlyStopping {
                    best_value: Some(value),
                    best_epoch: state.epoch,
                    epochs_without_improvement: 0,
                };
                state.best = Some(snapshot(&network));
            } else {
                state.early.epochs_without_improvement += 1;
                stopped_early = state.early.epochs_without_improvement >= patience;
            }
        }
        if stopped_early || state.epoch >= hp.epochs {
            break;
        }
        if state.epoch.is_multiple_of(hp.checkpoint_every_epochs) {
            let checkpoint =
                make_checkpoint(spec, prepared, &architecture, &network, &optimizer, &state)?;
            observer.on_checkpoint(&checkpoint);
        }
    }

    // Under early stopping the model keeps the best epoch's weights.
    let mut best_epoch = state.epoch;
    if let Some(best) = &state.best {
        network.load_weights(best).map_err(|m| MlError::corrupt("best weights", m))?;
        best_epoch = state.early.best_epoch;
    }
    let evaluation = evaluate(&mut network, prepared, &prepared.val, device.0)?;
    let final_metrics = FinalMetrics {
        epochs_run: state.epoch,
        best_epoch,
        stopped_early,
        validation: EpochMetrics {
            epoch: best_epoch,
            learning_rate: state.history.last().map_or(hp.learning_rate, |m| m.learning_rate),
            train_loss: state
                .history
                .get(best_epoch.saturating_sub(1) as usize)
                .map_or(f64::NAN, |m| m.train_loss),
            ..evaluation.metrics
        },
        confusion_matrix: evaluation.confusion,
    };
    let meta = ModelMeta {
        format: crate::bundle::FORMAT.to_owned(),
        task: spec.task,
        architecture: architecture.clone(),
        preprocessing: prepared.preprocessor.clone(),
        input_schema: prepared.preprocessor.input.schema(),
        labels: match &prepared.preprocessor.target {
            TargetEncoding::Classes { labels, .. } => Some(labels.clone()),
            TargetEncoding::Value { .. } => None,
        },
        metrics: final_metrics.clone(),
        lineage: lineage(spec, prepared, options, device),
        parameters: network.named_parameters().iter().map(|(_, t)| t.numel() as u64).sum(),
        training_stats: training_stats(prepared)?,
    };
    let bundle = ModelBundle::new(meta.clone(), &network, options.script.clone())?;
    Ok(TrainOutcome::Completed(Box::new(TrainedModel {
        bundle,
        metrics: final_metrics,
        history: state.history,
        model: LoadedModel::new(network, meta, device),
    })))
}

/// The training split's input distribution, for serving's drift monitor.
fn training_stats(prepared: &Prepared) -> Result<Option<TrainingStats>> {
    let input = &prepared.preprocessor.input;
    if !matches!(input, InputEncoding::Columns { .. }) {
        return Ok(None);
    }
    let features = Vec::<f32>::try_from(prepared.train.x.f_flatten(0, -1)?)?;
    Ok(TrainingStats::from_encoded(input, &features, prepared.train_len()))
}

fn lineage(
    spec: &JobSpec,
    prepared: &Prepared,
    options: &TrainOptions,
    device: ComputeDevice,
) -> Lineage {
    Lineage {
        dataset_id: spec.dataset_id,
        dataset_sha256: prepared.dataset_sha256().to_owned(),
        job_id: options.job_id,
        job_spec: spec.to_json(),
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: env!("KILN_GIT_COMMIT").to_owned(),
        device: device.name(),
        trained_at: chrono::Utc::now(),
    }
}

fn loss_fn(task: Task, out: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(match task {
        Task::Classification => {
            out.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)?
        }
        Task::Regression => out.f_mse_loss(y, Reduction::Mean)?,
    })
}

/// Deep copies of the parameters.
fn snapshot(network: &Network) -> Vec<(String, Tensor)> {
    tch::no_grad(|| {
        network.named_parameters().into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
    })
}

struct Evaluation {
    metrics: EpochMetrics,
    confusion: Option<Vec<Vec<u64>>>,
}

/// Validation loss and metrics, in eval mode without gradients.
fn evaluate(
    network: &mut Network,
    prepared: &Prepared,
    split: &Split,
    device: Device,
) -> Result<Evaluation> {
    network.set_training(false);
    let _guard = tch::no_grad_guard();
    let n = split.len() as i64;
    let task = prepared.preprocessor.task;
    let mut loss_sum = 0.0;
    let mut outputs = Vec::new();
    for start in (0..n).step_by(EVAL_CHUNK as usize) {
        let len = EVAL_CHUNK.min(n - start);
        let xb = split.x.narrow(0, start, len).to_device(device);
        let yb = split.y.narrow(0, start, len).to_device(device);
        let out = network.forward(&xb)?;
        loss_sum += loss_fn(task, &out, &yb)?.f_double_value(&[])? * len as f64;
        outputs.push(match task {
            Task::Classification => out.f_argmax(-1, false)?,
            Task::Regression => out,
        });
    }
    network.set_training(true);
    let joined = Tensor::f_cat(&outputs, 0)?.f_to_device(Device::Cpu)?;
    let mut metrics = EpochMetrics { val_loss: loss_sum / n.max(1) as f64, ..Default::default() };
    let mut confusion = None;
    match &prepared.preprocessor.target {
        TargetEncoding::Classes { labels, .. } => {
            let predicted = Vec::<i64>::try_from(joined.f_to_kind(Kind::Int64)?)?;
            let truth: Vec<i64> = split.targets.iter().map(|&t| t as i64).collect();
            let (accuracy, f1, matrix) = metrics::classification(&truth, &predicted, labels.len());
            metrics.val_accuracy = Some(accuracy);
            metrics.val_f1 = Some(f1);
            confusion = Some(matrix);
        }
        TargetEncoding::Value { mean, std, .. } => {
            let scaled = Vec::<f32>::try_from(joined.f_to_kind(Kind::Float)?)?;
            let predicted: Vec<f64> = scaled.iter().map(|&v| f64::from(v) * std + mean).collect();
            let (rmse, mae, r2) = metrics::regression(&split.targets, &predicted);
            metrics.val_rmse = Some(rmse);
            metrics.val_mae = Some(mae);
            metrics.val_r2 = Some(r2);
        }
    }
    Ok(Evaluation { metrics, confusion })
}

fn make_checkpoint(
    spec: &JobSpec,
    prepared: &Prepared,
    architecture: &Architecture,
    network: &Network,
    optimizer: &Optimizer,
    state: &LoopState,
) -> Result<Checkpoint> {
    Ok(Checkpoint {
        meta: CheckpointMeta {
            format: checkpoint::FORMAT.to_owned(),
            epoch: state.epoch,
            step: state.step,
            optimizer_steps: optimizer.steps,
            seed: spec.hyperparameters.seed,
            partial_loss_sum: state.loss_sum,
            partial_count: state.count,
            history: state.history.clone(),
            early_stopping: state.early.clone(),
            architecture: architecture.clone(),
            preprocessor: prepared.preprocessor.clone(),
            dataset_sha256: prepared.dataset_sha256().to_owned(),
        },
        weights: tensors::to_safetensors(&network.named_parameters())?,
        optimizer: tensors::to_safetensors(&optimizer.state())?,
        best: state.best.as_deref().map(tensors::to_safetensors).transpose()?,
    })
}

fn restore(
    checkpoint: &Checkpoint,
    spec: &JobSpec,
    prepared: &Prepared,
    architecture: &Architecture,
    network: &mut Network,
    optimizer: &mut Optimizer,
    state: &mut LoopState,
) -> Result<()> {
    let meta = &checkpoint.meta;
    let mismatch = |what: &str| Err(MlError::CheckpointMismatch(format!("its {what} differs")));
    if meta.dataset_sha256 != prepared.dataset_sha256() {
        return mismatch("dataset");
    }
    if &meta.architecture != architecture {
        return mismatch("model architecture");
    }
    if meta.preprocessor != prepared.preprocessor {
        return mismatch("preprocessing");
    }
    if meta.seed != spec.hyperparameters.seed {
        return mismatch("seed");
    }
    let device = network.vs.device();
    let weights = tensors::from_safetensors(&checkpoint.weights, "checkpoint")?;
    network.load_weights(&weights).map_err(MlError::CheckpointMismatch)?;
    let moments: Vec<(String, Tensor)> =
        tensors::from_safetensors(&checkpoint.optimizer, "checkpoint")?
            .into_iter()
            .map(|(n, t)| (n, t.to_device(device)))
            .collect();
    optimizer.restore(&moments, meta.optimizer_steps).map_err(MlError::CheckpointMismatch)?;
    state.epoch = meta.epoch;
    state.step = meta.step;
    state.loss_sum = meta.partial_loss_sum;
    state.count = meta.partial_count;
    state.history = meta.history.clone();
    state.early = meta.early_stopping.clone();
    state.best = match &checkpoint.best {
        Some(bytes) => Some(
            tensors::from_safetensors(bytes, "checkpoint")?
                .into_iter()
                .map(|(n, t)| (n, t.to_device(device)))
                .collect(),
        ),
        None => None,
    };
    Ok(())
}
