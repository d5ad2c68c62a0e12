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
