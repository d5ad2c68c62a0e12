//! Helpers for other crates' tests and benchmarks (feature `testing`): real model bundles
//! trained here, in process, so serving tests need no worker, and CSV rows as instances.

use serde_json::{Map, Value, json};

use crate::{DeviceChoice, NoObserver, TrainOptions, TrainOutcome};

/// Trains an MLP classifier on a CSV file (predicting `target`) on the CPU and returns its
/// model bundle's bytes. Deterministic for a given seed.
pub fn train_csv_bundle(
    csv: &[u8],
    target: &str,
    hidden: &[u32],
    epochs: u32,
    seed: u64,
) -> Vec<u8> {
    let dataset = crate::Dataset::from_csv_bytes(csv).expect("a readable CSV");
    let spec = kiln_types::JobSpec::parse(&json!({
        "dataset_id": "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6d",
        "task": "classification", "target": target,
        "model": {"type": "mlp", "hidden": hidden},
        "hyperparameters": {"epochs": epochs, "batch_size": 16, "learning_rate": 0.01, "seed": seed},
        "device": "cpu",
    }))
    .expect("a valid spec");
    let prepared = crate::prepare(&spec, &dataset).expect("prepared data");
    let options = TrainOptions { device: DeviceChoice::Cpu, ..Default::default() };
    match crate::train(&spec, &prepared, &options, &mut NoObserver, None).expect("training") {
        TrainOutcome::Completed(model) => model.bundle.to_bytes().expect("bundle bytes"),
        TrainOutcome::Stopped { reason, .. } => panic!("training stopped: {reason:?}"),
    }
}

/// The rows of a numeric CSV file (with a header) as prediction instances, feature name →
/// number, leaving out the `target` column.
pub fn csv_instances(csv: &[u8], target: &str) -> Vec<Map<String, Value>> {
    let text = std::str::from_utf8(csv).expect("UTF-8 CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .filter(|(name, _)| **name != target)
                .map(|(name, cell)| {
                    (name.to_string(), json!(cell.parse::<f64>().expect("a number")))
                })
                .collect()
        })
        .collect()
}
