//! Shared helpers: example data, specs, and observers.

use std::path::PathBuf;
use std::sync::Once;

use kiln_ml::{
    Checkpoint, Dataset, EpochMetrics, NoObserver, Prepared, StepProgress, StopReason,
    TrainObserver, TrainOptions, TrainOutcome, TrainedModel, prepare, train,
};
use kiln_types::JobSpec;
use serde_json::{Value, json};

pub const DATASET_ID: &str = "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6d";

/// Two intra-op threads for every test, as on the 2-core CI machine.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| kiln_ml::set_num_threads(2));
}

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data").join(name)
}

pub fn dataset(name: &str) -> Dataset {
    Dataset::from_path(data_path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// A spec from the minimal fields plus `extra` (merged at the top level).
pub fn spec(task: &str, target: Option<&str>, model: Value, hyperparameters: Value) -> JobSpec {
    let mut body = json!({"dataset_id": DATASET_ID, "task": task, "model": model,
                          "hyperparameters": hyperparameters, "device": "cpu"});
    if let Some(target) = target {
        body["target"] = json!(target);
    }
    JobSpec::parse(&body).unwrap_or_else(|e| panic!("{e}"))
}

pub fn cpu() -> TrainOptions {
    TrainOptions { device: kiln_ml::DeviceChoice::Cpu, ..Default::default() }
}

/// Trains to completion, without an observer.
pub fn train_to_end(spec: &JobSpec, prepared: &Prepared, options: &TrainOptions) -> TrainedModel {
    init();
    match train(spec, prepared, options, &mut NoObserver, None).unwrap_or_else(|e| panic!("{e}")) {
        TrainOutcome::Completed(model) => *model,
        TrainOutcome::Stopped { reason, .. } => panic!("stopped: {reason:?}"),
    }
}

pub fn prepared(spec: &JobSpec, name: &str) -> Prepared {
    prepare(spec, &dataset(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// Records everything, and stops before batch number `stop_before` (counted from 1).
#[derive(Default)]
pub struct Recorder {
    pub steps: Vec<StepProgress>,
    pub epochs: Vec<EpochMetrics>,
    pub checkpoints: Vec<Checkpoint>,
    pub stop_before: Option<u64>,
    pub asked: u64,
}

impl TrainObserver for Recorder {
    fn on_step(&mut self, progress: &StepProgress) {
        self.steps.push(*progress);
    }
    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        self.epochs.push(metrics.clone());
    }
    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) {
        self.checkpoints.push(checkpoint.clone());
    }
    fn should_stop(&mut self) -> Option<StopReason> {
        self.asked += 1;
        (Some(self.asked) == self.stop_before).then_some(StopReason::Cancelled)
    }
}

/// How equal the resumed run must be to the uninterrupted one.
#[derive(Debug, Clone, Copy)]
pub enum Same {
    /// Bit for bit: every operation on this path is deterministic on the CPU.
    Bitwise,
    /// Within a relative tolerance: oneDNN's convolution backward on the CPU accumulates in
    /// an order that can change from run to run on a loaded machine (a flaky bit-for-bit
    /// comparison seen in CI), so convolutional nets are compared to float rounding.
    #[allow(dead_code)] // constructed in tests/cnn_resume.rs, another test binary
    Within(f32),
}

fn assert_weights_match(resumed: &[u8], uninterrupted: &[u8], tolerance: f32, context: &str) {
    let a = safetensors::SafeTensors::deserialize(resumed).unwrap();
    let b = safetensors::SafeTensors::deserialize(uninterrupted).unwrap();
    let mut names = a.names();
    names.sort();
    let mut other = b.names();
    other.sort();
    assert_eq!(names, other, "{context}");
    for name in names {
        let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!(x.shape(), y.shape(), "{name}: {context}");
        let floats = |d: &[u8]| -> Vec<f32> {
            d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        for (i, (p, q)) in floats(x.data()).iter().zip(floats(y.data())).enumerate() {
            assert!(
                (p - q).abs() <= tolerance * q.abs().max(1.0),
                "{name}[{i}]: {p} vs {q}: {context}"
            );
        }
    }
}

pub fn resume_check(
    model: serde_json::Value,
    hyperparameters: serde_json::Value,
    data: &str,
    target: Option<&str>,
    stop_before: u64,
    same: Same,
) {
    init();
    let spec = spec("classification", target, model, hyperparameters);
    let prepared = prepared(&spec, data);
    let uninterrupted = train_to_end(&spec, &prepared, &cpu());

    let mut stopper = Recorder { stop_before: Some(stop_before), ..Default::default() };
    let checkpoint = match train(&spec, &prepared, &cpu(), &mut stopper, None).unwrap() {
        TrainOutcome::Stopped { checkpoint, .. } => checkpoint,
        TrainOutcome::Completed(_) => panic!("did not stop"),
    };
    // Through bytes, as the worker stores it.
    let checkpoint = Checkpoint::from_bytes(&checkpoint.to_bytes().unwrap()).unwrap();
    let resumed = match train(&spec, &prepared, &cpu(), &mut NoObserver, Some(&checkpoint)).unwrap()
    {
        TrainOutcome::Completed(model) => model,
        TrainOutcome::Stopped { .. } => panic!("stopped"),
    };
    let context = format!(
        "resumed weights differ (checkpoint at epoch {}, step {})",
        checkpoint.epoch(),
        checkpoint.step()
    );
    match same {
        Same::Bitwise => {
            assert_eq!(
                resumed.bundle.weights_safetensors(),
                uninterrupted.bundle.weights_safetensors(),
                "{context}"
            );
            assert_eq!(resumed.history, uninterrupted.history);
        }
        Same::Within(tolerance) => {
            assert_weights_match(
                resumed.bundle.weights_safetensors(),
                uninterrupted.bundle.weights_safetensors(),
                tolerance,
                &context,
            );
            assert_eq!(resumed.history.len(), uninterrupted.history.len());
            for (r, u) in resumed.history.iter().zip(&uninterrupted.history) {
                let close =
                    |a: f64, b: f64| (a - b).abs() <= f64::from(tolerance) * b.abs().max(1.0);
                assert!(
                    close(r.train_loss, u.train_loss) && close(r.val_loss, u.val_loss),
                    "{r:?} vs {u:?}"
                );
            }
        }
    }
}
