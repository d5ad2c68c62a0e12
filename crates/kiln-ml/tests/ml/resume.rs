//! A job resumed from a checkpoint ends with the same weights as one never interrupted.

use kiln_ml::{Checkpoint, MlError, NoObserver, TrainOutcome, train};
use serde_json::json;

use crate::support::{Recorder, Same, cpu, init, prepared, resume_check, spec};

#[test]
fn resuming_mid_epoch_with_dropout_and_adam_gives_identical_weights() {
    // iris: 120 rows, batch 16 → 8 steps per epoch; stop before batch 8·2 + 4 = 20 (epoch 3).
    resume_check(
        json!({"type": "mlp", "hidden": [16, 8], "dropout": 0.3}),
        json!({"epochs": 5, "batch_size": 16, "grad_clip": 1.0, "lr_schedule": "cosine",
               "early_stopping_patience": 10}),
        "iris.csv",
        Some("species"),
        20,
        Same::Bitwise,
    );
}

#[test]
fn resuming_at_an_epoch_boundary_with_sgd_momentum_gives_identical_weights() {
    resume_check(
        json!({"type": "mlp", "hidden": [16]}),
        json!({"epochs": 4, "batch_size": 40, "optimizer": "sgd", "momentum": 0.9,
               "weight_decay": 0.001}),
        "iris.csv",
        Some("species"),
        7, // 3 steps per epoch: before epoch 3's first batch
        Same::Bitwise,
    );
}

#[test]
fn resuming_with_adamw_gives_identical_weights() {
    resume_check(
        json!({"type": "mlp", "hidden": [16], "dropout": 0.1}),
        json!({"epochs": 4, "batch_size": 16, "optimizer": "adamw", "weight_decay": 0.01}),
        "iris.csv",
        Some("species"),
        13,
        Same::Bitwise,
    );
}

#[test]
fn a_checkpoint_from_another_job_is_refused() {
    init();
    let spec_a =
        spec("classification", Some("species"), json!({"type": "linear"}), json!({"epochs": 2}));
    let prepared_a = prepared(&spec_a, "iris.csv");
    let mut stopper = Recorder { stop_before: Some(2), ..Default::default() };
    let TrainOutcome::Stopped { checkpoint, .. } =
        train(&spec_a, &prepared_a, &cpu(), &mut stopper, None).unwrap()
    else {
        panic!("did not stop")
    };
    let spec_b =
        spec("classification", Some("species"), json!({"type": "mlp"}), json!({"epochs": 2}));
    let err = train(&spec_b, &prepared_a, &cpu(), &mut NoObserver, Some(&checkpoint)).unwrap_err();
    assert!(matches!(err, MlError::CheckpointMismatch(_)), "{err}");
    assert!(Checkpoint::from_bytes(b"not a zip").is_err());
}
